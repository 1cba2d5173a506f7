//! `steptune review`: export a sheet, fill it as a reviewer would, import it, and `prepare`
//! trains only on the approved rows among those `data.require_review` selects; bad cells are
//! named by file, row and column; unknown rows and conflicting decisions are warned about; a
//! re-import changes nothing.
mod common;

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use steptune::data::prepare;
use steptune::data::review::{self, Reviews, SHEET_COLUMNS};

const TINY_MODEL: &str = "model:\n  source: random\n  architecture: qwen3\n  config: {model_type: qwen3, hidden_size: 32}\n  train_tokenizer: {vocab_size: 600, min_frequency: 2}\n";

const TOPICS: [&str; 6] = ["reset my password", "change the language", "export my invoices", "delete my account", "enable two factor login", "update the mobile app"];

/// Six groups of three paraphrases; the first four groups are synthetic (one row carries a
/// provenance object instead of a plain source), the last two original. With eval_ratio 0.34
/// each group gives one row to eval: 8 synthetic and 4 original train rows.
fn write_data(dir: &Path) {
    let mut lines = String::new();
    for (g, topic) in TOPICS.iter().enumerate() {
        for (k, prompt) in [format!("How do I {topic}?"), format!("What are the steps to {topic}"), format!("Please help me {topic} today")].iter().enumerate() {
            let mut row = serde_json::json!({"prompt": prompt, "output": format!("1. Open the {topic} screen\n2. Tap confirm to {topic}"), "group": format!("g{g}")});
            if g < 4 {
                row["source"] = if g == 0 && k == 0 { serde_json::json!({"source": "synthetic", "model": "qwen3-8b"}) } else { "synthetic".into() };
            }
            lines.push_str(&row.to_string());
            lines.push('\n');
        }
    }
    common::write(dir, "data.jsonl", lines.as_bytes());
}

fn write_recipe(dir: &Path, extra: &str) -> PathBuf {
    write_data(dir);
    let yaml = format!(
        "name: r\noutput_dir: {}\n{TINY_MODEL}data:\n  files: [data.jsonl]\n  max_length: 512\n  split: {{eval_ratio: 0.34}}\n{extra}",
        dir.join("run").display()
    );
    common::write(dir, "r.yaml", yaml.as_bytes())
}

fn loaded(dir: &Path, extra: &str) -> steptune::recipe::LoadedRecipe {
    let path = write_recipe(dir, extra);
    steptune::recipe::LoadedRecipe::load(&path).unwrap()
}

fn read_csv(path: &Path) -> Vec<Vec<String>> {
    let mut r = csv::ReaderBuilder::new().has_headers(false).from_path(path).unwrap();
    r.records().map(|rec| rec.unwrap().iter().map(str::to_string).collect()).collect()
}

fn write_csv(path: &Path, rows: &[Vec<String>]) {
    let mut w = csv::Writer::from_path(path).unwrap();
    for r in rows {
        w.write_record(r).unwrap();
    }
    w.flush().unwrap();
}

fn expect_err<T>(r: anyhow::Result<T>) -> String {
    match r {
        Ok(_) => panic!("expected an error"),
        Err(e) => format!("{e:#}"),
    }
}

