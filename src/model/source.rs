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
            "gemma3" | "gemma3_text" => Architecture::Gemma3,
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

/// Downloads a Hub model's files into the Hugging Face cache (the layout huggingface_hub uses, so
/// both share it) and returns the snapshot folder. `weights` false fetches only config and
/// tokenizer files (enough to prepare data). `HF_HUB_OFFLINE=1` turns every download into an error.
pub fn download(repo_id: &str, revision: &str, weights: bool) -> Result<PathBuf> {
    let offline = std::env::var("HF_HUB_OFFLINE").is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true"));
    let cache = hf_cache_dir();
    if offline {
        bail!(
            "model `{repo_id}` (revision {revision}) is not in the Hugging Face cache {} and HF_HUB_OFFLINE is set: \
             download it on a machine with network access (`huggingface-cli download {repo_id}`) or point model.source at a local folder",
            cache.display()
        );
    }
    let api = hf_hub::api::sync::ApiBuilder::new()
        .with_cache_dir(cache.clone())
        .with_progress(true)
        .build()
        .context("cannot start the Hugging Face Hub client")?;
    let repo = api.repo(hf_hub::Repo::with_revision(repo_id.to_string(), hf_hub::RepoType::Model, revision.to_string()));
    let hint = |file: &str, e: &dyn std::fmt::Display| {
        anyhow::anyhow!(
            "cannot download {file} of `{repo_id}` (revision {revision}) from the Hugging Face Hub: {e}. Without network access, \
             download it elsewhere (`huggingface-cli download {repo_id}`) and copy the cache to {}, or point model.source at a local folder",
            cache.display()
        )
    };
    let config = repo.get("config.json").map_err(|e| hint("config.json", &e))?;
    for optional in ["tokenizer.json", "tokenizer_config.json", "generation_config.json", "chat_template.jinja"] {
        let _ = repo.get(optional);
    }
    if weights {
        match repo.get("model.safetensors.index.json") {
            Ok(index) => {
                let idx: Value = read_json(&index)?;
                let mut shards: Vec<String> = idx["weight_map"].as_object().map(|m| m.values().filter_map(|v| v.as_str().map(str::to_string)).collect()).unwrap_or_default();
                shards.sort();
                shards.dedup();
                for shard in shards {
                    repo.get(&shard).map_err(|e| hint(&shard, &e))?;
                }
            }
            Err(_) => {
                repo.get("model.safetensors").map_err(|e| hint("model.safetensors", &e))?;
            }
        }
    }
    Ok(config.parent().context("snapshot folder")?.to_path_buf())
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
    } else if m.source.starts_with("./") || m.source.starts_with("../") || m.source.starts_with('/') || m.source.starts_with('~') {
        bail!(
            "model.source `{}`: no such folder (looked in the current directory and beside the recipe). Put the model's \
             Hugging Face folder there (for example `huggingface-cli download google/flan-t5-small --local-dir models/flan-t5-small`), \
             or give its Hub id (org/name) to use the Hugging Face cache",
            m.source
        );
    } else if looks_like_hub_id(&m.source) {
        let has_weights = |d: &Path| d.join("model.safetensors").exists() || d.join("model.safetensors.index.json").exists();
        match cached_snapshot(&m.source, &m.revision) {
            Some(dir) if !need_weights || has_weights(&dir) => {
                let config = read_json(&dir.join("config.json"))?;
                (Some(dir), Some(config))
            }
            // prepare with an explicit tokenizer needs nothing from the Hub.
            None if !need_weights && m.tokenizer.is_some() => (None, None),
            _ => {
                let dir = download(&m.source, &m.revision, need_weights)?;
                let config = read_json(&dir.join("config.json"))?;
                (Some(dir), Some(config))
            }
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
                Some(t) => Architecture::from_model_type(t).with_context(|| format!("model_type `{t}` is not supported: steptune trains qwen3, qwen2, llama, gemma3 (text) and t5"))?,
                None => bail!("cannot tell the architecture of `{}` without its config.json: set `model.architecture`", m.source),
            }
        }
        a => a,
    };
    Ok(ModelFiles { dir, config, architecture })
}
