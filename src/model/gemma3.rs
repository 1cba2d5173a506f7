//! Gemma 3's text decoder (transformers' modeling_gemma3: Gemma3ForCausalLM, and the language
//! model inside Gemma3ForConditionalGeneration), in tch. Weight names mirror the checkpoint's.
//! It shares attention, the MLP, RoPE, the KV cache and the drivers above the layers with Qwen3
//! (`qwen3`, `causal`); what is Gemma's own:
//! - layers alternate sliding-window (local) and full (global) attention (`layer_types`, or
//!   `sliding_window_pattern` in older configs: every Nth layer global), each type with its own
//!   RoPE base; linear RoPE scaling applies to global layers only;
//! - four norms per layer (input, post_attention, pre_feedforward, post_feedforward), Gemma's
//!   RMSNorm ((1 + weight), in fp32), q_norm/k_norm per head;
//! - embeddings scaled by sqrt(hidden) (the scale cast to the embedding dtype first);
//! - GeGLU MLP with tanh GELU; attention scaled by query_pre_attn_scalar^-0.5; tied LM head;
//!   optional tanh soft-capping of the final logits.
//!
//! Shapes: b batch, t tokens, h hidden, nh query heads, nkv key/value heads, d head_dim, V vocab.
use std::collections::HashMap;
use std::path::Path;

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use tch::{Device, Kind, Tensor};

use super::causal::{self, CausalLm};
use super::qwen3::{attention_mask, projections_of, projections_of_mut, Act, Attention, EmbeddingExt, Mlp, RmsNorm, Rope};
use super::source::ModelKind;
use super::{generate, tokenizer, Batch, Model};
use crate::nn::linear::Linear;
use crate::nn::nf4::Nf4Tensor;
use crate::nn::weights::Weights;

/// One layer type's RoPE: its base and, for `rope_type: linear`, the factor positions are divided by.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct RopeSpec {
    pub theta: f64,
    pub linear_factor: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Gemma3Config {
    pub vocab_size: i64,
    pub hidden_size: i64,
    pub intermediate_size: i64,
    pub num_hidden_layers: i64,
    pub num_attention_heads: i64,
    pub num_key_value_heads: i64,
    pub head_dim: i64,
    pub rms_norm_eps: f64,
    /// Attention scores are scaled by its inverse square root, not head_dim's.
    pub query_pre_attn_scalar: f64,
    pub sliding_window: i64,
    /// Per layer: true for sliding-window (local) attention, false for full (global).
    pub sliding: Vec<bool>,
    pub rope_local: RopeSpec,
    pub rope_global: RopeSpec,
    pub final_logit_softcapping: Option<f64>,
    /// Read and saved, but not applied: transformers 5.23's Gemma 3 attention ignores it (Gemma 2
    /// applied it), and steptune follows transformers.
    pub attn_logit_softcapping: Option<f64>,
    pub attention_bias: bool,
    pub tie_word_embeddings: bool,
    pub max_position_embeddings: i64,
    pub initializer_range: f64,
}

/// Whether a config.json is Gemma 3's, text-only (`gemma3_text`) or multimodal (`gemma3`).
pub fn is_gemma3(config: &Value) -> bool {
    matches!(config.get("model_type").and_then(Value::as_str), Some("gemma3" | "gemma3_text"))
}

/// The text decoder's config: config.json itself, or its `text_config` in a multimodal one.
pub fn text_config(config: &Value) -> &Value {
    match config.get("model_type").and_then(Value::as_str) {
        Some("gemma3") => config.get("text_config").filter(|v| v.is_object()).unwrap_or(config),
        _ => config,
    }
}