#[test]
fn export_fill_import_and_prepare_trains_only_approved_rows() {
    let d = tempfile::tempdir().unwrap();
    let recipe = write_recipe(d.path(), "");
    let r = recipe.to_str().unwrap();

    // Nothing reviewed yet: `auto` trains on every row and reports the synthetic ones pending.
    let (code, _, err) = common::steptune(&["prepare", r], d.path());
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("review not enforced") && err.contains("8 pending"), "{err}");
    let report = |name: &str| -> serde_json::Value { serde_json::from_str(&std::fs::read_to_string(d.path().join("run").join(name)).unwrap()).unwrap() };
    assert_eq!(report("prepare_report.json")["split"]["train_rows"], 12);

    let (code, _, err) = common::steptune(&["review", "export", r, "--out", "sheet.csv"], d.path());
    assert_eq!(code, 0, "{err}");
    let sheet = read_csv(&d.path().join("sheet.csv"));
    assert_eq!(sheet[0], SHEET_COLUMNS.map(String::from).to_vec());
    let rows = &sheet[1..];
    assert_eq!(rows.len(), 12, "only the 12 synthetic rows");
    assert!(rows.iter().all(|row| row[2] == "synthetic" && row[5].is_empty() && row[4].starts_with("1. ")));
    assert_eq!(rows.iter().map(|row| &row[0]).collect::<HashSet<_>>().len(), 12, "ids are unique");
    assert_eq!(rows.iter().filter(|row| row[1] == "train").count(), 8);

    // The reviewer approves 5 train rows, rejects 2, leaves 1; in eval approves 1, rejects 1.
    let mut filled = sheet.clone();
    let (mut train_seen, mut eval_seen) = (0, 0);
    let mut approved_prompts = HashSet::new();
    for row in filled.iter_mut().skip(1) {
        let (verdict, comment) = if row[1] == "train" {
            train_seen += 1;
            match train_seen {
                1..=5 => ("Yes", ""),
                6 => ("n", "step 2 is wrong"),
                7 => ("FALSE", ""),
                _ => ("", ""),
            }
        } else {
            eval_seen += 1;
            match eval_seen {
                1 => ("1", ""),
                2 => ("0", "not our product"),
                _ => ("", ""),
            }
        };
        if verdict.eq_ignore_ascii_case("yes") {
            approved_prompts.insert(row[3].clone());
        }
        row[5] = verdict.into();
        row[6] = comment.into();
    }
    write_csv(&d.path().join("filled.csv"), &filled);
    let (code, _, err) = common::steptune(&["review", "import", r, "filled.csv"], d.path());
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("read 9 decisions, 9 changed") && err.contains("6 approved and 3 rejected"), "{err}");
    assert!(!err.contains("warning"), "{err}");
    let review_file = d.path().join("run/review.jsonl");
    let first_bytes = std::fs::read(&review_file).unwrap();
    let reviews = Reviews::read(&review_file).unwrap().unwrap();
    assert_eq!(reviews.records.len(), 9);
    assert!(reviews.records.values().any(|rec| rec.comment == "step 2 is wrong"));

    // Now `auto` enforces review of synthetic train rows: 4 original + 5 approved rows train.
    let (code, _, err) = common::steptune(&["prepare", r], d.path());
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("review of synthetic train rows: 5 approved (trained on), 2 rejected and 1 pending (left out)"), "{err}");
    assert!(err.contains("eval rows under review (kept, not filtered): 1 approved, 1 rejected, 2 pending"), "{err}");
    assert!(err.contains("1 eval rows were rejected by reviewers but stay in eval"), "{err}");
    let rep = report("prepare_report.json");
    assert_eq!(rep["split"]["train_rows"], 9);
    assert_eq!(rep["split"]["eval_rows"], 6, "eval is never filtered");
    assert_eq!(rep["review"]["train"], serde_json::json!({"approved": 5, "rejected": 2, "pending": 1}));
    assert_eq!(rep["review"]["eval"], serde_json::json!({"approved": 1, "rejected": 1, "pending": 2}));
    assert!(std::fs::read_to_string(d.path().join("run/prepare_report.md")).unwrap().contains("## Review"));
    let trained: HashSet<String> = std::fs::read_to_string(d.path().join("run/prepared/train.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["prompt"].as_str().unwrap().to_string())
        .collect();
    let train_originals: HashSet<String> =
        rows_of(d.path()).into_iter().filter(|r| r.split == "train" && r.source == "original").map(|r| r.prompt).collect();
    assert_eq!(train_originals.len(), 4);
    let expected: HashSet<String> = train_originals.union(&approved_prompts).cloned().collect();
    assert_eq!(trained, expected, "train holds the original rows and the approved synthetic ones only");
    assert_eq!(trained.len(), 9);

    // Importing the same sheet again changes nothing, byte for byte.
    let (code, _, err) = common::steptune(&["review", "import", r, "filled.csv"], d.path());
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("read 9 decisions, 0 changed"), "{err}");
    assert_eq!(std::fs::read(&review_file).unwrap(), first_bytes);

    // A new export carries the recorded decisions, so the reviewer continues where they stopped.
    let (code, _, err) = common::steptune(&["review", "export", r, "--only", "all", "--out", "again.csv"], d.path());
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("wrote 18 rows") && err.contains("9 already decided"), "{err}");
    let again = read_csv(&d.path().join("again.csv"));
    let decided: BTreeMap<&str, &str> = again[1..].iter().filter(|row| !row[5].is_empty()).map(|row| (row[0].as_str(), row[5].as_str())).collect();
    assert_eq!(decided.len(), 9);
    assert_eq!(decided.values().filter(|v| **v == "yes").count(), 6);
    assert_eq!(again[1..].iter().filter(|row| row[2] == "original").count(), 6);
}

