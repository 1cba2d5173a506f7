//! The Qwen3 decoder (transformers' modeling_qwen3), in tch. Weight names mirror the checkpoint's.
//! The same code serves Qwen2.5 and Llama-3 configs, which differ only by flags: attention bias,
//! and no per-head q/k RMSNorm.
//!
//! Shapes: b batch, t tokens, h hidden, nh query heads, nkv key/value heads, d head_dim, V vocab.
use std::collections::HashMap;

use anyhow::{bail, Context, Result};
use serde_json::Value;
use tch::{Device, Kind, Tensor};

use super::causal::{self, CausalLm};
use crate::nn::weights::Weights;
use crate::nn::linear::Linear;
use crate::nn::nf4::Nf4Tensor;
use crate::recipe::Architecture;

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct DecoderConfig {
    pub architecture: Architecture,
    pub vocab_size: i64,
    pub hidden_size: i64,
    pub intermediate_size: i64,
    pub num_hidden_layers: i64,
    pub num_attention_heads: i64,
    pub num_key_value_heads: i64,
    /// Explicit in Qwen3's config (128 for 8B): never derived from hidden / heads there.
    pub head_dim: i64,
    pub rms_norm_eps: f64,
    pub rope_theta: f64,
    /// Llama 3.1's frequency-dependent RoPE scaling (`rope_type: llama3`).
    pub rope_llama3: Option<Llama3Rope>,
    pub max_position_embeddings: i64,
    pub tie_word_embeddings: bool,
    /// Bias on q, k, v (Qwen2 always; Qwen3 and Llama per `attention_bias`, which also adds o).
    pub qkv_bias: bool,
    pub o_bias: bool,
    /// Qwen3's per-head RMSNorm on q and k before RoPE.
    pub qk_norm: bool,
    /// Gemma's two extra norms per layer (pre_feedforward, post_feedforward); only the memory
    /// estimate reads it (Gemma 3 itself is `gemma3::Gemma3`).
    pub sandwich_norms: bool,
    pub initializer_range: f64,
}

/// `rope_type: llama3`: long wavelengths divided by `factor`, short ones kept, a smooth blend
/// between (transformers' `_compute_llama3_parameters`).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Llama3Rope {
    pub factor: f64,
    pub low_freq_factor: f64,
    pub high_freq_factor: f64,
    pub original_max_position_embeddings: f64,
}

fn get_i64(v: &Value, key: &str) -> Result<i64> {
    v.get(key).and_then(Value::as_i64).with_context(|| format!("config.json: `{key}` is missing or not an integer"))
}

fn get_f64_or(v: &Value, key: &str, default: f64) -> f64 {
    v.get(key).and_then(Value::as_f64).unwrap_or(default)
}