/// The checkpoint tensor `name` under the text model's name (`model.layers.0...`, `lm_head`), or
/// None for the vision tower and the multimodal projector, which steptune does not load.
/// transformers 4.5x (and 5.23's save_pretrained) write `language_model.model.*`; transformers 5
/// models hold `model.language_model.*`.
pub fn text_weight_name(name: &str) -> Option<String> {
    for p in ["language_model.model.", "model.language_model."] {
        if let Some(rest) = name.strip_prefix(p) {
            return Some(format!("model.{rest}"));
        }
    }
    if let Some(rest) = name.strip_prefix("language_model.") {
        return Some(rest.to_string()); // language_model.lm_head.weight
    }
    let vision = ["vision_tower.", "multi_modal_projector.", "model.vision_tower.", "model.multi_modal_projector."];
    if vision.iter().any(|p| name.starts_with(p)) {
        return None;
    }
    Some(name.to_string())
}

impl Gemma3Config {
    /// From config.json (`gemma3_text`, or `gemma3` with its `text_config`). Missing keys take
    /// Gemma3TextConfig's defaults, as transformers does: Hub configs leave many out.
    pub fn from_json(config: &Value) -> Result<Gemma3Config> {
        let v = text_config(config);
        let int = |k: &str, d: i64| -> Result<i64> {
            match v.get(k) {
                None | Some(Value::Null) => Ok(d),
                Some(x) => x.as_i64().with_context(|| format!("config.json: Gemma 3 `{k}` must be an integer, got {x}")),
            }
        };
        let float = |k: &str, d: f64| -> Result<f64> {
            match v.get(k) {
                None | Some(Value::Null) => Ok(d),
                Some(x) => x.as_f64().with_context(|| format!("config.json: Gemma 3 `{k}` must be a number, got {x}")),
            }
        };
        let opt_float = |k: &str| v.get(k).and_then(Value::as_f64);
        let heads = int("num_attention_heads", 8)?;
        let layers = int("num_hidden_layers", 26)?;
        if v.get("use_bidirectional_attention").and_then(Value::as_bool) == Some(true) {
            bail!("config.json: Gemma 3 with `use_bidirectional_attention: true` (an embedding model) is not supported; steptune trains the causal decoder");
        }
        let act = v.get("hidden_activation").or_else(|| v.get("hidden_act")).and_then(Value::as_str).unwrap_or("gelu_pytorch_tanh");
        if !matches!(act, "gelu_pytorch_tanh" | "gelu_tanh" | "gelu_new") {
            bail!("config.json: Gemma 3 `hidden_activation: {act}` is not supported (gelu_pytorch_tanh)");
        }
        // layer_types (transformers ≥ 4.5x) or every `sliding_window_pattern`-th layer global.
        let sliding: Vec<bool> = match v.get("layer_types").and_then(Value::as_array) {
            Some(types) => types
                .iter()
                .map(|t| match t.as_str() {
                    Some("sliding_attention") => Ok(true),
                    Some("full_attention") => Ok(false),
                    _ => bail!("config.json: Gemma 3 `layer_types` holds {t}; expected sliding_attention or full_attention"),
                })
                .collect::<Result<_>>()?,
            None => {
                let pattern = int("sliding_window_pattern", 6)?.max(1);
                (0..layers).map(|i| (i + 1) % pattern != 0).collect()
            }
        };
        if sliding.len() as i64 != layers {
            bail!("config.json: Gemma 3 `layer_types` lists {} layers, num_hidden_layers is {layers}", sliding.len());
        }
        // RoPE: transformers 5's `rope_parameters: {sliding_attention: {...}, full_attention: {...}}`,
        // or 4.x's rope_theta (global), rope_local_base_freq (local) and rope_scaling (global only).
        let spec = |r: &Value, what: &str, theta: f64| -> Result<RopeSpec> {
            let theta = r.get("rope_theta").and_then(Value::as_f64).unwrap_or(theta);
            match r.get("rope_type").or_else(|| r.get("type")).and_then(Value::as_str).unwrap_or("default") {
                "default" => Ok(RopeSpec { theta, linear_factor: None }),
                "linear" => Ok(RopeSpec { theta, linear_factor: Some(r.get("factor").and_then(Value::as_f64).with_context(|| format!("config.json: Gemma 3 {what} linear RoPE needs `factor`"))?) }),
                other => bail!("config.json: Gemma 3 {what} RoPE type `{other}` is not supported (default and linear)"),
            }
        };
        let global_theta = float("rope_theta", 1e6)?;
        let local_theta = float("rope_local_base_freq", 1e4)?;
        let (rope_local, rope_global) = match v.get("rope_parameters").filter(|r| r.is_object()) {
            Some(rp) if rp.get("full_attention").is_some() || rp.get("sliding_attention").is_some() => {
                let null = Value::Null;
                let l = rp.get("sliding_attention").filter(|x| x.is_object()).unwrap_or(&null);
                let g = rp.get("full_attention").filter(|x| x.is_object()).unwrap_or(&null);
                (spec(l, "sliding_attention", local_theta)?, spec(g, "full_attention", global_theta)?)
            }
            // One flat dict: the global layers' (as transformers folds `rope_scaling` into them).
            Some(rp) => (RopeSpec { theta: local_theta, linear_factor: None }, spec(rp, "full_attention", global_theta)?),
            None => {
                let g = match v.get("rope_scaling").filter(|r| r.is_object()) {
                    Some(rs) => spec(rs, "rope_scaling", global_theta)?,
                    None => RopeSpec { theta: global_theta, linear_factor: None },
                };
                (RopeSpec { theta: local_theta, linear_factor: None }, g)
            }
        };
        let tie = config.get("tie_word_embeddings").or_else(|| v.get("tie_word_embeddings")).and_then(Value::as_bool).unwrap_or(true);
        Ok(Gemma3Config {
            vocab_size: int("vocab_size", 262_208)?,
            hidden_size: int("hidden_size", 2304)?,
            intermediate_size: int("intermediate_size", 9216)?,
            num_hidden_layers: layers,
            num_attention_heads: heads,
            num_key_value_heads: int("num_key_value_heads", 4)?,
            head_dim: int("head_dim", 256)?,
            rms_norm_eps: float("rms_norm_eps", 1e-6)?,
            query_pre_attn_scalar: float("query_pre_attn_scalar", 256.0)?,
            sliding_window: int("sliding_window", 4096)?,
            sliding,
            rope_local,
            rope_global,
            final_logit_softcapping: opt_float("final_logit_softcapping"),
            attn_logit_softcapping: opt_float("attn_logit_softcapping"),
            attention_bias: v.get("attention_bias").and_then(Value::as_bool).unwrap_or(false),
            tie_word_embeddings: tie,
            max_position_embeddings: int("max_position_embeddings", 131_072)?,
            initializer_range: float("initializer_range", 0.02)?,
        })
    }