/// Every data row as `prepare` cleans and splits it.
fn rows_of(dir: &Path) -> Vec<review::SheetRow> {
    let recipe = steptune::recipe::LoadedRecipe::load(&dir.join("r.yaml")).unwrap();
    review::reviewable_rows(&recipe).unwrap()
}

#[test]
fn bad_cells_are_named_by_file_row_and_column_and_nothing_is_recorded() {
    let d = tempfile::tempdir().unwrap();
    let recipe = loaded(d.path(), "");
    let run = d.path().join("run");
    let sheet = d.path().join("sheet.csv");
    review::export(&recipe, &run, review::ExportScope::All, &sheet).unwrap();
    let mut rows = read_csv(&sheet);
    rows[1][5] = "yes".into();
    rows[2][5] = "maybe".into();
    rows[3][5] = "Y".into();
    rows[3][0] = String::new();
    write_csv(&sheet, &rows);
    let e = expect_err(review::import(&recipe, &run, &[sheet.clone()]));
    let name = sheet.display().to_string();
    assert!(e.contains(&format!("{name} row 3, column approved: 'maybe' is not yes/no/empty; write yes, no or leave empty")), "{e}");
    assert!(e.contains(&format!("{name} row 4, column id: empty")), "{e}");
    assert!(e.contains("2 bad cells"), "{e}");
    assert!(!run.join("review.jsonl").exists(), "a sheet with bad cells records nothing");

    // A sheet without the approved column is named with what it has.
    write_csv(&sheet, &[vec!["id".into(), "prompt".into()], vec!["abc".into(), "x".into()]]);
    let e = expect_err(review::import(&recipe, &run, &[sheet]));
    assert!(e.contains("needs the columns id and approved") && e.contains("it has: id, prompt"), "{e}");
}

#[test]
fn unknown_rows_are_warned_and_conflicting_decisions_named_the_later_winning() {
    let d = tempfile::tempdir().unwrap();
    let recipe = loaded(d.path(), "");
    let run = d.path().join("run");
    let ids: Vec<String> = review::reviewable_rows(&recipe).unwrap().into_iter().map(|r| r.id).collect();
    let header: Vec<String> = SHEET_COLUMNS.map(String::from).to_vec();
    let row = |id: &str, verdict: &str| vec![id.to_string(), "train".into(), "synthetic".into(), "p".into(), "o".into(), verdict.into(), String::new()];
    let a = d.path().join("a.csv");
    let b = d.path().join("b.csv");
    write_csv(&a, &[header.clone(), row(&ids[0], "yes"), row("00000000deadbeef", "yes"), row(&ids[1], "no")]);
    write_csv(&b, &[header, row(&ids[0], "no"), row(&ids[1], "")]);
    let s = review::import(&recipe, &run, &[a.clone(), b.clone()]).unwrap();
    assert_eq!(s.unknown.len(), 1, "{:?}", s.unknown);
    assert!(s.unknown[0].contains(&format!("{} row 3", a.display())) && s.unknown[0].contains("00000000deadbeef"), "{:?}", s.unknown);
    assert_eq!(s.conflicts.len(), 1, "an empty cell is no decision: {:?}", s.conflicts);
    assert!(s.conflicts[0].contains(&format!("{} row 2 says yes", a.display())) && s.conflicts[0].contains(&format!("{} row 2 says no", b.display())), "{:?}", s.conflicts);
    let reviews = Reviews::read(&run.join("review.jsonl")).unwrap().unwrap();
    assert_eq!(reviews.decision(&ids[0]), Some(review::Decision::Rejected), "the later sheet wins");
    assert_eq!(reviews.decision(&ids[1]), Some(review::Decision::Rejected), "an empty cell leaves the decision");
    assert_eq!((s.approved, s.rejected), (1, 2));
}

