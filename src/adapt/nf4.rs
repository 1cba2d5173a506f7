//! NF4 storage (bitsandbytes layout). PLACEHOLDER: the full quantizer lands from branch nf4.
use tch::{Kind, Tensor};

/// One NF4-quantized weight, as bitsandbytes stores it.
pub struct Nf4Tensor {
    /// uint8 [ceil(n/2), 1]
    pub packed: Tensor,
    pub absmax: Absmax,
    /// The original shape, e.g. [out, in].
    pub shape: Vec<i64>,
    /// The original dtype (dequantize returns this).
    pub dtype: Kind,
    pub blocksize: i64,
}

pub enum Absmax {
    /// f32 [blocks]
    Plain(Tensor),
    Nested { quantized: Tensor, nested_absmax: Tensor, nested_code: Tensor, offset: f32, nested_blocksize: i64 },
}

impl Nf4Tensor {
    /// The state as csrc/nf4.cpp reads it; a 1-D weight counts as one row.
    pub fn parts(&self) -> crate::ffi::Nf4Parts<'_> {
        let (out_features, in_features) = match self.shape.as_slice() {
            [o, i] => (*o, *i),
            s => (1, s.iter().product()),
        };
        let (absmax, nested) = match &self.absmax {
            Absmax::Plain(a) => (a, None),
            Absmax::Nested { quantized, nested_absmax, nested_code, offset, nested_blocksize } => (quantized, Some((nested_absmax, nested_code, *offset as f64, *nested_blocksize))),
        };
        crate::ffi::Nf4Parts { packed: &self.packed, absmax, nested, blocksize: self.blocksize, out_features, in_features, dtype: self.dtype }
    }
}

/// x: [.., in] → [.., out], through the 4-bit autograd function of csrc/nf4.cpp.
pub fn linear(x: &Tensor, q: &Nf4Tensor) -> Tensor {
    crate::ffi::nf4_linear(x, &q.parts()).unwrap_or_else(|e| panic!("{e:#}"))
}

/// Placeholder until branch nf4 lands.
pub fn dequantize(q: &Nf4Tensor) -> Tensor {
    crate::ffi::nf4_dequantize(&q.parts()).unwrap_or_else(|e| panic!("{e:#}")).view(q.shape.as_slice())
}

/// PLACEHOLDER until branch nf4 lands.
pub fn quantize(_w: &Tensor, _blocksize: i64, _double_quant: bool) -> anyhow::Result<Nf4Tensor> {
    anyhow::bail!("placeholder")
}

/// PLACEHOLDER until branch nf4 lands.
pub fn from_checkpoint_tensors(_name: &str, _w: &mut crate::model::weights::Weights) -> anyhow::Result<Option<Nf4Tensor>> {
    anyhow::bail!("placeholder")
}

/// PLACEHOLDER until branch nf4 lands.
pub fn nf4_code(device: tch::Device) -> Tensor {
    Tensor::from_slice(&[-1.0f32, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453, -0.28444138169288635, -0.18477343022823334, -0.09105003625154495, 0.0, 0.07958029955625534, 0.16093020141124725, 0.24611230194568634, 0.33791524171829224, 0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0]).to_device(device)
}

impl Nf4Tensor {
    /// PLACEHOLDER until branch nf4 lands.
    pub fn to_device(&self, d: tch::Device) -> Nf4Tensor {
        let absmax = match &self.absmax {
            Absmax::Plain(a) => Absmax::Plain(a.to_device(d)),
            Absmax::Nested { quantized, nested_absmax, nested_code, offset, nested_blocksize } => Absmax::Nested { quantized: quantized.to_device(d), nested_absmax: nested_absmax.to_device(d), nested_code: nested_code.to_device(d), offset: *offset, nested_blocksize: *nested_blocksize },
        };
        Nf4Tensor { packed: self.packed.to_device(d), absmax, shape: self.shape.clone(), dtype: self.dtype, blocksize: self.blocksize }
    }
}