    /// The shape in the terms of the shared decoder config, for `steptune estimate`.
    pub fn decoder_shape(&self) -> super::qwen3::DecoderConfig {
        super::qwen3::DecoderConfig {
            architecture: crate::recipe::Architecture::Gemma3,
            vocab_size: self.vocab_size,
            hidden_size: self.hidden_size,
            intermediate_size: self.intermediate_size,
            num_hidden_layers: self.num_hidden_layers,
            num_attention_heads: self.num_attention_heads,
            num_key_value_heads: self.num_key_value_heads,
            head_dim: self.head_dim,
            rms_norm_eps: self.rms_norm_eps,
            rope_theta: self.rope_global.theta,
            rope_llama3: None,
            max_position_embeddings: self.max_position_embeddings,
            tie_word_embeddings: self.tie_word_embeddings,
            qkv_bias: self.attention_bias,
            o_bias: self.attention_bias,
            qk_norm: true,
            sandwich_norms: true,
            initializer_range: self.initializer_range,
        }
    }

    /// config.json as transformers 5 writes it for Gemma3ForCausalLM (a multimodal checkpoint's
    /// text model is saved text-only).
    pub fn to_hf_json(&self, bos: Option<i64>, eos: Option<i64>, pad: Option<i64>, dtype: &str) -> Value {
        let rope = |r: &RopeSpec| match r.linear_factor {
            Some(f) => json!({"rope_type": "linear", "factor": f, "rope_theta": r.theta}),
            None => json!({"rope_type": "default", "rope_theta": r.theta}),
        };
        json!({
            "architectures": ["Gemma3ForCausalLM"],
            "model_type": "gemma3_text",
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_hidden_layers,
            "num_attention_heads": self.num_attention_heads,
            "num_key_value_heads": self.num_key_value_heads,
            "head_dim": self.head_dim,
            "hidden_activation": "gelu_pytorch_tanh",
            "rms_norm_eps": self.rms_norm_eps,
            "query_pre_attn_scalar": self.query_pre_attn_scalar,
            "sliding_window": self.sliding_window,
            "layer_types": self.sliding.iter().map(|&s| if s { "sliding_attention" } else { "full_attention" }).collect::<Vec<_>>(),
            "rope_parameters": {"sliding_attention": rope(&self.rope_local), "full_attention": rope(&self.rope_global)},
            "final_logit_softcapping": self.final_logit_softcapping,
            "attn_logit_softcapping": self.attn_logit_softcapping,
            "attention_bias": self.attention_bias,
            "attention_dropout": 0.0,
            "max_position_embeddings": self.max_position_embeddings,
            "tie_word_embeddings": self.tie_word_embeddings,
            "initializer_range": self.initializer_range,
            "use_bidirectional_attention": false,
            "use_cache": true,
            "torch_dtype": dtype,
            "bos_token_id": bos,
            "eos_token_id": eos,
            "pad_token_id": pad,
        })
    }
}