impl DecoderConfig {
    pub fn from_json(v: &Value, architecture: Architecture) -> Result<DecoderConfig> {
        let heads = get_i64(v, "num_attention_heads")?;
        let hidden = get_i64(v, "hidden_size")?;
        // transformers 5 writes `rope_parameters: {rope_theta, rope_type}`; 4.x a top-level
        // `rope_theta` and an optional `rope_scaling`.
        let rope_params = v.get("rope_parameters").filter(|r| r.is_object());
        let mut rope_llama3 = None;
        for rs in [v.get("rope_scaling"), rope_params].into_iter().flatten().filter(|r| !r.is_null()) {
            let kind = rs.get("rope_type").or_else(|| rs.get("type")).and_then(Value::as_str).unwrap_or("default");
            match kind {
                "default" => {}
                "llama3" => {
                    let f = |k: &str| rs.get(k).and_then(Value::as_f64).with_context(|| format!("config.json: llama3 RoPE needs `{k}`"));
                    rope_llama3 = Some(Llama3Rope {
                        factor: f("factor")?,
                        low_freq_factor: f("low_freq_factor")?,
                        high_freq_factor: f("high_freq_factor")?,
                        original_max_position_embeddings: f("original_max_position_embeddings")?,
                    });
                }
                other => bail!("config.json: RoPE type `{other}` is not supported yet (plain RoPE and llama3)"),
            }
        }
        let rope_theta = rope_params.and_then(|r| r.get("rope_theta")).and_then(Value::as_f64).unwrap_or_else(|| get_f64_or(v, "rope_theta", 10000.0));
        let attention_bias = v.get("attention_bias").and_then(Value::as_bool).unwrap_or(false);
        let (qkv_bias, o_bias, qk_norm) = match architecture {
            Architecture::Qwen3 => (attention_bias, attention_bias, true),
            Architecture::Qwen2 => (true, false, false),
            Architecture::Llama => (attention_bias, attention_bias, false),
            Architecture::Gemma3 => bail!("Gemma 3 is not built from random weights (model.source: random); load a checkpoint folder (gemma3 or gemma3_text)"),
            other => bail!("{other:?} is not a decoder-only architecture"),
        };
        Ok(DecoderConfig {
            architecture,
            vocab_size: get_i64(v, "vocab_size")?,
            hidden_size: hidden,
            intermediate_size: get_i64(v, "intermediate_size")?,
            num_hidden_layers: get_i64(v, "num_hidden_layers")?,
            num_attention_heads: heads,
            num_key_value_heads: v.get("num_key_value_heads").and_then(Value::as_i64).unwrap_or(heads),
            head_dim: v.get("head_dim").and_then(Value::as_i64).unwrap_or(hidden / heads),
            rms_norm_eps: get_f64_or(v, "rms_norm_eps", 1e-6),
            rope_theta,
            rope_llama3,
            max_position_embeddings: v.get("max_position_embeddings").and_then(Value::as_i64).unwrap_or(32768),
            tie_word_embeddings: v.get("tie_word_embeddings").and_then(Value::as_bool).unwrap_or(false),
            qkv_bias,
            o_bias,
            qk_norm,
            sandwich_norms: false,
            initializer_range: get_f64_or(v, "initializer_range", 0.02),
        })
    }

    /// config.json as transformers writes it for this architecture.
    pub fn to_hf_json(&self, bos: Option<i64>, eos: Option<i64>, pad: Option<i64>, dtype: &str) -> Value {
        let (arch, model_type) = match self.architecture {
            Architecture::Qwen2 => ("Qwen2ForCausalLM", "qwen2"),
            Architecture::Llama => ("LlamaForCausalLM", "llama"),
            _ => ("Qwen3ForCausalLM", "qwen3"),
        };
        let mut v = serde_json::json!({
            "architectures": [arch],
            "model_type": model_type,
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_hidden_layers,
            "num_attention_heads": self.num_attention_heads,
            "num_key_value_heads": self.num_key_value_heads,
            "head_dim": self.head_dim,
            "hidden_act": "silu",
            "rms_norm_eps": self.rms_norm_eps,
            "rope_theta": self.rope_theta,
            "rope_scaling": null,
            "max_position_embeddings": self.max_position_embeddings,
            "tie_word_embeddings": self.tie_word_embeddings,
            "attention_bias": self.architecture != Architecture::Qwen2 && self.qkv_bias,
            "attention_dropout": 0.0,
            "initializer_range": self.initializer_range,
            "use_cache": true,
            "torch_dtype": dtype,
            "bos_token_id": bos,
            "eos_token_id": eos,
            "pad_token_id": pad,
        });
        if let Some(l) = self.rope_llama3 {
            v["rope_scaling"] = serde_json::json!({"rope_type": "llama3", "factor": l.factor, "low_freq_factor": l.low_freq_factor,
                "high_freq_factor": l.high_freq_factor, "original_max_position_embeddings": l.original_max_position_embeddings as i64});
        }
        if self.architecture == Architecture::Qwen3 {
            v["use_sliding_window"] = Value::Bool(false);
            v["sliding_window"] = Value::Null;
        }
        v
    }
}

/// RMSNorm computed in fp32. Qwen/Llama cast back before the weight multiplies; Gemma
/// (`unit_offset`) multiplies by (1 + weight) in fp32 and casts after, as transformers does.
pub struct RmsNorm {
    pub weight: Tensor,
    pub eps: f64,
    pub unit_offset: bool,
}

impl RmsNorm {
    pub fn new(weight: Tensor, eps: f64) -> RmsNorm {
        RmsNorm { weight, eps, unit_offset: false }
    }

