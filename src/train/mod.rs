//! `steptune train`: the training loop, readable top to bottom.
//!
//! AdamW with decoupled weight decay, warmup then linear/cosine/constant schedule, gradient
//! accumulation, clipping by global norm; eval loss on a cadence with early stopping; atomic
//! checkpoints with exact resume; a NaN or infinite loss stops the run and names the step.
pub mod batches;
pub mod bench;
pub mod checkpoint;
pub mod optim;
pub mod plot;
pub mod schedule;

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use serde_json::json;
use tch::{Device, Kind, Tensor};

use self::batches::{collate, epoch_batches, read_prepared, TrainExample};
use self::checkpoint::TrainerState;
use self::optim::{clip_grad_norm, AdamW};
use crate::adapt::peft::{self, LoraSpec};
use crate::model::source::ModelKind;
use crate::model::Model;
use crate::model::tokenizer::TokenizerBundle;
use crate::model::{self as models, source, QuantSpec};
use crate::recipe::{Cadence, LoadedRecipe, Method, Precision};
use crate::run::{write_atomic, RunDir};

#[derive(Debug, Clone, Default)]
pub struct TrainOptions {
    /// Ignore existing checkpoints and train from the start.
    pub restart: bool,
    /// Stop (as if killed) right after the checkpoint at this step: the resume test uses it.
    pub stop_after: Option<u64>,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct TrainOutcome {
    pub steps: u64,
    pub initial_eval_loss: Option<f64>,
    pub final_eval_loss: Option<f64>,
    pub best_eval_loss: Option<f64>,
    pub stopped_early: bool,
    /// The trained model (full) or adapter (LoRA) folder.
    pub output: PathBuf,
    /// The untuned base model folder.
    pub base: PathBuf,
    pub seconds: f64,
    pub tokens_per_second: f64,
}

pub fn device_of(spec: &str) -> Device {
    match spec {
        "cpu" => Device::Cpu,
        "cuda" => Device::Cuda(0),
        s if s.starts_with("cuda:") => Device::Cuda(s[5..].parse().unwrap_or(0)),
        _ => Device::cuda_if_available(),
    }
}

pub fn kind_of(p: Precision) -> Kind {
    match p {
        Precision::Fp32 => Kind::Float,
        Precision::Bf16 => Kind::BFloat16,
        Precision::Fp16 => Kind::Half,
    }
}

/// The base model: from its HF folder, or (source: random) initialised from the recipe's config
/// and written as an HF folder into the run, so it can be reloaded, compared and shared.
pub fn base_model(recipe: &LoadedRecipe, run: &RunDir, tok: &TokenizerBundle, kind: Kind, device: Device) -> Result<(Box<dyn Model>, PathBuf)> {
    let files = source::resolve(recipe, true)?;
    let quant = quant_spec(recipe);
    if let Some(dir) = files.dir {
        return Ok((models::load_model(&dir, quant, kind, device)?, dir));
    }
    let dir = run.path("base_model");
    if !dir.join("model.safetensors").exists() {
        let model_kind = files.kind();
        let mut config = files.config.context("source: random needs model.config")?;
        // The vocabulary is the tokenizer's; every other key must be in the recipe's config.
        if config.get("vocab_size").is_none() {
            config["vocab_size"] = json!(tok.vocab_size());
        }
        tch::manual_seed(recipe.recipe.seed as i64);
        let model: Box<dyn Model> = match model_kind {
            ModelKind::Seq2Seq => Box::new(models::random_t5(&config, kind, device)?),
            ModelKind::Causal => Box::new(models::random_decoder(&config, files.architecture, kind, device)?),
        };
        model.save(&dir, Some(tok))?;
        if quant.is_none() {
            return Ok((model, dir));
        }
    }
    // QLoRA quantizes the saved 16-bit base as it would any checkpoint.
    Ok((models::load_model(&dir, quant, kind, device)?, dir))
}

/// QLoRA's storage of the base (`finetune.quantization`); None for full fine-tuning and LoRA.
pub fn quant_spec(recipe: &LoadedRecipe) -> Option<QuantSpec> {
    quant_spec_for(recipe, recipe.recipe.finetune.method)
}

/// As `quant_spec`, for `method` in place of the recipe's (bench-train overrides it).
pub fn quant_spec_for(recipe: &LoadedRecipe, method: Method) -> Option<QuantSpec> {
    let f = &recipe.recipe.finetune;
    (method == Method::Qlora).then(|| QuantSpec {
        blocksize: f.quantization.blocksize as i64,
        double_quant: f.quantization.bnb_4bit_use_double_quant,
        compute: kind_of(f.quantization.bnb_4bit_compute_dtype),
    })
}

fn lora_spec(recipe: &LoadedRecipe) -> LoraSpec {
    let f = &recipe.recipe.finetune;
    LoraSpec { r: f.lora_r, alpha: f.lora_alpha, dropout: f.lora_dropout, targets: f.lora_target_modules.clone() }
}

/// Trainable tensors by the names they are saved under (checkpoint names for full fine-tuning,
/// PEFT names for LoRA).
fn trainable(model: &dyn Model, method: Method) -> Vec<(String, Tensor)> {
    match method {
        Method::Full => model.dense_weights(),
        Method::Lora | Method::Qlora => peft::named_lora(model),
    }
}

/// Mean loss over every labelled token of `examples`.
pub fn eval_loss(model: &dyn Model, examples: &[TrainExample], batch_size: usize, pad_id: i64) -> f64 {
    let _guard = tch::no_grad_guard();
    let lengths: Vec<usize> = examples.iter().map(|e| e.input_ids.len()).collect();
    let mut order: Vec<usize> = (0..examples.len()).collect();
    order.sort_by_key(|&i| lengths[i]);
    let (mut sum, mut n) = (0.0, 0i64);
    for chunk in order.chunks(batch_size) {
        let refs: Vec<&TrainExample> = chunk.iter().map(|&i| &examples[i]).collect();
        let b = collate(&refs, pad_id, model.model_kind(), model.device());
        let (loss, count) = model.loss_sum(&b, false);
        sum += loss.double_value(&[]);
        n += count;
    }
    if n == 0 { f64::NAN } else { sum / n as f64 }
}

/// FNV-1a over the prepared train data and the settings that shape training.
fn fingerprint(recipe: &LoadedRecipe, train_file: &Path) -> Result<String> {
    let data = std::fs::read(train_file).with_context(|| format!("cannot read {}", train_file.display()))?;
    let r = &recipe.recipe;
    let settings = serde_json::to_vec(&json!({"seed": r.seed, "model": r.model, "finetune": r.finetune, "training": r.training}))?;
    let mut h: u64 = 0xcbf29ce484222325;
    for b in data.iter().chain(&settings) {
        h ^= *b as u64;
        h = h.wrapping_mul(0x100000001b3);
    }
    Ok(format!("{h:016x}"))
}

struct Metrics {
    file: std::fs::File,
}

impl Metrics {
    /// Opens metrics.jsonl, keeping only the lines up to `upto` (the step a resumed run restarts at).
    fn open(path: &Path, upto: Option<u64>) -> Result<Metrics> {
        let kept: String = match (upto, std::fs::read_to_string(path)) {
            (Some(s), Ok(text)) => text
                .lines()
                .filter(|l| serde_json::from_str::<serde_json::Value>(l).ok().and_then(|v| v["step"].as_u64()).is_some_and(|st| st <= s))
                .map(|l| format!("{l}\n"))
                .collect(),
            _ => String::new(),
        };
        write_atomic(path, kept.as_bytes())?;
        let file = std::fs::OpenOptions::new().append(true).open(path).with_context(|| format!("cannot open {}", path.display()))?;
        Ok(Metrics { file })
    }

