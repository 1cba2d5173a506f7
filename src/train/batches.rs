//! Prepared examples → batches. Batches hold examples of similar length (less padding), in an
//! order fixed by the seed and the epoch, so a resumed run sees exactly the batches it would have.
use std::path::Path;

use anyhow::{Context, Result};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use tch::{Device, Tensor};

use crate::model::source::ModelKind;
pub use crate::model::Batch;

/// One example as training reads it from `prepared/*.jsonl`.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct TrainExample {
    pub input_ids: Vec<i64>,
    pub labels: Vec<i64>,
    #[serde(default)]
    pub group: String,
    #[serde(default)]
    pub prompt: String,
    #[serde(default)]
    pub output: String,
    /// The `data.mix` source; empty for a single source.
    #[serde(default)]
    pub source: String,
    /// Seq2seq sliding windows: the target span the decoder reads (see `Encoded::decoder_reads`).
    #[serde(default)]
    pub decoder_reads: Option<Vec<i64>>,
}

pub fn read_prepared(path: &Path) -> Result<Vec<TrainExample>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {} (run `steptune prepare` first)", path.display()))?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| serde_json::from_str(l).with_context(|| format!("{} line {}: not a prepared example", path.display(), i + 1)))
        .collect()
}

/// The batches of one epoch, as lists of example indices. Like transformers' length-grouped
/// sampler: shuffle, cut into mega-batches of 50 batches, sort each by length, split; then the
/// batch order itself is shuffled so lengths do not trend through the epoch.
pub fn epoch_batches(lengths: &[usize], batch_size: usize, group_by_length: bool, seed: u64, epoch: u64) -> Vec<Vec<usize>> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ epoch);
    let mut order: Vec<usize> = (0..lengths.len()).collect();
    order.shuffle(&mut rng);
    if !group_by_length {
        return order.chunks(batch_size).map(<[usize]>::to_vec).collect();
    }
    let mut batches: Vec<Vec<usize>> = Vec::new();
    for mega in order.chunks(batch_size * 50) {
        let mut mega = mega.to_vec();
        mega.sort_by_key(|&i| std::cmp::Reverse(lengths[i]));
        batches.extend(mega.chunks(batch_size).map(<[usize]>::to_vec));
    }
    batches.shuffle(&mut rng);
    batches
}

/// The micro-batches of one optimizer step dealt to `ranks` ranks, as indices into `step`: the
/// costliest first (padded tokens), each to the least-loaded rank that still has room (an equal
/// count per rank, so memory is bounded as with one rank), ties to the lower rank. Each rank's
/// share keeps the step's order, so one rank gets exactly the step as it is.
pub fn deal(step: &[Vec<usize>], lengths: &[usize], ranks: usize) -> Vec<Vec<usize>> {
    let cost = |b: &Vec<usize>| b.iter().map(|&i| lengths[i]).max().unwrap_or(0) * b.len();
    let per_rank = step.len().div_ceil(ranks.max(1));
    let mut order: Vec<usize> = (0..step.len()).collect();
    order.sort_by_key(|&j| (std::cmp::Reverse(cost(&step[j])), j));
    let mut load = vec![0usize; ranks];
    let mut out = vec![Vec::new(); ranks];
    for j in order {
        let r = (0..ranks).filter(|&r| out[r].len() < per_rank).min_by_key(|&r| (load[r], r)).expect("room on some rank");
        out[r].push(j);
        load[r] += cost(&step[j]);
    }
    for share in &mut out {
        share.sort_unstable();
    }
    out
}