    /// Gemma's norm: x / rms(x) · (1 + weight), all in fp32.
    pub fn gemma(weight: Tensor, eps: f64) -> RmsNorm {
        RmsNorm { weight, eps, unit_offset: true }
    }

    /// x: [.., n] → [.., n]
    pub fn forward(&self, x: &Tensor) -> Tensor {
        let kind = x.kind();
        let h = x.to_kind(Kind::Float);
        let var = h.pow_tensor_scalar(2).mean_dim(-1, true, Kind::Float);
        let h = h * (var + self.eps).rsqrt();
        if self.unit_offset {
            (h * (self.weight.to_kind(Kind::Float) + 1.0)).to_kind(kind)
        } else {
            &self.weight * h.to_kind(kind)
        }
    }
}

/// Rotary position embedding in the half-split (`rotate_half`) layout.
pub struct Rope {
    /// [d/2], fp32
    inv_freq: Tensor,
}

impl Rope {
    pub fn new(head_dim: i64, theta: f64, llama3: Option<Llama3Rope>, device: Device) -> Rope {
        let exps = Tensor::arange_start_step(0, head_dim, 2, (Kind::Int64, device)).to_kind(Kind::Float) / head_dim as f64;
        let mut inv_freq = Tensor::from(theta).to_device(device).pow(&exps).reciprocal();
        if let Some(l) = llama3 {
            // transformers' _compute_llama3_parameters, op for op.
            let low_wavelen = l.original_max_position_embeddings / l.low_freq_factor;
            let high_wavelen = l.original_max_position_embeddings / l.high_freq_factor;
            let wavelen = inv_freq.reciprocal() * (2.0 * std::f64::consts::PI);
            let long = wavelen.gt(low_wavelen);
            let scaled = inv_freq.where_self(&long.logical_not(), &(&inv_freq / l.factor));
            let smooth = (wavelen.reciprocal() * l.original_max_position_embeddings - l.low_freq_factor) / (l.high_freq_factor - l.low_freq_factor);
            let smoothed = (smooth.g_mul_scalar(-1.0) + 1.0) * &scaled / l.factor + &smooth * &scaled;
            let medium = wavelen.lt(high_wavelen).logical_not().logical_and(&long.logical_not());
            inv_freq = smoothed.where_self(&medium, &scaled);
        }
        Rope { inv_freq }
    }

    /// `rope_type: linear`: every frequency divided by `factor` (positions interpolated).
    pub fn linear(self, factor: f64) -> Rope {
        Rope { inv_freq: self.inv_freq / factor }
    }

    /// positions: [b, t] → (cos, sin): [b, 1, t, d] in `kind`
    pub fn cos_sin(&self, positions: &Tensor, kind: Kind) -> (Tensor, Tensor) {
        let freqs = positions.to_kind(Kind::Float).unsqueeze(-1) * &self.inv_freq; // [b, t, d/2]
        let emb = Tensor::cat(&[&freqs, &freqs], -1); // [b, t, d]
        (emb.cos().to_kind(kind).unsqueeze(1), emb.sin().to_kind(kind).unsqueeze(1))
    }
}

