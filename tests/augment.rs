//! `steptune augment`: the answer parser, every filter with fixed model outputs, determinism,
//! and the whole path (split → tiny model → augmented.jsonl → prepare) with a random tiny model.
mod common;

use std::collections::HashSet;
use std::path::Path;

use steptune::data::augment::{self, augment_rows, check_wording, parse_wordings, AugmentedRow, Filters, PromptIndex, SourceRow};
use steptune::data::pii::{PiiOptions, PiiScrubber};
use steptune::recipe::{AugmentSection, Architecture};
use steptune::run::RunDir;

#[test]
fn parser_reads_numbered_bulleted_and_plain_answers() {
    let numbered = "Here are 3 rewrites:\n1. How can I reset my password?\n2) What do I do to change a forgotten password?\n3: \"I forgot my password, help\"\nLet me know if you need more!";
    assert_eq!(parse_wordings(numbered), ["How can I reset my password?", "What do I do to change a forgotten password?", "I forgot my password, help"]);
    let bullets = "Sure:\n- one wording here\n* “second wording here”\n• 'third wording here'\n(4) fourth wording here";
    assert_eq!(parse_wordings(bullets), ["one wording here", "second wording here", "third wording here", "fourth wording here"]);
    let plain = "Here are some rewrites:\n\nHow do I cancel?\n  **Can I cancel my order?**  \n";
    assert_eq!(parse_wordings(plain), ["How do I cancel?", "Can I cancel my order?"]);
    let thinking = "<think>\nThe user wants 2 rewrites.\n1. not this\n</think>\n\n1. first\n2. second";
    assert_eq!(parse_wordings(thinking), ["first", "second"]);
    // The template opened the block; the answer only closes it.
    assert_eq!(parse_wordings("reasoning\n1. hidden\n</think>\n1. shown"), ["shown"]);
    // An unclosed block hides the rest.
    assert_eq!(parse_wordings("1. kept\n<think>1. never"), ["kept"]);
    // "1.5 GB" is not a list marker; a bare marker is an empty item.
    assert_eq!(parse_wordings("1.5 GB is left, how to free space"), ["1.5 GB is left, how to free space"]);
    assert_eq!(parse_wordings("1.\n2. ok then"), ["", "ok then"]);
    assert!(parse_wordings("  \n<think>x</think>\n").is_empty());
}

fn src(id: &str, group: &str, prompt: &str, output: &str) -> SourceRow {
    SourceRow { id: id.into(), group: group.into(), prompt: prompt.into(), output: output.into() }
}

fn section(per_prompt: usize) -> AugmentSection {
    AugmentSection { per_prompt, batch_size: 2, min_chars: 8, max_chars: 80, max_length_ratio: 3.0, ..Default::default() }
}

fn scrubber() -> PiiScrubber {
    PiiScrubber::new(&PiiOptions::all(vec![]))
}

const RESET: &str = "1. Open the app.\n2. Tap Forgot Password.\n3. Follow the link in the email.";

