//! Exact and near-duplicate removal. Duplicates inflate a group and, worse, can put the same
//! prompt in train and eval; the first occurrence is kept and every removal is reported.
use std::collections::HashMap;

use super::Example;

/// Lowercased words of letters and digits: the key two texts are compared on.
pub fn words(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric()).filter(|w| !w.is_empty()).map(|w| w.to_lowercase()).collect()
}

/// A normalised key: case, punctuation and spacing do not make two prompts different.
pub fn text_key(text: &str) -> String {
    words(text).join(" ")
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Removed {
    /// The removed row.
    pub removed: String,
    /// The row it duplicates, which was kept.
    pub kept: String,
    /// 1.0 for exact duplicates; the smaller of prompt and output similarity otherwise.
    pub similarity: f64,
}

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct DedupReport {
    pub exact: Vec<Removed>,
    pub near: Vec<Removed>,
    /// The same prompt with different outputs (kept, but worth a look).
    pub conflicting_prompts: usize,
}

/// Removes exact duplicates (same prompt and output up to case, punctuation and spacing) and,
/// when `near_threshold < 1`, rows whose prompt and output both reach that word-set Jaccard
/// similarity with an earlier row.
pub fn dedup(rows: Vec<Example>, exact: bool, near_threshold: f64) -> (Vec<Example>, DedupReport) {
    let mut report = DedupReport::default();
    let mut kept: Vec<Example> = Vec::with_capacity(rows.len());
    let mut seen: HashMap<(String, String), usize> = HashMap::new();
    let mut outputs_by_prompt: HashMap<String, String> = HashMap::new();
    for row in rows {
        let pk = text_key(&row.prompt);
        let ok = text_key(&row.output);
        if let Some(prev) = outputs_by_prompt.get(&pk) {
            if *prev != ok {
                report.conflicting_prompts += 1;
            }
        } else {
            outputs_by_prompt.insert(pk.clone(), ok.clone());
        }
        if exact {
            if let Some(&i) = seen.get(&(pk.clone(), ok.clone())) {
                report.exact.push(Removed { removed: row.at.to_string(), kept: kept[i].at.to_string(), similarity: 1.0 });
                continue;
            }
            seen.insert((pk, ok), kept.len());
        }
        kept.push(row);
    }
    if near_threshold >= 1.0 {
        return (kept, report);
    }
    // Word sets as sorted ids, so Jaccard is a linear merge.
    let mut vocab: HashMap<String, u32> = HashMap::new();
    let mut ids = |t: &str| -> Vec<u32> {
        let mut v: Vec<u32> = words(t).into_iter().map(|w| {
            let n = vocab.len() as u32;
            *vocab.entry(w).or_insert(n)
        }).collect();
        v.sort_unstable();
        v.dedup();
        v
    };
    let sets: Vec<(Vec<u32>, Vec<u32>)> = kept.iter().map(|r| (ids(&r.prompt), ids(&r.output))).collect();
    let mut drop = vec![false; kept.len()];
    for j in 0..kept.len() {
        for i in 0..j {
            if drop[i] {
                continue;
            }
            // Jaccard can't exceed min/max of the set sizes: skip pairs that cannot qualify.
            let (a, b) = (&sets[i].0, &sets[j].0);
            let (lo, hi) = (a.len().min(b.len()) as f64, a.len().max(b.len()).max(1) as f64);
            if lo / hi < near_threshold {
                continue;
            }
            let sp = jaccard(a, b);
            if sp < near_threshold {
                continue;
            }
            let so = jaccard(&sets[i].1, &sets[j].1);
            if so >= near_threshold {
                drop[j] = true;
                report.near.push(Removed { removed: kept[j].at.to_string(), kept: kept[i].at.to_string(), similarity: sp.min(so) });
                break;
            }
        }
    }
    let kept = kept.into_iter().zip(drop).filter(|(_, d)| !d).map(|(r, _)| r).collect();
    (kept, report)
}

/// |a ∩ b| / |a ∪ b| of two sorted, deduplicated lists (1 for two empty ones).
pub fn jaccard<T: Ord>(a: &[T], b: &[T]) -> f64 {
    if a.is_empty() && b.is_empty() {
        return 1.0;
    }
    let (mut i, mut j, mut inter) = (0, 0, 0usize);
    while i < a.len() && j < b.len() {
        match a[i].cmp(&b[j]) {
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
            std::cmp::Ordering::Equal => {
                inter += 1;
                i += 1;
                j += 1;
            }
        }
    }
    inter as f64 / (a.len() + b.len() - inter) as f64
}
