//! Scoring predictions against references without a model
//! (`steptune score --pred P.jsonl --ref R.jsonl [--json]`).
//!
//! Both files are JSON Lines, one object per line (blank lines are skipped):
//!
//! - `id`: a string or a number (a number is used as its JSON text, so `17` and `"17"`
//!   are the same id); unique within its file, and both files must hold the same ids;
//! - the text: in the prediction file the first of `prediction`, `text`, `output`; in the
//!   reference file the first of `reference`, `text`, `output`. A string, or a list of
//!   strings (the dataset's `"output": [..]` shape), which is numbered "1. ...\n2. ..." as
//!   training data is (`normalise_list`);
//! - `group` (optional): a string or number naming a subset (a category, a source) that
//!   gets its own aggregate. The reference file's group wins; the prediction file's is
//!   used when the reference has none.
//!
//! Pairs come out in the reference file's order.
//!
//! Metrics per row follow the conventions of the parity fixtures:
//!
//! - ROUGE-L and ROUGE-Lsum F1: rouge-score's tokenizer, Porter stemming when `stem`
//!   (`use_stemmer=True`, what papers usually report);
//! - METEOR: NLTK's, on [`meteor::tokenize`] tokens;
//! - BLEU: sacrebleu's `sentence_bleu` per row and `corpus_bleu` for a corpus or group,
//!   **on sacrebleu's 0-100 scale** (a perfect match is 100, printed by sacrebleu as
//!   100.00000000000004); every other metric is on 0-1;
//! - step metrics: [`score_steps`] with [`DEFAULT_STEP_THRESHOLD`].
//!
//! Corpus values are means over rows, except BLEU (corpus BLEU from the summed n-gram
//! statistics, as sacrebleu computes it) and Kendall's tau (mean over the rows that have
//! one; `None` when no row has). With no rows every mean is 0.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::{anyhow, bail, Context, Result};
use serde_json::Value;

use crate::data::steps::normalise_list;
use crate::eval::bleu::{sentence_bleu, Bleu};
use crate::eval::meteor::{self, meteor};
use crate::eval::rouge::{rouge_l, rouge_lsum, Score};
use crate::eval::stepmetrics::{score_steps, StepScores, DEFAULT_STEP_THRESHOLD};
use crate::eval::wordnet::WordNet;

/// One prediction with its reference.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Pair {
    pub id: String,
    pub prediction: String,
    pub reference: String,
    pub group: Option<String>,
}

/// How many ids of each side a mismatch error lists.
const MAX_LISTED_IDS: usize = 10;

/// One parsed JSONL row.
struct Row {
    id: String,
    text: String,
    group: Option<String>,
}