/// Pads examples into one batch (right padding). Decoder-only: ids and labels share one length;
/// the first label predicts nothing. Encoder-decoder: sources and targets are padded apart, and
/// every label is a target.
pub fn collate(examples: &[&TrainExample], pad_id: i64, kind: ModelKind, device: Device) -> Batch {
    let b = examples.len();
    let pad = |rows: Vec<&[i64]>, value: i64| -> (Tensor, Tensor) {
        let t = rows.iter().map(|r| r.len()).max().unwrap_or(1).max(1);
        let mut data = vec![value; b * t];
        let mut mask = vec![0i64; b * t];
        for (i, r) in rows.iter().enumerate() {
            data[i * t..i * t + r.len()].copy_from_slice(r);
            mask[i * t..i * t + r.len()].iter_mut().for_each(|m| *m = 1);
        }
        let shape = [b as i64, t as i64];
        (Tensor::from_slice(&data).view(shape).to_device(device), Tensor::from_slice(&mask).view(shape).to_device(device))
    };
    let (input_ids, attention_mask) = pad(examples.iter().map(|e| e.input_ids.as_slice()).collect(), pad_id);
    // Decoder-only labels have their ids' lengths, so they pad to the same width.
    let (labels, _) = pad(examples.iter().map(|e| e.labels.as_slice()).collect(), -100);
    // Padded like the labels (-100 becomes pad in the shifted decoder input).
    let decoder_reads = (kind == ModelKind::Seq2Seq && examples.iter().any(|e| e.decoder_reads.is_some()))
        .then(|| pad(examples.iter().map(|e| e.decoder_reads.as_deref().unwrap_or(&e.labels)).collect(), -100).0);
    let skip = if kind == ModelKind::Causal { 1 } else { 0 };
    let n_targets = examples.iter().map(|e| e.labels.iter().skip(skip).filter(|&&l| l != -100).count() as i64).sum();
    let n_tokens = examples.iter().map(|e| (e.input_ids.len() + if kind == ModelKind::Seq2Seq { e.labels.len() } else { 0 }) as i64).sum();
    Batch { input_ids, attention_mask, labels, decoder_reads, n_targets, n_tokens }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_cover_every_example_once_and_repeat_for_a_seed() {
        let lengths: Vec<usize> = (0..103).map(|i| (i * 37) % 91 + 5).collect();
        let a = epoch_batches(&lengths, 8, true, 7, 0);
        let mut seen: Vec<usize> = a.iter().flatten().copied().collect();
        seen.sort_unstable();
        assert_eq!(seen, (0..103).collect::<Vec<_>>());
        assert_eq!(a, epoch_batches(&lengths, 8, true, 7, 0));
        assert_ne!(a, epoch_batches(&lengths, 8, true, 7, 1));
        // Grouping by length cuts padding against a random order.
        let pad = |bs: &Vec<Vec<usize>>| -> usize { bs.iter().map(|b| b.iter().map(|&i| lengths[i]).max().unwrap() * b.len() - b.iter().map(|&i| lengths[i]).sum::<usize>()).sum() };
        assert!(pad(&a) * 2 < pad(&epoch_batches(&lengths, 8, false, 7, 0)));
    }

    #[test]
    fn a_step_is_dealt_to_ranks_balanced_by_tokens() {
        let lengths = vec![100, 10, 10, 90, 20, 20, 5, 5];
        let step: Vec<Vec<usize>> = vec![vec![0], vec![1, 2], vec![3], vec![4, 5], vec![6, 7]];
        // One rank: the step as it is.
        assert_eq!(deal(&step, &lengths, 1), vec![vec![0, 1, 2, 3, 4]]);
        // Two ranks, padded tokens 100, 20, 90, 40, 10: the 100 and the 90 apart, then each to the
        // lighter rank: 130 tokens each, in 3 and 2 micro-batches.
        let two = deal(&step, &lengths, 2);
        assert_eq!(two, vec![vec![0, 1, 4], vec![2, 3]]);
        let mut all: Vec<usize> = two.concat();
        all.sort_unstable();
        assert_eq!(all, (0..5).collect::<Vec<_>>());
        // More ranks than micro-batches (an epoch's last step): some ranks get none.
        let many = deal(&step[..2], &lengths, 4);
        assert_eq!(many.iter().filter(|s| s.is_empty()).count(), 2);
    }

    #[test]
    fn collate_pads_right_and_masks_labels() {
        let e1 = TrainExample { input_ids: vec![1, 2, 3], labels: vec![-100, 2, 3], group: String::new(), prompt: String::new(), output: String::new(), source: String::new(), decoder_reads: None };
        let e2 = TrainExample { input_ids: vec![4], labels: vec![4], group: String::new(), prompt: String::new(), output: String::new(), source: String::new(), decoder_reads: None };
        let b = collate(&[&e1, &e2], 0, ModelKind::Causal, Device::Cpu);
        assert_eq!(b.input_ids.size(), [2, 3]);
        assert_eq!(Vec::<i64>::try_from(&b.input_ids.view([-1])).unwrap(), vec![1, 2, 3, 4, 0, 0]);
        assert_eq!(Vec::<i64>::try_from(&b.labels.view([-1])).unwrap(), vec![-100, 2, 3, 4, -100, -100]);
        assert_eq!(Vec::<i64>::try_from(&b.attention_mask.view([-1])).unwrap(), vec![1, 1, 1, 1, 0, 0]);
        assert_eq!(b.n_targets, 2);
    }

    #[test]
    fn collate_pads_seq2seq_sources_and_targets_apart() {
        let e1 = TrainExample { input_ids: vec![5, 6, 1], labels: vec![7, 1], group: String::new(), prompt: String::new(), output: String::new(), source: String::new(), decoder_reads: None };
        let e2 = TrainExample { input_ids: vec![8, 1], labels: vec![9, 10, 11, 1], group: String::new(), prompt: String::new(), output: String::new(), source: String::new(), decoder_reads: None };
        let b = collate(&[&e1, &e2], 0, ModelKind::Seq2Seq, Device::Cpu);
        assert_eq!(b.input_ids.size(), [2, 3]);
        assert_eq!(b.labels.size(), [2, 4]);
        assert_eq!(Vec::<i64>::try_from(&b.input_ids.view([-1])).unwrap(), vec![5, 6, 1, 8, 1, 0]);
        assert_eq!(Vec::<i64>::try_from(&b.attention_mask.view([-1])).unwrap(), vec![1, 1, 1, 1, 1, 0]);
        assert_eq!(Vec::<i64>::try_from(&b.labels.view([-1])).unwrap(), vec![7, 1, -100, -100, 9, 10, 11, 1]);
        // Every target token counts (no shift inside the batch: the decoder input is shifted).
        assert_eq!(b.n_targets, 6);
        assert_eq!(b.n_tokens, 11);
    }
}
