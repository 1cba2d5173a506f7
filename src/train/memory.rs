//! `steptune estimate`: a memory plan for one device, line by line, from the model's config and
//! the recipe. It models what steptune itself allocates, not a textbook formula:
//!
//! - base weights as `model::load_model` stores them: NF4 (`nn::nf4`) for the decoder layers'
//!   projections under QLoRA, everything else (embeddings, norms, lm_head) in the run's dtype;
//! - trainable tensors, their gradients (from backward to the optimizer step: `AdamW::zero_grad`
//!   sets them to none), AdamW's two fp32 moments and, when the model computes in bf16/fp16, the
//!   fp32 master copy (`train::optim`); the step's peak is the start of backward or the optimizer
//!   step, whichever holds more;
//! - what autograd saves for backward in `model::qwen3` (counted tensor by tensor; the per-layer
//!   sum was checked against torch's saved-tensor hooks on the same ops): SDPA's flash path keeps
//!   q, k, v, the output and a logsumexp, never [t, t] scores; RMSNorm keeps an fp32 copy of its
//!   input; LoRA keeps its input (or, with dropout, a dropped copy and the mask) and the [N, r]
//!   product; SwiGLU keeps gate, silu(gate) and up;
//! - with gradient checkpointing, each decoder layer's input plus one recomputed layer;
//! - the language-model head per loss chunk (`nn::head`); backward and optimizer temporaries;
//! - the eval stage's KV cache, the runtime (libtorch on CPU, the CUDA context on a GPU) and, on a
//!   GPU, the caching allocator's slack.
//!
//! Sizes: N = batch × sequence tokens, H hidden, Q = heads × head_dim, KV = kv heads × head_dim,
//! F intermediate, V vocabulary, L layers, k bytes of the compute dtype, n labelled tokens.
use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use crate::model::qwen3::DecoderConfig;
use crate::model::source;
use crate::model::t5::T5Config;
use crate::nn::nf4::NESTED_BLOCKSIZE;
use crate::recipe::{Architecture, LoadedRecipe, Method, Precision};

pub const MIB: f64 = 1024.0 * 1024.0;
pub const GIB: f64 = 1024.0 * 1024.0 * 1024.0;

/// Resident memory of the steptune process on CPU before any model exists but after libtorch has
/// run a training step's kernels (code pages of libtorch_cpu touched, OpenMP threads, allocator
/// arenas): measured with `steptune bench-train` on a 2-layer, hidden-64 model (weights < 1 MiB),
/// whose peak RSS during training is this figure (scripts/bench_memory.sh prints it again).
pub const CPU_RUNTIME_BYTES: u64 = 145 * 1024 * 1024;

/// A CUDA context with lazy module loading (CUDA 12+/13, torch's default), cuBLAS handle and
/// workspace: nvidia-smi shows about 500 MiB for a torch process that has run a matmul and
/// nothing else (PyTorch's own FAQ and forum measurements range 300-600 MiB by GPU and driver).
/// Not measured here: this machine has no GPU.
pub const CUDA_CONTEXT_BYTES: u64 = 500 * 1024 * 1024;

/// The CUDA caching allocator rounds blocks up and keeps freed blocks for reuse; fragmentation
/// between steps of varying length typically costs 5-15% of what tensors take. The plan adds
/// this fraction of everything tensors take (weights, state, the step's peak) on a GPU.
pub const CUDA_ALLOCATOR_SLACK: f64 = 0.10;