fn display_value(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Reads one JSONL file; `text_keys` in order of preference.
fn read_jsonl(path: &Path, text_keys: &[&str]) -> Result<Vec<Row>> {
    let content =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let content = content.strip_prefix('\u{feff}').unwrap_or(&content);
    let mut rows = Vec::new();
    let mut first_line: HashMap<String, usize> = HashMap::new();
    for (i, line) in content.lines().enumerate() {
        let lineno = i + 1;
        if line.trim().is_empty() {
            continue;
        }
        let at = || format!("{} line {lineno}", path.display());
        let value: Value =
            serde_json::from_str(line).with_context(|| format!("{}: invalid JSON", at()))?;
        let Value::Object(obj) = value else {
            bail!("{}: expected a JSON object", at());
        };
        let id = match obj.get("id") {
            None => bail!("{}: no \"id\" field", at()),
            Some(v) => display_value(v)
                .ok_or_else(|| anyhow!("{}: \"id\" must be a string or a number, not {v}", at()))?,
        };
        let Some((key, text)) = text_keys.iter().find_map(|k| obj.get(*k).map(|v| (*k, v))) else {
            let names: Vec<String> = text_keys.iter().map(|k| format!("\"{k}\"")).collect();
            bail!("{}: no text field (one of {})", at(), names.join(", "));
        };
        let text = match text {
            Value::String(s) => s.clone(),
            Value::Array(items) => {
                let steps = items
                    .iter()
                    .map(|v| v.as_str().map(str::to_string))
                    .collect::<Option<Vec<String>>>()
                    .ok_or_else(|| {
                        anyhow!("{}: \"{key}\" must be a string or a list of strings", at())
                    })?;
                normalise_list(&steps).text
            }
            _ => bail!("{}: \"{key}\" must be a string or a list of strings", at()),
        };
        let group = match obj.get("group") {
            None | Some(Value::Null) => None,
            Some(v) => Some(display_value(v).ok_or_else(|| {
                anyhow!("{}: \"group\" must be a string or a number, not {v}", at())
            })?),
        };
        if let Some(first) = first_line.get(&id) {
            bail!("{}: duplicate id {id:?} (first on line {first})", at());
        }
        first_line.insert(id.clone(), lineno);
        rows.push(Row { id, text, group });
    }
    Ok(rows)
}

fn list_ids(ids: &[&str]) -> String {
    let mut s = ids
        .iter()
        .take(MAX_LISTED_IDS)
        .map(|id| format!("{id:?}"))
        .collect::<Vec<_>>()
        .join(", ");
    if ids.len() > MAX_LISTED_IDS {
        let _ = write!(s, ", ... ({} more)", ids.len() - MAX_LISTED_IDS);
    }
    s
}

/// Reads a prediction file and a reference file (see the module documentation) and pairs
/// their rows by id, in the reference file's order.
///
/// Errors: a file that cannot be read, a line that is not a JSON object with an id and a
/// text (naming file and line), a duplicate id (naming both lines), an empty file, and ids
/// that are in one file but not the other (the counts, and up to 10 ids of each side).
pub fn read_pairs(pred: &Path, refs: &Path) -> Result<Vec<Pair>> {
    let p_rows = read_jsonl(pred, &["prediction", "text", "output"])?;
    let r_rows = read_jsonl(refs, &["reference", "text", "output"])?;
    for (rows, path) in [(&p_rows, pred), (&r_rows, refs)] {
        if rows.is_empty() {
            bail!("{} has no rows", path.display());
        }
    }
    let p_ids: HashSet<&str> = p_rows.iter().map(|r| r.id.as_str()).collect();
    let r_ids: HashSet<&str> = r_rows.iter().map(|r| r.id.as_str()).collect();
    let only_pred: Vec<&str> = p_rows
        .iter()
        .map(|r| r.id.as_str())
        .filter(|id| !r_ids.contains(id))
        .collect();
    let only_ref: Vec<&str> = r_rows
        .iter()
        .map(|r| r.id.as_str())
        .filter(|id| !p_ids.contains(id))
        .collect();
    if !only_pred.is_empty() || !only_ref.is_empty() {
        let mut msg = format!(
            "the prediction and reference files hold different ids ({} has {} rows, {} has {})",
            pred.display(),
            p_rows.len(),
            refs.display(),
            r_rows.len()
        );
        if !only_pred.is_empty() {
            let _ = write!(
                msg,
                "; {} id(s) only in {}: {}",
                only_pred.len(),
                pred.display(),
                list_ids(&only_pred)
            );
        }
        if !only_ref.is_empty() {
            let _ = write!(
                msg,
                "; {} id(s) only in {}: {}",
                only_ref.len(),
                refs.display(),
                list_ids(&only_ref)
            );
        }
        bail!(msg);
    }
    let mut by_id: HashMap<String, Row> = p_rows.into_iter().map(|r| (r.id.clone(), r)).collect();
    let pairs = r_rows
        .into_iter()
        .map(|r| {
            let p = by_id.remove(&r.id).expect("ids checked above");
            Pair {
                id: r.id,
                prediction: p.text,
                reference: r.text,
                group: r.group.or(p.group),
            }
        })
        .collect();
    Ok(pairs)
}

/// The metrics of one pair. ROUGE values are F1; `bleu` is sentence BLEU on 0-100.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct RowScores {
    pub id: String,
    pub group: Option<String>,
    pub rouge_l: f64,
    pub rouge_lsum: f64,
    pub meteor: f64,
    pub bleu: f64,
    pub steps: StepScores,
}

