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

/// Runs the steptune binary in `cwd` with extra environment variables; (exit code, stdout, stderr).
pub fn steptune_env(args: &[&str], cwd: &Path, env: &[(&str, &Path)]) -> (i32, String, String) {
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_steptune"));
    c.args(args).current_dir(cwd);
    for (k, v) in env {
        c.env(k, v);
    }
    let out = c.output().unwrap();
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

pub fn steptune(args: &[&str], cwd: &Path) -> (i32, String, String) {
    steptune_env(args, cwd, &[])
}
