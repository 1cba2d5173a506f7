//! What every decoder-only model shares above its layers: the forward through the stack, the
//! language-model head and its loss, gradient checkpointing, and the step generation calls.
//! Qwen3 (with Qwen2 and Llama) and Gemma 3 differ only inside `CausalLm`'s methods: how ids are
//! embedded, which RoPE angles and mask each layer reads, the layers themselves.
//!
//! Shapes: b batch, t tokens, h hidden, V vocab.
use anyhow::{Context, Result};
use tch::{Device, IndexOp, Kind, Tensor};

use super::qwen3::KvCache;

/// A decoder-only stack as the shared drivers see it.
pub trait CausalLm {
    /// What every layer of one forward reads (RoPE angles, attention masks), made once per call.
    type Ctx;
    fn device(&self) -> Device;
    fn hidden_size(&self) -> i64;
    fn n_layers(&self) -> usize;
    /// ids: [b, t] → [b, t, h]
    fn embed(&self, ids: &Tensor) -> Tensor;
    /// Whether the embedding trains (full fine-tuning): checkpointing then pushes its gradient.
    fn embed_trains(&self) -> bool;
    /// positions: [b, t]; mask2d: [b, past + t] (1 real, 0 pad), None when no row is padded.
    fn context(&self, positions: &Tensor, mask2d: Option<&Tensor>, past: i64) -> Self::Ctx;
    /// Layer `i`: x [b, t, h] → [b, t, h]
    fn layer(&self, i: usize, x: &Tensor, ctx: &Self::Ctx, cache: Option<&mut Option<(Tensor, Tensor)>>, train: bool) -> Tensor;
    /// The final norm: [.., h] → [.., h]
    fn final_norm(&self, x: &Tensor) -> Tensor;
    /// [V, h]; the embedding itself when tied.
    fn lm_head(&self) -> &Tensor;
    /// tanh soft-capping of the final logits (`final_logit_softcapping`), when the config sets it.
    fn final_softcap(&self) -> Option<f64> {
        None
    }
    /// Labelled tokens per chunk of the head's loss (0: all at once).
    fn loss_chunk(&self) -> usize;
}

/// ids: [b, t], positions: [b, t] → hidden states after the final norm: [b, t, h]
pub fn hidden<M: CausalLm>(m: &M, ids: &Tensor, positions: &Tensor, mask2d: Option<&Tensor>, mut cache: Option<&mut KvCache>, train: bool) -> Tensor {
    let past = cache.as_ref().map(|c| c.len()).unwrap_or(0);
    let ctx = m.context(positions, mask2d, past);
    let mut x = m.embed(ids);
    for i in 0..m.n_layers() {
        let slot = cache.as_deref_mut().map(|c| &mut c.layers[i]);
        x = m.layer(i, &x, &ctx, slot, train);
    }
    m.final_norm(&x)
}

fn softcap(logits: Tensor, cap: Option<f64>) -> Tensor {
    match cap {
        Some(c) => (logits / c).tanh() * c,
        None => logits,
    }
}

/// hidden: [.., h] → logits [.., V] in fp32
pub fn logits<M: CausalLm>(m: &M, hidden: &Tensor) -> Tensor {
    softcap(hidden.linear::<Tensor>(m.lm_head(), None), m.final_softcap()).to_kind(Kind::Float)
}

/// [b, t] → positions 0..t for every row (right-padded training batches).
pub fn train_positions<M: CausalLm>(m: &M, ids: &Tensor) -> Tensor {
    let (b, t) = (ids.size()[0], ids.size()[1]);
    Tensor::arange(t, (Kind::Int64, m.device())).unsqueeze(0).expand([b, t], true)
}

/// Full-sequence logits for right-padded ids (training layout): [b, t] → [b, t, V]
pub fn forward<M: CausalLm>(m: &M, ids: &Tensor, train: bool) -> Tensor {
    let positions = train_positions(m, ids);
    logits(m, &hidden(m, ids, &positions, None, None, train))
}

/// The causal-LM loss, summed over labelled tokens, and their count. The language-model head
/// runs only where a label exists: on a chat batch most positions are prompt or padding.
/// ids, labels: [b, t] (labels -100 where masked; right padding)
pub fn loss_sum<M: CausalLm>(m: &M, ids: &Tensor, labels: &Tensor, train: bool) -> Result<(Tensor, i64)> {
    let positions = train_positions(m, ids);
    let hidden = hidden(m, ids, &positions, None, None, train); // [b, t, h]
    head_loss(m, &hidden, labels)
}