/// Aggregates over a set of rows; see the module documentation. `bleu` is corpus BLEU on
/// 0-100, the rest are on 0-1 (`mean_abs_step_count_error` in steps).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct CorpusScores {
    pub n: usize,
    pub rouge_l_f1: f64,
    pub rouge_l_precision: f64,
    pub rouge_l_recall: f64,
    pub rouge_lsum_f1: f64,
    pub meteor: f64,
    pub bleu: f64,
    pub step_recall: f64,
    pub step_precision: f64,
    pub step_f1: f64,
    pub mean_abs_step_count_error: f64,
    /// Mean over the rows that have a tau; `None` when none has.
    pub order_kendall_tau: Option<f64>,
    pub well_formed_rate: f64,
}

/// Per-row scores (in the input order), the corpus aggregate, and one aggregate per
/// distinct `group` (rows without a group are only in the corpus aggregate).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Scored {
    pub rows: Vec<RowScores>,
    pub corpus: CorpusScores,
    pub per_group: BTreeMap<String, CorpusScores>,
}

/// Rows handed to a worker at a time.
const CHUNK: usize = 32;

/// A scored row with what the aggregates need beyond [`RowScores`].
#[derive(Clone)]
struct Scratch {
    row: RowScores,
    rouge_l: Score,
    /// The sentence BLEU, whose counts are the segment's n-gram statistics.
    bleu: Bleu,
}

fn score_row(p: &Pair, wn: &WordNet, stem: bool) -> Scratch {
    let rl = rouge_l(&p.reference, &p.prediction, stem);
    let rlsum = rouge_lsum(&p.reference, &p.prediction, stem);
    let met = meteor(
        &meteor::tokenize(&p.reference),
        &meteor::tokenize(&p.prediction),
        wn,
    );
    let bleu = sentence_bleu(&p.prediction, &[p.reference.as_str()]);
    let steps = score_steps(&p.prediction, &p.reference, DEFAULT_STEP_THRESHOLD);
    Scratch {
        row: RowScores {
            id: p.id.clone(),
            group: p.group.clone(),
            rouge_l: rl.fmeasure,
            rouge_lsum: rlsum.fmeasure,
            meteor: met,
            bleu: bleu.score,
            steps,
        },
        rouge_l: rl,
        bleu,
    }
}

