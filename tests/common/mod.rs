//! Shared helpers for the integration tests.
#![allow(dead_code)]
use std::path::{Path, PathBuf};

use steptune::recipe::{parse, LoadedRecipe};

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `../shared` beside the checkout: the real tokenizers and the Bitext data (CI has it too).
pub fn shared() -> PathBuf {
    let p = repo().join("../shared");
    assert!(p.join("models/qwen3-8b/tokenizer.json").exists(), "../shared/models is missing beside the checkout");
    p
}

/// A recipe parsed from YAML text, with its path set inside `dir` so relative files resolve there.
pub fn recipe_in(dir: &Path, yaml: &str) -> LoadedRecipe {
    let recipe = parse(yaml, "test recipe").unwrap_or_else(|e| panic!("test recipe invalid: {e:#}"));
    LoadedRecipe { recipe, path: Some(dir.join("recipe.yaml")) }
}

pub fn write(dir: &Path, name: &str, content: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, content).unwrap();
    p
}