#[test]
fn every_filter_rejects_what_it_should_with_fixed_outputs() {
    let sources = vec![
        src("r1", "reset", "How do I reset my password?", RESET),
        src("r2", "cancel", "How can I cancel my order?", "1. Open Orders.\n2. Pick the order.\n3. Tap Cancel."),
    ];
    let eval = vec!["What are the steps to reset my password in the app?".to_string()];
    let a = section(3);
    let s = scrubber();
    let filters = Filters::from_section(&a, 0.8, Some(&s));
    let answers = [
        // r1: one of each reason, then surplus once the quota of 3 is met.
        "Here you go:\n1. \n2. Reset?\n3. I need to reset my password, it's for my account, the one I use every day, please help me now\n\
         4. Reset the password for bob@example.com please\n5. Tap Forgot Password.\n6. how do I reset my password\n\
         7. What are the steps to reset my password in the app, please?\n8. I forgot my password, what now?\n9. Password reset: how does it work?\n\
         10. Can you explain resetting a password?\n11. Another valid wording of reset",
        // r2: nothing parseable.
        "<think>only thinking</think>",
    ];
    let mut calls = Vec::new();
    let mut ask = |batch: usize, instr: &[String]| -> anyhow::Result<Vec<String>> {
        calls.push((batch, instr.to_vec()));
        Ok(answers.iter().map(|s| s.to_string()).collect())
    };
    let (rows, report) = augment_rows(&sources, &eval, &a, "fixed", 7, &filters, &mut ask).unwrap();
    assert_eq!(calls.len(), 1);
    assert!(calls[0].1[0].contains("in 3 different ways") && calls[0].1[0].ends_with("Question: How do I reset my password?"), "{}", calls[0].1[0]);
    let r = |k: &str| report.total.rejected.get(k).copied().unwrap_or(0);
    assert_eq!(r("empty"), 1);
    assert_eq!(r("too_short"), 1);
    assert_eq!(r("too_long"), 1);
    assert_eq!(r("pii"), 1);
    assert_eq!(r("copy_of_answer"), 1);
    assert_eq!(r("duplicate_of_prompt"), 1);
    assert_eq!(r("near_duplicate"), 1, "{:?}", report.rejected_examples);
    assert_eq!(r("surplus"), 1);
    assert_eq!(r("no_items"), 1);
    let kept: Vec<&str> = rows.iter().map(|r| r.prompt.as_str()).collect();
    assert_eq!(kept, ["I forgot my password, what now?", "Password reset: how does it work?", "Can you explain resetting a password?"]);
    assert_eq!(report.total.kept, 3);
    assert_eq!(report.total.prompts, 2);
    assert_eq!(report.total.asked, 6);
    assert_eq!(report.total.kept + report.total.rejected_total(), report.total.candidates);
    assert_eq!(report.groups["reset"].kept, 3);
    assert_eq!(report.groups["cancel"].rejected["no_items"], 1);
    // Provenance: the shape `steptune review` recognises as synthetic.
    let v = serde_json::to_value(&rows[0]).unwrap();
    assert_eq!(v["id"], "r1#aug1");
    assert_eq!(v["group"], "reset");
    assert_eq!(v["output"], RESET);
    assert_eq!(v["source"]["source"], "synthetic");
    assert_eq!(v["source"]["row"], "r1");
    assert_eq!(v["source"]["model"], "fixed");
    assert_eq!(v["source"]["seed"], 7);
    assert_eq!(v["source"]["settings"]["per_prompt"], 3);
    assert_eq!(v["source"]["settings"]["temperature"], 0.8);
    let md = augment::report_markdown(&report);
    assert!(md.contains("| reset | 1 | 3 | 11 | 3 |"), "{md}");
}

#[test]
fn a_kept_wording_blocks_its_repeats_and_length_is_relative_to_the_source() {
    let a = AugmentSection { max_length_ratio: 2.0, min_chars: 3, max_chars: 1000, ..Default::default() };
    let f = Filters::from_section(&a, 0.9, None);
    let mut index = PromptIndex::new(["cancel my order"], 0.9);
    // 20 chars at least count: 2 × 20 = 40.
    assert_eq!(check_wording("how could I cancel the order I placed yesterday?", "cancel my order", "1. x\n2. y", &f, &index), Err("too_long"));
    assert_eq!(check_wording("Cancel my order!", "cancel my order", "1. x\n2. y", &f, &index), Err("duplicate_of_prompt"));
    let w = check_wording("  please cancel the order ", "cancel my order", "1. x\n2. y", &f, &index).unwrap();
    assert_eq!(w, "please cancel the order");
    index.add(&w);
    assert_eq!(check_wording("Please cancel the order.", "cancel my order", "1. x\n2. y", &f, &index), Err("duplicate_of_prompt"));
    // No PII check without a scrubber (data.pii.enabled: false).
    assert!(check_wording("mail a@b.com to cancel", "cancel my order", "1. x", &f, &index).is_ok());
    // A step of the answer is a copy of the answer.
    assert_eq!(check_wording("Open the app", "cancel my order", RESET, &f, &index), Err("copy_of_answer"));
}

