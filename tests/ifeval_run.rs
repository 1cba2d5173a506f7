//! IFEval through the command line: the 13-prompt smoke run on a tiny trained model, its files
//! rescored by `ifeval score`, a two-model candidates table, the errors, and `eval.ifeval` in a run.
mod common;

use common::steptune;
use serde_json::Value;

fn read_json(p: &std::path::Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))).unwrap()
}

const ACCURACIES: [&str; 4] = ["strict_prompt", "strict_instruction", "loose_prompt", "loose_instruction"];

#[test]
fn recipe_keys_round_trip_through_check() {
    let d = tempfile::tempdir().unwrap();
    let r = common::tiny_recipe(d.path(), "k", "{method: full}", "{max_steps: 1, device: cpu}", "eval: {ifeval: true, ifeval_limit: 5, ifeval_max_new_tokens: 64}\n");
    let (code, out, err) = steptune(&["check", r.to_str().unwrap()], d.path());
    assert_eq!(code, 0, "{err}");
    for needle in ["ifeval: true", "ifeval_limit: 5", "ifeval_max_new_tokens: 64"] {
        assert!(out.contains(needle), "check lacks {needle:?}:\n{out}");
    }
    let (code, out, _) = steptune(&["check", r.to_str().unwrap(), "--set", "eval.ifeval=false"], d.path());
    assert_eq!(code, 0);
    assert!(out.contains("ifeval: false") && out.contains("ifeval_max_new_tokens: 64"), "{out}");
    let bad = common::tiny_recipe(d.path(), "k", "{method: full}", "{max_steps: 1, device: cpu}", "eval: {ifevl: true}\n");
    let (code, _, err) = steptune(&["check", bad.to_str().unwrap()], d.path());
    assert_eq!(code, 1);
    assert!(err.contains("unknown key `eval.ifevl`: did you mean `eval.ifeval`?"), "{err}");
    let zero = common::tiny_recipe(d.path(), "k", "{method: full}", "{max_steps: 1, device: cpu}", "eval: {ifeval_limit: 0}\n");
    let (code, _, err) = steptune(&["check", zero.to_str().unwrap()], d.path());
    assert_eq!(code, 1);
    assert!(err.contains("eval.ifeval_limit"), "{err}");
}

