//! LoRA on a decoder, in PEFT's conventions, so adapters move between steptune and the Python
//! world: `adapter_config.json` + `adapter_model.safetensors` with keys like
//! `base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight`.
use std::path::Path;

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use tch::{Kind, Tensor};

use crate::nn::linear::{Base, LoraBranch};
use crate::model::Model;
use crate::nn::weights;

#[derive(Debug, Clone, PartialEq)]
pub struct LoraSpec {
    pub r: i64,
    pub alpha: f64,
    pub dropout: f64,
    /// Short names as peft takes them: q_proj, k_proj, ..., down_proj.
    pub targets: Vec<String>,
}

fn short(name: &str) -> &str {
    name.rsplit('.').next().unwrap_or(name)
}

/// Puts a fresh LoRA branch (peft's init) on every targeted projection and freezes the base.
pub fn attach(model: &mut dyn Model, spec: &LoraSpec) -> Result<()> {
    let mut known: Vec<String> = model.projections().iter().map(|(n, _)| short(n).to_string()).collect();
    known.sort();
    known.dedup();
    for t in &spec.targets {
        if !known.contains(t) {
            bail!("LoRA target `{t}` is not a projection of this model (it has {})", known.join(", "));
        }
    }
    freeze_base(model);
    let (kind, device) = (model.kind(), model.device());
    for (name, lin) in model.projections_mut() {
        if spec.targets.iter().any(|t| t == short(&name)) {
            lin.lora = Some(LoraBranch::new(lin.in_features(), lin.out_features(), spec.r, spec.alpha, spec.dropout, kind, device));
        }
    }
    Ok(())
}

/// No base tensor receives gradients (LoRA and QLoRA train only the branches).
pub fn freeze_base(model: &dyn Model) {
    for (_, t) in model.dense_weights() {
        let _ = t.set_requires_grad(false);
    }
}

/// peft's name of a module's LoRA tensors: `base_model.model.` + the checkpoint module name.
fn peft_prefix(module: &str) -> String {
    format!("base_model.model.{module}")
}

/// Every LoRA tensor under its PEFT name.
pub fn named_lora(model: &dyn Model) -> Vec<(String, Tensor)> {
    let mut out = Vec::new();
    for (name, lin) in model.projections() {
        if let Some(l) = &lin.lora {
            let base = peft_prefix(&name);
            out.push((format!("{base}.lora_A.weight"), l.a.shallow_clone()));
            out.push((format!("{base}.lora_B.weight"), l.b.shallow_clone()));
        }
    }
    out
}

pub fn adapter_config(spec: &LoraSpec, base_model: &str, task_type: &str) -> Value {
    json!({
        "peft_type": "LORA",
        "task_type": task_type,
        "base_model_name_or_path": base_model,
        "r": spec.r,
        "lora_alpha": spec.alpha,
        "lora_dropout": spec.dropout,
        "target_modules": spec.targets,
        "bias": "none",
        "fan_in_fan_out": false,
        "inference_mode": true,
        "init_lora_weights": true,
        "use_rslora": false,
        "use_dora": false,
        "modules_to_save": null,
        "layers_to_transform": null,
        "layers_pattern": null,
        "rank_pattern": {},
        "alpha_pattern": {},
        "revision": null,
    })
}

/// Writes `adapter_config.json` and `adapter_model.safetensors` into `dir`.
pub fn save_adapter(model: &dyn Model, spec: &LoraSpec, base_model: &str, dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let named = named_lora(model);
    if named.is_empty() {
        bail!("the model carries no LoRA branches to save");
    }
    let refs: Vec<(String, &Tensor)> = named.iter().map(|(n, t)| (n.clone(), t)).collect();
    weights::write_file(&dir.join("adapter_model.safetensors"), &refs)?;
    crate::run::write_atomic(&dir.join("adapter_config.json"), serde_json::to_string_pretty(&adapter_config(spec, base_model, model.peft_task_type()))?.as_bytes())
}

