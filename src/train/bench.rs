//! `steptune bench-train`: training throughput and peak memory on a prepared file, printed as
//! one JSON line that scripts/bench_train.sh puts beside transformers + peft.
//!
//! `padded`: the same batches as the usual fixed-length HF loop (file order, every batch padded to
//! the longest row of the file, logits over every position). `realistic`: steptune's own path
//! (length-grouped batches, dynamic padding, the LM head only where a label exists).
use std::time::Instant;

use anyhow::{Context, Result};
use serde_json::json;
use tch::Tensor;

use super::batches::{collate, epoch_batches, read_prepared};
use super::optim::AdamW;
use crate::adapt::peft::{self, LoraSpec};
use crate::model::qwen3::{DecoderConfig, Qwen3};
use crate::model::source;
use crate::recipe::{LoadedRecipe, Method};

/// Peak resident memory of this process (VmHWM), in MiB; 0 where /proc is missing.
pub fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok()))
        .map(|kib| kib / 1024.0)
        .unwrap_or(0.0)
}

pub fn run(recipe: &LoadedRecipe, prepared: &std::path::Path, mode: &str, steps: usize, warmup: usize) -> Result<serde_json::Value> {
    let r = &recipe.recipe;
    let t = &r.training;
    let device = super::device_of(&t.device);
    let kind = super::kind_of(t.precision);
    let files = source::resolve(recipe, false)?;
    let config = files.config.context("bench-train needs model.config (source: random)")?;
    let cfg = DecoderConfig::from_json(&config, files.architecture)?;
    tch::manual_seed(r.seed as i64);
    let mut w = Qwen3::random_weights(&cfg, kind, device);
    let mut model = Qwen3::from_weights(cfg, &mut w, kind, device)?;
    let params = match r.finetune.method {
        Method::Full => {
            let p = model.named_weights();
            for (_, w) in &p {
                let _ = w.set_requires_grad(true);
            }
            p
        }
        _ => {
            let f = &r.finetune;
            peft::attach(&mut model, &LoraSpec { r: f.lora_r, alpha: f.lora_alpha, dropout: f.lora_dropout, targets: f.lora_target_modules.clone() })?;
            peft::named_lora(&model)
        }
    };
    let trainable: i64 = params.iter().map(|(_, p)| p.numel() as i64).sum();
    let mut opt = AdamW::new(params, t.adam_beta1, t.adam_beta2, t.adam_epsilon, t.weight_decay);
    let rows = read_prepared(prepared)?;
    let bs = t.per_device_train_batch_size;
    let batches: Vec<Vec<usize>> = match mode {
        "padded" => (0..rows.len()).collect::<Vec<_>>().chunks(bs).map(<[usize]>::to_vec).collect(),
        "realistic" => epoch_batches(&rows.iter().map(|e| e.input_ids.len()).collect::<Vec<_>>(), bs, true, r.seed, 0),
        other => anyhow::bail!("--mode must be padded or realistic, not {other}"),
    };
    let longest = rows.iter().map(|e| e.input_ids.len()).max().unwrap_or(1);
    let (mut seconds, mut tokens, mut padded_tokens, mut last_loss) = (0.0, 0i64, 0i64, 0.0);
    for step in 0..steps + warmup {
        let idx = &batches[step % batches.len()];
        let mut ex: Vec<_> = idx.iter().map(|&i| rows[i].clone()).collect();
        if mode == "padded" {
            // Pad every row to the file's longest (labels -100, pad id 0), as a fixed-length loop does.
            for e in &mut ex {
                e.input_ids.resize(longest, 0);
                e.labels.resize(longest, -100);
            }
        }
        let refs: Vec<_> = ex.iter().collect();
        let b = collate(&refs, 0, source::ModelKind::Causal, device);
        let real: i64 = idx.iter().map(|&i| rows[i].input_ids.len() as i64).sum();
        let start = Instant::now();
        let loss = if mode == "padded" {
            // Logits at every position, then the loss over labelled ones: what HF computes.
            let logits = model.forward_train(&b.input_ids); // [b, t, V]
            let (tt, v) = (logits.size()[1], logits.size()[2]);
            let shifted = logits.narrow(1, 0, tt - 1).reshape([-1, v]);
            let targets = b.labels.narrow(1, 1, tt - 1).reshape([-1]);
            shifted.cross_entropy_loss::<Tensor>(&targets, None, tch::Reduction::Mean, -100, 0.0)
        } else {
            let (sum, n) = model.loss_sum(&b.input_ids, &b.labels, true);
            sum / n.max(1) as f64
        };
        loss.backward();
        opt.step(t.learning_rate);
        opt.zero_grad();
        last_loss = loss.double_value(&[]);
        if step >= warmup {
            seconds += start.elapsed().as_secs_f64();
            tokens += real;
            padded_tokens += b.input_ids.numel() as i64;
        }
    }
    Ok(json!({
        "impl": "steptune",
        "mode": mode,
        "method": format!("{:?}", r.finetune.method).to_lowercase(),
        "steps_timed": steps,
        "seconds": seconds,
        "tokens": tokens,
        "tokens_per_second": tokens as f64 / seconds.max(1e-9),
        "padded_tokens": padded_tokens,
        "peak_rss_mib": peak_rss_mib(),
        "params_trainable": trainable,
        "final_loss": last_loss,
    }))
}
