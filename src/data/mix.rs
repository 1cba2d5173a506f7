//! `data.mix`: several sources in one data set, the flan-t5 document's answer to catastrophic
//! forgetting (train on the task's data mixed with general data).
//!
//! Each source is loaded with its own files and columns and cleaned like a single source; its
//! groups are namespaced `source/group`, so equal group names of two sources never merge, and
//! deduplication and the split run on the union (a prompt found in two sources still lands in one
//! split). Then the sources are sized: `max_rows` caps a source before the split; `weight` makes a
//! source that fraction of the mixed train set, sampling rows down (never repeating them) with the
//! recipe seed. Oversampling runs after the mix, on the mixed train set.
use std::collections::BTreeMap;

use anyhow::{bail, Result};
use rand::seq::SliceRandom;
use serde::Serialize;

use super::split::group_rng;
use super::Example;
use crate::recipe::MixSource;

/// What happened to one source, stage by stage.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SourceReport {
    pub name: String,
    pub files: Vec<String>,
    pub weight: Option<f64>,
    pub max_rows: Option<usize>,
    /// Rows read from the files, the bad ones included.
    pub rows_loaded: usize,
    pub bad_rows: usize,
    /// After step normalisation, dropping rows without steps, and deduplication over all sources.
    pub rows_cleaned: usize,
    /// After `max_rows`.
    pub rows_kept: usize,
    /// The split of the kept rows, before review and the weights.
    pub train_rows_split: usize,
    pub eval_rows_split: usize,
    /// Train rows of the split that `data.require_review` held back (rejected or not yet
    /// approved); the weights choose from the rest.
    pub review_held_back: usize,
    /// After the weights (before oversampling).
    pub train_rows: usize,
    pub eval_rows: usize,
    /// This source's fraction of the mixed train set (before oversampling).
    pub train_share: f64,
    /// Lines written to prepared/{train,eval}.jsonl: oversampled copies and windows included,
    /// rows with special tokens and rows the length policy dropped left out.
    pub prepared_train: usize,
    pub prepared_eval: usize,
}

fn per_source(rows: &[Example]) -> BTreeMap<&str, usize> {
    let mut n = BTreeMap::new();
    for r in rows {
        *n.entry(r.source.as_str()).or_insert(0) += 1;
    }
    n
}

/// Keeps `keep` of `rows`, a sample fixed by the seed, the salt and the source, in their order.
fn sample(rows: Vec<Example>, keep: usize, seed: u64, salt: &str, source: &str) -> Vec<Example> {
    if keep >= rows.len() {
        return rows;
    }
    let mut order: Vec<usize> = (0..rows.len()).collect();
    order.shuffle(&mut group_rng(seed, salt, source));
    let mut chosen = vec![false; rows.len()];
    order.iter().take(keep).for_each(|&i| chosen[i] = true);
    rows.into_iter().zip(chosen).filter(|(_, c)| *c).map(|(r, _)| r).collect()
}

/// Splits rows by source (in the order of `sources`), applies `f` to each source's rows, joins.
fn by_source(rows: Vec<Example>, sources: &[MixSource], mut f: impl FnMut(&MixSource, Vec<Example>) -> Vec<Example>) -> Vec<Example> {
    let mut buckets: BTreeMap<String, Vec<Example>> = BTreeMap::new();
    for r in rows {
        buckets.entry(r.source.clone()).or_default().push(r);
    }
    sources.iter().flat_map(|s| f(s, buckets.remove(&s.name).unwrap_or_default())).collect()
}

/// `max_rows`: each capped source keeps a seeded sample of its cleaned rows.
pub fn cap_sources(rows: Vec<Example>, sources: &[MixSource], seed: u64, reports: &mut [SourceReport]) -> Vec<Example> {
    let counts: BTreeMap<String, usize> = per_source(&rows).into_iter().map(|(k, v)| (k.to_string(), v)).collect();
    for rep in reports.iter_mut() {
        rep.rows_cleaned = counts.get(&rep.name).copied().unwrap_or(0);
    }
    let out = by_source(rows, sources, |s, rows| match s.max_rows {
        Some(cap) => sample(rows, cap, seed, "mix-cap", &s.name),
        None => rows,
    });
    let kept = per_source(&out);
    for rep in reports.iter_mut() {
        rep.rows_kept = kept.get(rep.name.as_str()).copied().unwrap_or(0);
    }
    out
}

