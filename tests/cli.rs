//! The binary as a researcher runs it: exit codes and messages.
use std::process::Command;

fn steptune(args: &[&str], cwd: &std::path::Path) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_steptune")).args(args).current_dir(cwd).output().unwrap();
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

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
