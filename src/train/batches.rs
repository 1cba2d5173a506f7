//! Prepared examples → batches. Batches hold examples of similar length (less padding), in an
//! order fixed by the seed and the epoch, so a resumed run sees exactly the batches it would have.
use std::path::Path;

use anyhow::{Context, Result};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use tch::{Device, Kind, Tensor};

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

/// A padded batch for a decoder-only model. input_ids, labels: [b, t] (right padding; labels
/// -100 on padding).
pub struct Batch {
    pub input_ids: Tensor,
    pub labels: Tensor,
    /// Labelled tokens that predict something (labels after the first position).
    pub n_targets: i64,
    pub n_tokens: i64,
}

pub fn collate(examples: &[&TrainExample], pad_id: i64, device: Device) -> Batch {
    let b = examples.len();
    let t = examples.iter().map(|e| e.input_ids.len()).max().unwrap_or(1);
    let mut ids = vec![pad_id; b * t];
    let mut labels = vec![-100i64; b * t];
    let (mut n_targets, mut n_tokens) = (0i64, 0i64);
    for (r, e) in examples.iter().enumerate() {
        ids[r * t..r * t + e.input_ids.len()].copy_from_slice(&e.input_ids);
        labels[r * t..r * t + e.labels.len()].copy_from_slice(&e.labels);
        n_targets += e.labels.iter().skip(1).filter(|&&l| l != -100).count() as i64;
        n_tokens += e.input_ids.len() as i64;
    }
    let shape = [b as i64, t as i64];
    Batch {
        input_ids: Tensor::from_slice(&ids).view(shape).to_kind(Kind::Int64).to_device(device),
        labels: Tensor::from_slice(&labels).view(shape).to_device(device),
        n_targets,
        n_tokens,
    }
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
    fn collate_pads_right_and_masks_labels() {
        let e1 = TrainExample { input_ids: vec![1, 2, 3], labels: vec![-100, 2, 3], group: String::new(), prompt: String::new(), output: String::new() };
        let e2 = TrainExample { input_ids: vec![4], labels: vec![4], group: String::new(), prompt: String::new(), output: String::new() };
        let b = collate(&[&e1, &e2], 0, Device::Cpu);
        assert_eq!(b.input_ids.size(), [2, 3]);
        assert_eq!(Vec::<i64>::try_from(&b.input_ids.view([-1])).unwrap(), vec![1, 2, 3, 4, 0, 0]);
        assert_eq!(Vec::<i64>::try_from(&b.labels.view([-1])).unwrap(), vec![-100, 2, 3, 4, -100, -100]);
        assert_eq!(b.n_targets, 2);
    }
}