/// How many train rows each source keeps so every weighted source is its weight's fraction of the
/// mixed train set: the largest mixed size every source can fill without repeating a row. The
/// sources without a weight share the rest in proportion to their rows (all of them, unless a
/// weighted source is too small for them).
pub fn train_targets(available: &[(usize, Option<f64>)]) -> Vec<usize> {
    let weight_sum: f64 = available.iter().filter_map(|a| a.1).sum();
    let unweighted: usize = available.iter().filter(|a| a.1.is_none()).map(|a| a.0).sum();
    let mut total = f64::INFINITY;
    for &(n, w) in available {
        if let Some(w) = w {
            total = total.min(n as f64 / w);
        }
    }
    if weight_sum < 1.0 - 1e-9 {
        total = total.min(unweighted as f64 / (1.0 - weight_sum));
    }
    if !total.is_finite() {
        return available.iter().map(|a| a.0).collect();
    }
    let rest = (((1.0 - weight_sum) * total).round() as usize).min(unweighted);
    // Largest remainder: the unweighted sources' shares add up to exactly `rest`.
    let mut targets: Vec<usize> = Vec::with_capacity(available.len());
    let mut remainders = Vec::new();
    for (i, &(n, w)) in available.iter().enumerate() {
        match w {
            Some(w) => targets.push(((w * total).round() as usize).min(n)),
            None => {
                let exact = if unweighted == 0 { 0.0 } else { rest as f64 * n as f64 / unweighted as f64 };
                targets.push(exact.floor() as usize);
                remainders.push((exact - exact.floor(), i));
            }
        }
    }
    let given: usize = available.iter().zip(&targets).filter(|(a, _)| a.1.is_none()).map(|(_, t)| t).sum();
    remainders.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    for &(_, i) in remainders.iter().take(rest.saturating_sub(given)) {
        targets[i] += 1;
    }
    targets
}

/// The weights: each source's train rows are sampled to its target, and its eval rows at the same
/// rate, so a source's eval share follows its train share. Rows only leave, so no group that the
/// split kept on one side can cross to the other.
pub fn weigh_sources(train: Vec<Example>, eval: Vec<Example>, sources: &[MixSource], seed: u64, reports: &mut [SourceReport]) -> Result<(Vec<Example>, Vec<Example>)> {
    let (train_n, eval_n) = (per_source(&train), per_source(&eval));
    let available: Vec<(usize, Option<f64>)> = sources.iter().map(|s| (train_n.get(s.name.as_str()).copied().unwrap_or(0), s.weight)).collect();
    for (s, &(n, w)) in sources.iter().zip(&available) {
        if w.is_some() && n == 0 {
            bail!("data.mix source `{}` has no train rows after cleaning, the split and review, so its weight cannot hold: check its files and columns (and, under `data.require_review`, its rows' approvals), or remove its weight", s.name);
        }
    }
    let targets = train_targets(&available);
    let rate: BTreeMap<&str, (usize, f64)> = sources
        .iter()
        .zip(available.iter().zip(&targets))
        .map(|(s, (&(n, _), &t))| (s.name.as_str(), (t, if n == 0 { 1.0 } else { t as f64 / n as f64 })))
        .collect();
    for rep in reports.iter_mut() {
        rep.train_rows_split = train_n.get(rep.name.as_str()).copied().unwrap_or(0);
        rep.eval_rows_split = eval_n.get(rep.name.as_str()).copied().unwrap_or(0);
    }
    let train = by_source(train, sources, |s, rows| sample(rows, rate[s.name.as_str()].0, seed, "mix-train", &s.name));
    let eval = by_source(eval, sources, |s, rows| {
        let keep = (rows.len() as f64 * rate[s.name.as_str()].1).round() as usize;
        sample(rows, keep, seed, "mix-eval", &s.name)
    });
    let (train_n, eval_n) = (per_source(&train), per_source(&eval));
    for rep in reports.iter_mut() {
        rep.train_rows = train_n.get(rep.name.as_str()).copied().unwrap_or(0);
        rep.eval_rows = eval_n.get(rep.name.as_str()).copied().unwrap_or(0);
        rep.train_share = if train.is_empty() { 0.0 } else { rep.train_rows as f64 / train.len() as f64 };
    }
    Ok((train, eval))
}