/// x: [b, n, t, d] → rotated by the angles of (cos, sin)
fn apply_rope(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Tensor {
    let d = x.size()[3];
    let (x1, x2) = (x.narrow(3, 0, d / 2), x.narrow(3, d / 2, d / 2));
    let rotated = Tensor::cat(&[&(-&x2), &x1], 3);
    x * cos + rotated * sin
}

/// Keys and values seen so far, after RoPE and before the GQA repeat: [b, nkv, T, d] each.
#[derive(Default)]
pub struct KvCache {
    pub layers: Vec<Option<(Tensor, Tensor)>>,
}

impl KvCache {
    pub fn new(n_layers: usize) -> KvCache {
        KvCache { layers: (0..n_layers).map(|_| None).collect() }
    }

    pub fn len(&self) -> i64 {
        self.layers.first().and_then(|l| l.as_ref()).map(|(k, _)| k.size()[2]).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

pub struct Attention {
    pub q_proj: Linear,
    pub k_proj: Linear,
    pub v_proj: Linear,
    pub o_proj: Linear,
    pub q_norm: Option<RmsNorm>,
    pub k_norm: Option<RmsNorm>,
    pub n_heads: i64,
    pub n_kv: i64,
    pub head_dim: i64,
    /// Multiplies q·kᵀ: head_dim^-0.5 (Gemma: query_pre_attn_scalar^-0.5).
    pub scale: f64,
}

impl Attention {
    /// x: [b, t, h]; mask: [b, 1, t, T] bool (true = may attend) or None for plain causal.
    pub fn forward(&self, x: &Tensor, cos: &Tensor, sin: &Tensor, mask: Option<&Tensor>, cache: Option<&mut Option<(Tensor, Tensor)>>, train: bool) -> Tensor {
        let (b, t) = (x.size()[0], x.size()[1]);
        let heads = |p: &Linear, n: i64, norm: &Option<RmsNorm>| {
            let y = p.forward(x, train).view([b, t, n, self.head_dim]);
            let y = match norm {
                Some(nm) => nm.forward(&y),
                None => y,
            };
            y.transpose(1, 2) // [b, n, t, d]
        };
        let q = apply_rope(&heads(&self.q_proj, self.n_heads, &self.q_norm), cos, sin);
        let mut k = apply_rope(&heads(&self.k_proj, self.n_kv, &self.k_norm), cos, sin);
        let mut v = heads(&self.v_proj, self.n_kv, &None);
        let had_past = cache.as_ref().is_some_and(|c| c.is_some());
        if let Some(slot) = cache {
            if let Some((pk, pv)) = slot.as_ref() {
                k = Tensor::cat(&[pk, &k], 2);
                v = Tensor::cat(&[pv, &v], 2);
            }
            *slot = Some((k.shallow_clone(), v.shallow_clone()));
        }
        // GQA: each key/value head serves nh/nkv consecutive query heads; SDPA's enable_gqa does
        // that without materialising repeated keys and values (as transformers 5 does).
        let gqa = self.n_heads != self.n_kv;
        let scale = self.scale;
        // Plain causal attention needs no mask tensor; with a cache the causal diagonal is offset,
        // so callers pass an explicit mask (or none for a single new token).
        let causal = mask.is_none() && !had_past && t > 1;
        let out = Tensor::scaled_dot_product_attention(&q, &k, &v, mask, 0.0, causal, scale, gqa); // [b, nh, t, d]
        self.o_proj.forward(&out.transpose(1, 2).reshape([b, t, self.n_heads * self.head_dim]), train)
    }
}

/// The gate's activation: SwiGLU (Qwen, Llama) or GeGLU with tanh-approximated GELU (Gemma's
/// `gelu_pytorch_tanh`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Act {
    Silu,
    GeluTanh,
}

pub struct Mlp {
    pub gate_proj: Linear,
    pub up_proj: Linear,
    pub down_proj: Linear,
    pub act: Act,
}

impl Mlp {
    /// down(act(gate(x)) * up(x))
    pub fn forward(&self, x: &Tensor, train: bool) -> Tensor {
        let g = self.gate_proj.forward(x, train);
        let g = match self.act {
            Act::Silu => g.silu(),
            Act::GeluTanh => g.gelu("tanh"),
        };
        self.down_proj.forward(&(g * self.up_proj.forward(x, train)), train)
    }
}

/// The seven projections LoRA adapts, under their names relative to the layer (the same in every
/// decoder-only family here).
pub fn projections_of<'a>(a: &'a Attention, m: &'a Mlp) -> [(&'static str, &'a Linear); 7] {
    [
        ("self_attn.q_proj", &a.q_proj),
        ("self_attn.k_proj", &a.k_proj),
        ("self_attn.v_proj", &a.v_proj),
        ("self_attn.o_proj", &a.o_proj),
        ("mlp.gate_proj", &m.gate_proj),
        ("mlp.up_proj", &m.up_proj),
        ("mlp.down_proj", &m.down_proj),
    ]
}

pub fn projections_of_mut<'a>(a: &'a mut Attention, m: &'a mut Mlp) -> [(&'static str, &'a mut Linear); 7] {
    [
        ("self_attn.q_proj", &mut a.q_proj),
        ("self_attn.k_proj", &mut a.k_proj),
        ("self_attn.v_proj", &mut a.v_proj),
        ("self_attn.o_proj", &mut a.o_proj),
        ("mlp.gate_proj", &mut m.gate_proj),
        ("mlp.up_proj", &mut m.up_proj),
        ("mlp.down_proj", &mut m.down_proj),
    ]
}

