//! Parity of steptune's text metrics with the Python packages papers report:
//! NLTK 3.10.4 `PorterStemmer()`, rouge-score 0.1.2 (rougeL, rougeLsum) and sacrebleu
//! 2.6.0 (sentence and corpus BLEU). The fixtures come from
//! scripts/make_metric_fixtures_rouge_bleu.py on the shared corpus
//! tests/fixtures/metric_corpus.json (scripts/make_metric_corpus.py).
//!
//! Floats in the fixtures are strings holding Python's repr, parsed with `str::parse`,
//! which is exact; the assertions allow the tolerances steptune promises (1e-9 for ROUGE,
//! 1e-6 for BLEU) and report the largest difference actually seen.

use serde_json::Value;
use steptune::eval::bleu::{self, Bleu};
use steptune::eval::porter::PorterStemmer;
use steptune::eval::rouge::{self, Score};

const ROUGE_TOL: f64 = 1e-9;
const BLEU_TOL: f64 = 1e-6;

fn fixture(name: &str) -> Value {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {path}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("parse {path}: {e}"))
}

/// A fixture float: Python's repr as a string.
fn num(v: &Value) -> f64 {
    v.as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not a float string: {v}"))
}

fn int(v: &Value) -> usize {
    v.as_u64().unwrap_or_else(|| panic!("not an integer: {v}")) as usize
}

fn strs(v: &Value) -> Vec<String> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|t| t.as_str().expect("string").to_string())
        .collect()
}

