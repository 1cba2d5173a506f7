//! The binary as a researcher runs it: exit codes and messages.
mod common;

use common::{steptune, steptune_env};

#[test]
fn check_prints_the_resolved_recipe_or_names_the_bad_key() {
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let (code, out, _) = steptune(&["check", "recipes/qwen3-8b-qlora.yaml"], repo);
    assert_eq!(code, 0);
    assert!(out.contains("lora_r: 16") && out.contains("adam_beta2: 0.999"), "{out}");
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("r.yaml"), "model: {source: x/y}\ndata: {files: [a.csv]}\ntraining: {lerning_rate: 1.0e-4}\n").unwrap();
    let (code, _, err) = steptune(&["check", "r.yaml"], d.path());
    assert_eq!(code, 1);
    assert!(err.contains("r.yaml: unknown key `training.lerning_rate`: did you mean `training.learning_rate`?"), "{err}");
    let (code, _, err) = steptune(&["check", "missing.yaml"], d.path());
    assert_eq!(code, 1);
    assert!(err.contains("cannot read recipe missing.yaml"), "{err}");
}

#[test]
fn prepare_writes_the_run_folder_and_shows_examples() {
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let d = tempfile::tempdir().unwrap();
    let out_dir = d.path().join("run");
    let (code, out, err) = steptune(&["prepare", "recipes/quickstart.yaml", "--show", "1", "--output-dir", out_dir.to_str().unwrap()], repo);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("learn") && out.contains("\"<|im_start|>\""), "{out}");
    assert!(err.contains("\"train_rows\""), "{err}");
    for f in ["prepared/train.jsonl", "prepared/eval.jsonl", "prepare_report.md", "prepare_report.json", "recipe.yaml", "run_prepare.json", "tokenizer/tokenizer.json"] {
        assert!(out_dir.join(f).exists(), "{f} missing");
    }
}

#[test]
fn bad_data_stops_with_the_row_named_and_keeps_earlier_files() {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("d.jsonl"), "{\"prompt\": \"a\", \"output\": \"1. x\\n2. y\"}\n{\"prompt\": \"b\", \"output\": 7}\n").unwrap();
    std::fs::write(
        d.path().join("r.yaml"),
        "name: r\noutput_dir: out\nmodel: {source: random, architecture: qwen3, config: {model_type: qwen3}, train_tokenizer: {vocab_size: 300}}\ndata: {files: [d.jsonl]}\n",
    )
    .unwrap();
    std::fs::create_dir_all(d.path().join("out")).unwrap();
    std::fs::write(d.path().join("out/keep.txt"), "earlier result").unwrap();
    let (code, _, err) = steptune(&["prepare", "r.yaml"], d.path());
    assert_eq!(code, 1);
    assert!(err.contains("d.jsonl row 2 (line 2), field `output`: must be a string or a list of strings, found a number"), "{err}");
    assert_eq!(std::fs::read_to_string(d.path().join("out/keep.txt")).unwrap(), "earlier result");
    assert!(!d.path().join("out/prepared/train.jsonl").exists());
}

#[test]
fn train_generate_and_merge_from_the_command_line() {
    let d = tempfile::tempdir().unwrap();
    let run = d.path().join("run");
    let recipe = common::tiny_recipe(d.path(), "cli", "{method: lora, lora_r: 2}", "{max_steps: 3, device: cpu, per_device_train_batch_size: 8}", "");
    let r = recipe.to_str().unwrap();
    assert_eq!(steptune(&["prepare", r], d.path()).0, 0);
    let (code, _, err) = steptune(&["train", r], d.path());
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("train: 3 steps"), "{err}");
    let (code, out, err) = steptune(
        &["generate", "--model", run.join("base_model").to_str().unwrap(), "--adapter", run.join("adapter").to_str().unwrap(), "--prompt", "How do I reset my password?", "--max-new-tokens", "12", "--json"],
        d.path(),
    );
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    assert!(v["text"].is_string() && v["steps"].is_array());
    let n = v["token_ids"].as_array().unwrap().len();
    assert!((1..=12).contains(&n), "{n} tokens");
    let merged = d.path().join("merged");
    let (code, _, err) = steptune(
        &["merge", "--model", run.join("base_model").to_str().unwrap(), "--adapter", run.join("adapter").to_str().unwrap(), "--out", merged.to_str().unwrap()],
        d.path(),
    );
    assert_eq!(code, 0, "{err}");
    // The merged folder generates exactly what base + adapter generates (greedy).
    let (_, out2, _) = steptune(&["generate", "--model", merged.to_str().unwrap(), "--prompt", "How do I reset my password?", "--max-new-tokens", "12", "--json"], d.path());
    let v2: serde_json::Value = serde_json::from_str(out2.lines().next().unwrap()).unwrap();
    assert_eq!(v["token_ids"], v2["token_ids"]);
    let (code, _, err) = steptune(&["generate", "--model", d.path().join("nope").to_str().unwrap(), "--prompt", "x"], d.path());
    assert_eq!(code, 1);
    assert!(err.contains("nope"), "{err}");
}