/// hidden (after the final norm): [b, t, h], labels: [b, t] → (summed loss, labelled count).
fn head_loss<M: CausalLm>(m: &M, hidden: &Tensor, labels: &Tensor) -> Result<(Tensor, i64)> {
    let t = hidden.size()[1];
    // Position i predicts label i+1.
    let targets = labels.narrow(1, 1, t - 1).reshape([-1]); // [b(t-1)]
    let idx = targets.ne(-100).nonzero().squeeze_dim(-1); // [n]
    let n = idx.size()[0];
    let h = hidden.narrow(1, 0, t - 1).reshape([-1, m.hidden_size()]).index_select(0, &idx); // [n, h]
    let targets = targets.index_select(0, &idx);
    let loss = match m.final_softcap() {
        // Soft-capped logits cannot go through the chunked kernel: made whole, as transformers does.
        Some(_) => logits(m, &h).cross_entropy_loss::<Tensor>(&targets, None, tch::Reduction::Sum, -100, 0.0),
        None => crate::nn::head::cross_entropy_sum(&h, m.lm_head(), &targets, m.loss_chunk())?,
    };
    Ok((loss, n))
}

/// Gradient checkpointing: `loss_sum` in training mode, with the gradient of `loss · scale`
/// already accumulated into every trainable tensor's `.grad()`. The forward keeps only each
/// decoder layer's input [b, t, h]; backward recomputes one layer at a time with the dropout
/// masks of its first pass and pushes the upstream gradient through it. Returns the summed
/// loss and the labelled count.
pub fn loss_sum_backward_checkpointed<M: CausalLm>(m: &M, ids: &Tensor, labels: &Tensor, scale: f64) -> Result<(f64, i64)> {
    let positions = train_positions(m, ids);
    let ctx = m.context(&positions, None, 0);
    let device = m.device();
    let rng = |what| crate::ffi::rng_state(device).with_context(|| format!("gradient checkpointing: {what}"));
    let n_layers = m.n_layers();
    // 1. Forward without a graph, keeping each layer's input and the RNG state it started from.
    let mut inputs = Vec::with_capacity(n_layers);
    let mut states = Vec::with_capacity(n_layers);
    let mut x = tch::no_grad(|| m.embed(ids)); // [b, t, h]
    for i in 0..n_layers {
        states.push(rng("saving the RNG")?);
        let next = tch::no_grad(|| m.layer(i, &x, &ctx, None, true));
        inputs.push(x);
        x = next;
    }
    let after_forward = rng("saving the RNG")?;
    // 2. The head, with a graph from the last layer's output.
    let last = x.detach().set_requires_grad(true);
    let (loss, n) = head_loss(m, &m.final_norm(&last), labels)?;
    let loss_value = loss.double_value(&[]);
    (loss * scale).backward();
    let mut grad = last.grad(); // [b, t, h]
    // 3. The layers in reverse, one recomputed graph alive at a time.
    for i in (0..n_layers).rev() {
        crate::ffi::set_rng_state(device, &states[i])?;
        let input = inputs[i].detach().set_requires_grad(true);
        let out = m.layer(i, &input, &ctx, None, true);
        crate::ffi::backward_with_grad(&[&out], &[&grad])?;
        grad = input.grad();
        inputs[i] = Tensor::new();
    }
    // 4. The embedding, when it trains (full fine-tuning).
    if m.embed_trains() {
        let emb = m.embed(ids);
        crate::ffi::backward_with_grad(&[&emb], &[&grad])?;
    }
    // Later draws continue as if the layers had run once.
    crate::ffi::set_rng_state(device, &after_forward)?;
    Ok((loss_value, n))
}

/// Logits of the last position of each row, for generation. ids: [b, t] → [b, V]
pub fn step<M: CausalLm>(m: &M, ids: &Tensor, positions: &Tensor, mask2d: Option<&Tensor>, cache: &mut KvCache) -> Tensor {
    let hidden = hidden(m, ids, positions, mask2d, Some(cache), false);
    let t = hidden.size()[1];
    logits(m, &hidden.i((.., t - 1, ..)))
}
