//! Models: where their files come from, their tokenizers, the networks, and generation.
pub mod generate;
pub mod qwen3;
pub mod source;
pub mod t5;
pub mod tokenizer;
pub mod weights;

use std::path::Path;

use anyhow::{Context, Result};
use tch::{Device, Kind};

use crate::recipe::Architecture;
use qwen3::{DecoderConfig, Qwen3};
use t5::{T5Config, T5};

pub fn read_config(dir: &Path) -> Result<serde_json::Value> {
    let p = dir.join("config.json");
    let text = std::fs::read_to_string(&p).with_context(|| format!("cannot read {}", p.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{} is not valid JSON", p.display()))
}

/// Loads a decoder-only model from an HF folder, weights converted to `kind` on `device`.
pub fn load_decoder(dir: &Path, kind: Kind, device: Device) -> Result<Qwen3> {
    let config = read_config(dir)?;
    let t = config.get("model_type").and_then(|v| v.as_str()).unwrap_or("");
    let arch = Architecture::from_model_type(t).with_context(|| format!("{}: model_type `{t}` is not a supported decoder", dir.display()))?;
    let cfg = DecoderConfig::from_json(&config, arch)?;
    let mut w = weights::read_model_dir(dir, Some(kind), device, &|_| true)?;
    let model = Qwen3::from_weights(cfg, &mut w, kind, device)?;
    if !w.is_empty() {
        let names: Vec<&String> = w.keys().take(5).collect();
        anyhow::bail!("{}: {} checkpoint tensors were not used (for example {names:?}): is this the right architecture?", dir.display(), w.len());
    }
    Ok(model)
}

pub fn kind_name(kind: Kind) -> &'static str {
    match kind {
        Kind::BFloat16 => "bfloat16",
        Kind::Half => "float16",
        _ => "float32",
    }
}

/// Writes an HF folder transformers loads: config.json, generation_config.json,
/// model.safetensors and, when given, the tokenizer files.
pub fn save_decoder(model: &Qwen3, dir: &Path, tok: Option<&tokenizer::TokenizerBundle>) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let id = |t: &Option<String>| t.as_deref().and_then(|s| tok.and_then(|k| k.token_id(s))).map(|i| i as i64);
    let (bos, eos, pad) = match tok {
        Some(k) => (id(&k.bos_token), id(&k.eos_token), id(&k.pad_token)),
        None => (None, None, None),
    };
    let config = model.cfg.to_hf_json(bos, eos, pad, kind_name(model.kind));
    crate::run::write_atomic(&dir.join("config.json"), serde_json::to_string_pretty(&config)?.as_bytes())?;
    let gen = serde_json::json!({"bos_token_id": bos, "eos_token_id": eos, "pad_token_id": pad, "do_sample": false});
    crate::run::write_atomic(&dir.join("generation_config.json"), serde_json::to_string_pretty(&gen)?.as_bytes())?;
    let named = model.named_weights();
    let refs: Vec<(String, &tch::Tensor)> = named.iter().map(|(n, t)| (n.clone(), t)).collect();
    weights::write_file(&dir.join("model.safetensors"), &refs)?;
    if let Some(k) = tok {
        k.save(dir)?;
    }
    Ok(())
}

/// Loads a T5 / flan-t5 model from an HF folder, weights converted to `kind` on `device`.
pub fn load_t5(dir: &Path, kind: Kind, device: Device) -> Result<T5> {
    let config = read_config(dir)?;
    let t = config.get("model_type").and_then(|v| v.as_str()).unwrap_or("");
    if t != "t5" {
        anyhow::bail!("{}: model_type `{t}` is not t5", dir.display());
    }
    let cfg = T5Config::from_json(&config).with_context(|| dir.display().to_string())?;
    let mut w = weights::read_model_dir(dir, Some(kind), device, &|_| true)?;
    let model = T5::from_weights(cfg, &mut w, kind, device).with_context(|| dir.display().to_string())?;
    if !w.is_empty() {
        let names: Vec<&String> = w.keys().take(5).collect();
        anyhow::bail!("{}: {} checkpoint tensors were not used (for example {names:?}): is this the right architecture?", dir.display(), w.len());
    }
    Ok(model)
}

/// Writes an HF folder transformers loads as T5ForConditionalGeneration: config.json,
/// generation_config.json (start token pad, eos), model.safetensors and, when given, the
/// tokenizer files.
pub fn save_t5(model: &T5, dir: &Path, tok: Option<&tokenizer::TokenizerBundle>) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let config = model.cfg.to_hf_json(kind_name(model.kind));
    crate::run::write_atomic(&dir.join("config.json"), serde_json::to_string_pretty(&config)?.as_bytes())?;
    let c = &model.cfg;
    let gen = serde_json::json!({"decoder_start_token_id": c.decoder_start_token_id, "eos_token_id": c.eos_token_id, "pad_token_id": c.pad_token_id, "do_sample": false});
    crate::run::write_atomic(&dir.join("generation_config.json"), serde_json::to_string_pretty(&gen)?.as_bytes())?;
    let named = model.named_weights();
    let refs: Vec<(String, &tch::Tensor)> = named.iter().map(|(n, t)| (n.clone(), t)).collect();
    weights::write_file(&dir.join("model.safetensors"), &refs)?;
    if let Some(k) = tok {
        k.save(dir)?;
    }
    Ok(())
}
