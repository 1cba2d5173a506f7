//! LoRA, built by hand: y = base(x) + dropout(x) Aᵀ Bᵀ · (alpha / r), as peft computes it.
//! A starts kaiming-uniform (a = √5), B at zero, so training starts from the base model exactly.
use tch::{Kind, Tensor};

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

/// A linear projection as checkpoints store it (`weight` [out, in], optional `bias`), with an
/// optional LoRA branch beside it.
pub struct Linear {
    pub weight: Tensor,
    pub bias: Option<Tensor>,
    pub lora: Option<LoraBranch>,
}

impl Linear {
    pub fn new(weight: Tensor, bias: Option<Tensor>) -> Linear {
        Linear { weight, bias, lora: None }
    }

    /// x: [.., in] → [.., out]
    pub fn forward(&self, x: &Tensor, train: bool) -> Tensor {
        let y = x.linear(&self.weight, self.bias.as_ref());
        match &self.lora {
            Some(l) => y + l.forward(x, train),
            None => y,
        }
    }

    pub fn in_features(&self) -> i64 {
        self.weight.size()[1]
    }

    pub fn out_features(&self) -> i64 {
        self.weight.size()[0]
    }
}