/// Reads and checks `adapter_config.json`: a LoRA adapter steptune can apply (no DoRA, rsLoRA,
/// fan-in-fan-out or regex targets).
pub fn read_adapter_config(dir: &Path) -> Result<LoraSpec> {
    let cfg_path = dir.join("adapter_config.json");
    let cfg: Value = serde_json::from_str(&std::fs::read_to_string(&cfg_path).with_context(|| format!("cannot read {}", cfg_path.display()))?)
        .with_context(|| format!("{} is not valid JSON", cfg_path.display()))?;
    if cfg.get("peft_type").and_then(Value::as_str) != Some("LORA") {
        bail!("{}: only LoRA adapters are supported (peft_type {:?})", cfg_path.display(), cfg.get("peft_type"));
    }
    for flag in ["use_dora", "use_rslora", "fan_in_fan_out"] {
        if cfg.get(flag).and_then(Value::as_bool) == Some(true) {
            bail!("{}: `{flag}: true` is not supported", cfg_path.display());
        }
    }
    let r = cfg.get("r").and_then(Value::as_i64).context("adapter_config.json has no `r`")?;
    let alpha = cfg.get("lora_alpha").and_then(Value::as_f64).context("adapter_config.json has no `lora_alpha`")?;
    let dropout = cfg.get("lora_dropout").and_then(Value::as_f64).unwrap_or(0.0);
    let targets: Vec<String> = match cfg.get("target_modules") {
        Some(Value::Array(a)) => a.iter().filter_map(|v| v.as_str().map(str::to_string)).collect(),
        Some(Value::String(s)) => bail!("{}: target_modules as a regex (`{s}`) is not supported; list the module names", cfg_path.display()),
        _ => bail!("{}: no target_modules", cfg_path.display()),
    };
    Ok(LoraSpec { r, alpha, dropout, targets })
}

/// Reads a PEFT LoRA adapter (written by peft or by steptune) and attaches it to `model`.
pub fn load_adapter(model: &mut dyn Model, dir: &Path) -> Result<LoraSpec> {
    let spec = read_adapter_config(dir)?;
    let (r, alpha, dropout) = (spec.r, spec.alpha, spec.dropout);
    let (kind, device) = (model.kind(), model.device());
    let mut w = weights::read_file(&dir.join("adapter_model.safetensors"), Some(kind), device, &|_| true)?;
    freeze_base(model);
    for (name, lin) in model.projections_mut() {
        let base = peft_prefix(&name);
        // peft writes the names without the adapter name; some versions keep `.default`.
        let a = w.remove(&format!("{base}.lora_A.weight")).or_else(|| w.remove(&format!("{base}.lora_A.default.weight")));
        let b = w.remove(&format!("{base}.lora_B.weight")).or_else(|| w.remove(&format!("{base}.lora_B.default.weight")));
        match (a, b) {
            (Some(a), Some(b)) => {
                if a.size() != [r, lin.in_features()] || b.size() != [lin.out_features(), r] {
                    bail!("{base}: adapter shapes {:?} / {:?} do not fit the layer [{}, {}] with r = {r}", a.size(), b.size(), lin.out_features(), lin.in_features());
                }
                lin.lora = Some(LoraBranch { a: a.to_kind(kind).set_requires_grad(true), b: b.to_kind(kind).set_requires_grad(true), scaling: alpha / r as f64, dropout });
            }
            (None, None) => {}
            _ => bail!("{base}: the adapter has only one of lora_A and lora_B"),
        }
    }
    if !w.is_empty() {
        let names: Vec<&String> = w.keys().take(3).collect();
        bail!("{}: {} adapter tensors match no layer of this model (for example {names:?})", dir.display(), w.len());
    }
    Ok(spec)
}

/// Folds every LoRA branch into its base weight (W += B·A·scaling) and removes the branches.
pub fn merge(model: &mut dyn Model) {
    let _guard = tch::no_grad_guard();
    let model_kind = model.kind();
    for (_, lin) in model.projections_mut() {
        if let Some(l) = lin.lora.take() {
            // A 4-bit base merges into its dequantized weight: the result is a 16-bit layer.
            let w = lin.weight();
            let kind = if lin.dense_weight().is_some() { w.kind() } else { model_kind };
            lin.base = Base::Dense((w.to_kind(Kind::Float) + l.delta().to_kind(Kind::Float)).to_kind(kind));
        }
    }
}
