//! Grouping paraphrases, splitting each group into train and eval, and oversampling rare groups.
//!
//! The split is by paraphrase within a group (the Qwen3 document: of three phrasings of one
//! request, two train and one evaluates), so eval measures whether the model understands a new
//! wording of a known request. Each group's split depends only on the seed and the group's name,
//! so adding a group never reshuffles the others.
use std::collections::{BTreeMap, HashMap, HashSet};

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::dedup::text_key;
use super::Example;
use crate::recipe::SplitSection;

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct SplitReport {
    pub groups: usize,
    /// Groups with one row: they can only train, so nothing evaluates them.
    pub single_row_groups: Vec<String>,
    pub train_rows: usize,
    pub eval_rows: usize,
    /// Eval rows moved to train because the same prompt (up to case and punctuation) was in train
    /// through another group.
    pub leaks_moved: usize,
    /// Rows added to train by oversampling, and the groups that received them.
    pub oversampled_rows: usize,
    pub oversampled_groups: usize,
}

/// FNV-1a, so a group's seed is the same on every platform and Rust version.
fn stable_hash(s: &str) -> u64 {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in s.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x100000001b3);
    }
    h
}

pub fn group_rng(seed: u64, salt: &str, group: &str) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed ^ stable_hash(salt).rotate_left(17) ^ stable_hash(group))
}

/// Splits rows into (train, eval). Rows sharing a normalised prompt move together.
pub fn split(rows: Vec<Example>, cfg: &SplitSection, seed: u64) -> (Vec<Example>, Vec<Example>, SplitReport) {
    let mut report = SplitReport::default();
    let mut groups: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for (i, r) in rows.iter().enumerate() {
        groups.entry(r.group.clone()).or_default().push(i);
    }
    report.groups = groups.len();
    let mut is_eval = vec![false; rows.len()];
    for (name, members) in &groups {
        // Units: rows with the same normalised prompt, in first-seen order.
        let mut units: Vec<Vec<usize>> = Vec::new();
        let mut by_prompt: HashMap<String, usize> = HashMap::new();
        for &i in members {
            let k = text_key(&rows[i].prompt);
            match by_prompt.get(&k) {
                Some(&u) => units[u].push(i),
                None => {
                    by_prompt.insert(k, units.len());
                    units.push(vec![i]);
                }
            }
        }
        let n = units.len();
        if n < 2 {
            report.single_row_groups.push(name.clone());
            continue;
        }
        let mut n_eval = (n as f64 * cfg.eval_ratio).round() as usize;
        n_eval = n_eval.max(cfg.min_eval_per_group.min(n - 1)).min(n - 1);
        if cfg.eval_ratio == 0.0 {
            n_eval = 0;
        }
        let mut order: Vec<usize> = (0..n).collect();
        order.shuffle(&mut group_rng(seed, "split", name));
        for &u in order.iter().take(n_eval) {
            for &i in &units[u] {
                is_eval[i] = true;
            }
        }
    }
    // A prompt may sit in two groups (say, two intents share a phrasing): it must not be in both splits.
    let train_prompts: HashSet<String> = rows.iter().zip(&is_eval).filter(|(_, e)| !**e).map(|(r, _)| text_key(&r.prompt)).collect();
    for (i, r) in rows.iter().enumerate() {
        if is_eval[i] && train_prompts.contains(&text_key(&r.prompt)) {
            is_eval[i] = false;
            report.leaks_moved += 1;
        }
    }
    let (mut train, mut eval) = (Vec::new(), Vec::new());
    for (r, e) in rows.into_iter().zip(is_eval) {
        if e { eval.push(r) } else { train.push(r) }
    }
    report.train_rows = train.len();
    report.eval_rows = eval.len();
    (train, eval, report)
}

/// Repeats rows of every train group smaller than `min_rows` until it has `min_rows`, cycling
/// through the group in a seeded order. Only train is oversampled: eval stays a fair sample.
pub fn oversample(train: Vec<Example>, min_rows: usize, seed: u64, report: &mut SplitReport) -> Vec<Example> {
    if min_rows == 0 {
        return train;
    }
    let mut groups: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for (i, r) in train.iter().enumerate() {
        groups.entry(r.group.clone()).or_default().push(i);
    }
    let mut extra = Vec::new();
    for (name, members) in &groups {
        if members.len() >= min_rows {
            continue;
        }
        let mut order = members.clone();
        order.shuffle(&mut group_rng(seed, "oversample", name));
        report.oversampled_groups += 1;
        for k in 0..(min_rows - members.len()) {
            let mut copy = train[order[k % order.len()]].clone();
            copy.copy = k / order.len() + 1;
            extra.push(copy);
        }
    }
    report.oversampled_rows = extra.len();
    report.train_rows += extra.len();
    let mut out = train;
    out.extend(extra);
    out
}