#[test]
fn the_index_finds_near_duplicates_like_a_full_scan() {
    let prompts: Vec<String> = (0..300).map(|i| format!("how do I {} my {} in the {} app today", ["reset", "change", "find"][i % 3], ["password", "email", "order", "card", "plan"][i % 5], i % 17)).collect();
    for t in [0.5, 0.7, 0.9] {
        let index = PromptIndex::new(prompts.iter().map(String::as_str), t);
        for q in ["how do I reset my password in the 3 app today", "how do I find my plan in the 16 app", "reset password app", "what is the weather"] {
            let set = |s: &str| steptune::data::dedup::words(s).into_iter().collect::<HashSet<_>>();
            let qs = set(q);
            let brute = prompts.iter().map(|p| {
                let ps = set(p);
                qs.intersection(&ps).count() as f64 / qs.union(&ps).count() as f64
            });
            let best = brute.fold(0.0f64, f64::max);
            match index.near(q) {
                Some(j) => assert!((j - best).abs() < 1e-12 && j >= t, "{q} at {t}: {j} vs {best}"),
                None => assert!(best < t, "{q} at {t}: missed {best}"),
            }
        }
    }
    assert_eq!(PromptIndex::new(["a b c"], 1.0).near("a b c"), None, "threshold 1 turns near duplicates off");
}

#[test]
fn the_driver_is_deterministic_and_batches_in_row_order() {
    let sources: Vec<SourceRow> = (0..5).map(|i| src(&format!("r{i}"), "g", &format!("question number {i} about refunds"), "1. a\n2. b")).collect();
    let a = section(2);
    let f = Filters::from_section(&a, 0.9, None);
    let run = || {
        let mut seen = Vec::new();
        let mut ask = |batch: usize, instr: &[String]| -> anyhow::Result<Vec<String>> {
            seen.push((batch, instr.len()));
            Ok(instr.iter().map(|i| format!("1. {} rephrased\n2. another take on {}", &i[i.len() - 10..], batch)).collect())
        };
        let (rows, _) = augment_rows(&sources, &[], &a, "m", 1, &f, &mut ask).unwrap();
        (rows, seen)
    };
    let (r1, s1) = run();
    let (r2, _) = run();
    assert_eq!(r1, r2);
    assert_eq!(s1, [(0, 2), (1, 2), (2, 1)]);
}

#[test]
fn recipe_keys_are_checked() {
    let base = "model: {source: random, config: {model_type: qwen3}}\ndata:\n  files: [x.jsonl]\n  augment:\n";
    let e = steptune::recipe::parse(&format!("{base}    per_promt: 3\n"), "r.yaml").unwrap_err().to_string();
    assert!(e.contains("data.augment.per_prompt"), "{e}");
    let e = steptune::recipe::parse(&format!("{base}    instruction: rewrite this\n"), "r.yaml").unwrap_err().to_string();
    assert!(e.contains("`data.augment.instruction` has no `{prompt}`"), "{e}");
    let e = steptune::recipe::parse(&format!("{base}    min_chars: 50\n    max_chars: 10\n"), "r.yaml").unwrap_err().to_string();
    assert!(e.contains("data.augment.min_chars"), "{e}");
    let r = steptune::recipe::parse(&format!("{base}    model: Qwen/Qwen3-8B\n    per_prompt: 5\n    seed: 3\n"), "r.yaml").unwrap();
    assert_eq!((r.data.augment.per_prompt, r.data.augment.seed, r.data.augment.temperature), (5, Some(3), 0.8));
}

#[test]
fn augment_without_a_model_says_which_key_to_set() {
    let d = tempfile::tempdir().unwrap();
    let r = common::tiny_recipe(d.path(), "aug", "{method: full}", "{device: cpu}", "");
    let (code, _, err) = common::steptune(&["augment", r.to_str().unwrap()], d.path());
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("`data.augment.model` is not set"), "{err}");
}

