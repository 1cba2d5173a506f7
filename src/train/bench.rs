//! `steptune bench-train`: training throughput and memory on a prepared file, printed as one JSON
//! line that scripts/bench_train.sh, scripts/bench_qlora.sh and scripts/bench_t5.sh put beside
//! transformers (+ peft, + bitsandbytes).
//!
//! Any model the training loop takes (Qwen3/Qwen2/Llama, T5), any method (full, LoRA, QLoRA with
//! the base's projections in NF4), with or without gradient checkpointing, loaded as
//! `train::base_model` loads it: from `model.source` (a folder: 16-bit checkpoints are quantized
//! tensor by tensor as they are read for QLoRA) or initialised from `model.config` (`random`).
//!
//! Modes (which rows each step takes, and how they are padded):
//! `padded`: the usual fixed-length HF loop (file order, every batch padded to the longest row of
//! the file; a decoder computes logits over every position unless checkpointing, whose head runs on
//! labelled positions). `ordered`: file order, every batch padded to its own longest row (what
//! transformers' dynamic padding does). `realistic`: steptune's own path (length-grouped batches,
//! dynamic padding, the LM head only where a label exists).
use std::time::Instant;

use anyhow::{bail, Context, Result};
use serde_json::json;
use tch::{Device, Kind, Tensor};

use super::batches::{collate, epoch_batches, read_prepared};
use super::optim::AdamW;
use crate::nn::linear::Base;
use crate::adapt::peft::{self, LoraSpec};
use crate::model::qwen3::Qwen3;
use crate::model::t5::T5;
use crate::model::{self as models, source, Model};
use crate::recipe::{LoadedRecipe, Method};

/// One line of /proc/self/status (`VmHWM`, `VmRSS`), in MiB; 0 where /proc is missing.
fn proc_status_mib(key: &str) -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with(key)).and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok()))
        .map(|kib| kib / 1024.0)
        .unwrap_or(0.0)
}

/// Peak resident memory of this process (VmHWM), in MiB; 0 where /proc is missing.
pub fn peak_rss_mib() -> f64 {
    proc_status_mib("VmHWM:")
}

/// Resets VmHWM to the current resident size (Linux `clear_refs` 5), so a later VmHWM is the peak
/// since now; false where the kernel does not allow it.
pub fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", b"5").is_ok()
}

/// Resident memory of this process now (VmRSS), in MiB; 0 where /proc is missing.
pub fn rss_mib() -> f64 {
    proc_status_mib("VmRSS:")
}

/// The peak of anonymous resident memory (RssAnon: the heap, tensors), sampled every 10 ms by a
/// thread. VmHWM also counts file pages a memory map has touched: reading a safetensors file
/// through its map counts the whole file while it is mapped, although the kernel can drop those
/// pages at any time; RssAnon is what the process itself holds.
struct AnonPeak {
    peak_kib: std::sync::Arc<std::sync::atomic::AtomicU64>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    handle: Option<std::thread::JoinHandle<()>>,
}

fn rss_anon_kib() -> u64 {
    (proc_status_mib("RssAnon:") * 1024.0) as u64
}

impl AnonPeak {
    fn start() -> AnonPeak {
        use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
        let peak_kib = std::sync::Arc::new(AtomicU64::new(rss_anon_kib()));
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let (p, s) = (peak_kib.clone(), stop.clone());
        let handle = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                p.fetch_max(rss_anon_kib(), Ordering::Relaxed);
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
        });
        AnonPeak { peak_kib, stop, handle: Some(handle) }
    }

    /// The peak since the last call (or the start), in MiB; the next period starts from now.
    fn take_mib(&self) -> f64 {
        use std::sync::atomic::Ordering;
        let now = rss_anon_kib();
        let peak = self.peak_kib.swap(now, Ordering::Relaxed).max(now);
        peak as f64 / 1024.0
    }
}

impl Drop for AnonPeak {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// What `steptune bench-train` runs; `method` and `gradient_checkpointing` override the recipe.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    pub mode: String,
    pub steps: usize,
    pub warmup: usize,
    pub method: Option<Method>,
    pub gradient_checkpointing: Option<bool>,
    /// The device's dense peak in TFLOPS for the model-FLOPs utilisation (989 for an H200 in
    /// bf16); without it `mfu` is null and only the achieved model TFLOPS are reported.
    pub peak_tflops: Option<f64>,
}

