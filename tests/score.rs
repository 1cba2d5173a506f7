//! `steptune score`: reading prediction/reference JSONL files and scoring them without a
//! model. Needs the WordNet 3.0 database for METEOR (scripts/wordnet-setup.sh, or set
//! STEPTUNE_WORDNET).

use std::path::{Path, PathBuf};

use steptune::eval::score::{read_pairs, score_pairs, to_markdown, Pair};
use steptune::eval::wordnet::WordNet;

fn write(dir: &Path, name: &str, content: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, content).unwrap();
    p
}

fn wn() -> &'static WordNet {
    WordNet::shared_default().unwrap_or_else(|e| panic!("{e:#}"))
}

fn pair(id: &str, prediction: &str, reference: &str, group: Option<&str>) -> Pair {
    Pair {
        id: id.into(),
        prediction: prediction.into(),
        reference: reference.into(),
        group: group.map(str::to_string),
    }
}

const REF_A: &str = "1. Open the Settings app.\n2. Tap your account name.\n3. Choose Sign Out.";
const REF_B: &str = "1. Preheat the oven to 180 degrees.\n2. Mix the flour and the sugar.\n\
                     3. Bake the cake for 30 minutes.";

#[test]
fn reads_pairs_in_reference_order_with_field_aliases() {
    let dir = tempfile::tempdir().unwrap();
    let pred = write(
        dir.path(),
        "pred.jsonl",
        "{\"id\": 2, \"prediction\": \"two\", \"group\": \"g-pred\"}\n\
         \n\
         {\"id\": \"1\", \"text\": \"one\"}\n\
         {\"id\": \"x\", \"output\": [\"Open it\", \"2. Close it\"]}\n",
    );
    let refs = write(
        dir.path(),
        "ref.jsonl",
        "\u{feff}{\"id\": 1, \"reference\": \"uno\", \"group\": \"a\"}\n\
         {\"id\": \"x\", \"text\": \"equis\", \"group\": 7}\n\
         {\"id\": \"2\", \"output\": \"dos\"}\n",
    );
    let pairs = read_pairs(&pred, &refs).unwrap();
    assert_eq!(
        pairs,
        vec![
            pair("1", "one", "uno", Some("a")),
            pair("x", "1. Open it\n2. Close it", "equis", Some("7")),
            pair("2", "two", "dos", Some("g-pred")),
        ]
    );
}

#[test]
fn mismatched_ids_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let pred = write(
        dir.path(),
        "pred.jsonl",
        "{\"id\": \"a\", \"text\": \"x\"}\n{\"id\": \"b\", \"text\": \"x\"}\n\
         {\"id\": \"extra-1\", \"text\": \"x\"}\n",
    );
    let refs = write(
        dir.path(),
        "ref.jsonl",
        "{\"id\": \"a\", \"text\": \"x\"}\n{\"id\": \"b\", \"text\": \"x\"}\n\
         {\"id\": \"gone-1\", \"text\": \"x\"}\n{\"id\": \"gone-2\", \"text\": \"x\"}\n",
    );
    let msg = format!("{:#}", read_pairs(&pred, &refs).unwrap_err());
    assert!(msg.contains("extra-1"), "{msg}");
    assert!(msg.contains("gone-1") && msg.contains("gone-2"), "{msg}");
    assert!(
        msg.contains("1 id(s) only in") && msg.contains("2 id(s) only in"),
        "{msg}"
    );
    assert!(msg.contains("3 rows") && msg.contains("4"), "{msg}");
    assert!(!msg.contains("\"a\""), "{msg}");

    // Many missing ids: ten are listed, then the rest is counted.
    let many: String = (0..25)
        .map(|i| format!("{{\"id\": {i}, \"text\": \"x\"}}\n"))
        .collect();
    let refs = write(dir.path(), "ref2.jsonl", &many);
    let pred = write(dir.path(), "pred2.jsonl", "{\"id\": 0, \"text\": \"x\"}\n");
    let msg = format!("{:#}", read_pairs(&pred, &refs).unwrap_err());
    assert!(msg.contains("24 id(s) only in"), "{msg}");
    assert!(msg.contains("\"10\"") && !msg.contains("\"11\""), "{msg}");
    assert!(msg.contains("(14 more)"), "{msg}");
}

