//! Learning-rate schedules, equal to transformers' get_scheduler: linear warmup, then linear
//! decay to 0, half-cosine decay to 0, or constant.
use crate::recipe::Scheduler;

/// The learning rate at optimizer step `step` (0-based) of `total`.
pub fn lr_at(kind: Scheduler, base: f64, step: u64, warmup: u64, total: u64) -> f64 {
    let s = step as f64;
    if step < warmup {
        return base * s / (warmup.max(1) as f64);
    }
    let progress = (s - warmup as f64) / ((total.saturating_sub(warmup)).max(1) as f64);
    match kind {
        Scheduler::Constant => base,
        Scheduler::Linear => base * ((total as f64 - s) / ((total.saturating_sub(warmup)).max(1) as f64)).max(0.0),
        Scheduler::Cosine => base * (0.5 * (1.0 + (std::f64::consts::PI * progress).cos())).max(0.0),
    }
}

/// Warmup steps from the recipe's ratio or count (ratio rounds up, as transformers does).
pub fn warmup_steps(ratio: Option<f64>, steps: Option<u64>, total: u64) -> u64 {
    match (ratio, steps) {
        (_, Some(s)) => s,
        (Some(r), None) => (r * total as f64).ceil() as u64,
        (None, None) => 0,
    }
}