pub struct DecoderLayer {
    pub self_attn: Attention,
    pub mlp: Mlp,
    pub input_layernorm: RmsNorm,
    pub post_attention_layernorm: RmsNorm,
}

impl DecoderLayer {
    /// x: [b, t, h] → [b, t, h]
    pub fn forward(&self, x: &Tensor, cos: &Tensor, sin: &Tensor, mask: Option<&Tensor>, cache: Option<&mut Option<(Tensor, Tensor)>>, train: bool) -> Tensor {
        let h = x + self.self_attn.forward(&self.input_layernorm.forward(x), cos, sin, mask, cache, train);
        &h + self.mlp.forward(&self.post_attention_layernorm.forward(&h), train)
    }
}

pub struct Qwen3 {
    pub cfg: DecoderConfig,
    /// [V, h]
    pub embed_tokens: Tensor,
    pub layers: Vec<DecoderLayer>,
    pub norm: RmsNorm,
    /// [V, h]; the embedding itself when tied.
    pub lm_head: Tensor,
    pub rope: Rope,
    pub kind: Kind,
    pub device: Device,
    /// Labelled tokens per chunk of the head's loss (`training.loss_chunk_tokens`; 0: all at once).
    pub loss_chunk: usize,
}

/// The positions of a left-padded batch: count of real tokens before each, as transformers'
/// generate derives them from the attention mask. mask2d: [b, T] (1 real, 0 pad) → [b, T]
pub fn positions_from_mask(mask2d: &Tensor) -> Tensor {
    let pos = mask2d.to_kind(Kind::Int64).cumsum(-1, Kind::Int64) - 1;
    pos.masked_fill(&mask2d.eq(0), 1)
}

/// The attention mask for `t` new queries after `past` cached keys: causal, keys limited to real
/// tokens, and the diagonal always allowed so a pad query never sees an empty row (its output is
/// never used). mask2d: [b, past + t] → [b, 1, t, past + t] bool
pub fn attention_mask(mask2d: &Tensor, past: i64, t: i64) -> Tensor {
    let total = past + t;
    let device = mask2d.device();
    let q = Tensor::arange_start(past, total, (Kind::Int64, device)).unsqueeze(1); // [t, 1]
    let k = Tensor::arange(total, (Kind::Int64, device)).unsqueeze(0); // [1, T]
    let causal = k.le_tensor(&q); // [t, T]
    let diag = k.eq_tensor(&q);
    let keys = mask2d.ne(0).unsqueeze(1).unsqueeze(1); // [b, 1, 1, T]
    causal.unsqueeze(0).unsqueeze(0).logical_and(&keys).logical_or(&diag.unsqueeze(0).unsqueeze(0))
}

impl Qwen3 {
    /// Builds the model from checkpoint tensors (consumed from `w`); names as in the HF checkpoint.
    pub fn from_weights(cfg: DecoderConfig, w: &mut Weights, kind: Kind, device: Device) -> Result<Qwen3> {
        Self::from_parts(cfg, w, &mut HashMap::new(), kind, kind, device)
    }