/// Scores every pair (see the module documentation for the metrics). Rows are spread
/// over the available cores; the result does not depend on how many there are.
pub fn score_pairs(pairs: &[Pair], wn: &WordNet, stem: bool) -> Scored {
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(pairs.len().div_ceil(CHUNK))
        .max(1);
    let mut slots: Vec<Option<Scratch>> = vec![None; pairs.len()];
    if threads == 1 {
        for (slot, p) in slots.iter_mut().zip(pairs) {
            *slot = Some(score_row(p, wn, stem));
        }
    } else {
        let next = AtomicUsize::new(0);
        let done: Vec<Vec<(usize, Scratch)>> = std::thread::scope(|s| {
            let workers: Vec<_> = (0..threads)
                .map(|_| {
                    s.spawn(|| {
                        let mut out = Vec::new();
                        loop {
                            let start = next.fetch_add(CHUNK, Ordering::Relaxed);
                            if start >= pairs.len() {
                                break;
                            }
                            let end = (start + CHUNK).min(pairs.len());
                            for (i, p) in pairs.iter().enumerate().take(end).skip(start) {
                                out.push((i, score_row(p, wn, stem)));
                            }
                        }
                        out
                    })
                })
                .collect();
            workers
                .into_iter()
                .map(|w| w.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
                .collect()
        });
        for (i, r) in done.into_iter().flatten() {
            slots[i] = Some(r);
        }
    }
    let scored: Vec<Scratch> = slots
        .into_iter()
        .map(|s| s.expect("every row scored"))
        .collect();

    let all: Vec<usize> = (0..pairs.len()).collect();
    let corpus = aggregate(&scored, &all);
    let mut groups: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for (i, p) in pairs.iter().enumerate() {
        if let Some(g) = &p.group {
            groups.entry(g.clone()).or_default().push(i);
        }
    }
    let per_group = groups
        .into_iter()
        .map(|(g, idx)| {
            let agg = aggregate(&scored, &idx);
            (g, agg)
        })
        .collect();
    Scored {
        rows: scored.into_iter().map(|s| s.row).collect(),
        corpus,
        per_group,
    }
}

fn mean(values: impl Iterator<Item = f64>) -> Option<f64> {
    let (sum, n) = values.fold((0.0, 0usize), |(s, n), v| (s + v, n + 1));
    (n > 0).then(|| sum / n as f64)
}

/// sacrebleu's `corpus_bleu` score (defaults, no effective order) from the segments'
/// sentence BLEU results: their counts, totals and lengths are exactly the segment
/// statistics that `corpus_bleu` sums, so summing them and applying sacrebleu's
/// `compute_bleu` (the same operations as [`crate::eval::bleu`]'s) gives the same score
/// bit for bit without tokenising every text a second time. A unit test checks this
/// against [`crate::eval::bleu::corpus_bleu`].
fn corpus_bleu_from_segments<'a>(segments: impl Iterator<Item = &'a Bleu>) -> f64 {
    const N: usize = 4;
    let (mut sys_len, mut ref_len) = (0usize, 0usize);
    let (mut counts, mut totals) = ([0usize; N], [0usize; N]);
    for b in segments {
        sys_len += b.sys_len;
        ref_len += b.ref_len;
        for n in 0..N {
            counts[n] += b.counts[n];
            totals[n] += b.totals[n];
        }
    }
    let mut bp = 1.0;
    if sys_len < ref_len {
        bp = if sys_len > 0 {
            (1.0 - ref_len as f64 / sys_len as f64).exp()
        } else {
            0.0
        };
    }
    if counts.iter().all(|&c| c == 0) {
        return 0.0;
    }
    let mut precisions = [0.0f64; N];
    let mut smooth_mteval = 1.0f64;
    for n in 0..N {
        if totals[n] == 0 {
            break;
        }
        if counts[n] == 0 {
            smooth_mteval *= 2.0;
            precisions[n] = 100.0 / (smooth_mteval * totals[n] as f64);
        } else {
            precisions[n] = 100.0 * counts[n] as f64 / totals[n] as f64;
        }
    }
    let my_log = |x: f64| if x == 0.0 { -9_999_999_999.0 } else { x.ln() };
    let log_sum = precisions.iter().fold(0.0f64, |acc, &p| acc + my_log(p));
    bp * (log_sum / N as f64).exp()
}

fn aggregate(scored: &[Scratch], idx: &[usize]) -> CorpusScores {
    let m = |f: &dyn Fn(&Scratch) -> f64| -> f64 {
        mean(idx.iter().map(|&i| f(&scored[i]))).unwrap_or(0.0)
    };
    CorpusScores {
        n: idx.len(),
        rouge_l_f1: m(&|s| s.rouge_l.fmeasure),
        rouge_l_precision: m(&|s| s.rouge_l.precision),
        rouge_l_recall: m(&|s| s.rouge_l.recall),
        rouge_lsum_f1: m(&|s| s.row.rouge_lsum),
        meteor: m(&|s| s.row.meteor),
        bleu: corpus_bleu_from_segments(idx.iter().map(|&i| &scored[i].bleu)),
        step_recall: m(&|s| s.row.steps.step_recall),
        step_precision: m(&|s| s.row.steps.step_precision),
        step_f1: m(&|s| s.row.steps.step_f1),
        mean_abs_step_count_error: m(&|s| s.row.steps.step_count_error.unsigned_abs() as f64),
        order_kendall_tau: mean(
            idx.iter()
                .filter_map(|&i| scored[i].row.steps.order_kendall_tau),
        ),
        well_formed_rate: m(&|s| if s.row.steps.well_formed { 1.0 } else { 0.0 }),
    }
}

