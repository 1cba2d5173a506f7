//! `steptune train`: the training loop, readable top to bottom.
//!
//! AdamW with decoupled weight decay, warmup then linear/cosine/constant schedule, gradient
//! accumulation, clipping by global norm; eval loss on a cadence with early stopping; atomic
//! checkpoints with exact resume; a NaN or infinite loss stops the run and names the step.
//!
//! The loop reads the same with one rank or many (`crate::dist`): each optimizer step's
//! micro-batches are dealt to the ranks, gradients are summed across them before clipping, and
//! only rank 0 writes. With one rank every collective is a no-op.
pub mod batches;
pub mod bench;
pub mod memory;
pub mod checkpoint;
pub mod devcheck;
pub mod optim;
pub mod plot;
pub mod schedule;
pub mod stop;
pub mod tensorboard;

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use serde_json::json;
use tch::{Device, Kind, Tensor};

use self::batches::{collate, deal, epoch_batches, read_prepared, TrainExample};
use self::checkpoint::TrainerState;
use self::optim::{clip_grad_norm, AdamW};
use crate::nn::linear::Base;
use crate::nn::nf4::Absmax;
use crate::adapt::peft::{self, LoraSpec};
use crate::dist;
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

/// The recipe's `training.device`; `cuda` and `auto` mean this rank's GPU under torchrun or
/// srun: `cuda:LOCAL_RANK` when the rank sees every GPU of its node, and its only one when the
/// launcher gave each task its own (`srun --gpus-per-task=1` sets CUDA_VISIBLE_DEVICES per task).
pub fn device_of(spec: &str) -> Device {
    let local = dist::world().local_rank % (tch::Cuda::device_count().max(1) as usize);
    match spec {
        "cpu" => Device::Cpu,
        "cuda" => Device::Cuda(local),
        s if s.starts_with("cuda:") => Device::Cuda(s[5..].parse().unwrap_or(0)),
        _ if tch::Cuda::is_available() => Device::Cuda(local),
        _ => Device::Cpu,
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
        // Written aside and renamed, so an attempt killed meanwhile leaves no half a base behind.
        let tmp = run.path(&format!(".base_model.tmp-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&tmp);
        model.save(&tmp, Some(tok))?;
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::rename(&tmp, &dir).with_context(|| format!("cannot move the base model into {}", dir.display()))?;
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

/// Mean loss over every labelled token of `examples`; the batches are shared out among the ranks
/// and their sums added up, so every rank gets the same value.
pub fn eval_loss(model: &dyn Model, examples: &[TrainExample], batch_size: usize, pad_id: i64) -> Result<f64> {
    let world = dist::world();
    world.doing("computing the eval loss");
    let _guard = tch::no_grad_guard();
    let lengths: Vec<usize> = examples.iter().map(|e| e.input_ids.len()).collect();
    let mut order: Vec<usize> = (0..examples.len()).collect();
    order.sort_by_key(|&i| lengths[i]);
    let batches: Vec<&[usize]> = order.chunks(batch_size).collect();
    let (mut sum, mut n) = (0.0, 0i64);
    for chunk in &batches[world.my_share(batches.len())] {
        let refs: Vec<&TrainExample> = chunk.iter().map(|&i| &examples[i]).collect();
        let b = collate(&refs, pad_id, model.model_kind(), model.device());
        let (loss, count) = model.loss_sum(&b, false)?;
        sum += loss.double_value(&[]);
        n += count;
    }
    let total = world.sum_f64(&[sum, n as f64], "adding up the eval loss")?;
    Ok(if total[1] == 0.0 { f64::NAN } else { total[0] / total[1] })
}

/// An exact checksum of every base tensor as loaded (4-bit ones by their codes and scales), so
/// the ranks can prove they loaded the same model.
fn weights_fingerprint(model: &dyn Model) -> String {
    let mut tensors: Vec<Tensor> = model.dense_weights().into_iter().map(|(_, t)| t).collect();
    for (_, linear) in model.projections() {
        if let Base::Nf4 { weight, .. } = &linear.base {
            tensors.push(weight.packed.shallow_clone());
            match &weight.absmax {
                Absmax::Plain(a) => tensors.push(a.shallow_clone()),
                Absmax::Nested { quantized, nested_absmax, .. } => tensors.extend([quantized.shallow_clone(), nested_absmax.shallow_clone()]),
            }
        }
    }
    let mut h = Fnv::new();
    for t in &tensors {
        let (a, b) = dist::checksum(t);
        h.bytes(&a.to_le_bytes());
        h.bytes(&b.to_le_bytes());
    }
    format!("{} tensors, checksum {:016x}", tensors.len(), h.0)
}

/// FNV-1a, 64 bits: a stable hash for fingerprints.
struct Fnv(u64);

impl Fnv {
    fn new() -> Fnv {
        Fnv(0xcbf29ce484222325)
    }
    fn bytes(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= *b as u64;
            self.0 = self.0.wrapping_mul(0x100000001b3);
        }
    }
}

/// The dropout seed of micro-batch `index` of optimizer step `step`: a function of its place in
/// the global batch, not of the rank that runs it, so a run gives the same numbers at any world
/// size (and a resumed run the same as a straight one).
fn micro_batch_seed(seed: u64, step: u64, index: usize) -> i64 {
    let mut h = Fnv::new();
    h.bytes(&seed.to_le_bytes());
    h.bytes(&step.to_le_bytes());
    h.bytes(&(index as u64).to_le_bytes());
    (h.0 >> 1) as i64
}

/// A seed for one named use of randomness, drawn from the recipe's.
fn derived_seed(seed: u64, purpose: &str) -> i64 {
    let mut h = Fnv::new();
    h.bytes(&seed.to_le_bytes());
    h.bytes(purpose.as_bytes());
    (h.0 >> 1) as i64
}

/// FNV-1a over the prepared train data and the settings that shape training. How a step's
/// micro-batches are spread over ranks and accumulation does not shape it, only their number:
/// a checkpoint of 2 ranks × accumulation 1 resumes on 1 rank with accumulation 2.
fn fingerprint(recipe: &LoadedRecipe, train_file: &Path, micro_batches_per_step: usize) -> Result<String> {
    let data = std::fs::read(train_file).with_context(|| format!("cannot read {}", train_file.display()))?;
    let r = &recipe.recipe;
    let mut training = serde_json::to_value(&r.training)?;
    if let Some(t) = training.as_object_mut() {
        for key in ["gradient_accumulation_steps", "per_device_eval_batch_size", "device", "ddp_backend", "ddp_timeout", "report_to"] {
            t.remove(key);
        }
        t.insert("micro_batches_per_step".into(), json!(micro_batches_per_step));
    }
    let settings = serde_json::to_vec(&json!({"seed": r.seed, "model": r.model, "finetune": r.finetune, "training": training}))?;
    let mut h = Fnv::new();
    h.bytes(&data);
    h.bytes(&settings);
    Ok(format!("{:016x}", h.0))
}

/// Where the loop's numbers go: metrics.jsonl, and TensorBoard when the recipe asks for it.
struct Metrics {
    file: std::fs::File,
    tensorboard: Option<tensorboard::EventWriter>,
}

impl Metrics {
    /// Opens metrics.jsonl, keeping only the lines up to `upto` (the step a resumed run restarts
    /// at; none when it starts over, as it logs its step 0 again). Event files cannot be cut like
    /// that: a new one starts, and its SessionLog START makes TensorBoard drop the older files'
    /// points that metrics.jsonl just dropped.
    fn open(path: &Path, upto: Option<u64>, tensorboard_dir: Option<PathBuf>) -> Result<Metrics> {
        let kept: String = match (upto, std::fs::read_to_string(path)) {
            (Some(s), Ok(text)) if s > 0 => text
                .lines()
                .filter(|l| serde_json::from_str::<serde_json::Value>(l).ok().and_then(|v| v["step"].as_u64()).is_some_and(|st| st <= s))
                .map(|l| format!("{l}\n"))
                .collect(),
            _ => String::new(),
        };
        write_atomic(path, kept.as_bytes())?;
        let file = std::fs::OpenOptions::new().append(true).open(path).with_context(|| format!("cannot open {}", path.display()))?;
        let tensorboard = match tensorboard_dir {
            Some(dir) => {
                let mut w = tensorboard::EventWriter::create(&dir, "")?;
                w.session_start(upto.map_or(0, |s| if s == 0 { 0 } else { s as i64 + 1 }))?;
                Some(w)
            }
            None => None,
        };
        Ok(Metrics { file, tensorboard })
    }

    fn log(&mut self, v: serde_json::Value) -> Result<()> {
        writeln!(self.file, "{v}").context("cannot append to metrics.jsonl")?;
        self.file.flush().context("cannot flush metrics.jsonl")?;
        if let (Some(w), Some((step, values))) = (self.tensorboard.as_mut(), tensorboard::scalars_of_line(&v)) {
            w.scalars(step, values)?;
        }
        Ok(())
    }
}

pub fn run(recipe: &LoadedRecipe, run: &RunDir, opts: &TrainOptions) -> Result<TrainOutcome> {
    let r = &recipe.recipe;
    let t = &r.training;
    let world = dist::world();
    let main = world.is_main();
    let started = Instant::now();
    let device = device_of(&t.device);
    let kind = kind_of(t.precision);

    // 1. Data, prepared by `steptune prepare`, and its tokenizer; every rank reads the same files.
    world.doing("reading the prepared data");
    let data = (|| -> Result<_> {
        let train = read_prepared(&run.path("prepared/train.jsonl"))?;
        let eval = read_prepared(&run.path("prepared/eval.jsonl"))?;
        if train.is_empty() {
            bail!("prepared/train.jsonl is empty");
        }
        let tok = TokenizerBundle::from_dir(&run.path("tokenizer"))?;
        Ok((train, eval, tok))
    })();
    let (train, eval, tok) = world.agree("reading the prepared data", data)?;
    let pad_id = tok.pad_token.as_deref().and_then(|p| tok.token_id(p)).or_else(|| tok.eos_id().ok()).unwrap_or(0) as i64;
    let bs = t.per_device_train_batch_size;
    let accum = t.gradient_accumulation_steps;
    // The global batch: every rank's micro-batches of one optimizer step.
    let micro_per_step = world.size * accum;
    let fingerprint = world.agree("fingerprinting the prepared data", fingerprint(recipe, &run.path("prepared/train.jsonl"), micro_per_step))?;
    world.check_same("prepared data and training settings", &fingerprint)?;

    // 2. The model, and what trains. Rank 0 writes a random base first; the others then load it.
    world.doing("loading the base model");
    tch::manual_seed(r.seed as i64);
    let (mut model, base_dir) = world.main_first("loading the base model", || base_model(recipe, run, &tok, kind, device))?;
    model.set_loss_chunk(t.loss_chunk_tokens);
    world.check_same("base model weights", &weights_fingerprint(model.as_ref()))?;
    if t.gradient_checkpointing && model.model_kind() == ModelKind::Seq2Seq {
        world.quiet_unless_main()?;
        bail!("training.gradient_checkpointing is implemented for decoder-only models (Qwen3, Qwen2, Llama), not T5; set it to false");
    }
    let spec = lora_spec(recipe);
    // LoRA's initialisation draws from a seed of its own: the run is the same whether this process
    // drew the random base just now or loaded it from an earlier attempt.
    tch::manual_seed(derived_seed(r.seed, "lora-init"));
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
    // Every rank starts from rank 0's trainable weights.
    world.broadcast_tensors(&params.iter().map(|(_, p)| p.shallow_clone()).collect::<Vec<_>>(), "broadcasting the trainable weights from rank 0")?;
    let mut opt = AdamW::new(params, t.adam_beta1, t.adam_beta2, t.adam_epsilon, t.weight_decay);
    let param_tensors: Vec<Tensor> = opt.params.iter().map(|p| p.tensor.shallow_clone()).collect();

    // 3. How long: optimizer steps per epoch, total, warmup.
    let lengths: Vec<usize> = train.iter().map(|e| e.input_ids.len()).collect();
    let micro_per_epoch = train.len().div_ceil(bs);
    let steps_per_epoch = micro_per_epoch.div_ceil(micro_per_step) as u64;
    let total = t.max_steps.unwrap_or((steps_per_epoch as f64 * t.num_train_epochs).ceil() as u64).max(1);
    let warmup = schedule::warmup_steps(t.warmup_ratio, t.warmup_steps, total);

    // 4. Resume from the newest checkpoint (rank 0's choice, read by every rank), unless told to restart.
    let ckpt_root = run.path("checkpoints");
    if opts.restart && main {
        let _ = std::fs::remove_dir_all(&ckpt_root);
    }
    world.barrier("waiting for rank 0 to clear the checkpoints (--restart)")?;
    let newest = checkpoint::list(&ckpt_root).pop();
    world.check_same("newest checkpoint", &newest.as_ref().map(|(s, _)| format!("step {s}")).unwrap_or_else(|| "none".into()))?;
    let mut state = TrainerState::default();
    let mut initial_eval_loss = None;
    if let Some((_, dir)) = newest {
        world.doing("loading the checkpoint");
        let resumed = (|| -> Result<TrainerState> {
            let c = checkpoint::load(&dir, device)?;
            if !c.state.fingerprint.is_empty() && c.state.fingerprint != fingerprint {
                bail!(
                    "{} holds checkpoints of other data or settings (the prepared train data, model, finetune or training section, \
                     or the global batch: world size × gradient_accumulation_steps, changed). \
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
            Ok(c.state)
        })();
        state = world.agree("loading the checkpoint", resumed)?;
        initial_eval_loss = state.initial_eval_loss;
        if main {
            eprintln!("train: resuming from {} (step {})", dir.display(), state.step);
        }
    }
    state.fingerprint = fingerprint;
    let mut metrics = if main {
        std::fs::create_dir_all(&ckpt_root)?;
        Some(Metrics::open(&run.path("metrics.jsonl"), Some(state.step), tensorboard::dir_of(recipe, run))?)
    } else {
        None
    };
    let mut log = |v: serde_json::Value| -> Result<()> {
        match metrics.as_mut() {
            Some(m) => m.log(v),
            None => Ok(()),
        }
    };
    if state.step == 0 && !state.finished {
        let l = eval_loss(model, &eval, t.per_device_eval_batch_size, pad_id)?;
        initial_eval_loss = Some(l);
        state.initial_eval_loss = Some(l);
        log(json!({"step": 0, "eval_loss": l}))?;
    }
    if main {
        eprintln!(
            "train: {} trainable parameters ({:?}), {} train / {} eval examples, {total} steps ({steps_per_epoch} per epoch), device {device:?}, {kind:?}{}",
            n_trainable,
            r.finetune.method,
            train.len(),
            eval.len(),
            if world.size > 1 { format!(", {} ranks ({}), global batch {} × {bs}", world.size, world.backend, micro_per_step) } else { String::new() }
        );
    }

    // 5. The loop.
    let bar = if main { indicatif::ProgressBar::new(total) } else { indicatif::ProgressBar::hidden() };
    bar.set_style(indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} [{elapsed_precise}<{eta_precise}] {msg}").unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()));
    bar.set_position(state.step);
    let loop_start = Instant::now();
    let mut tokens_seen: i64 = 0;
    let mut last_eval = None;
    // From here a signal stops the run after its step, with a checkpoint (see stop.rs).
    let in_loop = stop::InLoop::enter();
    'training: while state.step < total && !state.finished {
        let batches = epoch_batches(&lengths, bs, t.group_by_length, r.seed, state.epoch);
        let groups: Vec<&[Vec<usize>]> = batches.chunks(micro_per_step).collect();
        while (state.step_in_epoch as usize) < groups.len() {
            let group = groups[state.step_in_epoch as usize];
            let lr = schedule::lr_at(t.lr_scheduler_type, t.learning_rate, state.step, warmup, total);
            world.doing(&format!("step {}: forward and backward", state.step + 1));
            // The loss of a step is the mean over every labelled token of the global batch, which
            // every rank knows: each scales its share of the gradient by the same count.
            let targets: i64 = group.iter().map(|idx| n_targets(idx, &train, model.model_kind())).sum::<i64>().max(1);
            let scale = 1.0 / targets as f64;
            let step_start = Instant::now();
            let mut loss_sum = 0.0;
            let mut step_tokens = 0i64;
            for &j in &deal(group, &lengths, world.size)[world.rank] {
                let b = collate(&group[j].iter().map(|&i| &train[i]).collect::<Vec<_>>(), pad_id, model.model_kind(), device);
                tch::manual_seed(micro_batch_seed(r.seed, state.step, j));
                if t.gradient_checkpointing {
                    let (loss, _) = model.loss_sum_backward_checkpointed(&b, scale)?;
                    loss_sum += loss;
                } else {
                    let (loss, _) = model.loss_sum(&b, true)?;
                    loss_sum += loss.double_value(&[]);
                    (loss * scale).backward();
                }
                step_tokens += b.n_tokens;
            }
            world.doing(&format!("step {}: summing gradients across ranks", state.step + 1));
            // A stop asked of any rank (a signal) is added up with the loss: every rank stops after this step.
            let stop_asked = if stop::requested().is_some() { 1.0 } else { 0.0 };
            let summed = world.sum_f64(&[loss_sum, step_tokens as f64, stop_asked], &format!("adding up the loss of step {}", state.step + 1))?;
            let step_loss = summed[0] * scale;
            let stopping = summed[2] > 0.0;
            tokens_seen += summed[1] as i64;
            if !step_loss.is_finite() {
                let last = checkpoint::list(&ckpt_root).pop().map(|(_, p)| p.display().to_string()).unwrap_or_else(|| "none yet".into());
                bar.abandon();
                // Every rank sees the same summed loss: rank 0 alone says so.
                world.quiet_unless_main()?;
                bail!(
                    "the training loss became {step_loss} at step {} (epoch {}); the run stopped. The last good checkpoint is {last}. \
                     Lower training.learning_rate, check the data, or use precision fp32.",
                    state.step + 1,
                    state.epoch
                );
            }
            world.all_reduce_grads(&param_tensors, &format!("the all-reduce of gradients of step {}", state.step + 1))?;
            let grad_norm = clip_grad_norm(&opt.params, t.max_grad_norm);
            opt.step(lr)?;
            opt.zero_grad();
            state.step += 1;
            state.step_in_epoch += 1;
            bar.set_position(state.step);
            let tps = tokens_seen as f64 / loop_start.elapsed().as_secs_f64().max(1e-9);
            bar.set_message(format!("loss {step_loss:.4} lr {lr:.2e} {tps:.0} tok/s"));
            let (reduced_bytes, reduce_seconds) = world.take_reduce_stats();
            if state.step % t.logging_steps == 0 || state.step == total {
                let mut line = json!({
                    "step": state.step, "epoch": state.epoch, "loss": step_loss, "lr": lr, "grad_norm": grad_norm,
                    "tokens_per_second": tps, "step_tokens": summed[1], "step_seconds": step_start.elapsed().as_secs_f64(),
                });
                if world.size > 1 {
                    line["allreduce_bytes"] = json!(reduced_bytes);
                    line["allreduce_seconds"] = json!(reduce_seconds);
                }
                log(line)?;
            }
            let epoch_end = state.step_in_epoch as usize == groups.len();
            let due = |c: Cadence, every: u64| match c {
                Cadence::No => false,
                Cadence::Steps => state.step % every == 0,
                Cadence::Epoch => epoch_end,
            } || state.step == total;
            if due(t.eval_strategy, t.eval_steps) && t.eval_strategy != Cadence::No {
                let l = eval_loss(model, &eval, t.per_device_eval_batch_size, pad_id)?;
                last_eval = Some(l);
                log(json!({"step": state.step, "epoch": state.epoch, "eval_loss": l}))?;
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
            if (save_due || state.finished || stopping || opts.stop_after == Some(state.step)) && main {
                world.doing(&format!("step {}: writing a checkpoint", state.step));
                checkpoint::save(&ckpt_root, &state, &trainable(model, r.finetune.method), &opt)?;
                checkpoint::prune(&ckpt_root, state.best_step);
            }
            if stopping && !state.finished {
                bar.abandon();
                world.barrier("waiting for rank 0's checkpoint (stopping on a signal)")?;
                return Err(stop::Stopped { step: state.step, signal: stop::requested(), checkpoint: checkpoint::dir_of(&ckpt_root, state.step) }.into());
            }
            if opts.stop_after == Some(state.step) {
                bar.abandon();
                world.barrier("waiting for rank 0's checkpoint (--stop-after)")?;
                world.quiet_unless_main()?;
                bail!("stopped after step {} as asked (--stop-after)", state.step);
            }
            if state.finished {
                break 'training;
            }
            if epoch_end {
                // The next epoch has its own order: deal its batches anew.
                break;
            }
        }
        if state.step_in_epoch == 0 && groups.is_empty() {
            break;
        }
    }
    bar.finish_and_clear();
    drop(in_loop);

    // 6. The result: the best checkpoint's weights (when eval ran), written by rank 0 where other
    // tools read them; the other ranks wait for it, so a following stage finds it whole.
    let output = match r.finetune.method {
        Method::Full => run.path("model"),
        _ => run.path("adapter"),
    };
    let final_eval_loss = match last_eval {
        Some(l) => Some(l),
        None => state.best_eval_loss,
    };
    let outcome = TrainOutcome {
        steps: state.step,
        initial_eval_loss,
        final_eval_loss,
        best_eval_loss: state.best_eval_loss,
        stopped_early: state.stopped_early,
        output: output.clone(),
        base: base_dir.clone(),
        seconds: started.elapsed().as_secs_f64(),
        tokens_per_second: tokens_seen as f64 / loop_start.elapsed().as_secs_f64().max(1e-9),
    };
    world.doing("writing the trained model");
    let written = if main { write_result(recipe, run, model, &opt, &spec, &tok, &state, &outcome) } else { Ok(()) };
    world.agree_unless_agreed("writing the trained model", written)?;
    Ok(outcome)
}

/// Labels the loss counts in a micro-batch of these examples (as `collate` counts them).
fn n_targets(indices: &[usize], examples: &[TrainExample], kind: ModelKind) -> i64 {
    let skip = if kind == ModelKind::Causal { 1 } else { 0 };
    indices.iter().map(|&i| examples[i].labels.iter().skip(skip).filter(|&&l| l != -100).count() as i64).sum()
}

/// Rank 0's last words of a run: the best weights into `model/` or `adapter/`, the loss plot and
/// train_result.json.
#[allow(clippy::too_many_arguments)]
fn write_result(recipe: &LoadedRecipe, run: &RunDir, model: &dyn Model, opt: &AdamW, spec: &LoraSpec, tok: &TokenizerBundle, state: &TrainerState, outcome: &TrainOutcome) -> Result<()> {
    let ckpt_root = run.path("checkpoints");
    if let Some(best) = state.best_step {
        let dir = checkpoint::dir_of(&ckpt_root, best);
        if dir.exists() {
            let c = checkpoint::load(&dir, model.device())?;
            let _guard = tch::no_grad_guard();
            for p in &opt.params {
                if let Some(src) = c.trainable.get(&p.name) {
                    let mut dst = p.tensor.shallow_clone();
                    let _ = dst.copy_(src);
                }
            }
        }
    }
    match recipe.recipe.finetune.method {
        Method::Full => model.save(&outcome.output, Some(tok))?,
        _ => peft::save_adapter(model, spec, &outcome.base.display().to_string(), &outcome.output)?,
    }
    if let Err(e) = plot::loss_plot(&run.path("metrics.jsonl"), &run.path("loss.png")) {
        eprintln!("train: warning: no loss plot: {e:#}");
    }
    write_atomic(&run.path("train_result.json"), serde_json::to_string_pretty(outcome)?.as_bytes())
}