#[test]
fn duplicate_ids_are_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let pred = write(
        dir.path(),
        "pred.jsonl",
        "{\"id\": \"a\", \"text\": \"x\"}\n{\"id\": \"b\", \"text\": \"x\"}\n\
         {\"id\": \"a\", \"text\": \"y\"}\n",
    );
    let refs = write(
        dir.path(),
        "ref.jsonl",
        "{\"id\": \"a\", \"text\": \"x\"}\n",
    );
    let msg = format!("{:#}", read_pairs(&pred, &refs).unwrap_err());
    assert!(msg.contains("pred.jsonl line 3"), "{msg}");
    assert!(
        msg.contains("duplicate id \"a\"") && msg.contains("line 1"),
        "{msg}"
    );
    // A number and a string with the same text are the same id.
    let refs = write(
        dir.path(),
        "ref2.jsonl",
        "{\"id\": 5, \"text\": \"x\"}\n{\"id\": \"5\", \"text\": \"x\"}\n",
    );
    let pred = write(dir.path(), "pred2.jsonl", "{\"id\": 5, \"text\": \"x\"}\n");
    let msg = format!("{:#}", read_pairs(&pred, &refs).unwrap_err());
    assert!(
        msg.contains("ref2.jsonl line 2") && msg.contains("duplicate id"),
        "{msg}"
    );
}

#[test]
fn bad_lines_name_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let good = write(
        dir.path(),
        "ref.jsonl",
        "{\"id\": \"a\", \"text\": \"x\"}\n",
    );
    let cases = [
        (
            "{\"id\": \"a\", \"text\": \"x\"}\n\n{\"id\": \"b\", \"text\": \"x\"\n",
            "invalid JSON",
        ),
        (
            "{\"id\": \"a\", \"text\": \"x\"}\n\n[1, 2]\n",
            "expected a JSON object",
        ),
        (
            "{\"id\": \"a\", \"text\": \"x\"}\n\n{\"text\": \"x\"}\n",
            "no \"id\"",
        ),
        (
            "{\"id\": \"a\", \"text\": \"x\"}\n\n{\"id\": \"b\"}\n",
            "no text field",
        ),
        (
            "{\"id\": \"a\", \"text\": \"x\"}\n\n{\"id\": [1], \"text\": \"x\"}\n",
            "string or a number",
        ),
        (
            "{\"id\": \"a\", \"text\": \"x\"}\n\n{\"id\": \"b\", \"text\": 3}\n",
            "list of strings",
        ),
    ];
    for (content, what) in cases {
        let pred = write(dir.path(), "pred.jsonl", content);
        let msg = format!("{:#}", read_pairs(&pred, &good).unwrap_err());
        assert!(msg.contains("pred.jsonl line 3"), "{msg}");
        assert!(msg.contains(what), "{what}: {msg}");
    }
    // The reference file's `prediction` key is not one of its text fields.
    let bad_ref = write(
        dir.path(),
        "ref3.jsonl",
        "{\"id\": \"a\", \"prediction\": \"x\"}\n",
    );
    let msg = format!("{:#}", read_pairs(&good, &bad_ref).unwrap_err());
    assert!(
        msg.contains("ref3.jsonl line 1") && msg.contains("\"reference\""),
        "{msg}"
    );
    // Unreadable and empty files.
    let msg = format!(
        "{:#}",
        read_pairs(&dir.path().join("nope.jsonl"), &good).unwrap_err()
    );
    assert!(msg.contains("nope.jsonl"), "{msg}");
    let empty = write(dir.path(), "empty.jsonl", "\n\n");
    let msg = format!("{:#}", read_pairs(&empty, &good).unwrap_err());
    assert!(msg.contains("empty.jsonl has no rows"), "{msg}");
}

#[test]
fn perfect_predictions_score_top_marks() {
    let pairs = vec![pair("a", REF_A, REF_A, None), pair("b", REF_B, REF_B, None)];
    let s = score_pairs(&pairs, wn(), true);
    for r in &s.rows {
        assert_eq!(r.rouge_l, 1.0);
        assert_eq!(r.rouge_lsum, 1.0);
        assert!(r.meteor > 0.999 && r.meteor < 1.0, "{}", r.meteor);
        assert!((r.bleu - 100.0).abs() < 1e-9, "{}", r.bleu);
        assert_eq!(r.steps.step_f1, 1.0);
        assert_eq!(r.steps.order_kendall_tau, Some(1.0));
        assert!(r.steps.well_formed);
    }
    let c = &s.corpus;
    assert_eq!(c.n, 2);
    assert_eq!(
        (c.rouge_l_f1, c.rouge_l_precision, c.rouge_l_recall),
        (1.0, 1.0, 1.0)
    );
    assert!((c.bleu - 100.0).abs() < 1e-9, "{}", c.bleu);
    assert_eq!(
        (c.step_f1, c.well_formed_rate, c.mean_abs_step_count_error),
        (1.0, 1.0, 0.0)
    );
    assert!(s.per_group.is_empty());
    let md = to_markdown(&s);
    assert!(md.contains("| all | 2 | 1.0000 | 1.0000 |"), "{md}");
    assert!(md.contains("| 100.00 |"), "{md}");
}