/// A compact Markdown table of the corpus and per-group aggregates, for the terminal.
pub fn to_markdown(s: &Scored) -> String {
    let mut out = String::new();
    out.push_str(
        "| set | n | ROUGE-L | ROUGE-Lsum | METEOR | BLEU | step P | step R | step F1 | \
         abs Δsteps | order τ | well-formed |\n",
    );
    out.push_str("|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n");
    let mut row = |name: &str, c: &CorpusScores| {
        let tau = c
            .order_kendall_tau
            .map_or_else(|| "-".to_string(), |t| format!("{t:.3}"));
        let _ = writeln!(
            out,
            "| {} | {} | {:.4} | {:.4} | {:.4} | {:.2} | {:.3} | {:.3} | {:.3} | {:.2} | {} | {:.1}% |",
            name.replace('|', "\\|"),
            c.n,
            c.rouge_l_f1,
            c.rouge_lsum_f1,
            c.meteor,
            c.bleu,
            c.step_precision,
            c.step_recall,
            c.step_f1,
            c.mean_abs_step_count_error,
            tau,
            100.0 * c.well_formed_rate
        );
    };
    row("all", &s.corpus);
    for (g, c) in &s.per_group {
        row(&format!("group {g}"), c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::bleu::corpus_bleu;

    #[test]
    fn corpus_bleu_from_segments_equals_corpus_bleu() {
        let texts = [
            "1. Open the Settings app.\n2. Tap your account name.",
            "1. Open the app.\n2. Tap Settings, then Account.",
            "Open settings",
            "",
            "1. Preheat the oven to 180°C.\n2. Bake for 30-35 minutes.",
            "a",
            "the the the the the",
            "1. Open the Settings app.",
        ];
        let mut cases: Vec<Vec<(&str, &str)>> = Vec::new();
        for h in texts {
            for r in texts {
                cases.push(vec![(h, r)]);
            }
        }
        // Whole corpora: all pairs, and some slices.
        let all: Vec<(&str, &str)> = cases.iter().flatten().copied().collect();
        for k in [2, 3, 5, 17, all.len()] {
            for chunk in all.chunks(k) {
                cases.push(chunk.to_vec());
            }
        }
        cases.push(vec![("", ""), ("", "")]);
        for case in &cases {
            let hyps: Vec<&str> = case.iter().map(|c| c.0).collect();
            let refs: Vec<&str> = case.iter().map(|c| c.1).collect();
            let want = corpus_bleu(&hyps, &[refs]).score;
            let sentences: Vec<Bleu> = case.iter().map(|(h, r)| sentence_bleu(h, &[r])).collect();
            let got = corpus_bleu_from_segments(sentences.iter());
            assert_eq!(got.to_bits(), want.to_bits(), "{case:?}: {got} vs {want}");
        }
        assert_eq!(corpus_bleu_from_segments(std::iter::empty()), 0.0);
    }

    #[test]
    fn no_pairs_score_zero() {
        let wn = WordNet::shared_default().unwrap_or_else(|e| panic!("{e:#}"));
        let s = score_pairs(&[], wn, true);
        assert_eq!(s.corpus.n, 0);
        assert_eq!(
            (s.corpus.bleu, s.corpus.rouge_l_f1, s.corpus.meteor),
            (0.0, 0.0, 0.0)
        );
        assert_eq!(s.corpus.order_kendall_tau, None);
        assert!(s.rows.is_empty() && s.per_group.is_empty());
    }
}