/// A random tiny Qwen3 with a BPE tokenizer (and its chat template) saved as an HF folder.
fn tiny_model_dir(dir: &Path) {
    let text = std::fs::read_to_string(common::repo().join("data/procedures.jsonl")).unwrap();
    let tok = steptune::model::tokenizer::TokenizerBundle::train_bpe(text.lines(), 400, 2).unwrap();
    let config = serde_json::json!({"model_type": "qwen3", "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
        "num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": 16, "vocab_size": tok.vocab_size()});
    tch::manual_seed(0);
    let model = steptune::model::random_decoder(&config, Architecture::Qwen3, tch::Kind::Float, tch::Device::Cpu).unwrap();
    steptune::model::save_decoder(&model, dir, Some(&tok)).unwrap();
}

#[test]
fn the_whole_path_runs_with_a_tiny_model_and_prepare_adds_the_rows_to_train_only() {
    let _rng = common::rng_lock();
    let d = tempfile::tempdir().unwrap();
    let model_dir = d.path().join("writer");
    tiny_model_dir(&model_dir);
    let extra = format!(
        "  augment: {{model: {}, per_prompt: 3, max_new_tokens: 24, batch_size: 4, min_chars: 1, max_chars: 400, max_length_ratio: 0}}\n",
        model_dir.display()
    );
    let path = common::tiny_recipe(d.path(), "aug", "{method: full}", "{device: cpu}", &extra);
    let recipe = steptune::recipe::LoadedRecipe::load(&path).unwrap();
    let run = RunDir::create(recipe.output_dir()).unwrap();

    let before = steptune::data::prepare::prepare(&recipe).unwrap();
    let out = augment::run(&recipe, &run).unwrap();
    let t = &out.report.total;
    eprintln!("tiny-model augment: {t:?}; {:?}", out.report.seconds);
    let train_originals = before.train.iter().filter(|p| p.copy == 0).count();
    assert_eq!(t.prompts, train_originals);
    assert_eq!(t.asked, 3 * train_originals);
    assert_eq!(t.kept + t.rejected_total(), t.candidates, "{t:?}");
    assert_eq!(t.kept, out.rows.len());
    let group_kept: usize = out.report.groups.values().map(|c| c.kept).sum();
    assert_eq!(group_kept, t.kept);
    for f in ["augmented.jsonl", "augment_report.json", "augment_report.md"] {
        assert!(run.path(f).exists(), "{f}");
    }
    let first = std::fs::read(run.path("augmented.jsonl")).unwrap();
    let rows: Vec<AugmentedRow> = augment::read_augmented(&run.path("augmented.jsonl")).unwrap();
    assert_eq!(rows, out.rows);
    let eval_ids: HashSet<&str> = before.eval.iter().map(|p| p.id.as_str()).collect();
    for r in &rows {
        assert_eq!(r.source.source, "synthetic");
        assert!(!eval_ids.contains(r.source.row.as_str()), "an eval row was rewritten: {}", r.source.row);
    }

    // Same seed: the same file.
    augment::run(&recipe, &run).unwrap();
    assert_eq!(std::fs::read(run.path("augmented.jsonl")).unwrap(), first, "augment is deterministic for a seed");

    // prepare adds exactly the kept rows to train; eval and the original rows do not change.
    let after = steptune::data::prepare::prepare(&recipe).unwrap();
    assert_eq!(after.report.augmented.rows_in_file, rows.len());
    assert_eq!(after.report.augmented.added, rows.len(), "{:?}", after.report.augmented.rejected);
    let ids = |v: &[steptune::data::prepare::Prepared]| v.iter().map(|p| (p.id.clone(), p.prompt.clone())).collect::<Vec<_>>();
    assert_eq!(ids(&after.eval), ids(&before.eval));
    let added: Vec<_> = after.train.iter().filter(|p| p.id.contains("#aug")).collect();
    assert_eq!(added.len(), rows.len());
    assert!(after.eval.iter().all(|p| !p.id.contains("#aug")));
    let originals: Vec<_> = after.train.iter().filter(|p| !p.id.contains("#aug")).map(|p| (p.id.clone(), p.prompt.clone())).collect();
    assert_eq!(originals, ids(&before.train));
    for (p, r) in added.iter().zip(&rows) {
        assert_eq!((&p.id, &p.prompt, &p.output), (&r.id, &r.prompt, &r.output));
    }

    // Review: the augmented rows are synthetic, on the sheet, and held back until approved.
    let sheet = steptune::data::review::reviewable_rows(&recipe).unwrap();
    assert_eq!(sheet.iter().filter(|r| r.source == "synthetic").count(), rows.len());
    assert!(sheet.iter().filter(|r| r.source == "synthetic").all(|r| r.split == "train"));
    let mut gated = recipe.clone();
    gated.recipe.data.require_review = steptune::recipe::RequireReview::Synthetic;
    let held = steptune::data::prepare::prepare(&gated).unwrap();
    assert_eq!(ids(&held.train), ids(&before.train), "pending synthetic rows are not trained on");
    assert_eq!(held.report.review.train.pending, rows.len());

    // add_to_train: false leaves the file out.
    let mut off = recipe.clone();
    off.recipe.data.augment.add_to_train = false;
    let plain = steptune::data::prepare::prepare(&off).unwrap();
    assert_eq!(ids(&plain.train), ids(&before.train));
}

