//! AdamW with decoupled weight decay, written out so its state can be saved and a resumed run
//! continues exactly (tch's optimizer cannot save its state).
//!
//! Each parameter keeps an fp32 master copy when the model computes in bf16/fp16, so small updates
//! are not lost to rounding; an fp32 parameter is its own master (no second copy). Moments are
//! fp32 too.
use anyhow::{Context, Result};
use tch::{Kind, Tensor};

use crate::nn::weights::Weights;

pub struct Param {
    pub name: String,
    /// The tensor the model computes with (requires grad).
    pub tensor: Tensor,
    /// fp32 weights the optimizer updates: `tensor` itself (same storage) when it is fp32, else a
    /// copy written back to `tensor` after each step.
    master: Tensor,
    m: Tensor,
    v: Tensor,
    pub decay: bool,
}

impl Param {
    fn is_own_master(&self) -> bool {
        self.tensor.kind() == Kind::Float
    }

    /// The updated master into the tensor the model computes with (nothing to do when it is its
    /// own master).
    fn write_back(&mut self) {
        if !self.is_own_master() {
            let mut t = self.tensor.shallow_clone();
            let _ = t.copy_(&self.master.to_kind(self.tensor.kind()));
        }
    }
}

pub struct AdamW {
    pub params: Vec<Param>,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
    /// Optimizer steps taken.
    pub step: i64,
}

/// Norms and biases are not decayed: decay pulls a norm's scale toward 0, which is not the
/// regulariser anyone wants.
pub fn decays(name: &str) -> bool {
    !(name.ends_with(".bias") || name.contains("norm.") || name.contains("layernorm") || name.contains("layer_norm"))
}

impl AdamW {
    pub fn new(named: Vec<(String, Tensor)>, beta1: f64, beta2: f64, eps: f64, weight_decay: f64) -> AdamW {
        let params = named
            .into_iter()
            .map(|(name, tensor)| {
                let master = if tensor.kind() == Kind::Float { tensor.detach() } else { tensor.detach().to_kind(Kind::Float).copy() };
                let m = master.zeros_like();
                let v = master.zeros_like();
                let decay = decays(&name);
                Param { name, tensor, master, m, v, decay }
            })
            .collect();
        AdamW { params, beta1, beta2, eps, weight_decay, step: 0 }
    }

    /// Drops every gradient, as torch's `zero_grad(set_to_none=True)` (transformers' default).
    pub fn zero_grad(&mut self) {
        for p in &mut self.params {
            crate::ffi::clear_grad(&p.tensor).expect("clearing a gradient of a leaf tensor cannot fail");
        }
    }

    /// One update with learning rate `lr`, as torch.optim.AdamW computes it.
    pub fn step(&mut self, lr: f64) -> Result<()> {
        let _guard = tch::no_grad_guard();
        self.step += 1;
        for p in &mut self.params {
            let g = p.tensor.grad();
            if !g.defined() {
                continue;
            }
            let g = g.to_kind(Kind::Float);
            let decay = if p.decay { 1.0 - lr * self.weight_decay } else { 1.0 };
            crate::ffi::adamw_update(&p.master, &p.m, &p.v, &g, lr, (self.beta1, self.beta2), self.eps, decay, self.step)
                .with_context(|| format!("updating {}", p.name))?;
            p.write_back();
        }
        Ok(())
    }

    /// State to checkpoint: moments and masters by parameter name, plus the step.
    pub fn state(&self) -> Vec<(String, Tensor)> {
        let mut out = Vec::with_capacity(self.params.len() * 3 + 1);
        for p in &self.params {
            out.push((format!("{}.exp_avg", p.name), p.m.shallow_clone()));
            out.push((format!("{}.exp_avg_sq", p.name), p.v.shallow_clone()));
            out.push((format!("{}.master", p.name), p.master.shallow_clone()));
        }
        out.push(("step".into(), Tensor::from(self.step)));
        out
    }

    pub fn load_state(&mut self, mut w: Weights) -> Result<()> {
        let _guard = tch::no_grad_guard();
        for p in &mut self.params {
            let mut get = |suffix: &str| w.remove(&format!("{}.{suffix}", p.name)).with_context(|| format!("optimizer state lacks {}.{suffix}", p.name));
            p.m = get("exp_avg")?.to_device(p.tensor.device());
            p.v = get("exp_avg_sq")?.to_device(p.tensor.device());
            let master = get("master")?.to_device(p.tensor.device());
            if p.is_own_master() {
                let mut t = p.tensor.shallow_clone();
                let _ = t.copy_(&master);
            } else {
                p.master = master;
                p.write_back();
            }
        }
        self.step = w.remove("step").context("optimizer state lacks step")?.int64_value(&[]);
        Ok(())
    }
}

/// Scales gradients so their global L2 norm is at most `max_norm`; returns the norm before
/// clipping (as torch.nn.utils.clip_grad_norm_ does, with its 1e-6 guard).
pub fn clip_grad_norm(params: &[Param], max_norm: f64) -> f64 {
    let _guard = tch::no_grad_guard();
    let grads: Vec<Tensor> = params.iter().map(|p| p.tensor.grad()).filter(|g| g.defined()).collect();
    if grads.is_empty() {
        return 0.0;
    }
    let norms: Vec<Tensor> = grads.iter().map(|g| g.to_kind(Kind::Float).norm()).collect();
    let total = Tensor::stack(&norms, 0).norm().double_value(&[]);
    if max_norm > 0.0 {
        let coef = max_norm / (total + 1e-6);
        if coef < 1.0 {
            for g in &grads {
                let mut g = g.shallow_clone();
                let _ = g.g_mul_scalar_(coef);
            }
        }
    }
    total
}