    /// As `from_weights`, with the projections found in `quantized` (by checkpoint name, e.g.
    /// `model.layers.0.mlp.up_proj.weight`) stored in 4 bits.
    /// `compute` is the dtype the 4-bit products run in (bnb_4bit_compute_dtype).
    pub fn from_parts(cfg: DecoderConfig, w: &mut Weights, quantized: &mut HashMap<String, Nf4Tensor>, compute: Kind, kind: Kind, device: Device) -> Result<Qwen3> {
        let mut take = |name: &str| -> Result<Tensor> {
            w.remove(name).with_context(|| format!("the checkpoint has no tensor `{name}`"))
        };
        let embed_tokens = take("model.embed_tokens.weight")?;
        if embed_tokens.size() != [cfg.vocab_size, cfg.hidden_size] {
            bail!("model.embed_tokens.weight has shape {:?}, config says [{}, {}]", embed_tokens.size(), cfg.vocab_size, cfg.hidden_size);
        }
        let mut layers = Vec::with_capacity(cfg.num_hidden_layers as usize);
        for i in 0..cfg.num_hidden_layers {
            let p = format!("model.layers.{i}");
            let mut lin = |name: &str, bias: bool| -> Result<Linear> {
                let bias = if bias { Some(take(&format!("{p}.{name}.bias"))?) } else { None };
                let weight_name = format!("{p}.{name}.weight");
                match quantized.remove(&weight_name) {
                    Some(q) => Ok(Linear::quantized(q, compute, bias)),
                    None => Ok(Linear::new(take(&weight_name)?, bias)),
                }
            };
            let self_attn = Attention {
                q_proj: lin("self_attn.q_proj", cfg.qkv_bias)?,
                k_proj: lin("self_attn.k_proj", cfg.qkv_bias)?,
                v_proj: lin("self_attn.v_proj", cfg.qkv_bias)?,
                o_proj: lin("self_attn.o_proj", cfg.o_bias)?,
                q_norm: None,
                k_norm: None,
                n_heads: cfg.num_attention_heads,
                n_kv: cfg.num_key_value_heads,
                head_dim: cfg.head_dim,
                scale: (cfg.head_dim as f64).powf(-0.5),
            };
            let mlp = Mlp { gate_proj: lin("mlp.gate_proj", false)?, up_proj: lin("mlp.up_proj", false)?, down_proj: lin("mlp.down_proj", false)?, act: Act::Silu };
            let mut layer = DecoderLayer {
                self_attn,
                mlp,
                input_layernorm: RmsNorm::new(take(&format!("{p}.input_layernorm.weight"))?, cfg.rms_norm_eps),
                post_attention_layernorm: RmsNorm::new(take(&format!("{p}.post_attention_layernorm.weight"))?, cfg.rms_norm_eps),
            };
            if cfg.qk_norm {
                layer.self_attn.q_norm = Some(RmsNorm::new(take(&format!("{p}.self_attn.q_norm.weight"))?, cfg.rms_norm_eps));
                layer.self_attn.k_norm = Some(RmsNorm::new(take(&format!("{p}.self_attn.k_norm.weight"))?, cfg.rms_norm_eps));
            }
            layers.push(layer);
        }
        let norm = RmsNorm::new(take("model.norm.weight")?, cfg.rms_norm_eps);
        let lm_head = if cfg.tie_word_embeddings {
            // Some tied checkpoints still store a copy; it is the same tensor.
            w.remove("lm_head.weight");
            embed_tokens.shallow_clone()
        } else {
            take("lm_head.weight")?
        };
        let rope = Rope::new(cfg.head_dim, cfg.rope_theta, cfg.rope_llama3, device);
        Ok(Qwen3 { cfg, embed_tokens, layers, norm, lm_head, rope, kind, device, loss_chunk: crate::nn::head::DEFAULT_LOSS_CHUNK })
    }

    /// transformers' initialisation: N(0, initializer_range) for projections and embeddings,
    /// ones for norms, zeros for biases. Returns checkpoint-named tensors.
    pub fn random_weights(cfg: &DecoderConfig, kind: Kind, device: Device) -> Weights {
        let mut w = Weights::new();
        Self::visit_random_weights(cfg, kind, device, &mut |name, t| {
            w.insert(name, t);
            Ok(())
        })
        .expect("collecting tensors cannot fail");
        w
    }

