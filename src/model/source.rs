//! Where a model's files come from: a local HF folder, the local Hugging Face cache for a Hub id,
//! or nothing at all (random init from a config). Also which kind of model it is.
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde_json::Value;

use crate::recipe::{Architecture, LoadedRecipe};

/// Decoder-only chat models are trained on their chat template; encoder-decoders on
/// (source, target) pairs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ModelKind {
    Causal,
    Seq2Seq,
}

impl Architecture {
    pub fn kind(self) -> Option<ModelKind> {
        match self {
            Architecture::Auto => None,
            Architecture::T5 => Some(ModelKind::Seq2Seq),
            _ => Some(ModelKind::Causal),
        }
    }

    pub fn from_model_type(t: &str) -> Option<Architecture> {
        Some(match t {
            "qwen3" => Architecture::Qwen3,
            "qwen2" => Architecture::Qwen2,
            "llama" => Architecture::Llama,
            "t5" => Architecture::T5,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone)]
pub struct ModelFiles {
    /// The folder holding config.json, weights and (usually) tokenizer files; `None` for random init.
    pub dir: Option<PathBuf>,
    /// config.json, from the folder or the recipe's `model.config`.
    pub config: Option<Value>,
    pub architecture: Architecture,
}

impl ModelFiles {
    pub fn kind(&self) -> ModelKind {
        self.architecture.kind().expect("resolved architecture")
    }
}

/// The Hugging Face cache root, as huggingface_hub computes it.
pub fn hf_cache_dir() -> PathBuf {
    if let Ok(p) = std::env::var("HF_HUB_CACHE") {
        return PathBuf::from(p);
    }
    if let Ok(p) = std::env::var("HF_HOME") {
        return PathBuf::from(p).join("hub");
    }
    let home = std::env::var("HOME").unwrap_or_else(|_| ".".into());
    PathBuf::from(home).join(".cache/huggingface/hub")
}

/// A Hub id's snapshot folder in the local cache (`models--org--name/snapshots/<commit>`).
pub fn cached_snapshot(repo_id: &str, revision: &str) -> Option<PathBuf> {
    let root = hf_cache_dir().join(format!("models--{}", repo_id.replace('/', "--")));
    let commit = std::fs::read_to_string(root.join("refs").join(revision)).map(|s| s.trim().to_string()).unwrap_or_else(|_| revision.to_string());
    let snap = root.join("snapshots").join(commit);
    snap.join("config.json").exists().then_some(snap)
}

fn read_json(path: &Path) -> Result<Value> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{} is not valid JSON", path.display()))
}

fn looks_like_hub_id(s: &str) -> bool {
    let parts: Vec<&str> = s.split('/').collect();
    parts.len() == 2 && parts.iter().all(|p| !p.is_empty() && !p.starts_with('.'))
}

/// Finds the model's files. `need_weights` is false for stages that only need the tokenizer and
/// the architecture (prepare), so a Hub model that is not downloaded can still be prepared for.
pub fn resolve(recipe: &LoadedRecipe, need_weights: bool) -> Result<ModelFiles> {
    let m = &recipe.recipe.model;
    let (dir, config) = if m.source == "random" {
        let config = match m.config.as_ref() {
            Some(serde_yaml::Value::String(path)) => read_json(&recipe.resolve(Path::new(path))?)?,
            Some(v @ serde_yaml::Value::Mapping(_)) => serde_json::to_value(v).context("model.config is not representable as JSON")?,
            _ => bail!("`model.config` must be a config.json path or a mapping"),
        };
        (None, Some(config))
    } else if let Ok(dir) = recipe.resolve(Path::new(&m.source)) {
        if !dir.is_dir() {
            bail!("model.source {} is a file; give the model's folder (with config.json)", dir.display());
        }
        let cfg = dir.join("config.json");
        if !cfg.exists() {
            bail!("{} has no config.json: is it a Hugging Face model folder?", dir.display());
        }
        let config = read_json(&cfg)?;
        (Some(dir), Some(config))
    } else if looks_like_hub_id(&m.source) {
        match cached_snapshot(&m.source, &m.revision) {
            Some(dir) => {
                let config = read_json(&dir.join("config.json"))?;
                (Some(dir), Some(config))
            }
            None if need_weights => bail!(
                "model `{}` (revision {}) is not in the local Hugging Face cache {}: download it on a machine with \
                 network access (`huggingface-cli download {}`), or point model.source at a local folder",
                m.source,
                m.revision,
                hf_cache_dir().display(),
                m.source
            ),
            None => (None, None),
        }
    } else {
        bail!("model.source `{}` is neither a folder nor a Hub id (org/name), nor `random`", m.source);
    };
    let architecture = match m.architecture {
        Architecture::Auto => {
            // The tokenizer folder often carries config.json too (as ../shared/models/* do).
            let tok_cfg = m.tokenizer.as_ref().and_then(|t| recipe.resolve(&t.join("config.json")).ok()).and_then(|p| read_json(&p).ok());
            let model_type = config.as_ref().or(tok_cfg.as_ref()).and_then(|c| c.get("model_type")).and_then(Value::as_str);
            match model_type {
                Some(t) => Architecture::from_model_type(t).with_context(|| format!("model_type `{t}` is not supported: steptune trains qwen3, qwen2, llama and t5"))?,
                None => bail!("cannot tell the architecture of `{}` without its config.json: set `model.architecture`", m.source),
            }
        }
        a => a,
    };
    Ok(ModelFiles { dir, config, architecture })
}