#[test]
fn per_group_aggregates() {
    let reversed_a = "1. Choose Sign Out.\n2. Tap your account name.\n3. Open the Settings app.";
    let pairs = vec![
        pair("1", REF_A, REF_A, Some("phone")),
        pair("2", reversed_a, REF_A, Some("phone")),
        pair(
            "3",
            "Sorry, I cannot help with that.",
            REF_B,
            Some("cooking"),
        ),
        pair("4", REF_B, REF_B, None),
    ];
    let s = score_pairs(&pairs, wn(), true);
    assert_eq!(
        s.rows.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
        ["1", "2", "3", "4"]
    );
    assert_eq!(s.per_group.keys().collect::<Vec<_>>(), ["cooking", "phone"]);
    let phone = &s.per_group["phone"];
    assert_eq!(phone.n, 2);
    assert_eq!(phone.step_f1, 1.0);
    assert_eq!(phone.order_kendall_tau, Some(0.0)); // mean of 1 and -1
    assert_eq!(phone.well_formed_rate, 1.0);
    assert_eq!(phone.rouge_l_f1, (1.0 + s.rows[1].rouge_l) / 2.0);
    assert!(s.rows[1].rouge_l < 1.0 && s.rows[1].rouge_lsum == 1.0);
    let cooking = &s.per_group["cooking"];
    assert_eq!(cooking.n, 1);
    assert_eq!((cooking.step_recall, cooking.step_f1), (0.0, 0.0));
    assert_eq!(cooking.mean_abs_step_count_error, 3.0);
    assert_eq!(cooking.order_kendall_tau, None);
    assert_eq!(cooking.well_formed_rate, 0.0);
    // The corpus covers every row, grouped or not.
    let c = &s.corpus;
    assert_eq!(c.n, 4);
    assert_eq!(c.well_formed_rate, 0.75);
    assert_eq!(c.mean_abs_step_count_error, 0.75);
    assert_eq!(c.order_kendall_tau, Some(1.0 / 3.0)); // (1 - 1 + 1) / 3
    let mean_meteor = s.rows.iter().map(|r| r.meteor).sum::<f64>() / 4.0;
    assert!((c.meteor - mean_meteor).abs() < 1e-12);
    let md = to_markdown(&s);
    assert!(
        md.contains("| group cooking | 1 |") && md.contains("| group phone | 2 |"),
        "{md}"
    );
    // Serialises (for --json).
    let json = serde_json::to_value(&s).unwrap();
    assert_eq!(json["per_group"]["phone"]["n"], 2);
    assert_eq!(
        json["rows"][2]["steps"]["order_kendall_tau"],
        serde_json::Value::Null
    );
}

#[test]
fn stemming_is_a_parameter() {
    let pairs = vec![pair("1", "1. Opening settings", "1. Open setting", None)];
    assert_eq!(score_pairs(&pairs, wn(), true).rows[0].rouge_l, 1.0);
    // Unstemmed only "1" is shared: P = R = 1/3.
    let unstemmed = score_pairs(&pairs, wn(), false).rows[0].rouge_l;
    assert!((unstemmed - 1.0 / 3.0).abs() < 1e-12, "{unstemmed}");
}

#[test]
fn many_rows_are_scored_in_order_and_deterministically() {
    let pairs: Vec<Pair> = (0..500)
        .map(|i| {
            let pred = format!(
                "1. Open the app number {i}.\n2. Tap the {} button.\n3. Wait {} seconds.",
                ["red", "blue", "green"][i % 3],
                i % 7
            );
            pair(&i.to_string(), &pred, REF_A, Some(["x", "y"][i % 2]))
        })
        .collect();
    let a = score_pairs(&pairs, wn(), true);
    for (i, r) in a.rows.iter().enumerate() {
        assert_eq!(r.id, i.to_string());
    }
    let b = score_pairs(&pairs[..], wn(), true);
    assert_eq!(a, b);
    // Same values as scoring the rows one at a time.
    for i in [0, 31, 32, 33, 499] {
        let one = score_pairs(&pairs[i..=i], wn(), true);
        assert_eq!(one.rows[0], a.rows[i]);
    }
    assert_eq!(a.per_group["x"].n + a.per_group["y"].n, 500);
}