#[test]
fn hub_ids_resolve_through_the_hugging_face_cache_or_fail_clearly_offline() {
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let d = tempfile::tempdir().unwrap();
    // The cache layout huggingface_hub writes: refs/main names the snapshot.
    let cache = d.path().join("hub");
    let snap = cache.join("models--acme--tiny-qwen3/snapshots/0123abcd");
    std::fs::create_dir_all(&snap).unwrap();
    std::fs::create_dir_all(cache.join("models--acme--tiny-qwen3/refs")).unwrap();
    std::fs::write(cache.join("models--acme--tiny-qwen3/refs/main"), "0123abcd").unwrap();
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(repo.join("tests/fixtures/models/qwen3_a").join(f), snap.join(f)).unwrap();
    }
    for f in ["tokenizer.json", "tokenizer_config.json"] {
        std::fs::copy(repo.join("../shared/models/qwen3-8b").join(f), snap.join(f)).unwrap();
    }
    let data = repo.join("data/procedures.jsonl");
    std::fs::write(d.path().join("r.yaml"), format!("name: hub\noutput_dir: out\nmodel: {{source: acme/tiny-qwen3}}\ndata: {{files: [{}], columns: {{group: intent}}}}\n", data.display())).unwrap();
    let (code, _, err) = steptune_env(&["prepare", "r.yaml"], d.path(), &[("HF_HUB_CACHE", &cache), ("HF_HUB_OFFLINE", std::path::Path::new("1"))]);
    assert_eq!(code, 0, "{err}");
    let report = std::fs::read_to_string(d.path().join("out/prepare_report.md")).unwrap();
    assert!(report.contains("0123abcd"), "the tokenizer came from the cached snapshot:\n{report}");
    // A model that is not cached, offline: an immediate, clear error.
    std::fs::write(d.path().join("m.yaml"), format!("name: hub2\noutput_dir: out2\nmodel: {{source: acme/not-downloaded}}\ndata: {{files: [{}]}}\n", data.display())).unwrap();
    let started = std::time::Instant::now();
    let (code, _, err) = steptune_env(&["prepare", "m.yaml"], d.path(), &[("HF_HUB_CACHE", &cache), ("HF_HUB_OFFLINE", std::path::Path::new("1"))]);
    assert_eq!(code, 1);
    assert!(err.contains("acme/not-downloaded") && err.contains("HF_HUB_OFFLINE") && err.contains("huggingface-cli download"), "{err}");
    assert!(started.elapsed().as_secs() < 30);
}

/// Every shipped recipe is valid, and the tiny T5 recipe prepares seq2seq examples from the
/// flan-t5 tokenizer beside the checkout: source = prompt + eos, target = numbered steps + eos.
#[test]
fn shipped_recipes_check_and_the_t5_recipe_prepares_seq2seq_examples() {
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut names: Vec<String> = std::fs::read_dir(repo.join("recipes")).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).filter(|n| n.ends_with(".yaml")).collect();
    names.sort();
    assert!(names.len() >= 5, "{names:?}");
    for n in &names {
        let (code, _, err) = steptune(&["check", &format!("recipes/{n}")], repo);
        assert_eq!(code, 0, "{n}: {err}");
    }
    let _ = common::shared();
    let d = tempfile::tempdir().unwrap();
    let (code, _, err) = steptune(&["prepare", "recipes/t5-tiny.yaml", "--output-dir", d.path().to_str().unwrap()], repo);
    assert_eq!(code, 0, "{err}");
    let first = std::fs::read_to_string(d.path().join("prepared/train.jsonl")).unwrap();
    let row: serde_json::Value = serde_json::from_str(first.lines().next().unwrap()).unwrap();
    let ids: Vec<i64> = serde_json::from_value(row["input_ids"].clone()).unwrap();
    let labels: Vec<i64> = serde_json::from_value(row["labels"].clone()).unwrap();
    assert_eq!((ids.last(), labels.last()), (Some(&1), Some(&1)), "both end with </s>");
    assert!(labels.iter().all(|&l| l >= 0), "every target token is labelled");
}