pub struct Gemma3Layer {
    pub self_attn: Attention,
    pub mlp: Mlp,
    pub input_layernorm: RmsNorm,
    pub post_attention_layernorm: RmsNorm,
    pub pre_feedforward_layernorm: RmsNorm,
    pub post_feedforward_layernorm: RmsNorm,
    /// Sliding-window (local) attention with the local RoPE; else full attention, global RoPE.
    pub sliding: bool,
}

impl Gemma3Layer {
    /// x: [b, t, h] → [b, t, h]; the sublayers' outputs are normed before the residual adds.
    pub fn forward(&self, x: &Tensor, cos: &Tensor, sin: &Tensor, mask: Option<&Tensor>, cache: Option<&mut Option<(Tensor, Tensor)>>, train: bool) -> Tensor {
        let a = self.self_attn.forward(&self.input_layernorm.forward(x), cos, sin, mask, cache, train);
        let h = x + self.post_attention_layernorm.forward(&a);
        let m = self.mlp.forward(&self.pre_feedforward_layernorm.forward(&h), train);
        &h + self.post_feedforward_layernorm.forward(&m)
    }
}

pub struct Gemma3 {
    pub cfg: Gemma3Config,
    /// [V, h]
    pub embed_tokens: Tensor,
    pub layers: Vec<Gemma3Layer>,
    pub norm: RmsNorm,
    /// [V, h]; the embedding itself when tied (always, in released Gemma 3 checkpoints).
    pub lm_head: Tensor,
    pub rope_local: Rope,
    pub rope_global: Rope,
    pub kind: Kind,
    pub device: Device,
    pub loss_chunk: usize,
}

/// The RoPE angles of both layer types and the masks of one forward.
pub struct Gemma3Ctx {
    /// (cos, sin) [b, 1, t, d] each, local (sliding) and global layers.
    local: (Tensor, Tensor),
    global: (Tensor, Tensor),
    /// [b, 1, t, T] bool: padding (full layers), padding and the window (sliding layers); None
    /// where plain causal attention (or, for one new token, everything cached) is right.
    full_mask: Option<Tensor>,
    sliding_mask: Option<Tensor>,
}

