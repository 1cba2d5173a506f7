//! Step-level metrics: how well a generated procedure matches the reference *as a list of
//! steps*, which the text-overlap metrics (ROUGE, BLEU, METEOR) cannot tell.
//!
//! Both texts are split into steps with [`parse_numbered_steps`] (lines starting "N." or
//! "N)"). Two steps are compared with ROUGE-L F1 without stemming
//! ([`rouge_l`](crate::eval::rouge::rouge_l)`(reference_step, predicted_step, false).fmeasure`), and a pair *matches*
//! when that similarity reaches the threshold (`>=`, [`DEFAULT_STEP_THRESHOLD`] unless the
//! caller picks another).
//!
//! - **step recall**: the share of reference steps whose most similar predicted step
//!   matches (several reference steps may be covered by the same predicted step);
//! - **step precision**: the share of predicted steps whose most similar reference step
//!   matches;
//! - **step F1**: their harmonic mean (0 when both are 0);
//! - **order (Kendall's tau)**: the steps are paired one-to-one greedily — all matching
//!   (reference, predicted) pairs by descending similarity, ties by reference position then
//!   predicted position, each step used at most once — and tau-a is taken between the
//!   reference positions and the predicted positions of those pairs:
//!   `(concordant - discordant) / (n(n-1)/2)`. Positions are distinct on both sides, so
//!   there are no ties and tau-a equals tau-b. 1 = same order, -1 = reversed; `None` when
//!   fewer than two pairs matched;
//! - **step count error**: predicted steps minus reference steps;
//! - **well formed**: whether the prediction is nothing but a numbered list 1..n
//!   ([`well_formed`]).
//!
//! Edge cases (so no value is ever NaN):
//!
//! | prediction | reference | recall | precision | F1 | tau |
//! |---|---|---|---|---|---|
//! | no steps | no steps | 1 | 1 | 1 | None |
//! | no steps | some steps | 0 | 0 | 0 | None |
//! | some steps | no steps | 0 | 0 | 0 | None |
//!
//! A step with no ROUGE tokens (only emoji or non-ASCII text, say) has similarity 0 with
//! everything, so it matches only when the threshold is 0 or less.

use std::collections::HashMap;
use std::sync::LazyLock;

use regex::Regex;

use crate::data::steps::parse_numbered_steps;
use crate::eval::rouge::tokenize;

/// The similarity (ROUGE-L F1 between two steps) at which a predicted step counts as
/// covering a reference step.
pub const DEFAULT_STEP_THRESHOLD: f64 = 0.5;

/// Step metrics of one prediction against its reference; see the module documentation
/// for the definitions and edge cases.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct StepScores {
    /// Steps parsed from the prediction.
    pub pred_steps: usize,
    /// Steps parsed from the reference.
    pub ref_steps: usize,
    /// `pred_steps - ref_steps`.
    pub step_count_error: i64,
    pub step_recall: f64,
    pub step_precision: f64,
    pub step_f1: f64,
    /// Kendall's tau-a over the one-to-one matched pairs; `None` with fewer than 2 pairs.
    pub order_kendall_tau: Option<f64>,
    /// [`well_formed`] of the prediction.
    pub well_formed: bool,
}

/// Scores `prediction` against `reference` step by step; `threshold` is the ROUGE-L F1 a
/// pair of steps needs to match (see [`DEFAULT_STEP_THRESHOLD`]).
pub fn score_steps(prediction: &str, reference: &str, threshold: f64) -> StepScores {
    let pred = parse_numbered_steps(prediction);
    let refs = parse_numbered_steps(reference);
    let (np, nr) = (pred.len(), refs.len());
    let base = StepScores {
        pred_steps: np,
        ref_steps: nr,
        step_count_error: np as i64 - nr as i64,
        step_recall: 0.0,
        step_precision: 0.0,
        step_f1: 0.0,
        order_kendall_tau: None,
        well_formed: well_formed(prediction),
    };
    if np == 0 && nr == 0 {
        return StepScores {
            step_recall: 1.0,
            step_precision: 1.0,
            step_f1: 1.0,
            ..base
        };
    }
    if np == 0 || nr == 0 {
        return base;
    }

    // sim[r][p]; each step is tokenised once.
    let mut vocab: HashMap<String, u32> = HashMap::new();
    let ref_ids = step_ids(&refs, &mut vocab);
    let pred_ids = step_ids(&pred, &mut vocab);
    let sim: Vec<Vec<f64>> = ref_ids
        .iter()
        .map(|r| pred_ids.iter().map(|p| rouge_l_f1(r, p)).collect())
        .collect();
    let matches = |s: f64| s >= threshold;

    let recalled = sim
        .iter()
        .filter(|row| row.iter().any(|&s| matches(s)))
        .count();
    let precise = (0..np)
        .filter(|&p| sim.iter().any(|row| matches(row[p])))
        .count();
    let recall = recalled as f64 / nr as f64;
    let precision = precise as f64 / np as f64;
    let f1 = if recall + precision > 0.0 {
        2.0 * precision * recall / (precision + recall)
    } else {
        0.0
    };

    let pairs = greedy_pairs(&sim, threshold);
    StepScores {
        step_recall: recall,
        step_precision: precision,
        step_f1: f1,
        order_kendall_tau: kendall_tau_a(&pairs),
        ..base
    }
}