    /// `random_weights` one tensor at a time, in checkpoint order (the same draws from the same
    /// seed), handing each to `f` as soon as it exists: a caller can quantize the projections as
    /// they are made, so the 16-bit model never exists whole (QLoRA on the GPU with random
    /// weights). Each tensor is drawn in float32 on `device` and converted to `kind` there: the
    /// largest transient is one float32 tensor (the embedding), never a CPU copy of the model.
    pub fn visit_random_weights(cfg: &DecoderConfig, kind: Kind, device: Device, f: &mut dyn FnMut(String, Tensor) -> Result<()>) -> Result<()> {
        let std = cfg.initializer_range;
        let normal = |shape: &[i64]| (Tensor::randn(shape, (Kind::Float, device)) * std).to_kind(kind);
        let (h, d) = (cfg.hidden_size, cfg.head_dim);
        let (nh, nkv, ff) = (cfg.num_attention_heads, cfg.num_key_value_heads, cfg.intermediate_size);
        f("model.embed_tokens.weight".into(), normal(&[cfg.vocab_size, h]))?;
        for i in 0..cfg.num_hidden_layers {
            let p = format!("model.layers.{i}");
            for (name, out, inp, bias) in [
                ("self_attn.q_proj", nh * d, h, cfg.qkv_bias),
                ("self_attn.k_proj", nkv * d, h, cfg.qkv_bias),
                ("self_attn.v_proj", nkv * d, h, cfg.qkv_bias),
                ("self_attn.o_proj", h, nh * d, cfg.o_bias),
                ("mlp.gate_proj", ff, h, false),
                ("mlp.up_proj", ff, h, false),
                ("mlp.down_proj", h, ff, false),
            ] {
                f(format!("{p}.{name}.weight"), normal(&[out, inp]))?;
                if bias {
                    f(format!("{p}.{name}.bias"), Tensor::zeros([out], (kind, device)))?;
                }
            }
            for name in ["input_layernorm", "post_attention_layernorm"] {
                f(format!("{p}.{name}.weight"), Tensor::ones([h], (kind, device)))?;
            }
            if cfg.qk_norm {
                f(format!("{p}.self_attn.q_norm.weight"), Tensor::ones([d], (kind, device)))?;
                f(format!("{p}.self_attn.k_norm.weight"), Tensor::ones([d], (kind, device)))?;
            }
        }
        f("model.norm.weight".into(), Tensor::ones([h], (kind, device)))?;
        if !cfg.tie_word_embeddings {
            f("lm_head.weight".into(), normal(&[cfg.vocab_size, h]))?;
        }
        Ok(())
    }

    /// Every base tensor under its checkpoint name (the tied head only once, as transformers saves);
    /// 4-bit projections dequantized, for export.
    pub fn named_weights(&self) -> Vec<(String, Tensor)> {
        self.base_tensors(true)
    }

    /// The base tensors held in 16 or 32 bits (what `freeze_base` must mark), without the 4-bit ones.
    pub fn dense_weights(&self) -> Vec<(String, Tensor)> {
        self.base_tensors(false)
    }

    fn base_tensors(&self, dequantize: bool) -> Vec<(String, Tensor)> {
        let mut out = vec![("model.embed_tokens.weight".to_string(), self.embed_tokens.shallow_clone())];
        for (i, l) in self.layers.iter().enumerate() {
            let p = format!("model.layers.{i}");
            for (name, lin) in self.linears_of(l) {
                match lin.dense_weight() {
                    Some(w) => out.push((format!("{p}.{name}.weight"), w.shallow_clone())),
                    None if dequantize => out.push((format!("{p}.{name}.weight"), lin.weight())),
                    None => {}
                }
                if let Some(b) = &lin.bias {
                    out.push((format!("{p}.{name}.bias"), b.shallow_clone()));
                }
            }
            out.push((format!("{p}.input_layernorm.weight"), l.input_layernorm.weight.shallow_clone()));
            out.push((format!("{p}.post_attention_layernorm.weight"), l.post_attention_layernorm.weight.shallow_clone()));
            if let (Some(q), Some(k)) = (&l.self_attn.q_norm, &l.self_attn.k_norm) {
                out.push((format!("{p}.self_attn.q_norm.weight"), q.weight.shallow_clone()));
                out.push((format!("{p}.self_attn.k_norm.weight"), k.weight.shallow_clone()));
            }
        }
        out.push(("model.norm.weight".into(), self.norm.weight.shallow_clone()));
        if !self.cfg.tie_word_embeddings {
            out.push(("lm_head.weight".into(), self.lm_head.shallow_clone()));
        }
        out
    }

