//! Checkpoints: trainable weights, optimizer state, RNG state and the data position, written to
//! a temporary folder and renamed, so a kill at any moment leaves the last checkpoint whole.
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use tch::{Device, Tensor};

use super::optim::AdamW;
use crate::nn::weights;

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct TrainerState {
    /// Optimizer steps done.
    pub step: u64,
    /// The epoch and the optimizer step within it where training continues.
    pub epoch: u64,
    pub step_in_epoch: u64,
    pub best_eval_loss: Option<f64>,
    pub best_step: Option<u64>,
    /// Evaluations in a row without improvement (early stopping).
    pub bad_evals: u64,
    pub finished: bool,
    pub stopped_early: bool,
    /// What the run trains on: the prepared train data and the model, fine-tuning and training
    /// settings. A checkpoint resumes only a run with the same fingerprint.
    #[serde(default)]
    pub fingerprint: String,
    #[serde(default)]
    pub initial_eval_loss: Option<f64>,
}

pub fn dir_of(root: &Path, step: u64) -> PathBuf {
    root.join(format!("step-{step:08}"))
}

/// Complete checkpoints (those with a state.json), oldest first.
pub fn list(root: &Path) -> Vec<(u64, PathBuf)> {
    let mut out: Vec<(u64, PathBuf)> = std::fs::read_dir(root)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("state.json").exists())
        .filter_map(|p| {
            let step = p.file_name()?.to_str()?.strip_prefix("step-")?.parse().ok()?;
            Some((step, p))
        })
        .collect();
    out.sort();
    out
}

pub fn save(root: &Path, state: &TrainerState, trainable: &[(String, Tensor)], opt: &AdamW) -> Result<PathBuf> {
    let final_dir = dir_of(root, state.step);
    let tmp = root.join(format!(".step-{:08}.tmp-{}", state.step, std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
    let refs: Vec<(String, &Tensor)> = trainable.iter().map(|(n, t)| (n.clone(), t)).collect();
    weights::write_file(&tmp.join("trainable.safetensors"), &refs)?;
    let opt_state = opt.state();
    let refs: Vec<(String, &Tensor)> = opt_state.iter().map(|(n, t)| (n.clone(), t)).collect();
    weights::write_file(&tmp.join("optimizer.safetensors"), &refs)?;
    let rng = crate::ffi::cpu_rng_state()?;
    weights::write_file(&tmp.join("rng.safetensors"), &[("cpu".to_string(), &rng)])?;
    crate::run::write_atomic(&tmp.join("state.json"), serde_json::to_string_pretty(state)?.as_bytes())?;
    let _ = std::fs::remove_dir_all(&final_dir);
    std::fs::rename(&tmp, &final_dir).with_context(|| format!("cannot move the checkpoint into {}", final_dir.display()))?;
    Ok(final_dir)
}

/// Keeps the newest checkpoint and the best one; removes the rest.
pub fn prune(root: &Path, best_step: Option<u64>) {
    let all = list(root);
    let last = all.last().map(|(s, _)| *s);
    for (step, path) in all {
        if Some(step) != last && Some(step) != best_step {
            let _ = std::fs::remove_dir_all(path);
        }
    }
}

pub struct Loaded {
    pub state: TrainerState,
    pub trainable: weights::Weights,
    pub optimizer: weights::Weights,
    pub rng: Tensor,
}

pub fn load(dir: &Path, device: Device) -> Result<Loaded> {
    let state: TrainerState = serde_json::from_str(&std::fs::read_to_string(dir.join("state.json")).with_context(|| format!("cannot read {}/state.json", dir.display()))?)
        .with_context(|| format!("{}/state.json is not a trainer state", dir.display()))?;
    let trainable = weights::read_file(&dir.join("trainable.safetensors"), None, device, &|_| true)?;
    let optimizer = weights::read_file(&dir.join("optimizer.safetensors"), None, device, &|_| true)?;
    let mut rng = weights::read_file(&dir.join("rng.safetensors"), None, Device::Cpu, &|_| true)?;
    let rng = rng.remove("cpu").context("rng.safetensors has no `cpu` state")?;
    Ok(Loaded { state, trainable, optimizer, rng })
}