/// rouge-score's tokens (no stemming) of each step, as ids.
fn step_ids(steps: &[String], vocab: &mut HashMap<String, u32>) -> Vec<Vec<u32>> {
    steps
        .iter()
        .map(|s| {
            tokenize(s, false)
                .into_iter()
                .map(|t| {
                    let next = vocab.len() as u32;
                    *vocab.entry(t).or_insert(next)
                })
                .collect()
        })
        .collect()
}

/// [`rouge_l`](crate::eval::rouge::rouge_l)`(reference, prediction, false).fmeasure` on pre-tokenised steps: the same
/// LCS and the same float operations (rouge-score's `fmeasure`), so the same value; the
/// unit tests check the two agree.
fn rouge_l_f1(reference: &[u32], prediction: &[u32]) -> f64 {
    if reference.is_empty() || prediction.is_empty() {
        return 0.0;
    }
    let hits = lcs_len(reference, prediction);
    let precision = hits as f64 / prediction.len() as f64;
    let recall = hits as f64 / reference.len() as f64;
    if precision + recall > 0.0 {
        2.0 * precision * recall / (precision + recall)
    } else {
        0.0
    }
}

/// Length of the longest common subsequence (row-by-row dynamic programming).
fn lcs_len(a: &[u32], b: &[u32]) -> usize {
    let (long, short) = if a.len() >= b.len() { (a, b) } else { (b, a) };
    let mut row = vec![0usize; short.len() + 1];
    for &x in long {
        let mut diag = 0; // row[j-1] of the previous row
        for (j, &y) in short.iter().enumerate() {
            let up = row[j + 1];
            row[j + 1] = if x == y { diag + 1 } else { up.max(row[j]) };
            diag = up;
        }
    }
    row[short.len()]
}

/// One-to-one greedy matching: candidate `(ref, pred)` pairs with similarity `>=
/// threshold`, best first (ties: lower reference position, then lower predicted
/// position), each step taken at most once.
fn greedy_pairs(sim: &[Vec<f64>], threshold: f64) -> Vec<(usize, usize)> {
    let mut cand: Vec<(f64, usize, usize)> = Vec::new();
    for (r, row) in sim.iter().enumerate() {
        for (p, &s) in row.iter().enumerate() {
            if s >= threshold {
                cand.push((s, r, p));
            }
        }
    }
    cand.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
    let n_pred = sim.first().map_or(0, Vec::len);
    let mut ref_used = vec![false; sim.len()];
    let mut pred_used = vec![false; n_pred];
    let mut pairs = Vec::new();
    for (_, r, p) in cand {
        if !ref_used[r] && !pred_used[p] {
            ref_used[r] = true;
            pred_used[p] = true;
            pairs.push((r, p));
        }
    }
    pairs
}

/// Kendall's tau-a between the two coordinates of `pairs` (distinct on each side).
fn kendall_tau_a(pairs: &[(usize, usize)]) -> Option<f64> {
    let n = pairs.len();
    if n < 2 {
        return None;
    }
    let mut score: i64 = 0;
    for i in 0..n {
        for j in i + 1..n {
            let a = (pairs[i].0 as i64 - pairs[j].0 as i64).signum();
            let b = (pairs[i].1 as i64 - pairs[j].1 as i64).signum();
            score += a * b;
        }
    }
    Some(score as f64 / (n * (n - 1) / 2) as f64)
}

/// A step line as [`parse_numbered_steps`] reads one: optional indentation, 1-3 digits,
/// "." or ")", then anything that does not start with a digit ("1.5 kg" is not a step).
static STEP_LINE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^\s*([0-9]{1,3})[.)](.*)$").expect("static regex"));

