//! LoRA, built by hand: y = base(x) + dropout(x) Aᵀ Bᵀ · (alpha / r), as peft computes it.
//! A starts kaiming-uniform (a = √5), B at zero, so training starts from the base model exactly.
use tch::{Kind, Tensor};

use super::nf4::{self, Nf4Tensor};

/// The low-rank branch of one projection.
pub struct LoraBranch {
    /// [r, in]
    pub a: Tensor,
    /// [out, r]
    pub b: Tensor,
    pub scaling: f64,
    pub dropout: f64,
}

impl LoraBranch {
    /// peft's initialisation: A ~ kaiming_uniform(a=√5) = U(-1/√in, 1/√in), B = 0.
    pub fn new(in_features: i64, out_features: i64, r: i64, alpha: f64, dropout: f64, kind: Kind, device: tch::Device) -> LoraBranch {
        let bound = 1.0 / (in_features as f64).sqrt();
        let a = Tensor::empty([r, in_features], (Kind::Float, device)).uniform_(-bound, bound).to_kind(kind).set_requires_grad(true);
        let b = Tensor::zeros([out_features, r], (kind, device)).set_requires_grad(true);
        LoraBranch { a, b, scaling: alpha / r as f64, dropout }
    }

    /// x: [.., in] → [.., out]
    pub fn forward(&self, x: &Tensor, train: bool) -> Tensor {
        let x = if train && self.dropout > 0.0 { x.dropout(self.dropout, true) } else { x.shallow_clone() };
        x.matmul(&self.a.tr()).matmul(&self.b.tr()) * self.scaling
    }

    /// ΔW = B A · scaling, [out, in]: what merging adds to the base weight.
    pub fn delta(&self) -> Tensor {
        self.b.matmul(&self.a) * self.scaling
    }
}

/// The frozen (or, in full fine-tuning, trained) weight of a projection.
pub enum Base {
    /// [out, in] in the run's dtype.
    Dense(Tensor),
    /// QLoRA: 4-bit NF4, dequantized on the fly by csrc/nf4.cpp; the product runs in `compute`
    /// (bnb_4bit_compute_dtype) and returns in the input's dtype, as bitsandbytes' Linear4bit does.
    Nf4 { weight: Nf4Tensor, compute: Kind },
}

/// A linear projection as checkpoints store it (`weight` [out, in], optional `bias`), with an
/// optional LoRA branch beside it.
pub struct Linear {
    pub base: Base,
    pub bias: Option<Tensor>,
    pub lora: Option<LoraBranch>,
}

impl Linear {
    pub fn new(weight: Tensor, bias: Option<Tensor>) -> Linear {
        Linear { base: Base::Dense(weight), bias, lora: None }
    }

    pub fn quantized(weight: Nf4Tensor, compute: Kind, bias: Option<Tensor>) -> Linear {
        Linear { base: Base::Nf4 { weight, compute }, bias, lora: None }
    }

    /// x: [.., in] → [.., out]
    pub fn forward(&self, x: &Tensor, train: bool) -> Tensor {
        let y = match &self.base {
            Base::Dense(w) => x.linear(w, self.bias.as_ref()),
            Base::Nf4 { weight, compute } => {
                let y = nf4::linear(&x.to_kind(*compute), weight);
                let y = match &self.bias {
                    Some(b) => y + b.to_kind(*compute),
                    None => y,
                };
                y.to_kind(x.kind())
            }
        };
        match &self.lora {
            Some(l) => y + l.forward(x, train),
            None => y,
        }
    }

    /// The dense weight; None when it is stored in 4 bits.
    pub fn dense_weight(&self) -> Option<&Tensor> {
        match &self.base {
            Base::Dense(w) => Some(w),
            Base::Nf4 { .. } => None,
        }
    }

    /// The weight as a dense [out, in] tensor (dequantized when stored in 4 bits), for export.
    pub fn weight(&self) -> Tensor {
        match &self.base {
            Base::Dense(w) => w.shallow_clone(),
            Base::Nf4 { weight, .. } => nf4::dequantize(weight),
        }
    }

    fn shape(&self) -> Vec<i64> {
        match &self.base {
            Base::Dense(w) => w.size(),
            Base::Nf4 { weight, .. } => weight.shape.clone(),
        }
    }

    pub fn in_features(&self) -> i64 {
        self.shape()[1]
    }

    pub fn out_features(&self) -> i64 {
        self.shape()[0]
    }
}
