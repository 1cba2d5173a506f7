//! Token-length statistics: what `max_length` to choose, and what it would cut.
use serde::Serialize;

#[derive(Debug, Clone, Default, Serialize)]
pub struct Summary {
    pub count: usize,
    pub min: usize,
    pub mean: f64,
    pub p50: f64,
    pub p90: f64,
    pub p95: f64,
    pub p99: f64,
    pub max: usize,
}

/// numpy's default (linear) percentile of sorted values.
pub fn percentile(sorted: &[usize], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let pos = q / 100.0 * (sorted.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    let frac = pos - lo as f64;
    sorted[lo] as f64 + (sorted[hi] as f64 - sorted[lo] as f64) * frac
}

pub fn summarize(values: &[usize]) -> Summary {
    if values.is_empty() {
        return Summary::default();
    }
    let mut v = values.to_vec();
    v.sort_unstable();
    Summary {
        count: v.len(),
        min: v[0],
        mean: v.iter().sum::<usize>() as f64 / v.len() as f64,
        p50: percentile(&v, 50.0),
        p90: percentile(&v, 90.0),
        p95: percentile(&v, 95.0),
        p99: percentile(&v, 99.0),
        max: v[v.len() - 1],
    }
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Histogram {
    /// Bin `i` counts values in `[edges[i], edges[i+1])`; the last bin includes its upper edge.
    pub edges: Vec<usize>,
    pub counts: Vec<usize>,
}

/// Equal-width bins over [0, max] with a round width, so the bins read well in a report.
pub fn histogram(values: &[usize], bins: usize) -> Histogram {
    let max = values.iter().copied().max().unwrap_or(0);
    let raw = (max / bins.max(1)).max(1);
    let magnitude = 10usize.pow((raw as f64).log10().floor() as u32);
    let width = [1, 2, 5, 10].iter().map(|m| m * magnitude).find(|w| *w >= raw).unwrap_or(raw);
    let n = max / width + 1;
    let mut counts = vec![0; n];
    for &v in values {
        counts[v / width] += 1;
    }
    Histogram { edges: (0..=n).map(|i| i * width).collect(), counts }
}

/// The smallest multiple of `step` that is at least `x`.
pub fn round_up(x: f64, step: usize) -> usize {
    ((x / step as f64).ceil() as usize).max(1) * step
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct SplitStats {
    pub prompt: Summary,
    pub answer: Summary,
    pub total: Summary,
    pub total_histogram: Histogram,
    /// Rows longer than max_length before the over-length policy was applied.
    pub over_max_length: usize,
}

/// `limited` is the length `max_length` bounds: the whole sequence for chat models, the longer
/// of encoder and decoder for seq2seq.
pub fn split_stats(prompt: &[usize], answer: &[usize], total: &[usize], limited: &[usize], max_length: usize) -> SplitStats {
    SplitStats {
        prompt: summarize(prompt),
        answer: summarize(answer),
        total: summarize(total),
        total_histogram: histogram(total, 12),
        over_max_length: limited.iter().filter(|&&t| t > max_length).count(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_match_numpy_linear() {
        // numpy.percentile([1, 2, 3, 4, 10], [50, 90, 99]) == [3.0, 7.6, 9.76]
        let v = [1, 2, 3, 4, 10];
        assert_eq!(percentile(&v, 50.0), 3.0);
        assert!((percentile(&v, 90.0) - 7.6).abs() < 1e-12);
        assert!((percentile(&v, 99.0) - 9.76).abs() < 1e-12);
        let s = summarize(&[10, 1, 4, 3, 2]);
        assert_eq!((s.min, s.max, s.count), (1, 10, 5));
        assert!((s.mean - 4.0).abs() < 1e-12);
    }

    #[test]
    fn histogram_counts_every_value_once() {
        let v: Vec<usize> = (0..=237).collect();
        let h = histogram(&v, 12);
        assert_eq!(h.counts.iter().sum::<usize>(), v.len());
        assert_eq!(h.edges[1] - h.edges[0], 20);
        assert_eq!(h.edges.len(), h.counts.len() + 1);
        assert!(*h.edges.last().unwrap() > 237);
    }

    #[test]
    fn round_up_to_step() {
        assert_eq!(round_up(100.2, 64), 128);
        assert_eq!(round_up(128.0, 64), 128);
        assert_eq!(round_up(0.0, 64), 64);
    }
}