/// Whether `text` is exactly a numbered list: at least one step; every non-blank line is
/// a step line as [`parse_numbered_steps`] reads them ("N." or "N)" after optional
/// indentation, not followed by a digit) with non-empty text after the marker; and the
/// numbers are 1, 2, 3, ... in order. Blank lines between steps are allowed; any other
/// line (an introduction, a closing remark, a continuation line, a bullet) makes the text
/// not well formed. "." and ")" may both be used.
pub fn well_formed(text: &str) -> bool {
    let mut expected: u32 = 1;
    for line in text.lines() {
        if line.trim().is_empty() {
            continue;
        }
        let Some(c) = STEP_LINE.captures(line) else {
            return false;
        };
        let rest = &c[2];
        if rest.starts_with(|ch: char| ch.is_ascii_digit()) || rest.trim().is_empty() {
            return false;
        }
        match c[1].parse::<u32>() {
            Ok(n) if n == expected => expected += 1,
            _ => return false,
        }
    }
    expected > 1
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::rouge::rouge_l;

    const T: f64 = DEFAULT_STEP_THRESHOLD;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-12
    }

    #[test]
    fn identical_lists_score_one() {
        let t = "1. Open the settings app\n2. Tap your account name\n3. Choose sign out";
        let s = score_steps(t, t, T);
        assert_eq!(
            s,
            StepScores {
                pred_steps: 3,
                ref_steps: 3,
                step_count_error: 0,
                step_recall: 1.0,
                step_precision: 1.0,
                step_f1: 1.0,
                order_kendall_tau: Some(1.0),
                well_formed: true,
            }
        );
    }

    #[test]
    fn reversed_steps_have_tau_minus_one() {
        let r = "1. open the settings app\n2. tap your account name\n3. choose sign out";
        let p = "1. choose sign out\n2. tap your account name\n3. open the settings app";
        let s = score_steps(p, r, T);
        assert_eq!(
            (s.step_recall, s.step_precision, s.step_f1),
            (1.0, 1.0, 1.0)
        );
        assert_eq!(s.order_kendall_tau, Some(-1.0));
        // One swap out of three pairs: (C - D) / 3 = (2 - 1) / 3.
        let p = "1. tap your account name\n2. open the settings app\n3. choose sign out";
        let s = score_steps(p, r, T);
        assert!(close(s.order_kendall_tau.unwrap(), 1.0 / 3.0));
    }

    #[test]
    fn partial_matches_and_threshold() {
        // Reference step 1 "open the settings app" (4 tokens) vs predicted
        // "open the app" (3): LCS 3, P = 1, R = 3/4, F1 = 6/7 ≈ 0.857 → match.
        // Reference step 2 "tap your account name" vs "press the button": F1 0 → no match.
        let r = "1. Open the settings app\n2. Tap your account name";
        let p = "1. Open the app\n2. Press the button";
        let s = score_steps(p, r, T);
        assert_eq!(s.step_recall, 0.5);
        // "press the button" vs "open the settings app": LCS "the" = 1,
        // P = 1/3, R = 1/4, F1 = 2/7 < 0.5; so one predicted step of two matches.
        assert_eq!(s.step_precision, 0.5);
        assert_eq!(s.step_f1, 0.5);
        assert_eq!(s.order_kendall_tau, None); // one pair only
                                               // With a threshold above 6/7 nothing matches.
        let s = score_steps(p, r, 0.9);
        assert_eq!(
            (s.step_recall, s.step_precision, s.step_f1),
            (0.0, 0.0, 0.0)
        );
        // At exactly the similarity it still matches (>=).
        let s = score_steps(p, r, 6.0 / 7.0);
        assert_eq!(s.step_recall, 0.5);
    }

    #[test]
    fn extra_steps_lower_precision_only() {
        let r = "1. Open the settings app\n2. Tap your account name";
        let p = "1. Unlock your phone\n2. Open the settings app\n3. Tap your account name\n\
                 4. Celebrate the result";
        let s = score_steps(p, r, T);
        assert_eq!(s.pred_steps, 4);
        assert_eq!(s.ref_steps, 2);
        assert_eq!(s.step_count_error, 2);
        assert_eq!(s.step_recall, 1.0);
        assert_eq!(s.step_precision, 0.5);
        assert!(close(s.step_f1, 2.0 / 3.0));
        assert_eq!(s.order_kendall_tau, Some(1.0));
        assert!(s.well_formed);
        // Missing steps: the other way round.
        let s = score_steps(r, p, T);
        assert_eq!(s.step_count_error, -2);
        assert_eq!((s.step_recall, s.step_precision), (0.5, 1.0));
    }

    #[test]
    fn recall_uses_best_match_but_order_is_one_to_one() {
        // Two reference steps both best-match the single predicted step "a b c d":
        // "a b c" (F1 = 6/7) and "b c d" (6/7). Recall 1, precision 1, but only one
        // one-to-one pair → no tau.
        let s = score_steps("1. a b c d", "1. a b c\n2. b c d", T);
        assert_eq!((s.step_recall, s.step_precision), (1.0, 1.0));
        assert_eq!(s.order_kendall_tau, None);
        // Greedy takes the best pair first: predicted step 0 ("a b c") goes to reference
        // step 1 (identical, 1.0) rather than reference step 0 ("a b c x y", F1 = 0.75),
        // which is then left without a partner.
        let pairs = greedy_pairs(
            &[
                vec![rouge_l("a b c x y", "a b c", false).fmeasure, 0.0],
                vec![1.0, 0.0],
                vec![0.0, 1.0],
            ],
            T,
        );
        assert_eq!(pairs, vec![(1, 0), (2, 1)]);
    }

    #[test]
    fn empty_texts() {
        let none = score_steps("", "", T);
        assert_eq!(
            (none.step_recall, none.step_precision, none.step_f1),
            (1.0, 1.0, 1.0)
        );
        assert_eq!(none.order_kendall_tau, None);
        assert!(!none.well_formed);

        let s = score_steps(
            "I cannot help with that.",
            "1. Open the app\n2. Tap Save",
            T,
        );
        assert_eq!(
            (s.step_recall, s.step_precision, s.step_f1),
            (0.0, 0.0, 0.0)
        );
        assert_eq!((s.pred_steps, s.ref_steps, s.step_count_error), (0, 2, -2));
        assert!(!s.well_formed);

        let s = score_steps("1. Open the app", "no steps here", T);
        assert_eq!(
            (s.step_recall, s.step_precision, s.step_f1),
            (0.0, 0.0, 0.0)
        );
        assert_eq!(s.step_count_error, 1);
        for v in [s.step_recall, s.step_precision, s.step_f1] {
            assert!(!v.is_nan());
        }
    }

    #[test]
    fn tokenless_steps_never_match() {
        let s = score_steps("1. 🙂\n2. Open the app", "1. 🙂\n2. Open the app", T);
        assert_eq!((s.step_recall, s.step_precision), (0.5, 0.5));
    }

    #[test]
    fn step_similarity_equals_rouge_l() {
        let words = [
            "open", "the", "app", "tap", "save", "a", "Settings", "2", "x-y", "é",
        ];
        let mut st = 0x2545_F491_4F6C_DD1Du64;
        let mut next = || {
            st ^= st << 13;
            st ^= st >> 7;
            st ^= st << 17;
            st
        };
        for _ in 0..2000 {
            let mut text = || -> String {
                let n = (next() % 12) as usize;
                (0..n)
                    .map(|_| words[(next() % words.len() as u64) as usize])
                    .collect::<Vec<_>>()
                    .join(" ")
            };
            let (a, b) = (text(), text());
            let mut vocab = HashMap::new();
            let ids = step_ids(&[a.clone(), b.clone()], &mut vocab);
            let fast = rouge_l_f1(&ids[0], &ids[1]);
            assert_eq!(
                fast.to_bits(),
                rouge_l(&a, &b, false).fmeasure.to_bits(),
                "{a:?} / {b:?}"
            );
        }
    }

    #[test]
    fn kendall_tau_hand_computed() {
        assert_eq!(kendall_tau_a(&[(0, 0)]), None);
        assert_eq!(kendall_tau_a(&[(0, 1), (1, 0)]), Some(-1.0));
        // Order of the pair list does not matter.
        assert_eq!(kendall_tau_a(&[(2, 0), (0, 2), (1, 1)]), Some(-1.0));
        // ref 0..4, pred [0, 2, 1, 3]: one discordant pair of 6 → (5 - 1) / 6.
        let t = kendall_tau_a(&[(0, 0), (1, 2), (2, 1), (3, 3)]).unwrap();
        assert!(close(t, 4.0 / 6.0));
    }

    #[test]
    fn well_formed_rules() {
        assert!(well_formed("1. Open the app"));
        assert!(well_formed("1. Open the app\n2. Tap Save\n"));
        assert!(well_formed("1) Open the app\n\n2) Tap Save\r\n3. Done"));
        assert!(well_formed("  1. Open the app\n  2. Tap Save"));
        assert!(!well_formed(""));
        assert!(!well_formed("\n \n"));
        assert!(!well_formed("Here you go:\n1. Open the app\n2. Tap Save"));
        assert!(!well_formed("1. Open the app\n2. Tap Save\nDone!"));
        assert!(!well_formed("2. Open the app\n3. Tap Save")); // must start at 1
        assert!(!well_formed("1. Open the app\n3. Tap Save")); // consecutive
        assert!(!well_formed("1. Open the app\n1. Tap Save"));
        assert!(!well_formed("1. Open the app\n2.")); // empty step
        assert!(!well_formed("1.5 kg of flour"));
        assert!(!well_formed("- Open the app\n- Tap Save"));
        assert!(!well_formed("1. Open the app\n   and then wait"));
    }
}