/// The corpus texts by id: (prediction, reference).
fn corpus() -> Vec<(String, String)> {
    let c = fixture("metric_corpus.json");
    c["pairs"]
        .as_array()
        .expect("pairs")
        .iter()
        .enumerate()
        .map(|(i, p)| {
            assert_eq!(int(&p["id"]), i, "corpus ids must be 0..n");
            (
                p["prediction"].as_str().unwrap().to_string(),
                p["reference"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn text<'a>(corpus: &'a [(String, String)], item: &Value) -> &'a str {
    let id = int(&item[1]);
    match item[0].as_str() {
        Some("prediction") => &corpus[id].0,
        Some("reference") => &corpus[id].1,
        other => panic!("bad text reference {other:?}"),
    }
}

/// Largest absolute difference seen, and where.
#[derive(Default)]
struct MaxDiff {
    max: f64,
    at: String,
    values: usize,
    exact: usize,
}

impl MaxDiff {
    fn add(&mut self, got: f64, want: f64, at: impl FnOnce() -> String) {
        let d = (got - want).abs();
        self.values += 1;
        if got.to_bits() == want.to_bits() {
            self.exact += 1;
        }
        if d > self.max || d.is_nan() {
            self.max = if d.is_nan() { f64::INFINITY } else { d };
            self.at = format!("{} (got {got:?}, want {want:?})", at());
        }
    }
    fn check(&self, what: &str, tol: f64) {
        println!(
            "{what}: {} values, {} bit-exact, max |diff| = {:e}",
            self.values, self.exact, self.max
        );
        assert!(
            self.max <= tol,
            "{what}: max |diff| = {:e} > {tol:e} at {}",
            self.max,
            self.at
        );
    }
}

#[test]
fn porter_matches_nltk_on_every_fixture_word() {
    let fx = fixture("porter_nltk.json");
    let words = fx["words"].as_array().expect("words");
    assert!(words.len() >= 10_000, "only {} words", words.len());
    let stemmer = PorterStemmer::new();
    let mut bad = Vec::new();
    for w in words {
        let (word, want) = (w[0].as_str().unwrap(), w[1].as_str().unwrap());
        let got = stemmer.stem(word);
        if got != want {
            bad.push(format!("{word:?}: got {got:?}, nltk {want:?}"));
        }
    }
    println!("porter: {} words, {} differ", words.len(), bad.len());
    assert!(
        bad.is_empty(),
        "{} of {} words differ from NLTK, e.g.:\n{}",
        bad.len(),
        words.len(),
        bad[..bad.len().min(20)].join("\n")
    );
}

#[test]
fn rouge_tokenizer_matches_rouge_score() {
    let fx = fixture("rouge.json");
    let corpus = corpus();
    let mut n = 0;
    for t in fx["tokens"].as_array().expect("tokens") {
        let s = text(
            &corpus,
            &Value::Array(vec![t["field"].clone(), t["id"].clone()]),
        );
        for (key, stem) in [("nostem", false), ("stem", true)] {
            assert_eq!(
                rouge::tokenize(s, stem),
                strs(&t[key]),
                "pair {} {} ({key})",
                t["id"],
                t["field"]
            );
            n += 1;
        }
    }
    assert!(n > 100, "too few token fixtures: {n}");
}

#[test]
fn rouge_l_and_lsum_match_rouge_score_on_every_pair() {
    let fx = fixture("rouge.json");
    let corpus = corpus();
    let rows = fx["pairs"].as_array().expect("pairs");
    assert_eq!(rows.len(), corpus.len());
    let mut diff = MaxDiff::default();
    for row in rows {
        let id = int(&row["id"]);
        let (pred, reference) = (&corpus[id].0, &corpus[id].1);
        for (key, stem) in [("nostem", false), ("stem", true)] {
            let got_l = rouge::rouge_l(reference, pred, stem);
            let got_lsum = rouge::rouge_lsum(reference, pred, stem);
            for (name, got) in [("rougeL", got_l), ("rougeLsum", got_lsum)] {
                let want = &row[key][name];
                let Score {
                    precision,
                    recall,
                    fmeasure,
                } = got;
                for (field, g) in [
                    ("precision", precision),
                    ("recall", recall),
                    ("fmeasure", fmeasure),
                ] {
                    diff.add(g, num(&want[field]), || {
                        format!("pair {id} {key} {name}.{field}")
                    });
                }
            }
        }
    }
    diff.check("rouge", ROUGE_TOL);
}

#[test]
fn tokenizer_13a_matches_sacrebleu() {
    let fx = fixture("bleu.json");
    let corpus = corpus();
    let mut n = 0;
    for t in fx["tokens"].as_array().expect("tokens") {
        let s = text(
            &corpus,
            &Value::Array(vec![t["field"].clone(), t["id"].clone()]),
        );
        // BLEU's preprocessing: rstrip (Python whitespace), then 13a.
        let got =
            bleu::tokenize_13a(s.trim_end_matches(|c: char| {
                c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
            }));
        assert_eq!(
            got,
            t["tok13a"].as_str().unwrap(),
            "pair {} {}",
            t["id"],
            t["field"]
        );
        n += 1;
    }
    assert!(n > 100, "too few token fixtures: {n}");
}

fn compare_bleu(got: &Bleu, want: &Value, at: &str, diff: &mut MaxDiff) {
    let ints = |v: &Value| -> Vec<usize> { v.as_array().expect("array").iter().map(int).collect() };
    assert_eq!(got.counts.to_vec(), ints(&want["counts"]), "{at}: counts");
    assert_eq!(got.totals.to_vec(), ints(&want["totals"]), "{at}: totals");
    assert_eq!(got.sys_len, int(&want["sys_len"]), "{at}: sys_len");
    assert_eq!(got.ref_len, int(&want["ref_len"]), "{at}: ref_len");
    diff.add(got.score, num(&want["score"]), || format!("{at} score"));
    diff.add(got.bp, num(&want["bp"]), || format!("{at} bp"));
    for (k, p) in want["precisions"]
        .as_array()
        .expect("precisions")
        .iter()
        .enumerate()
    {
        diff.add(got.precisions[k], num(p), || {
            format!("{at} precisions[{k}]")
        });
    }
}

#[test]
fn sentence_bleu_matches_sacrebleu_on_every_pair() {
    let fx = fixture("bleu.json");
    let corpus = corpus();
    let mut diff = MaxDiff::default();
    let one = fx["sentence"].as_array().expect("sentence");
    assert_eq!(one.len(), corpus.len());
    for want in one {
        let id = int(&want["id"]);
        let got = bleu::sentence_bleu(&corpus[id].0, &[corpus[id].1.as_str()]);
        compare_bleu(&got, want, &format!("pair {id} (1 ref)"), &mut diff);
    }
    let two = fx["sentence_2refs"].as_array().expect("sentence_2refs");
    assert_eq!(two.len(), corpus.len());
    for want in two {
        let id = int(&want["id"]);
        let refs = [corpus[id].1.as_str(), text(&corpus, &want["ref2"])];
        let got = bleu::sentence_bleu(&corpus[id].0, &refs);
        compare_bleu(&got, want, &format!("pair {id} (2 refs)"), &mut diff);
    }
    diff.check("sentence_bleu", BLEU_TOL);
}

#[test]
fn corpus_bleu_matches_sacrebleu_on_all_subsets() {
    let fx = fixture("bleu.json");
    let corpus = corpus();
    let mut diff = MaxDiff::default();
    let cases = fx["corpus"].as_array().expect("corpus");
    assert!(cases.len() >= 10);
    for want in cases {
        let name = want["name"].as_str().unwrap();
        let hyps: Vec<&str> = want["hyp_ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| corpus[int(i)].0.as_str())
            .collect();
        let refs: Vec<Vec<&str>> = want["ref_streams"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                s.as_array()
                    .unwrap()
                    .iter()
                    .map(|item| text(&corpus, item))
                    .collect()
            })
            .collect();
        let got = bleu::corpus_bleu(&hyps, &refs);
        compare_bleu(&got, want, &format!("corpus {name}"), &mut diff);
    }
    diff.check("corpus_bleu", BLEU_TOL);
}
