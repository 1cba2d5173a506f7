//! The language-model head with its cross-entropy. The [labelled tokens, vocab] logits are the
//! largest tensor of a training step at a 151,936-token vocabulary (1.2 GB in fp32 per 2,048
//! tokens, as much again for their gradient), so by default they are made a chunk at a time
//! (csrc/lm_loss.cpp) and never exist whole.
use anyhow::Result;
use tch::{Kind, Tensor};

/// Labelled tokens per chunk unless the recipe says otherwise (`training.loss_chunk_tokens`):
/// [1024, 151936] fp32 logits are 0.6 GB, and a chunk this long keeps the head's matmul efficient.
pub const DEFAULT_LOSS_CHUNK: usize = 1024;

/// Σ cross_entropy(hidden Wᵀ, targets) in fp32, rows with target -100 left out. `chunk` rows of
/// logits at a time; 0 makes all logits at once (the plain autograd path, kept as the reference
/// the chunked one is tested against). hidden: [n, h], weight: [V, h], targets: [n] → []
pub fn cross_entropy_sum(hidden: &Tensor, weight: &Tensor, targets: &Tensor, chunk: usize) -> Result<Tensor> {
    if chunk == 0 {
        let logits = hidden.linear::<Tensor>(weight, None).to_kind(Kind::Float); // [n, V]
        return Ok(logits.cross_entropy_loss::<Tensor>(targets, None, tch::Reduction::Sum, -100, 0.0));
    }
    crate::ffi::chunked_linear_cross_entropy(hidden, weight, targets, chunk as i64)
}