    fn log(&mut self, v: serde_json::Value) -> Result<()> {
        writeln!(self.file, "{v}").context("cannot append to metrics.jsonl")?;
        self.file.flush().context("cannot flush metrics.jsonl")
    }
}

pub fn run(recipe: &LoadedRecipe, run: &RunDir, opts: &TrainOptions) -> Result<TrainOutcome> {
    let r = &recipe.recipe;
    let t = &r.training;
    let started = Instant::now();
    let device = device_of(&t.device);
    let kind = kind_of(t.precision);

    // 1. Data, prepared by `steptune prepare`, and its tokenizer.
    let train = read_prepared(&run.path("prepared/train.jsonl"))?;
    let eval = read_prepared(&run.path("prepared/eval.jsonl"))?;
    if train.is_empty() {
        bail!("prepared/train.jsonl is empty");
    }
    let tok = TokenizerBundle::from_dir(&run.path("tokenizer"))?;
    let pad_id = tok.pad_token.as_deref().and_then(|p| tok.token_id(p)).or_else(|| tok.eos_id().ok()).unwrap_or(0) as i64;

    // 2. The model, and what trains.
    tch::manual_seed(r.seed as i64);
    let (mut model, base_dir) = base_model(recipe, run, &tok, kind, device)?;
    if t.gradient_checkpointing && model.model_kind() == ModelKind::Seq2Seq {
        bail!("training.gradient_checkpointing is implemented for decoder-only models (Qwen3, Qwen2, Llama), not T5; set it to false");
    }
    let spec = lora_spec(recipe);
    match r.finetune.method {
        Method::Full => {
            for (_, w) in model.dense_weights() {
                let _ = w.set_requires_grad(true);
            }
        }
        Method::Lora | Method::Qlora => peft::attach(model.as_mut(), &spec)?,
    }
    let model: &dyn Model = model.as_ref();
    let params = trainable(model, r.finetune.method);
    let n_trainable: i64 = params.iter().map(|(_, p)| p.numel() as i64).sum();
    let mut opt = AdamW::new(params, t.adam_beta1, t.adam_beta2, t.adam_epsilon, t.weight_decay);

    // 3. How long: optimizer steps per epoch, total, warmup.
    let lengths: Vec<usize> = train.iter().map(|e| e.input_ids.len()).collect();
    let bs = t.per_device_train_batch_size;
    let accum = t.gradient_accumulation_steps as u64;
    let micro_per_epoch = train.len().div_ceil(bs) as u64;
    let steps_per_epoch = micro_per_epoch.div_ceil(accum);
    let total = t.max_steps.unwrap_or((steps_per_epoch as f64 * t.num_train_epochs).ceil() as u64).max(1);
    let warmup = schedule::warmup_steps(t.warmup_ratio, t.warmup_steps, total);

    // 4. Resume from the newest checkpoint, unless told to restart.
    let fingerprint = fingerprint(recipe, &run.path("prepared/train.jsonl"))?;
    let ckpt_root = run.path("checkpoints");
    if opts.restart {
        let _ = std::fs::remove_dir_all(&ckpt_root);
    }
    let mut state = TrainerState::default();
    let mut initial_eval_loss = None;
    if let Some((_, dir)) = checkpoint::list(&ckpt_root).pop() {
        let c = checkpoint::load(&dir, device)?;
        if !c.state.fingerprint.is_empty() && c.state.fingerprint != fingerprint {
            bail!(
                "{} holds checkpoints of other data or settings (the prepared train data, model, finetune or training section changed). \
                 Pass --restart to train from the start (the checkpoints are removed), or set another output_dir.",
                ckpt_root.display()
            );
        }
        {
            let _guard = tch::no_grad_guard();
            for p in &opt.params {
                let src = c.trainable.get(&p.name).with_context(|| format!("{}: the checkpoint lacks `{}`; was it made by another recipe?", dir.display(), p.name))?;
                let mut dst = p.tensor.shallow_clone();
                let _ = dst.copy_(src);
            }
        }
        opt.load_state(c.optimizer)?;
        crate::ffi::set_cpu_rng_state(&c.rng)?;
        state = c.state;
        initial_eval_loss = state.initial_eval_loss;
        eprintln!("train: resuming from {} (step {})", dir.display(), state.step);
    }
    state.fingerprint = fingerprint;
    std::fs::create_dir_all(&ckpt_root)?;
    let mut metrics = Metrics::open(&run.path("metrics.jsonl"), Some(state.step))?;
    if state.step == 0 && !state.finished {
        let l = eval_loss(model, &eval, t.per_device_eval_batch_size, pad_id);
        initial_eval_loss = Some(l);
        state.initial_eval_loss = Some(l);
        metrics.log(json!({"step": 0, "eval_loss": l}))?;
    }
    eprintln!(
        "train: {} trainable parameters ({:?}), {} train / {} eval examples, {total} steps ({steps_per_epoch} per epoch), device {device:?}, {kind:?}",
        n_trainable,
        r.finetune.method,
        train.len(),
        eval.len()
    );

    // 5. The loop.
    let bar = indicatif::ProgressBar::new(total);
    bar.set_style(indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} [{elapsed_precise}<{eta_precise}] {msg}").unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()));
    bar.set_position(state.step);
    let loop_start = Instant::now();
    let mut tokens_seen: i64 = 0;
    let mut last_eval = None;
    'training: while state.step < total && !state.finished {
        let batches = epoch_batches(&lengths, bs, t.group_by_length, r.seed, state.epoch);
        let groups: Vec<&[Vec<usize>]> = batches.chunks(accum as usize).collect();
        while (state.step_in_epoch as usize) < groups.len() {
            let group = groups[state.step_in_epoch as usize];
            let lr = schedule::lr_at(t.lr_scheduler_type, t.learning_rate, state.step, warmup, total);
            // The loss of a step is the mean over every labelled token of its micro-batches.
            let batches: Vec<_> = group.iter().map(|idx| collate(&idx.iter().map(|&i| &train[i]).collect::<Vec<_>>(), pad_id, model.model_kind(), device)).collect();
            let targets: i64 = batches.iter().map(|b| b.n_targets).sum::<i64>().max(1);
            let mut step_loss = 0.0;
            for b in &batches {
                let scale = 1.0 / targets as f64;
                if t.gradient_checkpointing {
                    let (loss, _) = model.loss_sum_backward_checkpointed(b, scale)?;
                    step_loss += loss * scale;
                } else {
                    let (loss, _) = model.loss_sum(b, true);
                    let scaled = loss * scale;
                    step_loss += scaled.double_value(&[]);
                    scaled.backward();
                }
                tokens_seen += b.n_tokens;
            }
            if !step_loss.is_finite() {
                let last = checkpoint::list(&ckpt_root).pop().map(|(_, p)| p.display().to_string()).unwrap_or_else(|| "none yet".into());
                bar.abandon();
                bail!(
                    "the training loss became {step_loss} at step {} (epoch {}); the run stopped. The last good checkpoint is {last}. \
                     Lower training.learning_rate, check the data, or use precision fp32.",
                    state.step + 1,
                    state.epoch
                );
            }
            let grad_norm = clip_grad_norm(&opt.params, t.max_grad_norm);
            opt.step(lr);
            opt.zero_grad();
            state.step += 1;
            state.step_in_epoch += 1;
            bar.set_position(state.step);
            let tps = tokens_seen as f64 / loop_start.elapsed().as_secs_f64().max(1e-9);
            bar.set_message(format!("loss {step_loss:.4} lr {lr:.2e} {tps:.0} tok/s"));
            if state.step % t.logging_steps == 0 || state.step == total {
                metrics.log(json!({"step": state.step, "epoch": state.epoch, "loss": step_loss, "lr": lr, "grad_norm": grad_norm, "tokens_per_second": tps}))?;
            }
            let epoch_end = state.step_in_epoch as usize == groups.len();
            let due = |c: Cadence, every: u64| match c {
                Cadence::No => false,
                Cadence::Steps => state.step % every == 0,
                Cadence::Epoch => epoch_end,
            } || state.step == total;
            if due(t.eval_strategy, t.eval_steps) && t.eval_strategy != Cadence::No {
                let l = eval_loss(model, &eval, t.per_device_eval_batch_size, pad_id);
                last_eval = Some(l);
                metrics.log(json!({"step": state.step, "epoch": state.epoch, "eval_loss": l}))?;
                if state.best_eval_loss.is_none_or(|b| l < b - t.early_stopping_threshold) {
                    state.best_eval_loss = Some(l);
                    state.best_step = Some(state.step);
                    state.bad_evals = 0;
                } else {
                    state.bad_evals += 1;
                }
                if t.early_stopping_patience > 0 && state.bad_evals >= t.early_stopping_patience {
                    state.stopped_early = true;
                    state.finished = true;
                }
            }
            if epoch_end {
                state.epoch += 1;
                state.step_in_epoch = 0;
            }
            if state.step == total {
                state.finished = true;
            }
            let save_due = t.save_strategy != Cadence::No && due(t.save_strategy, t.save_steps);
            if save_due || state.finished || opts.stop_after == Some(state.step) {
                checkpoint::save(&ckpt_root, &state, &trainable(model, r.finetune.method), &opt)?;
                checkpoint::prune(&ckpt_root, state.best_step);
            }
            if opts.stop_after == Some(state.step) {
                bar.abandon();
                bail!("stopped after step {} as asked (--stop-after)", state.step);
            }
            if state.finished {
                break 'training;
            }
        }
        if state.step_in_epoch == 0 && groups.is_empty() {
            break;
        }
    }
    bar.finish_and_clear();