#[test]
fn require_review_settings_select_the_rows_that_need_approval() {
    let d = tempfile::tempdir().unwrap();
    // `synthetic` enforces review without a review file: every synthetic train row is pending.
    let out = prepare::prepare(&loaded(d.path(), "  require_review: synthetic\n")).unwrap();
    assert_eq!(out.train.len(), 4);
    assert_eq!(out.eval.len(), 6);
    assert_eq!((out.report.review.train.pending, out.report.review.enforced_on.as_str()), (8, "synthetic"));

    // `true`: original rows need approval too; approve one original train row.
    let recipe = loaded(d.path(), "  require_review: true\n");
    let run = d.path().join("run");
    let rows = review::reviewable_rows(&recipe).unwrap();
    let original = rows.iter().find(|r| r.split == "train" && r.source == "original").unwrap();
    let sheet = d.path().join("one.csv");
    write_csv(&sheet, &[SHEET_COLUMNS.map(String::from).to_vec(), vec![original.id.clone(), "train".into(), "original".into(), String::new(), String::new(), "yes".into(), String::new()]]);
    review::import(&recipe, &run, &[sheet]).unwrap();
    let out = prepare::prepare(&recipe).unwrap();
    assert_eq!(out.train.iter().map(|e| e.prompt.as_str()).collect::<Vec<_>>(), vec![original.prompt.as_str()]);
    assert_eq!(out.report.review.train, review::DecisionCounts { approved: 1, rejected: 0, pending: 11 });

    // `false`: decisions are counted, nothing is filtered.
    let out = prepare::prepare(&loaded(d.path(), "  require_review: false\n")).unwrap();
    assert_eq!(out.train.len(), 12);
    assert_eq!(out.report.review.enforced_on, "none");

    // Nothing approved at all is an error that says what to do.
    let fresh = tempfile::tempdir().unwrap();
    let e = expect_err(prepare::prepare(&loaded(fresh.path(), "  require_review: true\n")).map(|_| ()));
    assert!(e.contains("no train rows are left after review") && e.contains("steptune review export"), "{e}");

    // The key is checked like every other.
    let e = expect_err(steptune::recipe::parse(&format!("{TINY_MODEL}data:\n  files: [x.jsonl]\n  require_review: maybe\n"), "r.yaml"));
    assert!(e.contains("require_review") && e.contains("auto, synthetic, true or false"), "{e}");
}