impl Default for BenchOptions {
    fn default() -> Self {
        BenchOptions { mode: "realistic".into(), steps: 20, warmup: 3, method: None, gradient_checkpointing: None, peak_tflops: None }
    }
}

/// The network, concrete so that `padded` mode can ask a decoder for logits at every position;
/// everything else goes through `dyn Model`.
enum Net {
    Decoder(Qwen3),
    T5(T5),
}

impl Net {
    fn model(&self) -> &dyn Model {
        match self {
            Net::Decoder(m) => m,
            Net::T5(m) => m,
        }
    }
    fn model_mut(&mut self) -> &mut dyn Model {
        match self {
            Net::Decoder(m) => m,
            Net::T5(m) => m,
        }
    }
}

/// The base model as `train::base_model` would load it (without writing anything).
fn load_net(recipe: &LoadedRecipe, method: Method, kind: Kind, device: Device) -> Result<Net> {
    let r = &recipe.recipe;
    let quant = super::quant_spec_for(recipe, method);
    let files = source::resolve(recipe, true)?;
    if let Some(dir) = &files.dir {
        let config = models::read_config(dir)?;
        if config.get("model_type").and_then(|v| v.as_str()) == Some("t5") {
            if quant.is_some() {
                bail!("{}: QLoRA is implemented for decoder-only models; benchmark T5 with method full or lora", dir.display());
            }
            return Ok(Net::T5(models::load_t5(dir, kind, device)?));
        }
        return Ok(Net::Decoder(match quant {
            Some(spec) => models::load_decoder_4bit(dir, spec, kind, device)?,
            None => models::load_decoder(dir, kind, device)?,
        }));
    }
    let model_kind = files.kind();
    let config = files.config.context("bench-train needs model.config (source: random) or a model folder")?;
    // Drawn on `device` in `kind` (one float32 tensor at a time); QLoRA quantizes each projection
    // as it is drawn, so an 8B model never exists in 16 bits.
    tch::manual_seed(r.seed as i64);
    Ok(match (model_kind, quant) {
        (source::ModelKind::Seq2Seq, Some(_)) => bail!("QLoRA is implemented for decoder-only models; benchmark T5 with method full or lora"),
        (source::ModelKind::Seq2Seq, None) => Net::T5(models::random_t5(&config, kind, device)?),
        (source::ModelKind::Causal, Some(spec)) => Net::Decoder(models::random_decoder_4bit(&config, files.architecture, spec, kind, device)?),
        (source::ModelKind::Causal, None) => Net::Decoder(models::random_decoder(&config, files.architecture, kind, device)?),
    })
}

/// "cpu" or "cuda:N", as recipes name devices.
fn device_name(d: Device) -> String {
    match d {
        Device::Cuda(i) => format!("cuda:{i}"),
        _ => "cpu".into(),
    }
}

fn tensor_bytes(t: &Tensor) -> i64 {
    t.numel() as i64 * t.kind().elt_size_in_bytes() as i64
}