impl Gemma3 {
    /// Builds the model from text-model-named tensors (consumed from `w`), the projections found
    /// in `quantized` stored in 4 bits, their products in `compute`.
    pub fn from_parts(cfg: Gemma3Config, w: &mut Weights, quantized: &mut HashMap<String, Nf4Tensor>, compute: Kind, kind: Kind, device: Device) -> Result<Gemma3> {
        let mut take = |name: &str| -> Result<Tensor> { w.remove(name).with_context(|| format!("the checkpoint has no tensor `{name}`")) };
        let embed_tokens = take("model.embed_tokens.weight")?;
        if embed_tokens.size() != [cfg.vocab_size, cfg.hidden_size] {
            bail!("model.embed_tokens.weight has shape {:?}, config says [{}, {}]", embed_tokens.size(), cfg.vocab_size, cfg.hidden_size);
        }
        let eps = cfg.rms_norm_eps;
        let mut layers = Vec::with_capacity(cfg.num_hidden_layers as usize);
        for i in 0..cfg.num_hidden_layers {
            let p = format!("model.layers.{i}");
            let mut lin = |name: &str| -> Result<Linear> {
                let bias = if cfg.attention_bias && name.starts_with("self_attn") { Some(take(&format!("{p}.{name}.bias"))?) } else { None };
                let weight_name = format!("{p}.{name}.weight");
                match quantized.remove(&weight_name) {
                    Some(q) => Ok(Linear::quantized(q, compute, bias)),
                    None => Ok(Linear::new(take(&weight_name)?, bias)),
                }
            };
            let (q_proj, k_proj, v_proj, o_proj) = (lin("self_attn.q_proj")?, lin("self_attn.k_proj")?, lin("self_attn.v_proj")?, lin("self_attn.o_proj")?);
            let mlp = Mlp { gate_proj: lin("mlp.gate_proj")?, up_proj: lin("mlp.up_proj")?, down_proj: lin("mlp.down_proj")?, act: Act::GeluTanh };
            let mut norm = |name: &str| -> Result<RmsNorm> { Ok(RmsNorm::gemma(take(&format!("{p}.{name}.weight"))?, eps)) };
            let self_attn = Attention {
                q_proj,
                k_proj,
                v_proj,
                o_proj,
                q_norm: Some(norm("self_attn.q_norm")?),
                k_norm: Some(norm("self_attn.k_norm")?),
                n_heads: cfg.num_attention_heads,
                n_kv: cfg.num_key_value_heads,
                head_dim: cfg.head_dim,
                scale: cfg.query_pre_attn_scalar.powf(-0.5),
            };
            layers.push(Gemma3Layer {
                self_attn,
                mlp,
                input_layernorm: norm("input_layernorm")?,
                post_attention_layernorm: norm("post_attention_layernorm")?,
                pre_feedforward_layernorm: norm("pre_feedforward_layernorm")?,
                post_feedforward_layernorm: norm("post_feedforward_layernorm")?,
                sliding: cfg.sliding[i as usize],
            });
        }
        let norm = RmsNorm::gemma(take("model.norm.weight")?, eps);
        let lm_head = if cfg.tie_word_embeddings {
            w.remove("lm_head.weight");
            embed_tokens.shallow_clone()
        } else {
            take("lm_head.weight")?
        };
        let rope = |r: &RopeSpec| {
            let rope = Rope::new(cfg.head_dim, r.theta, None, device);
            match r.linear_factor {
                Some(f) => rope.linear(f),
                None => rope,
            }
        };
        let (rope_local, rope_global) = (rope(&cfg.rope_local), rope(&cfg.rope_global));
        Ok(Gemma3 { cfg, embed_tokens, layers, norm, lm_head, rope_local, rope_global, kind, device, loss_chunk: crate::nn::head::DEFAULT_LOSS_CHUNK })
    }