/// One tiny full fine-tune serves every check: `eval.ifeval` in its report, then its base and
/// tuned folders as `steptune ifeval` candidates.
#[test]
fn smoke_run_scores_rescore_and_compare_candidates() {
    let d = tempfile::tempdir().unwrap();
    let run = d.path().join("run");
    let recipe = common::tiny_recipe(
        d.path(),
        "ife",
        "{method: full}",
        "{max_steps: 3, device: cpu, per_device_train_batch_size: 8, learning_rate: 3.0e-3}",
        "eval: {max_new_tokens: 8, max_samples: 2, compare_base: false, ifeval: true, ifeval_limit: 4, ifeval_max_new_tokens: 8}\n",
    );
    let (code, _, err) = steptune(&["run", recipe.to_str().unwrap()], d.path());
    assert_eq!(code, 0, "{err}");
    let report = std::fs::read_to_string(run.join("report.md")).unwrap();
    for needle in ["## IFEval: instruction-following kept or lost", "| accuracy | base | tuned | change (points) |", "| prompt-level strict |"] {
        assert!(report.contains(needle), "report.md lacks {needle:?}:\n{report}");
    }
    let rj = read_json(&run.join("report.json"));
    assert_eq!(rj["ifeval"]["prompts"], 4);
    // compare_base: false keeps the procedures' table to the tuned model; IFEval still has the base.
    assert_eq!(rj["systems"].as_array().unwrap().len(), 1);
    let ij = read_json(&run.join("ifeval.json"));
    for sys in ["base", "tuned"] {
        assert_eq!(ij[sys]["rows"].as_array().unwrap().len(), 4, "{sys}");
        assert_eq!(std::fs::read_to_string(run.join(format!("eval/ifeval_responses_{sys}.jsonl"))).unwrap().lines().count(), 4);
    }
    assert!(std::fs::read_to_string(run.join("ifeval.md")).unwrap().contains("## IFEval: tuned"));

    // The 13-prompt smoke run with the tuned model.
    let (base, tuned) = (run.join("base_model"), run.join("model"));
    let out = d.path().join("one");
    let started = std::time::Instant::now();
    let (code, _, err) = steptune(&["ifeval", "--model", tuned.to_str().unwrap(), "--limit", "13", "--max-new-tokens", "24", "--out", out.to_str().unwrap()], d.path());
    assert_eq!(code, 0, "{err}");
    eprintln!("ifeval --limit 13: {:.1} s", started.elapsed().as_secs_f64());
    assert!(err.contains("13/13 prompts"), "progress is shown: {err}");
    for f in ["responses.jsonl", "ifeval.json", "ifeval.md"] {
        assert!(out.join(f).exists(), "{f} missing");
    }
    let first13: Vec<String> = steptune::eval::ifeval::INPUT_DATA.lines().take(13).map(|l| serde_json::from_str::<Value>(l).unwrap()["prompt"].as_str().unwrap().to_string()).collect();
    let written: Vec<Value> = std::fs::read_to_string(out.join("responses.jsonl")).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(written.len(), 13);
    for (w, p) in written.iter().zip(&first13) {
        assert_eq!(w["prompt"].as_str().unwrap(), p);
        assert!(w["response"].is_string());
    }
    let one = read_json(&out.join("ifeval.json"));
    assert_eq!(one["limit"], 13);
    assert_eq!(one["max_new_tokens"], 24);
    assert_eq!(one["rows"].as_array().unwrap().len(), 13);
    assert!(one["generation_seconds"].as_f64().unwrap() > 0.0 && one["steptune_version"].is_string());
    // The written responses rescored without a model give the same figures.
    let input = d.path().join("first13.jsonl");
    std::fs::write(&input, steptune::eval::ifeval::INPUT_DATA.lines().take(13).map(|l| format!("{l}\n")).collect::<String>()).unwrap();
    let (code, stdout, err) = steptune(&["ifeval", "score", "--input", input.to_str().unwrap(), "--responses", out.join("responses.jsonl").to_str().unwrap(), "--json"], d.path());
    assert_eq!(code, 0, "{err}");
    let rescored: Value = serde_json::from_str(&stdout).unwrap();
    for k in ACCURACIES {
        assert_eq!(rescored[k], one[k], "{k}");
        let v = rescored[k].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&v));
    }
    assert_eq!(rescored["per_type"], one["per_type"]);
    assert_eq!(rescored["rows"], one["rows"]);
    let (code, table, _) = steptune(&["ifeval", "score", "--input", input.to_str().unwrap(), "--responses", out.join("responses.jsonl").to_str().unwrap()], d.path());
    assert_eq!(code, 0);
    assert!(table.contains("| prompt-level (13 prompts) |") && table.contains("| instruction | count | strict | loose |"), "{table}");
    // Against all 541 prompts the 13 responses fall short: the first prompt without one is named.
    let (code, _, err) = steptune(&["ifeval", "score", "--responses", out.join("responses.jsonl").to_str().unwrap()], d.path());
    assert_eq!(code, 1);
    assert!(err.contains("answers 13 of the 541 prompts") && err.contains("--input") && err.contains("no response for prompt key"), "{err}");
    let md = std::fs::read_to_string(out.join("ifeval.md")).unwrap();
    assert!(md.contains("## Per instruction type") && md.contains("prompt-level"), "{md}");

    // Two candidates: a sub-folder each and one table, best first.
    let cands = d.path().join("cands");
    let (code, _, err) = steptune(
        &["ifeval", "--model", base.to_str().unwrap(), "--model", tuned.to_str().unwrap(), "--limit", "3", "--max-new-tokens", "8", "--out", cands.to_str().unwrap()],
        d.path(),
    );
    assert_eq!(code, 0, "{err}");
    let cj = read_json(&cands.join("candidates.json"));
    let rows = cj["candidates"].as_array().unwrap();
    assert_eq!(rows.len(), 2);
    assert!(rows[0]["strict_prompt"].as_f64().unwrap() >= rows[1]["strict_prompt"].as_f64().unwrap());
    let table = std::fs::read_to_string(cands.join("candidates.md")).unwrap();
    assert_eq!(table.lines().filter(|l| l.starts_with("| ") && !l.starts_with("| model")).count(), 2, "{table}");
    assert!(table.contains("prompt-level strict"), "{table}");
    for sub in ["base_model", "model"] {
        assert_eq!(std::fs::read_to_string(cands.join(sub).join("responses.jsonl")).unwrap().lines().count(), 3);
    }

    // Errors name the path.
    let (code, _, err) = steptune(&["ifeval", "--model", d.path().join("nope").to_str().unwrap(), "--limit", "1"], d.path());
    assert_eq!(code, 1);
    assert!(err.contains("nope") && err.contains("no such folder"), "{err}");
    std::fs::write(d.path().join("empty.jsonl"), "\n").unwrap();
    let (code, _, err) = steptune(&["ifeval", "--model", tuned.to_str().unwrap(), "--input", "empty.jsonl"], d.path());
    assert_eq!(code, 1);
    assert!(err.contains("empty.jsonl: no prompts"), "{err}");
    std::fs::create_dir_all(d.path().join("adapter")).unwrap();
    // An adapter whose base is another model (a different config.json) is refused before loading.
    let other = d.path().join("other");
    std::fs::create_dir_all(&other).unwrap();
    let mut cfg = read_json(&tuned.join("config.json"));
    cfg["hidden_size"] = serde_json::json!(64);
    std::fs::write(other.join("config.json"), cfg.to_string()).unwrap();
    std::fs::write(d.path().join("adapter/adapter_config.json"), format!("{{\"peft_type\": \"LORA\", \"base_model_name_or_path\": {:?}}}", other.display().to_string())).unwrap();
    let (code, _, err) = steptune(&["ifeval", "--model", tuned.to_str().unwrap(), "--adapter", "adapter", "--limit", "1"], d.path());
    assert_eq!(code, 1);
    assert!(err.contains("was trained on") && err.contains("other"), "{err}");
    // A write failure names the file and leaves no half-written result.
    let blocked = d.path().join("blocked");
    std::fs::write(&blocked, "a file where the folder would go").unwrap();
    let (code, _, err) = steptune(&["ifeval", "--model", tuned.to_str().unwrap(), "--limit", "1", "--max-new-tokens", "2", "--out", blocked.join("x").to_str().unwrap()], d.path());
    assert_eq!(code, 1);
    assert!(err.contains("blocked"), "{err}");
}