#[test]
fn prepare_rechecks_a_stale_or_leaking_file() {
    let d = tempfile::tempdir().unwrap();
    let path = common::tiny_recipe(d.path(), "aug", "{method: full}", "{device: cpu}", "  dedup: {near_threshold: 0.6}\n");
    let recipe = steptune::recipe::LoadedRecipe::load(&path).unwrap();
    let before = steptune::data::prepare::prepare(&recipe).unwrap();
    let (tr, ev) = (&before.train[0], &before.eval[0]);
    let row = |id: &str, src_row: &str, prompt: &str, output: &str| AugmentedRow {
        id: id.into(),
        group: "g".into(),
        prompt: prompt.into(),
        output: output.into(),
        source: augment::Provenance { source: "synthetic".into(), row: src_row.into(), model: "m".into(), seed: 1, settings: serde_json::json!({}) },
    };
    let rows = vec![
        row("a", &tr.id, "a brand new wording nobody wrote before", &tr.output),
        row("b", &ev.id, "a wording of an eval row", &ev.output),
        row("c", &tr.id, "another fresh wording here", "1. a different answer\n2. now"),
        row("d", &tr.id, &ev.prompt.to_uppercase(), &tr.output),
        row("e", &tr.id, &format!("{} ok", ev.prompt), &tr.output),
        row("f", "no-such-row", "whatever wording", &tr.output),
    ];
    std::fs::create_dir_all(recipe.output_dir()).unwrap();
    std::fs::write(recipe.output_dir().join("augmented.jsonl"), augment::jsonl(&rows).unwrap()).unwrap();
    let after = steptune::data::prepare::prepare(&recipe).unwrap();
    let a = &after.report.augmented;
    assert_eq!((a.rows_in_file, a.added), (6, 1), "{a:?}");
    assert_eq!(a.rejected["source_not_in_train"], 2);
    assert_eq!(a.rejected["stale"], 1);
    assert_eq!(a.rejected["duplicate_of_prompt"], 1);
    assert_eq!(a.rejected["near_duplicate"], 1, "{a:?}");
    assert_eq!(after.train.iter().filter(|p| p.id == "a").count(), 1);
    assert_eq!(after.eval.len(), before.eval.len());
    assert!(steptune::data::prepare::report_markdown(&after.report).contains("Augmented wordings added to train: 1 of 6"));
}