/// What to plan for: the recipe's micro-batch and sequence unless given.
#[derive(Debug, Clone, Default)]
pub struct EstimateOptions {
    pub seq: Option<i64>,
    pub batch: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Line {
    pub name: String,
    pub bytes: u64,
    /// How the figure comes about (shapes, counts).
    pub detail: String,
    /// Whether the line is part of the total (eval-stage lines are shown, counted only when the
    /// eval stage needs more than the training step).
    pub counted: bool,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Plan {
    pub model: String,
    pub method: String,
    pub precision: String,
    pub device: String,
    pub seq: i64,
    pub batch: i64,
    pub gradient_checkpointing: bool,
    pub loss_chunk_tokens: i64,
    pub trainable_params: i64,
    pub lines: Vec<Line>,
    pub total_bytes: u64,
    /// The tensors alone: the total without the runtime or CUDA context and the allocator's slack,
    /// what a CUDA caching allocator's `max_memory_allocated` counts.
    pub tensor_bytes: u64,
}

impl Plan {
    pub fn to_json(&self) -> Value {
        json!({
            "model": self.model, "method": self.method, "precision": self.precision, "device": self.device,
            "seq": self.seq, "batch": self.batch, "gradient_checkpointing": self.gradient_checkpointing,
            "loss_chunk_tokens": self.loss_chunk_tokens, "trainable_params": self.trainable_params,
            "lines": self.lines.iter().map(|l| json!({"name": l.name, "bytes": l.bytes, "detail": l.detail, "counted": l.counted})).collect::<Vec<_>>(),
            "total_bytes": self.total_bytes,
            "tensor_bytes": self.tensor_bytes,
            "total_gib": self.total_bytes as f64 / GIB,
        })
    }

    /// A table for people: one line each, then the total.
    pub fn render(&self) -> String {
        let mut s = format!(
            "memory plan: {} ({}, {}), {} on {}, micro-batch {} × sequence {}, gradient checkpointing {}, loss chunk {}\n",
            self.model,
            self.method,
            self.precision,
            if self.trainable_params > 0 { format!("{} trainable parameters", self.trainable_params) } else { String::new() },
            self.device,
            self.batch,
            self.seq,
            if self.gradient_checkpointing { "on" } else { "off" },
            if self.loss_chunk_tokens == 0 { "all labelled tokens".to_string() } else { format!("{} tokens", self.loss_chunk_tokens) }
        );
        let w = self.lines.iter().map(|l| l.name.len()).max().unwrap_or(10).max(5);
        for l in &self.lines {
            s += &format!("  {:<w$}  {:>10}  {}{}\n", l.name, human(l.bytes), l.detail, if l.counted { "" } else { " (not counted: see total)" });
        }
        s += &format!("  {:<w$}  {:>10}  ({} bytes)\n", "total", human(self.total_bytes), self.total_bytes);
        s
    }
}

pub fn human(bytes: u64) -> String {
    let b = bytes as f64;
    if b >= GIB {
        format!("{:.2} GiB", b / GIB)
    } else {
        format!("{:.1} MiB", b / MIB)
    }
}

/// A memory size as people write it: a number and a unit, decimal (KB, MB, GB, TB) or binary
/// (KiB, MiB, GiB, TiB), or plain bytes (B). "24GiB", "24GB", "24000MiB", "23.5 GiB".
pub fn parse_budget(s: &str) -> Result<u64> {
    let t = s.trim();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (num, unit) = (t[..split].trim(), t[split..].trim());
    let bad = || anyhow::anyhow!("--budget `{s}`: expected a number and a unit such as 24GiB, 24GB or 24000MiB (units B, KB, MB, GB, TB, KiB, MiB, GiB, TiB)");
    let x: f64 = num.parse().map_err(|_| bad())?;
    let mult: f64 = match unit.to_ascii_lowercase().as_str() {
        "b" => 1.0,
        "kb" => 1e3,
        "mb" => 1e6,
        "gb" => 1e9,
        "tb" => 1e12,
        "kib" => 1024.0,
        "mib" => MIB,
        "gib" => GIB,
        "tib" => GIB * 1024.0,
        _ => return Err(bad()),
    };
    if !(x > 0.0) || !x.is_finite() {
        bail!("--budget `{s}`: must be more than zero");
    }
    Ok((x * mult) as u64)
}

/// Bytes `nn::nf4::quantize` allocates for a weight of `numel` elements: packed codes (two per
/// byte), then the per-block absmax: fp32 per block, or with double quantization one uint8 code
/// per block plus an fp32 absmax per 256 blocks and the 256-entry fp32 code table.
pub fn nf4_bytes(numel: i64, blocksize: i64, double_quant: bool) -> i64 {
    let packed = (numel + 1) / 2;
    let blocks = (numel + blocksize - 1) / blocksize;
    let absmax = if double_quant {
        let nested = (blocks + NESTED_BLOCKSIZE - 1) / NESTED_BLOCKSIZE;
        blocks + 4 * nested + 4 * 256
    } else {
        4 * blocks
    };
    packed + absmax
}

/// One projection: checkpoint short name, in and out features.
#[derive(Debug, Clone)]
pub struct Proj {
    pub name: &'static str,
    pub input: i64,
    pub output: i64,
    pub bias: bool,
}

/// The seven projections of a decoder layer, as `Qwen3::random_weights` shapes them.
pub fn decoder_projections(c: &DecoderConfig) -> Vec<Proj> {
    let (h, q, kv, f) = (c.hidden_size, c.num_attention_heads * c.head_dim, c.num_key_value_heads * c.head_dim, c.intermediate_size);
    vec![
        Proj { name: "q_proj", input: h, output: q, bias: c.qkv_bias },
        Proj { name: "k_proj", input: h, output: kv, bias: c.qkv_bias },
        Proj { name: "v_proj", input: h, output: kv, bias: c.qkv_bias },
        Proj { name: "o_proj", input: q, output: h, bias: c.o_bias },
        Proj { name: "gate_proj", input: h, output: f, bias: false },
        Proj { name: "up_proj", input: h, output: f, bias: false },
        Proj { name: "down_proj", input: f, output: h, bias: false },
    ]
}

/// LoRA parameters `adapt::peft::attach` creates: A [r, in] and B [out, r] per targeted projection.
pub fn lora_params(projs: &[Proj], layers: i64, r: i64, targets: &[String]) -> i64 {
    layers * projs.iter().filter(|p| targets.iter().any(|t| t == p.name)).map(|p| r * (p.input + p.output)).sum::<i64>()
}

fn kind_bytes(p: Precision) -> i64 {
    match p {
        Precision::Fp32 => 4,
        _ => 2,
    }
}

/// Bytes autograd saves for backward in one decoder layer over N tokens (LoRA branches on
/// `targets`, or every weight trained in full fine-tuning). Each term names the op that saves it.
pub fn decoder_layer_saved(c: &DecoderConfig, n_tok: i64, k: i64, method: Method, targets: &[String], dropout: f64) -> i64 {
    let (h, q, kv, f) = (c.hidden_size, c.num_attention_heads * c.head_dim, c.num_key_value_heads * c.head_dim, c.intermediate_size);
    let (nh, nkv) = (c.num_attention_heads, c.num_key_value_heads);
    let full = method == Method::Full;
    let lora = |name: &str| method != Method::Full && targets.iter().any(|t| t == name);
    let n = n_tok;
    let mut s = 0;
    // RMSNorm: pow and mul keep the fp32 input (the input itself in fp32) and the [N, 1] rsqrt;
    // weight · normed keeps `normed` only when the weight trains.
    let norm = |width: i64, rows: i64| 4 * n * width + 4 * rows + if full { k * n * width } else { 0 };
    // A projection's input: the base linear keeps it when its weight trains; a LoRA branch keeps it
    // (dropout 0, shared by the projections reading the same tensor) or its own dropped copy and
    // mask (dropout > 0: `x * noise`, both in the compute dtype).
    let input = |names: &[&str], width: i64| -> i64 {
        let branches = names.iter().filter(|nm| lora(nm)).count() as i64;
        let shared = if full || (branches > 0 && dropout == 0.0) { k * n * width } else { 0 };
        shared + if dropout > 0.0 { branches * 2 * k * n * width } else { 0 }
    };
    s += norm(h, n); // input_layernorm
    s += input(&["q_proj", "k_proj", "v_proj"], h);
    if c.qk_norm {
        s += norm(q, n * nh) + norm(kv, n * nkv); // per-head q_norm, k_norm over [N, heads, d]
    }
    // SDPA (flash on CPU and GPU, GQA without repeating k/v): q and k after RoPE, v, the output
    // (which o_proj reads as a view) and the fp32 logsumexp [b, nh, t].
    s += k * n * q + 2 * k * n * kv + k * n * q + 4 * n * nh;
    if dropout > 0.0 && lora("o_proj") {
        s += 2 * k * n * q;
    }
    s += norm(h, n); // post_attention_layernorm
    if c.sandwich_norms {
        s += 2 * norm(h, n); // Gemma: pre_feedforward_layernorm, and post_feedforward_layernorm below
    }
    s += input(&["gate_proj", "up_proj"], h);
    s += 3 * k * n * f; // silu (Gemma: tanh GELU) keeps gate, the product keeps act(gate) and up
    s += input(&["down_proj"], f);
    s
}

/// Each LoRA branch of a layer keeps x·Aᵀ [N, r] for B's gradient.
fn lora_intermediates(projs: &[Proj], n_tok: i64, k: i64, r: i64, targets: &[String], method: Method) -> i64 {
    if method == Method::Full {
        return 0;
    }
    projs.iter().filter(|p| targets.iter().any(|t| t == p.name)).count() as i64 * k * n_tok * r
}

/// The model's config.json: from the recipe's `model.config` (random), the model folder, the local
/// Hugging Face cache, or the tokenizer folder when it carries one. Never downloads.
pub fn model_config(recipe: &LoadedRecipe) -> Result<(Value, Architecture)> {
    let m = &recipe.recipe.model;
    let path_like = ["./", "../", "/", "~"].iter().any(|p| m.source.starts_with(p));
    let local = m.source == "random" || path_like || recipe.resolve(std::path::Path::new(&m.source)).is_ok() || source::cached_snapshot(&m.source, &m.revision).is_some();
    let mut config = if local { source::resolve(recipe, false)?.config } else { None };
    if config.is_none() {
        if let Some(t) = &m.tokenizer {
            if let Ok(p) = recipe.resolve(&t.join("config.json")) {
                let text = std::fs::read_to_string(&p).with_context(|| format!("cannot read {}", p.display()))?;
                config = Some(serde_json::from_str(&text).with_context(|| format!("{} is not valid JSON", p.display()))?);
            }
        }
    }
    let Some(mut config) = config else {
        bail!(
            "model.source `{}`: no config.json found locally (a model folder, the Hugging Face cache, or the tokenizer folder); \
             steptune estimate never downloads: point model.source at a folder with config.json, or fetch it once with `steptune prepare`",
            m.source
        );
    };
    // Gemma 3 keeps its shape in `text_config` and defaults vocab_size (262,208) when absent.
    if config.get("vocab_size").is_none() && !crate::model::gemma3::is_gemma3(&config) {
        match &m.train_tokenizer {
            Some(t) => config["vocab_size"] = json!(t.vocab_size),
            None => bail!("model.config has no vocab_size (and no model.train_tokenizer to take it from)"),
        }
    }
    let arch = match m.architecture {
        Architecture::Auto => {
            let t = config.get("model_type").and_then(Value::as_str).unwrap_or("");
            Architecture::from_model_type(t).with_context(|| format!("config.json: model_type `{t}` is not one steptune trains (qwen3, qwen2, llama, gemma3, t5)"))?
        }
        a => a,
    };
    Ok((config, arch))
}

/// The longest generation the eval stage runs, and the key that sets it: the procedures'
/// `eval.max_new_tokens`, or IFEval's budget (1280 by default) when `eval.ifeval` is on.
fn eval_new_tokens(r: &crate::recipe::Recipe) -> (i64, &'static str) {
    if r.eval.ifeval && r.eval.ifeval_max_new_tokens > r.eval.max_new_tokens {
        (r.eval.ifeval_max_new_tokens as i64, "eval.ifeval_max_new_tokens")
    } else {
        (r.eval.max_new_tokens as i64, "eval.max_new_tokens")
    }
}

/// The plan for a recipe (with `--set` overrides already applied).
pub fn estimate(recipe: &LoadedRecipe, opts: &EstimateOptions) -> Result<Plan> {
    let (config, arch) = model_config(recipe)?;
    if arch == Architecture::T5 {
        let c = T5Config::from_json(&config)?;
        return estimate_t5(recipe, &c, opts);
    }
    if arch == Architecture::Gemma3 {
        let c = crate::model::gemma3::Gemma3Config::from_json(&config)?.decoder_shape();
        return estimate_decoder(recipe, &c, opts);
    }
    // The RoPE variant changes no tensor's size: plan for Llama-3.1's `llama3` scaling too, which
    // training itself does not support yet.
    let mut config = config;
    if let Some(o) = config.as_object_mut() {
        o.remove("rope_scaling");
        o.remove("rope_parameters");
    }
    let c = DecoderConfig::from_json(&config, arch)?;
    estimate_decoder(recipe, &c, opts)
}

fn on_gpu(recipe: &LoadedRecipe) -> bool {
    match recipe.recipe.training.device.as_str() {
        "cpu" => false,
        s if s.starts_with("cuda") => true,
        _ => tch::Cuda::is_available(),
    }
}

struct Common {
    seq: i64,
    batch: i64,
    k: i64,
    gpu: bool,
    method: Method,
    ckpt: bool,
    chunk: i64,
}

fn common(recipe: &LoadedRecipe, opts: &EstimateOptions) -> Result<Common> {
    let r = &recipe.recipe;
    let seq = opts.seq.unwrap_or(r.data.max_length as i64);
    let batch = opts.batch.unwrap_or(r.training.per_device_train_batch_size as i64);
    if seq < 2 {
        bail!("--seq must be at least 2 tokens, got {seq}");
    }
    if batch < 1 {
        bail!("--batch must be at least 1, got {batch}");
    }
    Ok(Common {
        seq,
        batch,
        k: kind_bytes(r.training.precision),
        gpu: on_gpu(recipe),
        method: r.finetune.method,
        ckpt: r.training.gradient_checkpointing,
        chunk: r.training.loss_chunk_tokens as i64,
    })
}

fn line(name: &str, bytes: i64, detail: String) -> Line {
    Line { name: name.into(), bytes: bytes.max(0) as u64, detail, counted: true }
}

/// The head and cross-entropy over `chunk` labelled tokens (`n` in all).
/// `chunked` (csrc/lm_loss.cpp): at most two fp32 [chunk, V] at once (logits and their
/// log-probabilities, forward and backward alike); in full fine-tuning the head's gradient is
/// formed as a [V, H] product while one fp32 [chunk, V] is alive, and summed over several chunks
/// in an fp32 [V, H] accumulator.
/// All at once (chunk 0, plain autograd): in backward the fp32 log-probabilities log_softmax saved,
/// the gradient arriving from nll_loss and the one leaving toward the logits: three fp32 [n, V];
/// in full fine-tuning the [V, H] gradient is formed while one of them is alive.
fn head_peak(chunked: bool, chunk: i64, n: i64, v: i64, h: i64, k: i64, full: bool) -> i64 {
    if !chunked {
        return (12 * chunk * v).max(if full { 4 * chunk * v + k * v * h } else { 0 });
    }
    let logits = 8 * chunk * v;
    if !full {
        return logits;
    }
    let accumulator = if n > chunk { 4 * v * h } else { 0 };
    accumulator + logits.max(4 * chunk * v + k * v * h)
}

fn estimate_decoder(recipe: &LoadedRecipe, c: &DecoderConfig, opts: &EstimateOptions) -> Result<Plan> {
    let r = &recipe.recipe;
    let f = &r.finetune;
    let cm = common(recipe, opts)?;
    let (k, method) = (cm.k, cm.method);
    let full = method == Method::Full;
    let (h, v, l, ff) = (c.hidden_size, c.vocab_size, c.num_hidden_layers, c.intermediate_size);
    let d = c.head_dim;
    let projs = decoder_projections(c);
    let mut lines = Vec::new();

    // 1. Base weights.
    let proj_numel: i64 = l * projs.iter().map(|p| p.input * p.output).sum::<i64>();
    let bias_numel: i64 = l * projs.iter().filter(|p| p.bias).map(|p| p.output).sum::<i64>();
    let q = &f.quantization;
    let proj_bytes = if method == Method::Qlora {
        l * projs.iter().map(|p| nf4_bytes(p.input * p.output, q.blocksize as i64, q.bnb_4bit_use_double_quant)).sum::<i64>()
    } else {
        k * proj_numel
    };
    let storage = if method == Method::Qlora {
        format!("NF4, blocks of {}{}", q.blocksize, if q.bnb_4bit_use_double_quant { ", double quant (8-bit absmax + fp32 per 256)" } else { ", fp32 absmax" })
    } else {
        dtype_name(k).to_string()
    };
    lines.push(line(
        "base weights: decoder projections",
        proj_bytes,
        format!("{} params (7 projections × {l} layers), {storage} ({:.3} B/param)", proj_numel, proj_bytes as f64 / proj_numel as f64),
    ));
    let embed = v * h;
    let head = if c.tie_word_embeddings { 0 } else { v * h };
    let norms = l * (if c.sandwich_norms { 4 } else { 2 } * h + if c.qk_norm { 2 * d } else { 0 }) + h;
    lines.push(line(
        "base weights: embeddings, lm_head, norms, biases",
        k * (embed + head + norms + bias_numel),
        format!("embed [{v}, {h}]{}, norms {norms}, biases {bias_numel}, {}", if c.tie_word_embeddings { " (lm_head tied)" } else { " + lm_head [V, H]" }, dtype_name(k)),
    ));

    // 2. What trains, its gradients and AdamW's state.
    let (trainable, largest) = if full {
        let largest = embed.max(projs.iter().map(|p| p.input * p.output).max().unwrap_or(0));
        (proj_numel + embed + head + norms + bias_numel, largest)
    } else {
        let n = lora_params(&projs, l, f.lora_r, &f.lora_target_modules);
        let largest = projs.iter().filter(|p| f.lora_target_modules.iter().any(|t| t == p.name)).map(|p| f.lora_r * p.input.max(p.output)).max().unwrap_or(0);
        (n, largest)
    };
    if !full {
        lines.push(line(
            "trainable: LoRA adapters",
            k * trainable,
            format!("{trainable} params (r {} on {}), {}", f.lora_r, f.lora_target_modules.join(", "), dtype_name(k)),
        ));
    }
    lines.push(line("gradients", k * trainable, format!("{trainable} × {k} B, from backward to the optimizer step (set to none between steps)")));
    lines.push(line("AdamW moments", 8 * trainable, format!("exp_avg + exp_avg_sq, fp32, {trainable} × 8 B")));
    lines.push(line(
        "fp32 master weights",
        if k == 4 { 0 } else { 4 * trainable },
        if k == 4 { "none: fp32 parameters are their own master".into() } else { format!("{trainable} × 4 B") },
    ));

    // 3. The step: activations, the loss head, backward temporaries.
    let (b, t) = (cm.batch, cm.seq);
    let n_tok = b * t;
    let labelled = b * (t - 1); // every position but the first may carry a label: the worst case
    let chunk = if cm.chunk == 0 { labelled } else { cm.chunk.min(labelled) };
    let per_layer = decoder_layer_saved(c, n_tok, k, method, &f.lora_target_modules, f.lora_dropout) + lora_intermediates(&projs, n_tok, k, f.lora_r, &f.lora_target_modules, method);
    let rope = 2 * k * n_tok * d; // cos, sin [b, 1, t, d]
    let final_norm = 4 * n_tok * h + 4 * n_tok + if full { k * n_tok * h } else { 0 };
    let head_input = if full { k * labelled * h } else { 0 }; // the lm_head linear keeps its [n, H] input
    let head = head_peak(cm.chunk > 0, chunk, labelled, v, h, k, full);
    // Backward through one layer: the [N, F] gradients of down's input, silu(gate) and up (while
    // the saved ones are still alive), two [N, H] gradient streams, and under QLoRA the
    // dequantized weight of the largest projection (csrc/nf4.cpp dequantizes per call).
    let dequant = if method == Method::Qlora { projs.iter().map(|p| p.input * p.output).max().unwrap_or(0) * (k + if kind_bytes(q.bnb_4bit_compute_dtype) != k { kind_bytes(q.bnb_4bit_compute_dtype) } else { 0 }) } else { 0 };
    let layer_backward = 3 * k * n_tok * ff + 2 * k * n_tok * h + dequant;
    let (act_line, act_bytes, step_peak) = if cm.ckpt {
        let inputs = l * k * n_tok * h;
        let last = k * n_tok * h; // the last layer's output, detached, that the head starts from
        let head_phase = last + final_norm + head_input + head;
        let layer_phase = k * n_tok * h + per_layer + layer_backward; // incoming gradient + one recomputed layer
        (
            format!("{l} layer inputs [{b}, {t}, {h}] + one recomputed layer ({})", human(per_layer as u64)),
            inputs + rope,
            inputs + rope + head_phase.max(layer_phase),
        )
    } else {
        let saved = l * per_layer + rope + final_norm + head_input;
        (format!("{} per layer × {l} layers + final norm, RoPE tables", human(per_layer as u64)), saved, saved + head.max(layer_backward))
    };
    lines.push(line(if cm.ckpt { "activations (gradient checkpointing)" } else { "activations (saved for backward)" }, act_bytes, act_line));
    lines.push(line(
        "loss head (per chunk)",
        head,
        format!(
            "{chunk} of {labelled} labelled tokens × vocab {v}: {}{}",
            if cm.chunk > 0 { "fp32 logits + their log-probs, one chunk at a time" } else { "fp32 log-probs + 2 fp32 gradients in backward, all at once" },
            if full { ", and the head's [V, H] gradient" } else { "" }
        ),
    ));
    // The optimizer step runs with no activations alive: AdamW's temporaries for the largest
    // tensor (csrc/adamw.cpp: the square root and the denominator, two fp32 at once, plus the
    // fp32 gradient copy under bf16).
    let opt_temp = (2 + if k == 4 { 0 } else { 1 }) * 4 * largest;
    let emb_grad = if full { k * embed } else { 0 }; // embedding_dense_backward's [V, H], then assigned to .grad
    let backward_temp = (step_peak - act_bytes - head).max(0);
    let train_peak = step_phases(&mut lines, full, k * trainable, act_bytes + head, backward_temp, opt_temp.max(emb_grad), &format!(
        "one layer's backward ({}), or AdamW on the largest tensor ({})",
        human(layer_backward as u64),
        human(opt_temp as u64)
    ));

    // 4. The eval stage: generation with a KV cache (a separate phase without optimizer state).
    let eb = r.eval.batch_size as i64;
    let (new_tokens, budget_key) = eval_new_tokens(r);
    let kv_len = t + new_tokens;
    let kv = 2 * l * eb * c.num_key_value_heads * d * kv_len * k;
    let kv_peak = kv + 2 * eb * c.num_key_value_heads * d * kv_len * k; // one layer's cat holds old and new
    let eval_counted = kv_peak > train_peak;
    lines.push(Line {
        name: "eval stage: KV cache".into(),
        bytes: kv_peak as u64,
        detail: format!("eval.batch_size {eb} × ({t} prompt + {new_tokens} new tokens, {budget_key}) × {l} layers × k and v [{}, {d}]", c.num_key_value_heads),
        counted: eval_counted,
    });
    let model = format!("{} h{h} L{l} V{v}", format!("{:?}", c.architecture).to_lowercase());
    Ok(finish(recipe, &cm, model, trainable, lines, if eval_counted { kv_peak } else { train_peak }))
}

/// The step's peak, of two phases: the start of backward (every activation and the loss head
/// alive, gradients forming: in full fine-tuning they replace activations as backward goes, so
/// only LoRA's small ones count here) and the optimizer step (every gradient, no activation). The
/// lines not alive at the peak are marked not counted; the temporaries line is the peak phase's.
/// Returns the peak in bytes beyond the persistent state.
fn step_phases(lines: &mut Vec<Line>, full: bool, grads: i64, activations_and_head: i64, backward_temp: i64, optimizer_temp: i64, detail: &str) -> i64 {
    let backward = activations_and_head + backward_temp + if full { 0 } else { grads };
    let optimizer = grads + optimizer_temp;
    let optimizer_peak = optimizer > backward;
    for l in lines.iter_mut() {
        if l.name == "gradients" {
            l.counted = optimizer_peak || !full;
        } else if l.name.starts_with("activations") || l.name.starts_with("loss head") {
            l.counted = !optimizer_peak;
        }
    }
    let temp = if optimizer_peak { optimizer_temp } else { backward_temp };
    let phase = if optimizer_peak { "the optimizer step" } else { "the start of backward" };
    lines.push(line("backward and optimizer temporaries", temp, format!("at the peak, {phase}: the largest of {detail}")));
    backward.max(optimizer)
}

/// Runtime, allocator slack, total.
fn finish(recipe: &LoadedRecipe, cm: &Common, model: String, trainable: i64, mut lines: Vec<Line>, phase_peak: i64) -> Plan {
    let persistent: i64 = lines.iter().filter(|l| l.counted && (l.name.starts_with("base") || l.name.starts_with("trainable") || l.name == "AdamW moments" || l.name == "fp32 master weights")).map(|l| l.bytes as i64).sum();
    let tensors = persistent + phase_peak;
    if cm.gpu {
        lines.insert(0, line("CUDA context", CUDA_CONTEXT_BYTES as i64, "CUDA context, kernels loaded lazily, cuBLAS workspace (typical; not measured here)".into()));
        lines.push(line("allocator slack", (tensors as f64 * CUDA_ALLOCATOR_SLACK) as i64, format!("{:.0}% of the tensors' {} (caching allocator)", CUDA_ALLOCATOR_SLACK * 100.0, human(tensors as u64))));
    } else {
        lines.insert(0, line("runtime (libtorch, CPU)", CPU_RUNTIME_BYTES as i64, "resident size of the process without a model (measured, see CPU_RUNTIME_BYTES)".into()));
    }
    let fixed: i64 = lines.iter().filter(|l| l.name == "CUDA context" || l.name.starts_with("runtime") || l.name == "allocator slack").map(|l| l.bytes as i64).sum();
    let r = &recipe.recipe;
    Plan {
        model,
        method: format!("{:?}", cm.method).to_lowercase(),
        precision: format!("{:?}", r.training.precision).to_lowercase(),
        device: if cm.gpu { "cuda".into() } else { "cpu".into() },
        seq: cm.seq,
        batch: cm.batch,
        gradient_checkpointing: cm.ckpt,
        loss_chunk_tokens: cm.chunk,
        trainable_params: trainable,
        lines,
        total_bytes: (fixed + tensors) as u64,
        tensor_bytes: tensors as u64,
    }
}

fn dtype_name(k: i64) -> &'static str {
    if k == 4 {
        "fp32"
    } else {
        "16-bit"
    }
}

/// T5: weights, trainable state and the eval cache exactly; activations by a coarser count (eager
/// attention keeps [b, heads, t, T] scores, probabilities and their dropout mask), not yet held
/// to measurements.
fn estimate_t5(recipe: &LoadedRecipe, c: &T5Config, opts: &EstimateOptions) -> Result<Plan> {
    let r = &recipe.recipe;
    let f = &r.finetune;
    let cm = common(recipe, opts)?;
    if cm.method == Method::Qlora {
        bail!("QLoRA is implemented for decoder-only models; estimate T5 with finetune.method full or lora");
    }
    if cm.ckpt {
        bail!("training.gradient_checkpointing is implemented for decoder-only models, not T5; set it to false");
    }
    let (k, full) = (cm.k, cm.method == Method::Full);
    let (dm, inner, dff, v, nh) = (c.d_model, c.num_heads * c.d_kv, c.d_ff, c.vocab_size, c.num_heads);
    let (le, ld) = (c.num_layers, c.num_decoder_layers);
    let ffn_mats = if c.is_gated_act { 3 } else { 2 };
    let attn = 4 * dm * inner;
    let ffn = ffn_mats * dm * dff;
    let bias = c.relative_attention_num_buckets * nh;
    let base = v * dm + le * (attn + ffn + 2 * dm) + bias + dm + ld * (2 * attn + ffn + 3 * dm) + bias + dm + if c.is_gated_act { v * dm } else { 0 };
    let mut lines = vec![line("base weights", k * base, format!("{base} params, {}", dtype_name(k)))];
    let ffn_names: Vec<(&str, i64, i64)> = if c.is_gated_act { vec![("wi_0", dm, dff), ("wi_1", dm, dff), ("wo", dff, dm)] } else { vec![("wi", dm, dff), ("wo", dff, dm)] };
    let targets = &f.lora_target_modules;
    let lora_of = |name: &str, i: i64, o: i64| if targets.iter().any(|t| t == name) { f.lora_r * (i + o) } else { 0 };
    let attn_lora: i64 = ["q", "k", "v"].iter().map(|n| lora_of(n, dm, inner)).sum::<i64>() + lora_of("o", inner, dm);
    let ffn_lora: i64 = ffn_names.iter().map(|(n, i, o)| lora_of(n, *i, *o)).sum();
    let trainable = if full { base } else { le * (attn_lora + ffn_lora) + ld * (2 * attn_lora + ffn_lora) };
    if !full {
        lines.push(line("trainable: LoRA adapters", k * trainable, format!("{trainable} params (r {} on {})", f.lora_r, targets.join(", "))));
    }
    lines.push(line("gradients", k * trainable, format!("{trainable} × {k} B")));
    lines.push(line("AdamW moments", 8 * trainable, format!("{trainable} × 8 B")));
    lines.push(line("fp32 master weights", if k == 4 { 0 } else { 4 * trainable }, String::new()));
    let (b, s, t) = (cm.batch, cm.seq, cm.seq);
    // Per block: the norm's fp32 input, q/k/v/out [N, inner], fp32 probabilities and the
    // compute-dtype copy plus dropout mask [b, nh, t, T], the FFN's [N, F] tensors and dropout masks.
    let dr = if c.dropout_rate > 0.0 { 1 } else { 0 };
    let self_attn = |n: i64, tq: i64, tk: i64| 4 * n * dm + 4 * k * n * inner + b * nh * tq * tk * (4 + k + dr * 2 * k) + dr * 2 * k * n * dm;
    let ffn_act = |n: i64| 4 * n * dm + k * n * dm + (ffn_mats + 1) * k * n * dff + dr * 2 * k * n * dff;
    let enc = le * (self_attn(b * s, s, s) + ffn_act(b * s));
    let dec = ld * (self_attn(b * t, t, t) + self_attn(b * t, t, s) + ffn_act(b * t));
    let acts = enc + dec;
    lines.push(line("activations (saved for backward, approximate)", acts, format!("{le} encoder + {ld} decoder blocks, source and target {s} tokens (T5: not yet measured)")));
    let labelled = b * t;
    let chunk = if cm.chunk == 0 { labelled } else { cm.chunk.min(labelled) };
    let head = head_peak(cm.chunk > 0, chunk, labelled, v, dm, k, full);
    lines.push(line("loss head (per chunk)", head, format!("{chunk} of {labelled} labelled tokens × vocab {v}")));
    let largest = if full { v * dm } else { f.lora_r * dff.max(dm) };
    let opt_temp = (2 + if k == 4 { 0 } else { 1 }) * 4 * largest;
    let trainable_bytes = lines.iter().find(|l| l.name == "gradients").map(|l| l.bytes as i64).unwrap_or(0);
    let train_peak = step_phases(&mut lines, full, trainable_bytes, acts + head, 3 * k * b * s * dff, opt_temp, &format!("the FFN's backward, or AdamW on the largest tensor ({})", human(opt_temp as u64)));
    let eb = r.eval.batch_size as i64;
    let (kv_len, budget_key) = eval_new_tokens(r);
    // Self-attention cache grows with the output; cross-attention keys/values cover the source.
    let kv = ld * eb * 2 * inner * k * (kv_len + s);
    let eval_counted = kv > train_peak;
    lines.push(Line { name: "eval stage: KV cache".into(), bytes: kv as u64, detail: format!("eval.batch_size {eb}, {kv_len} new tokens ({budget_key}) + {s} source tokens (cross-attention)"), counted: eval_counted });
    Ok(finish(recipe, &cm, format!("t5 d{dm} L{le}+{ld} V{v}"), trainable, lines, if eval_counted { kv } else { train_peak }))
}

/// The largest micro-batch (at the planned sequence) and the largest sequence (at the planned
/// micro-batch) whose plan fits `budget` bytes; None when not even 1 (or 2 tokens) fits.
pub fn fit(recipe: &LoadedRecipe, opts: &EstimateOptions, budget: u64) -> Result<(Option<i64>, Option<i64>)> {
    let base = estimate(recipe, opts)?;
    let fits = |seq: i64, batch: i64| -> Result<bool> { Ok(estimate(recipe, &EstimateOptions { seq: Some(seq), batch: Some(batch) })?.total_bytes <= budget) };
    let largest = |f: &dyn Fn(i64) -> Result<bool>, lo: i64| -> Result<Option<i64>> {
        if !f(lo)? {
            return Ok(None);
        }
        let mut hi = lo;
        while hi < (1 << 24) && f(hi * 2)? {
            hi *= 2;
        }
        let (mut a, mut b) = (hi, (hi * 2).min(1 << 24)); // a fits, b does not (or is the cap)
        while b - a > 1 {
            let m = (a + b) / 2;
            if f(m)? {
                a = m;
            } else {
                b = m;
            }
        }
        Ok(Some(a))
    };
    let batch = largest(&|bb| fits(base.seq, bb), 1)?;
    let seq = largest(&|ss| fits(ss, base.batch), 2)?;
    Ok((batch, seq))
}
