//! The eval stage end to end on a tiny trained run, the score command, and the human-evaluation
//! round trip through the command line.
mod common;

use common::steptune;

#[test]
fn run_writes_a_base_vs_tuned_report_and_human_sheets_round_trip() {
    let d = tempfile::tempdir().unwrap();
    let run = d.path().join("run");
    let recipe = common::tiny_recipe(
        d.path(),
        "ev",
        "{method: full}",
        "{max_steps: 4, device: cpu, per_device_train_batch_size: 8, learning_rate: 3.0e-3}",
        "eval: {max_new_tokens: 16, max_samples: 6, report_examples: 2}\n",
    );
    let r = recipe.to_str().unwrap();
    let (code, _, err) = steptune(&["run", r], d.path());
    assert_eq!(code, 0, "{err}");
    let report = std::fs::read_to_string(run.join("report.md")).unwrap();
    for needle in ["| metric | base | tuned | human reference |", "ROUGE-L F1", "METEOR", "Per intent", "Best examples", "Worst examples"] {
        assert!(report.contains(needle), "report.md lacks {needle:?}:\n{report}");
    }
    let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(run.join("report.json")).unwrap()).unwrap();
    let systems = json["systems"].as_array().unwrap();
    assert_eq!(systems.len(), 2);
    assert_eq!(json["eval_prompts"], 6);
    // The reference scored against itself is the ceiling.
    assert!((json["human_reference"]["rouge_l_f1"].as_f64().unwrap() - 1.0).abs() < 1e-12);
    for s in systems {
        let f1 = s["corpus"]["rouge_l_f1"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&f1));
    }
    assert!(run.join("metrics.png").exists() && run.join("eval/predictions_base.jsonl").exists());

    // score: the tuned predictions against the references, no model needed.
    let preds = run.join("eval/predictions_tuned.jsonl");
    let text = std::fs::read_to_string(&preds).unwrap();
    let (mut p, mut q) = (String::new(), String::new());
    for (i, l) in text.lines().enumerate() {
        let v: serde_json::Value = serde_json::from_str(l).unwrap();
        p += &format!("{}\n", serde_json::json!({"id": i, "text": v["prediction"]}));
        q += &format!("{}\n", serde_json::json!({"id": i, "text": v["reference"], "group": v["group"]}));
    }
    std::fs::write(d.path().join("p.jsonl"), &p).unwrap();
    std::fs::write(d.path().join("q.jsonl"), &q).unwrap();
    let (code, out, err) = steptune(&["score", "--pred", "p.jsonl", "--ref", "q.jsonl", "--json"], d.path());
    assert_eq!(code, 0, "{err}");
    let scored: serde_json::Value = serde_json::from_str(&out).unwrap();
    let tuned = &systems.iter().find(|s| s["name"] == "tuned").unwrap()["corpus"];
    assert_eq!(scored["corpus"]["rouge_l_f1"], tuned["rouge_l_f1"], "score and eval agree");
    std::fs::write(d.path().join("q2.jsonl"), q.lines().skip(1).map(|l| format!("{l}\n")).collect::<String>()).unwrap();
    let (code, _, err) = steptune(&["score", "--pred", "p.jsonl", "--ref", "q2.jsonl"], d.path());
    assert_eq!(code, 1);
    assert!(err.contains('0'), "the missing id is named: {err}");

    // human-eval: export, two raters fill the sheet, import unblinds and joins the report.
    let (code, _, err) = steptune(&["human-eval", "export", r, "--sheet", "sheet.csv", "--key", "key.json"], d.path());
    assert_eq!(code, 0, "{err}");
    let sheet = std::fs::read_to_string(d.path().join("sheet.csv")).unwrap();
    assert!(!sheet.contains("tuned") && !sheet.contains(",base,"), "the sheet is blinded");
    let mut rdr = csv::Reader::from_reader(sheet.as_bytes());
    let headers = rdr.headers().unwrap().clone();
    for (rater, score) in [("alice", "4"), ("bob", "5")] {
        let mut w = csv::Writer::from_path(d.path().join(format!("{rater}.csv"))).unwrap();
        w.write_record(&headers).unwrap();
        for rec in csv::Reader::from_reader(sheet.as_bytes()).records() {
            let rec = rec.unwrap();
            let row: Vec<&str> = headers.iter().zip(rec.iter()).map(|(h, v)| if ["clarity", "correctness", "completeness", "relevance"].contains(&h) { score } else { v }).collect();
            w.write_record(&row).unwrap();
        }
        w.flush().unwrap();
    }
    let (code, _, err) = steptune(&["human-eval", "import", r, "--key", "key.json", "alice.csv", "bob.csv"], d.path());
    assert_eq!(code, 0, "{err}");
    let report = std::fs::read_to_string(run.join("report.md")).unwrap();
    assert!(report.contains("## Human evaluation"), "{report}");
    let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(run.join("report.json")).unwrap()).unwrap();
    assert!(json["human_eval"]["systems"].as_array().unwrap().len() == 2);
    // A bad cell names file, row and column.
    let bad = std::fs::read_to_string(d.path().join("bob.csv")).unwrap().replacen(",5,", ",9,", 1);
    std::fs::write(d.path().join("carol.csv"), bad).unwrap();
    let (code, _, err) = steptune(&["human-eval", "import", r, "--key", "key.json", "carol.csv"], d.path());
    assert_eq!(code, 1);
    assert!(err.contains("carol.csv") && err.contains("row 2"), "{err}");
}