    // 6. The result: the best checkpoint's weights (when eval ran), written where other tools read them.
    if let Some(best) = state.best_step {
        let dir = checkpoint::dir_of(&ckpt_root, best);
        if dir.exists() {
            let c = checkpoint::load(&dir, device)?;
            let _guard = tch::no_grad_guard();
            for p in &opt.params {
                if let Some(src) = c.trainable.get(&p.name) {
                    let mut dst = p.tensor.shallow_clone();
                    let _ = dst.copy_(src);
                }
            }
        }
    }
    let output = match r.finetune.method {
        Method::Full => {
            let dir = run.path("model");
            model.save(&dir, Some(&tok))?;
            dir
        }
        _ => {
            let dir = run.path("adapter");
            peft::save_adapter(model, &spec, &base_dir.display().to_string(), &dir)?;
            dir
        }
    };
    let final_eval_loss = match last_eval {
        Some(l) => Some(l),
        None => state.best_eval_loss,
    };
    if let Err(e) = plot::loss_plot(&run.path("metrics.jsonl"), &run.path("loss.png")) {
        eprintln!("train: warning: no loss plot: {e:#}");
    }
    let outcome = TrainOutcome {
        steps: state.step,
        initial_eval_loss,
        final_eval_loss,
        best_eval_loss: state.best_eval_loss,
        stopped_early: state.stopped_early,
        output,
        base: base_dir,
        seconds: started.elapsed().as_secs_f64(),
        tokens_per_second: tokens_seen as f64 / loop_start.elapsed().as_secs_f64().max(1e-9),
    };
    write_atomic(&run.path("train_result.json"), serde_json::to_string_pretty(&outcome)?.as_bytes())?;
    Ok(outcome)
}