    /// The seven projections of a layer with their checkpoint-relative names.
    pub fn linears_of<'a>(&self, l: &'a DecoderLayer) -> [(&'static str, &'a Linear); 7] {
        projections_of(&l.self_attn, &l.mlp)
    }

    pub fn linears_of_mut(l: &mut DecoderLayer) -> [(&'static str, &mut Linear); 7] {
        projections_of_mut(&mut l.self_attn, &mut l.mlp)
    }

    /// ids: [b, t], positions: [b, t] → hidden states after the final norm: [b, t, h].
    /// mask2d: [b, past + t] (1 real, 0 pad), None when no row is padded.
    pub fn hidden(&self, ids: &Tensor, positions: &Tensor, mask2d: Option<&Tensor>, cache: Option<&mut KvCache>, train: bool) -> Tensor {
        causal::hidden(self, ids, positions, mask2d, cache, train)
    }

    /// hidden: [.., h] → logits [.., V] in fp32
    pub fn logits(&self, hidden: &Tensor) -> Tensor {
        causal::logits(self, hidden)
    }

    /// Full-sequence logits for right-padded ids (training layout): [b, t] → [b, t, V]
    pub fn forward(&self, ids: &Tensor) -> Tensor {
        causal::forward(self, ids, false)
    }

    /// Full-sequence logits with dropout active (training layout): [b, t] → [b, t, V]
    pub fn forward_train(&self, ids: &Tensor) -> Tensor {
        causal::forward(self, ids, true)
    }

    /// The causal-LM loss summed over labelled tokens, and their count (see `causal::loss_sum`).
    pub fn loss_sum(&self, ids: &Tensor, labels: &Tensor, train: bool) -> Result<(Tensor, i64)> {
        causal::loss_sum(self, ids, labels, train)
    }

    /// Gradient checkpointing (see `causal::loss_sum_backward_checkpointed`).
    pub fn loss_sum_backward_checkpointed(&self, ids: &Tensor, labels: &Tensor, scale: f64) -> Result<(f64, i64)> {
        causal::loss_sum_backward_checkpointed(self, ids, labels, scale)
    }

    /// Logits of the last position of each row, for generation. ids: [b, t] → [b, V]
    pub fn step(&self, ids: &Tensor, positions: &Tensor, mask2d: Option<&Tensor>, cache: &mut KvCache) -> Tensor {
        causal::step(self, ids, positions, mask2d, cache)
    }
}

impl CausalLm for Qwen3 {
    /// RoPE (cos, sin) [b, 1, t, d] and the padding mask [b, 1, t, T] when a row is padded.
    type Ctx = (Tensor, Tensor, Option<Tensor>);
    fn device(&self) -> Device {
        self.device
    }
    fn hidden_size(&self) -> i64 {
        self.cfg.hidden_size
    }
    fn n_layers(&self) -> usize {
        self.layers.len()
    }
    fn embed(&self, ids: &Tensor) -> Tensor {
        self.embed_tokens.embedding_renorm_ok(ids)
    }
    fn embed_trains(&self) -> bool {
        self.embed_tokens.requires_grad()
    }
    fn context(&self, positions: &Tensor, mask2d: Option<&Tensor>, past: i64) -> Self::Ctx {
        let (cos, sin) = self.rope.cos_sin(positions, self.kind);
        let mask = mask2d.map(|m| attention_mask(m, past, positions.size()[1]));
        (cos, sin, mask)
    }
    fn layer(&self, i: usize, x: &Tensor, ctx: &Self::Ctx, cache: Option<&mut Option<(Tensor, Tensor)>>, train: bool) -> Tensor {
        self.layers[i].forward(x, &ctx.0, &ctx.1, ctx.2.as_ref(), cache, train)
    }
    fn final_norm(&self, x: &Tensor) -> Tensor {
        self.norm.forward(x)
    }
    fn lm_head(&self) -> &Tensor {
        &self.lm_head
    }
    fn loss_chunk(&self) -> usize {
        self.loss_chunk
    }
}

pub(crate) trait EmbeddingExt {
    fn embedding_renorm_ok(&self, ids: &Tensor) -> Tensor;
}

impl EmbeddingExt for Tensor {
    /// Embedding lookup: weight [V, h], ids [b, t] → [b, t, h]
    fn embedding_renorm_ok(&self, ids: &Tensor) -> Tensor {
        Tensor::embedding(self, ids, -1, false, false)
    }
}
