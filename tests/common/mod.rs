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

/// The tiny Qwen3 shape the end-to-end tests train (1 layer, hidden 32, a 400-token BPE).
pub const TINY_QWEN3: &str = "model:\n  source: random\n  architecture: qwen3\n  config: {model_type: qwen3, hidden_size: 32, intermediate_size: 64, num_hidden_layers: 1, num_attention_heads: 2, num_key_value_heads: 1, head_dim: 16}\n  train_tokenizer: {vocab_size: 400}\n";

/// Writes `dir/r.yaml`: the tiny model on the first 40 rows of data/procedures.jsonl, run folder
/// `dir/run`, with the given `finetune`, `training` (flow mappings) and extra top-level YAML.
pub fn tiny_recipe(dir: &Path, name: &str, finetune: &str, training: &str, extra: &str) -> PathBuf {
    let yaml = format!(
        "name: {name}\noutput_dir: {}\n{TINY_QWEN3}finetune: {finetune}\ntraining: {training}\ndata:\n  files: [{}]\n  columns: {{group: intent}}\n  limit: 40\n  max_length: 512\n{extra}",
        dir.join("run").display(),
        repo().join("data/procedures.jsonl").display()
    );
    write(dir, "r.yaml", yaml.as_bytes())
}

/// libtorch's CPU generator is process-wide: dropout masks and random inits drawn by tests that
/// run in parallel threads of one test binary would interleave. Tests whose numbers depend on the
/// RNG (exact resume, checkpointed vs plain backward) hold this for their whole run.
pub fn rng_lock() -> std::sync::MutexGuard<'static, ()> {
    static RNG: std::sync::Mutex<()> = std::sync::Mutex::new(());
    RNG.lock().unwrap_or_else(|e| e.into_inner())
}

/// A free TCP port on 127.0.0.1 for a multi-process test's rendezvous.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Waits at most `limit` for `child` (spawned with piped stderr); (exit code, or 128 + the signal
/// that ended it, and its stderr). A child still running then is killed and the test fails.
pub fn finish(mut child: std::process::Child, limit: std::time::Duration, who: &str) -> (i32, String) {
    use std::io::Read as _;
    use std::os::unix::process::ExitStatusExt;
    let start = std::time::Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut err = String::new();
            child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
            return (status.code().unwrap_or_else(|| 128 + status.signal().unwrap_or(0)), err);
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let mut err = String::new();
            let _ = child.stderr.take().unwrap().read_to_string(&mut err);
            panic!("{who} still running after {limit:?}; stderr:\n{err}");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// (step, value) of `key` (`loss`, `eval_loss`, ...) in a run's metrics.jsonl.
pub fn curve(run: &Path, key: &str) -> Vec<(u64, f64)> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter_map(|v| Some((v["step"].as_u64()?, v[key].as_f64()?)))
        .collect()
}