/// `data.mix`: the sheet lists every source's rows; each source's own provenance column marks
/// its synthetic rows; review holds rows back per source before the weights, so a weighted
/// source is its fraction of the rows review lets train; prepared rows carry the mix source's
/// name as `source`, never the provenance.
#[test]
fn review_with_a_mix_covers_every_source_and_runs_before_the_weights() {
    let d = tempfile::tempdir().unwrap();
    write_data(d.path());
    // A second source, CSV with its own column names; its provenance column is `origin`, and
    // one of its six groups is synthetic.
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record(["question", "answer", "category", "origin"]).unwrap();
    for g in 0..6 {
        let steps = format!("1. Fetch garden tool t{g}\n2. Water flower bed b{g}");
        let origin = if g == 0 { "synthetic" } else { "handbook" };
        for prompt in [format!("How should I tend plot {g} this spring"), format!("Steps for looking after bed {g}"), format!("Walk me through watering row {g} carefully")] {
            w.write_record([prompt.as_str(), steps.as_str(), &format!("c{g}"), origin]).unwrap();
        }
    }
    common::write(d.path(), "general.csv", &w.into_inner().unwrap());
    let yaml = |require: &str| {
        format!(
            "name: r\noutput_dir: {}\n{TINY_MODEL}data:\n  max_length: 512\n  split: {{eval_ratio: 0.34}}\n  require_review: {require}\n  mix:\n    - name: task\n      files: [data.jsonl]\n    - name: general\n      files: [general.csv]\n      columns: {{prompt: question, output: answer, group: category, source: origin}}\n      weight: 0.5\n",
            d.path().join("run").display()
        )
    };
    let path = common::write(d.path(), "r.yaml", yaml("synthetic").as_bytes());
    let recipe = steptune::recipe::LoadedRecipe::load(&path).unwrap();

    // The sheet: all 36 rows of both sources, 12 + 3 synthetic (the task's `source` column and
    // the general source's `origin`), provenance in the sheet's `source` column.
    let rows = review::reviewable_rows(&recipe).unwrap();
    assert_eq!(rows.len(), 36);
    assert_eq!(rows.iter().filter(|r| r.source == "synthetic").count(), 15);
    assert_eq!(rows.iter().filter(|r| r.source == "handbook").count(), 15);
    assert_eq!(rows.iter().filter(|r| r.split == "train" && r.source == "synthetic").count(), 10);
    let sheet = d.path().join("sheet.csv");
    let s = review::export(&recipe, &d.path().join("run"), review::ExportScope::Synthetic, &sheet).unwrap();
    assert_eq!(s.rows, 15);

    // Nothing approved: 8 task and 2 general synthetic train rows are held back, then the weight
    // makes general half of the 8 train rows left (4 task originals + 4 general).
    let out = prepare::prepare(&recipe).unwrap();
    let r = &out.report;
    assert_eq!(r.review.train, review::DecisionCounts { approved: 0, rejected: 0, pending: 10 });
    let (task, general) = (&r.sources[0], &r.sources[1]);
    assert_eq!((task.train_rows_split, task.review_held_back, task.train_rows), (12, 8, 4), "{task:?}");
    assert_eq!((general.train_rows_split, general.review_held_back, general.train_rows), (12, 2, 4), "{general:?}");
    assert!((general.train_share - 0.5).abs() < 1e-9);
    let synthetic: HashSet<&str> = rows.iter().filter(|r| r.source == "synthetic" && r.split == "train").map(|r| r.prompt.as_str()).collect();
    assert!(out.train.iter().all(|p| !synthetic.contains(p.prompt.as_str())), "no unapproved synthetic row trains");
    assert!(out.train.iter().chain(&out.eval).all(|p| p.source == "task" || p.source == "general"), "prepared rows carry the mix source");
    let md = prepare::report_markdown(r);
    assert!(md.contains("train held back by review") && md.contains("| task | all rows | 18 | 0 | 18 | 18 | 12 / 6 | 8 |"), "{md}");

    // Approve two task and both general synthetic train rows: 6 task + 12 general pass review,
    // the weight keeps 6 general.
    let mut filled = read_csv(&sheet);
    let mut task_approved = 0;
    let general_prompts: HashSet<&str> = rows.iter().filter(|r| r.prompt.contains("plot 0") || r.prompt.contains("bed 0") || r.prompt.contains("row 0")).map(|r| r.prompt.as_str()).collect();
    for row in filled.iter_mut().skip(1) {
        if row[1] != "train" {
            continue;
        }
        if general_prompts.contains(row[3].as_str()) || task_approved < 2 {
            task_approved += usize::from(!general_prompts.contains(row[3].as_str()));
            row[5] = "yes".into();
        }
    }
    write_csv(&sheet, &filled);
    let s = review::import(&recipe, &d.path().join("run"), &[sheet]).unwrap();
    assert_eq!((s.approved, s.unknown.len()), (4, 0));
    let out = prepare::prepare(&recipe).unwrap();
    let (task, general) = (&out.report.sources[0], &out.report.sources[1]);
    assert_eq!((task.review_held_back, task.train_rows), (6, 6), "{task:?}");
    assert_eq!((general.review_held_back, general.train_rows), (0, 6), "{general:?}");
    assert_eq!(out.report.review.train, review::DecisionCounts { approved: 4, rejected: 0, pending: 6 });
}