    /// Every base tensor under its (text model's) checkpoint name; 4-bit ones dequantized when asked.
    fn base_tensors(&self, dequantize: bool) -> Vec<(String, Tensor)> {
        let mut out = vec![("model.embed_tokens.weight".to_string(), self.embed_tokens.shallow_clone())];
        for (i, l) in self.layers.iter().enumerate() {
            let p = format!("model.layers.{i}");
            for (name, lin) in projections_of(&l.self_attn, &l.mlp) {
                match lin.dense_weight() {
                    Some(w) => out.push((format!("{p}.{name}.weight"), w.shallow_clone())),
                    None if dequantize => out.push((format!("{p}.{name}.weight"), lin.weight())),
                    None => {}
                }
                if let Some(b) = &lin.bias {
                    out.push((format!("{p}.{name}.bias"), b.shallow_clone()));
                }
            }
            let norms = [
                ("input_layernorm", &l.input_layernorm),
                ("post_attention_layernorm", &l.post_attention_layernorm),
                ("pre_feedforward_layernorm", &l.pre_feedforward_layernorm),
                ("post_feedforward_layernorm", &l.post_feedforward_layernorm),
            ];
            for (name, n) in norms {
                out.push((format!("{p}.{name}.weight"), n.weight.shallow_clone()));
            }
            for (name, n) in [("self_attn.q_norm", &l.self_attn.q_norm), ("self_attn.k_norm", &l.self_attn.k_norm)] {
                if let Some(n) = n {
                    out.push((format!("{p}.{name}.weight"), n.weight.shallow_clone()));
                }
            }
        }
        out.push(("model.norm.weight".into(), self.norm.weight.shallow_clone()));
        if !self.cfg.tie_word_embeddings {
            out.push(("lm_head.weight".into(), self.lm_head.shallow_clone()));
        }
        out
    }

    /// Full-sequence logits for right-padded ids (training layout): [b, t] → [b, t, V]
    pub fn forward(&self, ids: &Tensor) -> Tensor {
        causal::forward(self, ids, false)
    }

    /// The causal-LM loss summed over labelled tokens, and their count.
    pub fn loss_sum(&self, ids: &Tensor, labels: &Tensor, train: bool) -> Result<(Tensor, i64)> {
        causal::loss_sum(self, ids, labels, train)
    }
}

impl CausalLm for Gemma3 {
    type Ctx = Gemma3Ctx;
    fn device(&self) -> Device {
        self.device
    }
    fn hidden_size(&self) -> i64 {
        self.cfg.hidden_size
    }
    fn n_layers(&self) -> usize {
        self.layers.len()
    }
    /// ids [b, t] → embeddings · sqrt(h), the scale rounded to the embedding's dtype first
    /// (transformers' Gemma3TextScaledWordEmbedding: in bf16 sqrt(3840) = 61.97 becomes 62).
    fn embed(&self, ids: &Tensor) -> Tensor {
        let scale = Tensor::from((self.cfg.hidden_size as f64).sqrt() as f32).to_kind(self.embed_tokens.kind()).to_device(self.device);
        self.embed_tokens.embedding_renorm_ok(ids) * scale
    }
    fn embed_trains(&self) -> bool {
        self.embed_tokens.requires_grad()
    }
    /// The sliding layers' mask adds the window to the padding mask: query i sees key j only when
    /// i - j < sliding_window (transformers' sliding_window_overlay, on cache positions). Past
    /// the window the cache keeps every key and the mask hides the old ones, which gives the
    /// attention transformers' sliding cache computes.
    fn context(&self, positions: &Tensor, mask2d: Option<&Tensor>, past: i64) -> Gemma3Ctx {
        let (b, t) = (positions.size()[0], positions.size()[1]);
        let total = past + t;
        let full_mask = mask2d.map(|m| attention_mask(m, past, t));
        let sliding_mask = if total > self.cfg.sliding_window && self.cfg.sliding.iter().any(|&s| s) {
            let base = match &full_mask {
                Some(m) => m.shallow_clone(),
                None => attention_mask(&Tensor::ones([b, total], (Kind::Int64, self.device)), past, t),
            };
            let q = Tensor::arange_start(past, total, (Kind::Int64, self.device)).unsqueeze(1); // [t, 1]
            let k = Tensor::arange(total, (Kind::Int64, self.device)).unsqueeze(0); // [1, T]
            let within = (q - k).lt(self.cfg.sliding_window); // [t, T]
            Some(base.logical_and(&within.unsqueeze(0).unsqueeze(0)))
        } else {
            full_mask.as_ref().map(Tensor::shallow_clone)
        };
        Gemma3Ctx { local: self.rope_local.cos_sin(positions, self.kind), global: self.rope_global.cos_sin(positions, self.kind), full_mask, sliding_mask }
    }
    fn layer(&self, i: usize, x: &Tensor, ctx: &Gemma3Ctx, cache: Option<&mut Option<(Tensor, Tensor)>>, train: bool) -> Tensor {
        let l = &self.layers[i];
        let ((cos, sin), mask) = if l.sliding { (&ctx.local, &ctx.sliding_mask) } else { (&ctx.global, &ctx.full_mask) };
        l.forward(x, cos, sin, mask.as_ref(), cache, train)
    }
    fn final_norm(&self, x: &Tensor) -> Tensor {
        self.norm.forward(x)
    }
    fn lm_head(&self) -> &Tensor {
        &self.lm_head
    }
    fn final_softcap(&self) -> Option<f64> {
        self.cfg.final_logit_softcapping
    }
    fn loss_chunk(&self) -> usize {
        self.loss_chunk
    }
}

