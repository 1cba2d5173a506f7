//! The T5 encoder-decoder (transformers' modeling_t5), in tch: original T5 (ReLU feed-forward,
//! head tied to `shared`, decoder output scaled by d_model^-0.5) and T5 v1.1 / flan-t5 (gated-gelu
//! feed-forward, own `lm_head`, no scaling). Weight names mirror the checkpoint's; every
//! projection is a [`Linear`] so LoRA attaches to T5 the way it does to Qwen3 (targets q, k, v, o,
//! wi, wi_0, wi_1, wo).
//!
//! Shapes: b batch, s encoder tokens, t decoder tokens (T with the cache), d d_model,
//! nh heads, dk d_kv, f d_ff, V vocab, B buckets.
use anyhow::{bail, Context, Result};
use serde_json::Value;
use tch::{Device, IndexOp, Kind, Tensor};

use crate::nn::weights::Weights;
use crate::nn::linear::Linear;

/// The feed-forward activation, as transformers derives it from `feed_forward_proj`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Act {
    Relu,
    /// The tanh approximation (transformers' `gelu_new`; flan-t5's `gated-gelu` means this).
    GeluNew,
    /// The exact erf form.
    Gelu,
    Silu,
}

impl Act {
    fn apply(self, x: &Tensor) -> Tensor {
        match self {
            Act::Relu => x.relu(),
            // 0.5 x (1 + tanh(√(2/π) (x + 0.044715 x³))), written out as transformers'
            // NewGELUActivation does (torch's gelu(tanh) differs in the last bits).
            Act::GeluNew => {
                let inner = (x + x.pow_tensor_scalar(3.0) * 0.044715) * (2.0 / std::f64::consts::PI).sqrt();
                x * 0.5 * (inner.tanh() + 1.0)
            }
            Act::Gelu => x.gelu("none"),
            Act::Silu => x.silu(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct T5Config {
    pub vocab_size: i64,
    pub d_model: i64,
    pub d_kv: i64,
    pub d_ff: i64,
    /// Encoder blocks.
    pub num_layers: i64,
    /// Decoder blocks (`num_layers` when the config omits it).
    pub num_decoder_layers: i64,
    pub num_heads: i64,
    pub relative_attention_num_buckets: i64,
    pub relative_attention_max_distance: i64,
    pub dropout_rate: f64,
    pub layer_norm_epsilon: f64,
    pub initializer_factor: f64,
    /// As written in the config ("relu", "gated-gelu", ...); `is_gated_act` and `act` follow from it.
    pub feed_forward_proj: String,
    pub is_gated_act: bool,
    pub act: Act,
    /// Multiply the decoder output by d_model^-0.5 before the head. Original T5 does, v1.1 does
    /// not. transformers 5 reads it from `scale_decoder_outputs` when saved, else from the saved
    /// `tie_word_embeddings` (scale unless it is `false`), because 4.x configs used that flag for
    /// both tying and scaling; 5 then forces `tie_word_embeddings = true` and ties the head only
    /// when the checkpoint has no distinct `lm_head.weight`.
    pub scale_decoder_outputs: bool,
    pub decoder_start_token_id: i64,
    pub pad_token_id: i64,
    pub eos_token_id: i64,
}

fn get_i64(v: &Value, key: &str) -> Result<i64> {
    v.get(key).and_then(Value::as_i64).with_context(|| format!("config.json: `{key}` is missing or not an integer"))
}

fn i64_or(v: &Value, key: &str, default: i64) -> i64 {
    v.get(key).and_then(Value::as_i64).unwrap_or(default)
}

fn f64_or(v: &Value, key: &str, default: f64) -> f64 {
    v.get(key).and_then(Value::as_f64).unwrap_or(default)
}

impl T5Config {
    /// Reads an HF T5 config.json; defaults are T5Config's.
    pub fn from_json(v: &Value) -> Result<T5Config> {
        let num_layers = i64_or(v, "num_layers", 6);
        let feed_forward_proj = v.get("feed_forward_proj").and_then(Value::as_str).unwrap_or("relu").to_string();
        let parts: Vec<&str> = feed_forward_proj.split('-').collect();
        let is_gated_act = parts[0] == "gated";
        if parts.len() > 2 || (parts.len() == 2 && !is_gated_act) {
            bail!("config.json: `feed_forward_proj` `{feed_forward_proj}` is not of the form `gated-ACT` or `ACT`");
        }
        // transformers maps the legacy "gated-gelu" to gelu_new; a plain "gelu" is the erf form.
        let act = match (feed_forward_proj.as_str(), *parts.last().unwrap()) {
            ("gated-gelu", _) | (_, "gelu_new") => Act::GeluNew,
            (_, "relu") => Act::Relu,
            (_, "gelu") => Act::Gelu,
            (_, "silu") => Act::Silu,
            (_, other) => bail!("config.json: T5 activation `{other}` is not supported (relu, gelu, gelu_new, silu)"),
        };
        let scale_decoder_outputs = match v.get("scale_decoder_outputs").and_then(Value::as_bool) {
            Some(s) => s,
            None => v.get("tie_word_embeddings").and_then(Value::as_bool) != Some(false),
        };
        let cfg = T5Config {
            vocab_size: get_i64(v, "vocab_size")?,
            d_model: i64_or(v, "d_model", 512),
            d_kv: i64_or(v, "d_kv", 64),
            d_ff: i64_or(v, "d_ff", 2048),
            num_layers,
            num_decoder_layers: v.get("num_decoder_layers").and_then(Value::as_i64).unwrap_or(num_layers),
            num_heads: i64_or(v, "num_heads", 8),
            relative_attention_num_buckets: i64_or(v, "relative_attention_num_buckets", 32),
            relative_attention_max_distance: i64_or(v, "relative_attention_max_distance", 128),
            dropout_rate: f64_or(v, "dropout_rate", 0.1),
            layer_norm_epsilon: f64_or(v, "layer_norm_epsilon", 1e-6),
            initializer_factor: f64_or(v, "initializer_factor", 1.0),
            feed_forward_proj,
            is_gated_act,
            act,
            scale_decoder_outputs,
            decoder_start_token_id: i64_or(v, "decoder_start_token_id", 0),
            pad_token_id: i64_or(v, "pad_token_id", 0),
            eos_token_id: i64_or(v, "eos_token_id", 1),
        };
        if cfg.num_layers < 1 || cfg.num_decoder_layers < 1 || cfg.num_heads < 1 || cfg.relative_attention_num_buckets < 2 {
            bail!("config.json: T5 needs at least one encoder and decoder block, one head and two buckets");
        }
        Ok(cfg)
    }

    /// config.json as transformers 5 writes it. `tie_word_embeddings` carries the scaling too, so
    /// transformers 4.x (which reads scaling and tying from it) loads the folder the same way:
    /// the two published variants tie exactly when they scale.
    pub fn to_hf_json(&self, dtype: &str) -> Value {
        serde_json::json!({
            "architectures": ["T5ForConditionalGeneration"],
            "model_type": "t5",
            "is_encoder_decoder": true,
            "vocab_size": self.vocab_size,
            "d_model": self.d_model,
            "d_kv": self.d_kv,
            "d_ff": self.d_ff,
            "num_layers": self.num_layers,
            "num_decoder_layers": self.num_decoder_layers,
            "num_heads": self.num_heads,
            "relative_attention_num_buckets": self.relative_attention_num_buckets,
            "relative_attention_max_distance": self.relative_attention_max_distance,
            "dropout_rate": self.dropout_rate,
            "layer_norm_epsilon": self.layer_norm_epsilon,
            "initializer_factor": self.initializer_factor,
            "feed_forward_proj": self.feed_forward_proj,
            "is_gated_act": self.is_gated_act,
            "dense_act_fn": match self.act { Act::Relu => "relu", Act::GeluNew => "gelu_new", Act::Gelu => "gelu", Act::Silu => "silu" },
            "scale_decoder_outputs": self.scale_decoder_outputs,
            "tie_word_embeddings": self.scale_decoder_outputs,
            "decoder_start_token_id": self.decoder_start_token_id,
            "pad_token_id": self.pad_token_id,
            "eos_token_id": self.eos_token_id,
            "use_cache": true,
            "dtype": dtype,
        })
    }
}

/// T5's RMS norm: no mean subtraction, no bias; the variance in fp32, the normalised states cast
/// to the weight's kind when that is half precision (as transformers does).
pub struct T5LayerNorm {
    /// [d]
    pub weight: Tensor,
    pub eps: f64,
}

impl T5LayerNorm {
    /// x: [.., d] → [.., d]
    pub fn forward(&self, x: &Tensor) -> Tensor {
        let var = x.to_kind(Kind::Float).pow_tensor_scalar(2).mean_dim(-1, true, Kind::Float);
        let h = x * (var + self.eps).rsqrt();
        let h = if matches!(self.weight.kind(), Kind::Half | Kind::BFloat16) { h.to_kind(self.weight.kind()) } else { h };
        &self.weight * h
    }
}

/// 0 where `allowed`, the kind's lowest value elsewhere: added to the scores (with the position
/// bias, once per stack) as transformers does. allowed: bool [..] → [..] in `kind`
fn additive_mask(allowed: &Tensor, kind: Kind) -> Tensor {
    let lowest = if kind == Kind::Float { f32::MIN as f64 } else if kind == Kind::BFloat16 { -3.3895313892515355e38 } else { -65504.0 };
    allowed.logical_not().to_kind(kind) * lowest
}

/// transformers' `_relative_position_bucket`: half the buckets exact offsets, half logarithmic
/// up to `max_distance`; the decoder (unidirectional) only looks back, the encoder both ways.
/// relative_position = key position - query position, i64 [..] → bucket ids i64 [..]
pub fn relative_position_bucket(relative_position: &Tensor, bidirectional: bool, num_buckets: i64, max_distance: i64) -> Tensor {
    let mut nb = num_buckets;
    let (mut buckets, rel) = if bidirectional {
        nb /= 2;
        (relative_position.gt(0).to_kind(Kind::Int64) * nb, relative_position.abs())
    } else {
        (relative_position.zeros_like(), -relative_position.clamp_max(0))
    };
    let max_exact = nb / 2;
    let is_small = rel.lt(max_exact);
    // Computed in fp32 like transformers, so the bucket edges fall on the same positions.
    let large = (rel.to_kind(Kind::Float) / max_exact as f64).log() / (max_distance as f64 / max_exact as f64).ln() * (nb - max_exact) as f64;
    let large = (large.to_kind(Kind::Int64) + max_exact).clamp_max(nb - 1);
    buckets += rel.where_self(&is_small, &large);
    buckets
}

/// Self- or cross-attention without the 1/√dk scaling (T5 folds it into the initialisation).
pub struct T5Attention {
    pub q: Linear,
    pub k: Linear,
    pub v: Linear,
    pub o: Linear,
    /// [B, nh]; only in the first block of each stack, whose bias every block then reuses.
    pub relative_attention_bias: Option<Tensor>,
    n_heads: i64,
    d_kv: i64,
}

impl T5Attention {
    /// The position bias for `t` queries after `past` cached positions over `total` keys:
    /// [1, nh, t, total], in the bias weight's kind.
    fn compute_bias(&self, t: i64, total: i64, past: i64, bidirectional: bool, cfg: &T5Config) -> Tensor {
        let w = self.relative_attention_bias.as_ref().expect("compute_bias on a block without relative_attention_bias");
        let device = w.device();
        let context = Tensor::arange_start(past, past + t, (Kind::Int64, device)).unsqueeze(1); // [t, 1]
        let memory = Tensor::arange(total, (Kind::Int64, device)).unsqueeze(0); // [1, total]
        let buckets = relative_position_bucket(&(memory - context), bidirectional, cfg.relative_attention_num_buckets, cfg.relative_attention_max_distance); // [t, total]
        Tensor::embedding(w, &buckets, -1, false, false).permute([2, 0, 1]).unsqueeze(0) // [1, nh, t, total]
    }

    /// x: [b, t, d] → [b, nh, t, dk]
    fn heads(&self, p: &Linear, x: &Tensor, train: bool) -> Tensor {
        let (b, t) = (x.size()[0], x.size()[1]);
        p.forward(x, train).view([b, t, self.n_heads, self.d_kv]).transpose(1, 2)
    }

    /// x: [b, t, d]; `kv` None for self-attention, else the encoder output [b, s, d]; bias: the
    /// position bias with the mask added (`additive_mask`), broadcastable to [b, nh, t, T]. With a cache slot, self-attention appends this step's
    /// keys/values to it and cross-attention computes them once and reuses them.
    #[allow(clippy::too_many_arguments)]
    fn forward(&self, x: &Tensor, kv: Option<&Tensor>, bias: &Tensor, cache: Option<&mut Option<(Tensor, Tensor)>>, dropout: f64, train: bool) -> Tensor {
        let (b, t) = (x.size()[0], x.size()[1]);
        let q = self.heads(&self.q, x, train); // [b, nh, t, dk]
        let (k, v) = match (kv, cache) {
            (Some(_), Some(Some((k, v)))) => (k.shallow_clone(), v.shallow_clone()),
            (Some(enc), slot) => {
                let kv = (self.heads(&self.k, enc, train), self.heads(&self.v, enc, train));
                if let Some(slot) = slot {
                    *slot = Some((kv.0.shallow_clone(), kv.1.shallow_clone()));
                }
                kv
            }
            (None, slot) => {
                let (mut k, mut v) = (self.heads(&self.k, x, train), self.heads(&self.v, x, train));
                if let Some(slot) = slot {
                    if let Some((pk, pv)) = slot.as_ref() {
                        k = Tensor::cat(&[pk, &k], 2);
                        v = Tensor::cat(&[pv, &v], 2);
                    }
                    *slot = Some((k.shallow_clone(), v.shallow_clone()));
                }
                (k, v)
            }
        }; // [b, nh, T, dk]
        // Eager attention as transformers' reference path: scores + (bias + mask), softmax in fp32.
        // (SDPA would need a gradient for a float mask to train the relative bias.)
        let scores = q.matmul(&k.transpose(2, 3)) + bias; // [b, nh, t, T]
        let mut probs = scores.softmax(-1, Kind::Float).to_kind(q.kind());
        if train && dropout > 0.0 {
            probs = probs.dropout(dropout, true);
        }
        let out = probs.matmul(&v); // [b, nh, t, dk]
        self.o.forward(&out.transpose(1, 2).reshape([b, t, self.n_heads * self.d_kv]), train)
    }
}

/// The feed-forward block `DenseReluDense`: wo(act(wi x)) or, gated, wo(act(wi_0 x) * wi_1 x).
pub enum DenseReluDense {
    Plain { wi: Linear, wo: Linear },
    Gated { wi_0: Linear, wi_1: Linear, wo: Linear },
}

impl DenseReluDense {
    /// x: [.., d] → [.., d]
    fn forward(&self, x: &Tensor, act: Act, dropout: f64, train: bool) -> Tensor {
        let (h, wo) = match self {
            DenseReluDense::Plain { wi, wo } => (act.apply(&wi.forward(x, train)), wo),
            DenseReluDense::Gated { wi_0, wi_1, wo } => (act.apply(&wi_0.forward(x, train)) * wi_1.forward(x, train), wo),
        }; // [.., f]
        let h = if train && dropout > 0.0 { h.dropout(dropout, true) } else { h };
        wo.forward(&h, train)
    }
}

/// One block: `layer.0` self-attention, (decoder) `layer.1` cross-attention, then the
/// feed-forward (`layer.1` in the encoder, `layer.2` in the decoder); each pre-norm + residual.
pub struct T5Block {
    pub self_attention: T5Attention,
    pub self_attention_norm: T5LayerNorm,
    /// Decoder only: `EncDecAttention` and its norm.
    pub cross_attention: Option<(T5Attention, T5LayerNorm)>,
    pub ff: DenseReluDense,
    pub ff_norm: T5LayerNorm,
}

pub struct T5Stack {
    pub block: Vec<T5Block>,
    pub final_layer_norm: T5LayerNorm,
    pub is_decoder: bool,
}

/// Decoder keys/values kept between generation steps: per block, self-attention's (growing by one
/// position per step) and cross-attention's (computed from the encoder output on the first step).
/// Each [b, nh, T, dk].
pub struct T5Cache {
    pub self_attention: Vec<Option<(Tensor, Tensor)>>,
    pub cross_attention: Vec<Option<(Tensor, Tensor)>>,
}

impl T5Cache {
    pub fn new(n_decoder_layers: usize) -> T5Cache {
        T5Cache { self_attention: (0..n_decoder_layers).map(|_| None).collect(), cross_attention: (0..n_decoder_layers).map(|_| None).collect() }
    }

    /// Decoder positions seen so far.
    pub fn len(&self) -> i64 {
        self.self_attention.first().and_then(|l| l.as_ref()).map(|(k, _)| k.size()[2]).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

pub struct T5 {
    pub cfg: T5Config,
    /// [V, d]: the token embedding of both stacks (and the head when tied).
    pub shared: Tensor,
    pub encoder: T5Stack,
    pub decoder: T5Stack,
    /// [V, d]; None when the head is `shared` itself (original T5).
    pub lm_head: Option<Tensor>,
    pub kind: Kind,
    pub device: Device,
    /// Labelled tokens per chunk of the head's loss (`training.loss_chunk_tokens`; 0: all at once).
    pub loss_chunk: usize,
}

/// transformers' `_shift_right`: the decoder inputs for `labels` are the start token followed by
/// the labels but the last, with -100 replaced by pad. labels: [b, t] → [b, t]
pub fn shift_right(labels: &Tensor, decoder_start_token_id: i64, pad_token_id: i64) -> Tensor {
    let (b, t) = (labels.size()[0], labels.size()[1]);
    let start = Tensor::full([b, 1], decoder_start_token_id, (Kind::Int64, labels.device()));
    let shifted = Tensor::cat(&[start, labels.narrow(1, 0, t - 1).to_kind(Kind::Int64)], 1);
    shifted.masked_fill(&shifted.eq(-100), pad_token_id)
}

/// (name relative to the block, Linear) for every projection of a block, in checkpoint order.
fn block_linears(blk: &T5Block, is_decoder: bool) -> Vec<(String, &Linear)> {
    let a = &blk.self_attention;
    let mut out = vec![
        ("layer.0.SelfAttention.q".to_string(), &a.q),
        ("layer.0.SelfAttention.k".to_string(), &a.k),
        ("layer.0.SelfAttention.v".to_string(), &a.v),
        ("layer.0.SelfAttention.o".to_string(), &a.o),
    ];
    if let Some((c, _)) = &blk.cross_attention {
        out.extend([
            ("layer.1.EncDecAttention.q".to_string(), &c.q),
            ("layer.1.EncDecAttention.k".to_string(), &c.k),
            ("layer.1.EncDecAttention.v".to_string(), &c.v),
            ("layer.1.EncDecAttention.o".to_string(), &c.o),
        ]);
    }
    let ff = if is_decoder { "layer.2.DenseReluDense" } else { "layer.1.DenseReluDense" };
    match &blk.ff {
        DenseReluDense::Plain { wi, wo } => out.extend([(format!("{ff}.wi"), wi), (format!("{ff}.wo"), wo)]),
        DenseReluDense::Gated { wi_0, wi_1, wo } => out.extend([(format!("{ff}.wi_0"), wi_0), (format!("{ff}.wi_1"), wi_1), (format!("{ff}.wo"), wo)]),
    }
    out
}

fn block_linears_mut(blk: &mut T5Block, is_decoder: bool) -> Vec<(String, &mut Linear)> {
    let a = &mut blk.self_attention;
    let mut out = vec![
        ("layer.0.SelfAttention.q".to_string(), &mut a.q),
        ("layer.0.SelfAttention.k".to_string(), &mut a.k),
        ("layer.0.SelfAttention.v".to_string(), &mut a.v),
        ("layer.0.SelfAttention.o".to_string(), &mut a.o),
    ];
    if let Some((c, _)) = &mut blk.cross_attention {
        out.extend([
            ("layer.1.EncDecAttention.q".to_string(), &mut c.q),
            ("layer.1.EncDecAttention.k".to_string(), &mut c.k),
            ("layer.1.EncDecAttention.v".to_string(), &mut c.v),
            ("layer.1.EncDecAttention.o".to_string(), &mut c.o),
        ]);
    }
    let ff = if is_decoder { "layer.2.DenseReluDense" } else { "layer.1.DenseReluDense" };
    match &mut blk.ff {
        DenseReluDense::Plain { wi, wo } => out.extend([(format!("{ff}.wi"), wi), (format!("{ff}.wo"), wo)]),
        DenseReluDense::Gated { wi_0, wi_1, wo } => out.extend([(format!("{ff}.wi_0"), wi_0), (format!("{ff}.wi_1"), wi_1), (format!("{ff}.wo"), wo)]),
    }
    out
}

/// Names and shapes of every checkpoint tensor, in the order `random_weights` draws them, with
/// the standard deviation of transformers' `_init_weights` (None: a norm, initialised to ones).
pub fn weight_specs(cfg: &T5Config) -> Vec<(String, Vec<i64>, Option<f64>)> {
    let f = cfg.initializer_factor;
    let (d, dk, nh, ff) = (cfg.d_model, cfg.d_kv, cfg.num_heads, cfg.d_ff);
    let inner = nh * dk;
    let dm = (d as f64).powf(-0.5);
    let mut out = vec![("shared.weight".to_string(), vec![cfg.vocab_size, d], Some(f))];
    for (stack, n, is_decoder) in [("encoder", cfg.num_layers, false), ("decoder", cfg.num_decoder_layers, true)] {
        for i in 0..n {
            let p = format!("{stack}.block.{i}.layer");
            let attn = |name: &str, out: &mut Vec<(String, Vec<i64>, Option<f64>)>, first: bool| {
                out.push((format!("{name}.q.weight"), vec![inner, d], Some(f * ((d * dk) as f64).powf(-0.5))));
                out.push((format!("{name}.k.weight"), vec![inner, d], Some(f * dm)));
                out.push((format!("{name}.v.weight"), vec![inner, d], Some(f * dm)));
                out.push((format!("{name}.o.weight"), vec![d, inner], Some(f * (inner as f64).powf(-0.5))));
                if first {
                    out.push((format!("{name}.relative_attention_bias.weight"), vec![cfg.relative_attention_num_buckets, nh], Some(f * dm)));
                }
            };
            attn(&format!("{p}.0.SelfAttention"), &mut out, i == 0);
            out.push((format!("{p}.0.layer_norm.weight"), vec![d], None));
            let mut ff_layer = 1;
            if is_decoder {
                attn(&format!("{p}.1.EncDecAttention"), &mut out, false);
                out.push((format!("{p}.1.layer_norm.weight"), vec![d], None));
                ff_layer = 2;
            }
            let q = format!("{p}.{ff_layer}.DenseReluDense");
            if cfg.is_gated_act {
                out.push((format!("{q}.wi_0.weight"), vec![ff, d], Some(f * dm)));
                out.push((format!("{q}.wi_1.weight"), vec![ff, d], Some(f * dm)));
            } else {
                out.push((format!("{q}.wi.weight"), vec![ff, d], Some(f * dm)));
            }
            out.push((format!("{q}.wo.weight"), vec![d, ff], Some(f * (ff as f64).powf(-0.5))));
            out.push((format!("{p}.{ff_layer}.layer_norm.weight"), vec![d], None));
        }
        out.push((format!("{stack}.final_layer_norm.weight"), vec![d], None));
    }
    if !cfg.scale_decoder_outputs {
        out.push(("lm_head.weight".to_string(), vec![cfg.vocab_size, d], Some(f)));
    }
    out
}

impl T5 {
    /// Builds the model from checkpoint tensors (consumed from `w`). A distinct `lm_head.weight`
    /// makes the head untied (as transformers 5 loads it); without one the head is `shared`.
    /// `encoder.embed_tokens.weight` / `decoder.embed_tokens.weight`, copies of `shared` in older
    /// checkpoints, and the unused `decoder.block.0.layer.1.EncDecAttention.relative_attention_bias`
    /// are dropped.
    pub fn from_weights(cfg: T5Config, w: &mut Weights, kind: Kind, device: Device) -> Result<T5> {
        for copy in ["encoder.embed_tokens.weight", "decoder.embed_tokens.weight", "decoder.block.0.layer.1.EncDecAttention.relative_attention_bias.weight"] {
            w.remove(copy);
        }
        let has_head = w.contains_key("lm_head.weight");
        let mut take = |name: &str, shape: &[i64]| -> Result<Tensor> {
            let t = w.remove(name).with_context(|| format!("the checkpoint has no tensor `{name}`"))?;
            if t.size() != shape {
                bail!("{name} has shape {:?}, the config says {shape:?}", t.size());
            }
            let t = if t.kind() != kind { t.to_kind(kind) } else { t };
            Ok(if t.device() != device { t.to_device(device) } else { t })
        };
        let (d, inner, ff) = (cfg.d_model, cfg.num_heads * cfg.d_kv, cfg.d_ff);
        let shared = take("shared.weight", &[cfg.vocab_size, d])?;
        let eps = cfg.layer_norm_epsilon;
        let mut stacks = Vec::with_capacity(2);
        for (stack, n, is_decoder) in [("encoder", cfg.num_layers, false), ("decoder", cfg.num_decoder_layers, true)] {
            let mut block = Vec::with_capacity(n as usize);
            for i in 0..n {
                let p = format!("{stack}.block.{i}.layer");
                let mut lin = |name: &str, out: i64, inp: i64| -> Result<Linear> { Ok(Linear::new(take(&format!("{p}.{name}.weight"), &[out, inp])?, None)) };
                let mut attention = |name: &str| -> Result<T5Attention> {
                    Ok(T5Attention {
                        q: lin(&format!("{name}.q"), inner, d)?,
                        k: lin(&format!("{name}.k"), inner, d)?,
                        v: lin(&format!("{name}.v"), inner, d)?,
                        o: lin(&format!("{name}.o"), d, inner)?,
                        relative_attention_bias: None,
                        n_heads: cfg.num_heads,
                        d_kv: cfg.d_kv,
                    })
                };
                let mut self_attention = attention("0.SelfAttention")?;
                let cross = if is_decoder { Some(attention("1.EncDecAttention")?) } else { None };
                let fl = if is_decoder { 2 } else { 1 };
                let ffn = if cfg.is_gated_act {
                    DenseReluDense::Gated {
                        wi_0: lin(&format!("{fl}.DenseReluDense.wi_0"), ff, d)?,
                        wi_1: lin(&format!("{fl}.DenseReluDense.wi_1"), ff, d)?,
                        wo: lin(&format!("{fl}.DenseReluDense.wo"), d, ff)?,
                    }
                } else {
                    DenseReluDense::Plain { wi: lin(&format!("{fl}.DenseReluDense.wi"), ff, d)?, wo: lin(&format!("{fl}.DenseReluDense.wo"), d, ff)? }
                };
                if i == 0 {
                    self_attention.relative_attention_bias = Some(take(&format!("{p}.0.SelfAttention.relative_attention_bias.weight"), &[cfg.relative_attention_num_buckets, cfg.num_heads])?);
                }
                let norm = |t: Tensor| T5LayerNorm { weight: t, eps };
                let self_attention_norm = norm(take(&format!("{p}.0.layer_norm.weight"), &[d])?);
                let cross_attention = match cross {
                    Some(c) => Some((c, norm(take(&format!("{p}.1.layer_norm.weight"), &[d])?))),
                    None => None,
                };
                let ff_norm = norm(take(&format!("{p}.{fl}.layer_norm.weight"), &[d])?);
                block.push(T5Block { self_attention, self_attention_norm, cross_attention, ff: ffn, ff_norm });
            }
            let final_layer_norm = T5LayerNorm { weight: take(&format!("{stack}.final_layer_norm.weight"), &[d])?, eps };
            stacks.push(T5Stack { block, final_layer_norm, is_decoder });
        }
        let lm_head = if has_head { Some(take("lm_head.weight", &[cfg.vocab_size, d])?) } else { None };
        let decoder = stacks.pop().unwrap();
        let encoder = stacks.pop().unwrap();
        Ok(T5 { cfg, shared, encoder, decoder, lm_head, kind, device, loss_chunk: crate::nn::head::DEFAULT_LOSS_CHUNK })
    }

    /// transformers' `_init_weights` (factor `initializer_factor`): `shared` N(0, f), q
    /// N(0, f/√(d·dk)), k and v N(0, f/√d), o N(0, f/√(nh·dk)), wi* N(0, f/√d), wo N(0, f/√f),
    /// relative bias N(0, f/√d), norms ones. The head: v1.1 configs (no scaling) get their own
    /// `lm_head` N(0, f), as every published v1.1 / flan checkpoint has one (transformers 5 would
    /// tie a freshly built model, since it forces `tie_word_embeddings`); original T5 shares it.
    /// Tensors are drawn in [`weight_specs`] order, each as fp32 `randn * std` then cast.
    pub fn random_weights(cfg: &T5Config, kind: Kind, device: Device) -> Weights {
        let mut w = Weights::new();
        for (name, shape, std) in weight_specs(cfg) {
            let t = match std {
                Some(s) => Tensor::randn(shape.as_slice(), (Kind::Float, device)) * s,
                None => Tensor::ones(shape.as_slice(), (Kind::Float, device)),
            };
            w.insert(name, t.to_kind(kind));
        }
        w
    }

    /// The head's weight: `lm_head` when untied, else `shared`. [V, d]
    pub fn head_weight(&self) -> &Tensor {
        self.lm_head.as_ref().unwrap_or(&self.shared)
    }

    /// Every base tensor under its checkpoint name: `shared.weight` once (no embed_tokens copies,
    /// as transformers 5 saves) and `lm_head.weight` only when untied.
    pub fn named_weights(&self) -> Vec<(String, Tensor)> {
        let mut out = vec![("shared.weight".to_string(), self.shared.shallow_clone())];
        for (stack, s) in [("encoder", &self.encoder), ("decoder", &self.decoder)] {
            for (i, blk) in s.block.iter().enumerate() {
                let p = format!("{stack}.block.{i}");
                for (name, lin) in block_linears(blk, s.is_decoder) {
                    out.push((format!("{p}.{name}.weight"), lin.weight()));
                }
                if let Some(b) = &blk.self_attention.relative_attention_bias {
                    out.push((format!("{p}.layer.0.SelfAttention.relative_attention_bias.weight"), b.shallow_clone()));
                }
                out.push((format!("{p}.layer.0.layer_norm.weight"), blk.self_attention_norm.weight.shallow_clone()));
                if let Some((_, n)) = &blk.cross_attention {
                    out.push((format!("{p}.layer.1.layer_norm.weight"), n.weight.shallow_clone()));
                }
                let fl = if s.is_decoder { 2 } else { 1 };
                out.push((format!("{p}.layer.{fl}.layer_norm.weight"), blk.ff_norm.weight.shallow_clone()));
            }
            out.push((format!("{stack}.final_layer_norm.weight"), s.final_layer_norm.weight.shallow_clone()));
        }
        if let Some(h) = &self.lm_head {
            out.push(("lm_head.weight".to_string(), h.shallow_clone()));
        }
        out
    }

    /// Every projection with its checkpoint name without `.weight`
    /// (e.g. `decoder.block.3.layer.1.EncDecAttention.q`), for LoRA attach and adapter saving.
    pub fn linears(&self) -> Vec<(String, &Linear)> {
        let mut out = Vec::new();
        for (stack, s) in [("encoder", &self.encoder), ("decoder", &self.decoder)] {
            for (i, blk) in s.block.iter().enumerate() {
                out.extend(block_linears(blk, s.is_decoder).into_iter().map(|(n, l)| (format!("{stack}.block.{i}.{n}"), l)));
            }
        }
        out
    }

    pub fn linears_mut(&mut self) -> Vec<(String, &mut Linear)> {
        let mut out = Vec::new();
        for (stack, s) in [("encoder", &mut self.encoder), ("decoder", &mut self.decoder)] {
            let is_decoder = s.is_decoder;
            for (i, blk) in s.block.iter_mut().enumerate() {
                out.extend(block_linears_mut(blk, is_decoder).into_iter().map(|(n, l)| (format!("{stack}.block.{i}.{n}"), l)));
            }
        }
        out
    }

    fn dropout(&self, x: Tensor, train: bool) -> Tensor {
        if train && self.cfg.dropout_rate > 0.0 {
            x.dropout(self.cfg.dropout_rate, true)
        } else {
            x
        }
    }

    /// The encoder. input_ids, attention_mask (1 real, 0 pad; any padding side): [b, s] →
    /// hidden states after the final norm [b, s, d]. Pad positions get outputs too; nothing
    /// attends to them.
    pub fn encode(&self, input_ids: &Tensor, attention_mask: &Tensor, train: bool) -> Tensor {
        let s = input_ids.size()[1];
        let p = self.cfg.dropout_rate;
        let mask = additive_mask(&attention_mask.ne(0).unsqueeze(1).unsqueeze(1), self.kind); // [b, 1, 1, s]
        let mut x = self.dropout(Tensor::embedding(&self.shared, input_ids, -1, false, false), train); // [b, s, d]
        let blocks = &self.encoder.block;
        let bias = blocks[0].self_attention.compute_bias(s, s, 0, true, &self.cfg) + mask; // [b, nh, s, s]
        for blk in blocks {
            let a = blk.self_attention.forward(&blk.self_attention_norm.forward(&x), None, &bias, None, p, train);
            x = x + self.dropout(a, train);
            let f = blk.ff.forward(&blk.ff_norm.forward(&x), self.cfg.act, p, train);
            x = x + self.dropout(f, train);
        }
        self.dropout(self.encoder.final_layer_norm.forward(&x), train)
    }

    /// The decoder, causal over its own inputs and attending to the encoder output where
    /// `enc_mask` is 1. decoder_input_ids: [b, t] (the new positions only when `cache` holds
    /// earlier ones); enc_out: [b, s, d]; enc_mask: [b, s] → hidden states after the final norm
    /// [b, t, d] (before the head's scaling).
    pub fn decode(&self, decoder_input_ids: &Tensor, enc_out: &Tensor, enc_mask: &Tensor, mut cache: Option<&mut T5Cache>, train: bool) -> Tensor {
        let t = decoder_input_ids.size()[1];
        let p = self.cfg.dropout_rate;
        let past = cache.as_ref().map(|c| c.len()).unwrap_or(0);
        let total = past + t;
        let device = decoder_input_ids.device();
        // Causal: query i (absolute past + i) sees keys 0..=past + i. [1, 1, t, T]
        let qpos = Tensor::arange_start(past, total, (Kind::Int64, device)).unsqueeze(1);
        let kpos = Tensor::arange(total, (Kind::Int64, device)).unsqueeze(0);
        let causal = additive_mask(&kpos.le_tensor(&qpos).unsqueeze(0).unsqueeze(0), self.kind);
        let cross_mask = additive_mask(&enc_mask.ne(0).unsqueeze(1).unsqueeze(1), self.kind); // [b, 1, 1, s]
        let mut x = self.dropout(Tensor::embedding(&self.shared, decoder_input_ids, -1, false, false), train); // [b, t, d]
        let blocks = &self.decoder.block;
        let bias = blocks[0].self_attention.compute_bias(t, total, past, false, &self.cfg) + causal; // [1, nh, t, T]
        for (i, blk) in blocks.iter().enumerate() {
            let slot = cache.as_deref_mut().map(|c| &mut c.self_attention[i]);
            let a = blk.self_attention.forward(&blk.self_attention_norm.forward(&x), None, &bias, slot, p, train);
            x = x + self.dropout(a, train);
            let (cross, norm) = blk.cross_attention.as_ref().expect("decoder blocks have cross-attention");
            let slot = cache.as_deref_mut().map(|c| &mut c.cross_attention[i]);
            let c = cross.forward(&norm.forward(&x), Some(enc_out), &cross_mask, slot, p, train);
            x = x + self.dropout(c, train);
            let f = blk.ff.forward(&blk.ff_norm.forward(&x), self.cfg.act, p, train);
            x = x + self.dropout(f, train);
        }
        self.dropout(self.decoder.final_layer_norm.forward(&x), train)
    }

    /// The head: scaled by d_model^-0.5 first when the config says so. hidden: [.., d] → [.., V] fp32
    pub fn logits(&self, hidden: &Tensor) -> Tensor {
        self.head_input(hidden).linear::<Tensor>(self.head_weight(), None).to_kind(Kind::Float)
    }

    /// What the head multiplies: the decoder's output, scaled by d_model^-0.5 when tied. [.., d]
    fn head_input(&self, hidden: &Tensor) -> Tensor {
        if self.cfg.scale_decoder_outputs {
            hidden * (self.cfg.d_model as f64).powf(-0.5)
        } else {
            hidden.shallow_clone()
        }
    }

    /// Teacher-forced logits: decoder inputs are `labels` shifted right. [b, s], [b, s], [b, t] → [b, t, V]
    pub fn forward(&self, input_ids: &Tensor, attention_mask: &Tensor, labels: &Tensor, train: bool) -> Tensor {
        let enc = self.encode(input_ids, attention_mask, train);
        let dec_in = shift_right(labels, self.cfg.decoder_start_token_id, self.cfg.pad_token_id);
        self.logits(&self.decode(&dec_in, &enc, attention_mask, None, train))
    }

    /// The seq2seq loss, summed over labelled tokens, and their count: transformers' loss with
    /// `labels=` is this sum divided by the count. The head runs only where a label exists.
    /// input_ids, attention_mask: [b, s]; labels: [b, t] with -100 where there is no target.
    pub fn loss_sum(&self, input_ids: &Tensor, attention_mask: &Tensor, labels: &Tensor, train: bool) -> Result<(Tensor, i64)> {
        self.loss_sum_reading(input_ids, attention_mask, labels, labels, train)
    }

    /// As `loss_sum`, with the decoder reading `decoder_reads` shifted right instead of the labels:
    /// a sliding window reads its whole target span but learns only the part no earlier window
    /// learned. decoder_reads, labels: [b, t].
    pub fn loss_sum_reading(&self, input_ids: &Tensor, attention_mask: &Tensor, decoder_reads: &Tensor, labels: &Tensor, train: bool) -> Result<(Tensor, i64)> {
        let enc = self.encode(input_ids, attention_mask, train); // [b, s, d]
        let dec_in = shift_right(decoder_reads, self.cfg.decoder_start_token_id, self.cfg.pad_token_id); // [b, t]
        let hidden = self.decode(&dec_in, &enc, attention_mask, None, train); // [b, t, d]
        let targets = labels.reshape([-1]); // [bt]
        let idx = targets.ne(-100).nonzero().squeeze_dim(-1); // [n]
        let n = idx.size()[0];
        let h = self.head_input(&hidden.reshape([-1, self.cfg.d_model]).index_select(0, &idx)); // [n, d]
        let loss = crate::nn::head::cross_entropy_sum(&h, self.head_weight(), &targets.index_select(0, &idx), self.loss_chunk)?;
        Ok((loss, n))
    }

    /// Greedy decoding with the cache, as transformers' `generate(do_sample=False, num_beams=1)`:
    /// every row starts from `decoder_start_token_id`; a row stops at its first token in `eos`
    /// (kept) and is fed pad afterwards while the others go on. input_ids, attention_mask: [b, s]
    /// (padding on either side) → the new tokens of each row.
    pub fn greedy_generate(&self, input_ids: &Tensor, attention_mask: &Tensor, max_new_tokens: usize, eos: &[i64]) -> Vec<Vec<i64>> {
        self.generate_with(input_ids, attention_mask, max_new_tokens, eos, &|logits| logits.argmax(-1, false))
    }

    /// Decoding with any next-token rule: `choose` maps the last position's logits [b, V] to ids [b].
    pub fn generate_with(&self, input_ids: &Tensor, attention_mask: &Tensor, max_new_tokens: usize, eos: &[i64], choose: &dyn Fn(&Tensor) -> Tensor) -> Vec<Vec<i64>> {
        let _guard = tch::no_grad_guard();
        let b = input_ids.size()[0];
        let enc = self.encode(input_ids, attention_mask, false); // [b, s, d]
        let mut cache = T5Cache::new(self.decoder.block.len());
        let mut step = Tensor::full([b, 1], self.cfg.decoder_start_token_id, (Kind::Int64, self.device));
        let mut out: Vec<Vec<i64>> = vec![Vec::new(); b as usize];
        let mut done = vec![false; b as usize];
        for _ in 0..max_new_tokens {
            let hidden = self.decode(&step, &enc, attention_mask, Some(&mut cache), false); // [b, 1, d]
            let next = choose(&self.logits(&hidden.i((.., -1, ..)))); // [b]
            let next: Vec<i64> = Vec::<i64>::try_from(&next.to_device(Device::Cpu)).unwrap_or_default();
            for (r, &tok) in next.iter().enumerate() {
                if !done[r] {
                    out[r].push(tok);
                    done[r] = eos.contains(&tok);
                }
            }
            if done.iter().all(|&d| d) {
                break;
            }
            // Finished rows are fed pad, which no other row reads.
            let fed: Vec<i64> = next.iter().zip(&done).map(|(&t, &d)| if d { self.cfg.pad_token_id } else { t }).collect();
            step = Tensor::from_slice(&fed).view([b, 1]).to_device(self.device);
        }
        out
    }

    /// Generates for unpadded prompts (token ids, eos included as the tokenizer adds it): right
    /// pads them into one batch with a mask, then [`T5::generate_with`].
    pub fn generate(&self, prompts: &[Vec<i64>], cfg: &super::generate::GenerateConfig) -> Vec<Vec<i64>> {
        if prompts.is_empty() {
            return vec![];
        }
        let (ids, mask) = pad_right(prompts, self.cfg.pad_token_id, self.device);
        let eos = if cfg.eos_ids.is_empty() { vec![self.cfg.eos_token_id] } else { cfg.eos_ids.clone() };
        self.generate_with(&ids, &mask, cfg.max_new_tokens, &eos, &|l| super::generate::choose(l, cfg))
    }
}

/// Right-pads rows of ids into ([b, s] ids, [b, s] mask) on `device`.
pub fn pad_right(rows: &[Vec<i64>], pad: i64, device: Device) -> (Tensor, Tensor) {
    let b = rows.len() as i64;
    let width = rows.iter().map(Vec::len).max().unwrap_or(0).max(1);
    let mut ids = vec![pad; rows.len() * width];
    let mut mask = vec![0i64; rows.len() * width];
    for (r, row) in rows.iter().enumerate() {
        ids[r * width..r * width + row.len()].copy_from_slice(row);
        mask[r * width..r * width + row.len()].iter_mut().for_each(|m| *m = 1);
    }
    let shape = [b, width as i64];
    (Tensor::from_slice(&ids).view(shape).to_device(device), Tensor::from_slice(&mask).view(shape).to_device(device))
}