/// The whole run (prepare → train → eval → report) for the other two paths: T5 (seq2seq prompts,
/// the T5 generator) and QLoRA (the tuned model is the 4-bit base with the adapter).
#[test]
fn t5_and_qlora_runs_write_reports() {
    let d = tempfile::tempdir().unwrap();
    let tok = common::shared().join("models/flan-t5-small");
    let t5 = format!(
        "name: t5\noutput_dir: {}\nmodel:\n  source: random\n  architecture: t5\n  tokenizer: {}\n  config: {{model_type: t5, d_model: 32, d_kv: 8, d_ff: 64, num_layers: 1, num_heads: 4, feed_forward_proj: gated-gelu, tie_word_embeddings: false}}\nfinetune: {{method: full}}\ntraining: {{max_steps: 3, device: cpu, per_device_train_batch_size: 8, learning_rate: 3.0e-3}}\ndata:\n  files: [{}]\n  columns: {{group: intent}}\n  limit: 30\n  max_length: 256\neval: {{max_new_tokens: 12, max_samples: 4}}\n",
        d.path().join("t5").display(),
        tok.display(),
        common::repo().join("data/procedures.jsonl").display()
    );
    let t5_recipe = common::write(d.path(), "t5.yaml", t5.as_bytes());
    let qlora = common::tiny_recipe(
        d.path(),
        "q",
        "{method: qlora, lora_r: 4, lora_alpha: 8, quantization: {bnb_4bit_compute_dtype: fp32}}",
        "{max_steps: 3, device: cpu, per_device_train_batch_size: 8, learning_rate: 3.0e-3, gradient_checkpointing: true}",
        "eval: {max_new_tokens: 12, max_samples: 4}\n",
    );
    for (recipe, run) in [(t5_recipe, d.path().join("t5")), (qlora, d.path().join("run"))] {
        let (code, _, err) = steptune(&["run", recipe.to_str().unwrap()], d.path());
        assert_eq!(code, 0, "{}: {err}", recipe.display());
        let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(run.join("report.json")).unwrap()).unwrap();
        assert_eq!(json["eval_prompts"], 4, "{}", recipe.display());
        let names: Vec<&str> = json["systems"].as_array().unwrap().iter().map(|s| s["name"].as_str().unwrap()).collect();
        assert_eq!(names, ["base", "tuned"]);
        let preds = std::fs::read_to_string(run.join("eval/predictions_tuned.jsonl")).unwrap();
        assert_eq!(preds.lines().count(), 4);
    }
    // QLoRA's adapter is the output; its base is the 16-bit folder the 4-bit model was quantized from.
    assert!(d.path().join("run/adapter/adapter_model.safetensors").exists());
    assert!(d.path().join("t5/model/model.safetensors").exists());
}