impl Model for Gemma3 {
    fn kind(&self) -> Kind {
        self.kind
    }
    fn device(&self) -> Device {
        self.device
    }
    fn model_kind(&self) -> ModelKind {
        ModelKind::Causal
    }
    fn named_weights(&self) -> Vec<(String, Tensor)> {
        self.base_tensors(true)
    }
    fn dense_weights(&self) -> Vec<(String, Tensor)> {
        self.base_tensors(false)
    }
    fn projections(&self) -> Vec<(String, &Linear)> {
        self.layers.iter().enumerate().flat_map(|(i, l)| projections_of(&l.self_attn, &l.mlp).map(|(n, lin)| (format!("model.layers.{i}.{n}"), lin))).collect()
    }
    fn projections_mut(&mut self) -> Vec<(String, &mut Linear)> {
        self.layers.iter_mut().enumerate().flat_map(|(i, l)| projections_of_mut(&mut l.self_attn, &mut l.mlp).map(|(n, lin)| (format!("model.layers.{i}.{n}"), lin))).collect()
    }
    fn peft_task_type(&self) -> &'static str {
        "CAUSAL_LM"
    }
    fn loss_sum(&self, batch: &Batch, train: bool) -> Result<(Tensor, i64)> {
        causal::loss_sum(self, &batch.input_ids, &batch.labels, train)
    }
    fn set_loss_chunk(&mut self, tokens: usize) {
        self.loss_chunk = tokens;
    }
    fn loss_sum_backward_checkpointed(&self, batch: &Batch, scale: f64) -> Result<(f64, i64)> {
        causal::loss_sum_backward_checkpointed(self, &batch.input_ids, &batch.labels, scale)
    }
    fn save(&self, dir: &Path, tok: Option<&tokenizer::TokenizerBundle>) -> Result<()> {
        save_gemma3(self, dir, tok)
    }
    fn generate(&self, prompts: &[Vec<i64>], cfg: &generate::GenerateConfig) -> Vec<Vec<i64>> {
        generate::generate(self, prompts, cfg)
    }
}

/// Writes an HF folder transformers loads as Gemma3ForCausalLM (text only, `model.*` names).
pub fn save_gemma3(model: &Gemma3, dir: &Path, tok: Option<&tokenizer::TokenizerBundle>) -> Result<()> {
    super::save_causal_folder(dir, tok, |bos, eos, pad| model.cfg.to_hf_json(bos, eos, pad, super::kind_name(model.kind)), &model.base_tensors(true))
}