pub fn run(recipe: &LoadedRecipe, prepared: &std::path::Path, opts: &BenchOptions) -> Result<serde_json::Value> {
    let (mode, steps, warmup) = (opts.mode.as_str(), opts.steps, opts.warmup);
    if !matches!(mode, "padded" | "ordered" | "realistic") {
        bail!("--mode must be padded, ordered or realistic, not {mode}");
    }
    if steps == 0 {
        bail!("--steps must be at least 1");
    }
    let r = &recipe.recipe;
    let t = &r.training;
    let method = opts.method.unwrap_or(r.finetune.method);
    let checkpointing = opts.gradient_checkpointing.unwrap_or(t.gradient_checkpointing);
    let device = super::device_of(&t.device);
    let kind = super::kind_of(t.precision);
    let rows = read_prepared(prepared)?;
    if rows.is_empty() {
        bail!("{}: no rows", prepared.display());
    }
    // On a GPU the caching allocator's peaks are the memory figures (torch.cuda.max_memory_*),
    // and every timer stops after a synchronize, since kernels run asynchronously.
    let cuda = match device {
        Device::Cuda(i) => Some(i),
        _ => None,
    };
    let sync = || {
        if let Some(i) = cuda {
            tch::Cuda::synchronize(i as i64);
        }
    };
    if let Some(i) = cuda {
        crate::ffi::cuda_reset_peak_stats(i)?;
    }

    // The model, with memory before and after loading (VmHWM after loading is the load's peak).
    let rss_before_load = rss_mib();
    let anon = AnonPeak::start();
    let load_start = Instant::now();
    let mut net = load_net(recipe, method, kind, device)?;
    sync();
    net.model_mut().set_loss_chunk(recipe.recipe.training.loss_chunk_tokens);
    let load_seconds = load_start.elapsed().as_secs_f64();
    let cuda_load = cuda.map(crate::ffi::cuda_memory_stats).transpose()?;
    let (rss_after_load, peak_rss_load, peak_anon_load) = (rss_mib(), peak_rss_mib(), anon.take_mib());
    let model_kind = net.model().model_kind();
    if checkpointing && model_kind == source::ModelKind::Seq2Seq {
        bail!("gradient checkpointing is implemented for decoder-only models, not T5");
    }

    // What the weights take: the projections (4-bit or dense) and every other base tensor.
    let (mut q_bytes, mut q_params, mut proj_bytes, mut proj_params) = (0i64, 0i64, 0i64, 0i64);
    for (_, lin) in net.model().projections() {
        match &lin.base {
            Base::Nf4 { weight, .. } => {
                q_bytes += weight.storage_bytes();
                q_params += weight.numel();
                proj_bytes += weight.storage_bytes();
                proj_params += weight.numel();
            }
            Base::Dense(w) => {
                proj_bytes += tensor_bytes(w);
                proj_params += w.numel() as i64;
            }
        }
    }
    let dense_bytes: i64 = net.model().dense_weights().iter().map(|(_, w)| tensor_bytes(w)).sum();
    let dense_params: i64 = net.model().dense_weights().iter().map(|(_, w)| w.numel() as i64).sum();

    let params = match method {
        Method::Full => {
            let p = net.model().dense_weights();
            for (_, w) in &p {
                let _ = w.set_requires_grad(true);
            }
            p
        }
        Method::Lora | Method::Qlora => {
            let f = &r.finetune;
            peft::attach(net.model_mut(), &LoraSpec { r: f.lora_r, alpha: f.lora_alpha, dropout: f.lora_dropout, targets: f.lora_target_modules.clone() })?;
            peft::named_lora(net.model())
        }
    };
    let trainable: i64 = params.iter().map(|(_, p)| p.numel() as i64).sum();
    let mut opt = AdamW::new(params, t.adam_beta1, t.adam_beta2, t.adam_epsilon, t.weight_decay);
    let rss_before_train = rss_mib();
    // From here VmHWM is the peak of the training steps alone (the load's peak is reported above).
    let hwm_reset = reset_peak_rss();
    // Training peaks start from what the model, adapters and optimizer hold now.
    let cuda_before_train = cuda.map(crate::ffi::cuda_memory_stats).transpose()?;
    if let Some(i) = cuda {
        crate::ffi::cuda_reset_peak_stats(i)?;
    }
    // Model FLOPs per token (PaLM's convention, appendix B): 6·N for the matmul weights N
    // (projections at their logical size, 4-bit or not; LoRA's A and B; the LM head; not the
    // embedding lookup), plus 12·L·H·D·T for attention (L layers, H query heads of width D, T the
    // row's length), with no discount for the causal mask, for recomputation under checkpointing,
    // or for the frozen base needing no weight gradient. Decoders only; T5 reports null.
    let flops_of_row: Option<Box<dyn Fn(i64) -> f64>> = match &net {
        Net::Decoder(m) => {
            let c = &m.cfg;
            let lora = if method == Method::Full { 0 } else { trainable };
            let n = (proj_params + lora + c.vocab_size * c.hidden_size) as f64;
            let attn = 12.0 * (c.num_hidden_layers * c.num_attention_heads * c.head_dim) as f64;
            Some(Box::new(move |t: i64| 6.0 * n * t as f64 + attn * (t * t) as f64))
        }
        Net::T5(_) => None,
    };
    let mut flops = 0.0;

    let bs = t.per_device_train_batch_size;
    let batches: Vec<Vec<usize>> = match mode {
        "padded" | "ordered" => (0..rows.len()).collect::<Vec<_>>().chunks(bs).map(<[usize]>::to_vec).collect(),
        _ => epoch_batches(&rows.iter().map(|e| e.input_ids.len()).collect::<Vec<_>>(), bs, true, r.seed, 0),
    };
    let longest = rows.iter().map(|e| e.input_ids.len()).max().unwrap_or(1);
    let longest_labels = rows.iter().map(|e| e.labels.len()).max().unwrap_or(1);
    let (mut seconds, mut tokens, mut padded_tokens, mut last_loss) = (0.0, 0i64, 0i64, 0.0);
    let mut step_seconds = Vec::new();
    for step in 0..steps + warmup {
        let idx = &batches[step % batches.len()];
        let mut ex: Vec<_> = idx.iter().map(|&i| rows[i].clone()).collect();
        if mode == "padded" {
            // Pad every row to the file's longest (labels -100, pad id 0), as a fixed-length loop does.
            for e in &mut ex {
                e.input_ids.resize(longest, 0);
                let to = if model_kind == source::ModelKind::Causal { longest } else { longest_labels };
                e.labels.resize(to, -100);
            }
        }
        let refs: Vec<_> = ex.iter().collect();
        let b = collate(&refs, 0, model_kind, device);
        let real: i64 = idx.iter().map(|&i| (rows[i].input_ids.len() + if model_kind == source::ModelKind::Seq2Seq { rows[i].labels.len() } else { 0 }) as i64).sum();
        let start = Instant::now();
        let scale = 1.0 / b.n_targets.max(1) as f64;
        let loss = if checkpointing {
            // The gradient of loss · scale is accumulated inside (per-layer recompute).
            let (sum, _) = net.model().loss_sum_backward_checkpointed(&b, scale)?;
            sum * scale
        } else {
            let loss = match (&net, mode) {
                (Net::Decoder(m), "padded") => {
                    // Logits at every position, then the loss over labelled ones: what HF computes.
                    // The labels shift left (-100 after the last) rather than the logits right, as
                    // transformers' ForCausalLMLoss does: narrowing the logits would copy them.
                    let logits = m.forward_train(&b.input_ids); // [b, t, V]
                    let v = logits.size()[2];
                    let (rows, tt) = (b.labels.size()[0], b.labels.size()[1]);
                    let none = Tensor::full([rows, 1], -100, (Kind::Int64, b.labels.device()));
                    let targets = Tensor::cat(&[b.labels.narrow(1, 1, tt - 1), none], 1); // [b, t]
                    logits.reshape([-1, v]).cross_entropy_loss::<Tensor>(&targets.reshape([-1]), None, tch::Reduction::Mean, -100, 0.0)
                }
                _ => {
                    let (sum, _) = net.model().loss_sum(&b, true)?;
                    sum * scale
                }
            };
            loss.backward();
            loss.double_value(&[])
        };
        opt.step(t.learning_rate)?;
        opt.zero_grad();
        sync();
        let dt = start.elapsed().as_secs_f64();
        last_loss = loss;
        eprintln!("bench-train: step {}/{}: loss {loss:.4}, {dt:.3}s{}", step + 1, steps + warmup, if step < warmup { " (warmup)" } else { "" });
        if step >= warmup {
            seconds += dt;
            step_seconds.push(dt);
            tokens += real;
            if let Some(f) = &flops_of_row {
                flops += idx.iter().map(|&i| f(rows[i].input_ids.len() as i64)).sum::<f64>();
            }
            padded_tokens += b.input_ids.numel() as i64 + if model_kind == source::ModelKind::Seq2Seq { b.labels.numel() as i64 } else { 0 };
        }
    }
    let ratio = |a: i64, b: i64| if b > 0 { json!(a as f64 / b as f64) } else { json!(null) };
    let cuda_train = cuda.map(crate::ffi::cuda_memory_stats).transpose()?;
    let tokens_per_second = tokens as f64 / seconds.max(1e-9);
    let achieved_tflops = flops_of_row.as_ref().map(|_| flops / seconds.max(1e-9) / 1e12);
    let mfu = achieved_tflops.zip(opts.peak_tflops).map(|(a, p)| a / p);
    // The one peak the GPU check compares with `steptune estimate`: the allocator's peak over
    // loading and training on a GPU; on the CPU the peak of anonymous resident memory.
    let peak_anon_train = anon.take_mib();
    let (peak_bytes, peak_source) = match (cuda_load, cuda_train) {
        (Some(l), Some(t)) => (l.peak_allocated.max(t.peak_allocated), "cuda_max_memory_allocated"),
        _ => ((peak_anon_load.max(peak_anon_train) * 1048576.0) as i64, "cpu_peak_anon_rss"),
    };
    let cuda_json = match (cuda_load, cuda_train) {
        (Some(l), Some(t)) => json!({
            "allocated_after_load_bytes": l.allocated,
            "peak_allocated_load_bytes": l.peak_allocated,
            "peak_reserved_load_bytes": l.peak_reserved,
            "allocated_before_train_bytes": cuda_before_train.map(|c| c.allocated),
            "allocated_after_train_bytes": t.allocated,
            "peak_allocated_train_bytes": t.peak_allocated,
            "peak_reserved_train_bytes": t.peak_reserved,
            "peak_allocated_bytes": l.peak_allocated.max(t.peak_allocated),
            "peak_reserved_bytes": l.peak_reserved.max(t.peak_reserved),
        }),
        _ => json!(null),
    };
    let gib = |b: i64| b as f64 / (1u64 << 30) as f64;
    eprintln!(
        "bench-train: {} {}{} on {}: {:.1} tokens/s, {:.3} s/step, peak {:.3} GiB ({peak_source}){}{}",
        format!("{method:?}").to_lowercase(),
        format!("{:?}", t.precision).to_lowercase(),
        if checkpointing { " +ckpt" } else { "" },
        device_name(device),
        tokens_per_second,
        seconds / steps as f64,
        gib(peak_bytes),
        cuda_train.map(|c| format!(", peak reserved {:.3} GiB", gib(c.peak_reserved.max(cuda_load.map_or(0, |l| l.peak_reserved))))).unwrap_or_default(),
        match (achieved_tflops, mfu) {
            (Some(a), Some(m)) => format!(", {a:.2} model TFLOPS, MFU {:.1}%", m * 100.0),
            (Some(a), None) => format!(", {a:.4} model TFLOPS"),
            _ => String::new(),
        }
    );
    Ok(json!({
        "impl": "steptune",
        "device": device_name(device),
        "batch_size": bs,
        "peak_bytes": peak_bytes,
        "peak_bytes_source": peak_source,
        "cuda_memory": cuda_json,
        "model_flops": flops_of_row.as_ref().map(|_| flops),
        "model_tflops_per_second": achieved_tflops,
        "peak_tflops": opts.peak_tflops,
        "mfu": mfu,
        "mfu_formula": flops_of_row.as_ref().map(|_| "per row of T tokens: 6*N*T + 12*L*H*D*T^2; N = projections (logical size) + LoRA + lm_head, no embedding; no causal, recompute or frozen-weight discount"),
        "mode": mode,
        "method": format!("{method:?}").to_lowercase(),
        "gradient_checkpointing": checkpointing,
        "precision": format!("{:?}", t.precision).to_lowercase(),
        "compute_dtype": if method == Method::Qlora { json!(format!("{:?}", r.finetune.quantization.bnb_4bit_compute_dtype).to_lowercase()) } else { json!(null) },
        "steps_timed": steps,
        "seconds": seconds,
        "seconds_per_step": seconds / steps as f64,
        "step_seconds": step_seconds,
        "tokens": tokens,
        "tokens_per_second": tokens_per_second,
        "padded_tokens": padded_tokens,
        "padded_tokens_per_second": padded_tokens as f64 / seconds.max(1e-9),
        "peak_rss_mib": peak_rss_mib(),
        "peak_rss_train_mib": if hwm_reset { json!(peak_rss_mib()) } else { json!(null) },
        "peak_anon_load_mib": peak_anon_load,
        "peak_anon_train_mib": peak_anon_train,
        "rss_before_load_mib": rss_before_load,
        "rss_after_load_mib": rss_after_load,
        "peak_rss_load_mib": peak_rss_load,
        "rss_before_train_mib": rss_before_train,
        "load_seconds": load_seconds,
        "quantized_bytes": q_bytes,
        "quantized_params": q_params,
        "quantized_bytes_per_param": ratio(q_bytes, q_params),
        "projection_bytes": proj_bytes,
        "projection_params": proj_params,
        "projection_bytes_per_param": ratio(proj_bytes, proj_params),
        "other_weight_bytes": dense_bytes - if q_params == 0 { proj_bytes } else { 0 },
        "other_weight_params": dense_params - if q_params == 0 { proj_params } else { 0 },
        "params_trainable": trainable,
        "final_loss": last_loss,
    }))
}
