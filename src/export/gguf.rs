//! The GGUF v3 container, as llama.cpp's gguf-py `GGUFWriter` lays it out: little-endian header,
//! key-values in insertion order, tensor infos, then each tensor's bytes at a 32-byte aligned
//! offset. Tensors are written one at a time, so a 70B export holds one tensor in memory.
use std::io::{Seek, Write};

use anyhow::{bail, Context, Result};

const MAGIC: u32 = 0x4655_4747; // "GGUF"
const VERSION: u32 = 3;
pub const ALIGNMENT: u64 = 32;

/// A metadata value with its GGUF type (gguf-py's GGUFValueType numbering).
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    U32(u32),
    I32(i32),
    F32(f32),
    Bool(bool),
    Str(String),
    StrArray(Vec<String>),
    I32Array(Vec<i32>),
}

impl Value {
    fn type_id(&self) -> u32 {
        match self {
            Value::U32(_) => 4,
            Value::I32(_) => 5,
            Value::F32(_) => 6,
            Value::Bool(_) => 7,
            Value::Str(_) => 8,
            Value::StrArray(_) | Value::I32Array(_) => 9,
        }
    }
}

/// ggml tensor types steptune writes (ggml.h's numbering).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GgmlType {
    F32,
    F16,
    Q8_0,
    Bf16,
}

impl GgmlType {
    pub fn id(self) -> u32 {
        match self {
            GgmlType::F32 => 0,
            GgmlType::F16 => 1,
            GgmlType::Q8_0 => 8,
            GgmlType::Bf16 => 30,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            GgmlType::F32 => "F32",
            GgmlType::F16 => "F16",
            GgmlType::Q8_0 => "Q8_0",
            GgmlType::Bf16 => "BF16",
        }
    }
    /// Bytes for `n` values (Q8_0: blocks of 32 values in 34 bytes).
    pub fn bytes(self, n: u64) -> u64 {
        match self {
            GgmlType::F32 => 4 * n,
            GgmlType::F16 | GgmlType::Bf16 => 2 * n,
            GgmlType::Q8_0 => n / 32 * 34,
        }
    }
}

/// One tensor's entry: its GGUF name, PyTorch-order shape (outermost first) and type.
#[derive(Clone, Debug)]
pub struct TensorInfo {
    pub name: String,
    pub shape: Vec<u64>,
    pub ty: GgmlType,
}

impl TensorInfo {
    pub fn numel(&self) -> u64 {
        self.shape.iter().product()
    }
    pub fn nbytes(&self) -> u64 {
        self.ty.bytes(self.numel())
    }
}

fn pad(n: u64) -> u64 {
    (ALIGNMENT - n % ALIGNMENT) % ALIGNMENT
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// The bytes of a value as GGUF stores it after its type tag.
pub fn value_bytes(v: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    match v {
        Value::U32(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::I32(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::F32(x) => out.extend_from_slice(&x.to_le_bytes()),
        Value::Bool(x) => out.push(*x as u8),
        Value::Str(s) => put_str(&mut out, s),
        Value::StrArray(a) => {
            out.extend_from_slice(&8u32.to_le_bytes());
            out.extend_from_slice(&(a.len() as u64).to_le_bytes());
            for s in a {
                put_str(&mut out, s);
            }
        }
        Value::I32Array(a) => {
            out.extend_from_slice(&5u32.to_le_bytes());
            out.extend_from_slice(&(a.len() as u64).to_le_bytes());
            for x in a {
                out.extend_from_slice(&x.to_le_bytes());
            }
        }
    }
    out
}

/// Writes the header, the key-values and the tensor infos; then `write_tensor` takes each
/// tensor's bytes in the order of `tensors`.
pub struct GgufWriter<W: Write + Seek> {
    out: W,
    tensors: Vec<TensorInfo>,
    next: usize,
}

impl<W: Write + Seek> GgufWriter<W> {
    pub fn begin(mut out: W, kv: &[(String, Value)], tensors: Vec<TensorInfo>) -> Result<Self> {
        let mut seen = std::collections::HashSet::new();
        for (k, _) in kv {
            if !seen.insert(k.as_str()) {
                bail!("GGUF key {k} written twice");
            }
        }
        let mut head = Vec::new();
        head.extend_from_slice(&MAGIC.to_le_bytes());
        head.extend_from_slice(&VERSION.to_le_bytes());
        head.extend_from_slice(&(tensors.len() as u64).to_le_bytes());
        head.extend_from_slice(&(kv.len() as u64).to_le_bytes());
        for (k, v) in kv {
            put_str(&mut head, k);
            head.extend_from_slice(&v.type_id().to_le_bytes());
            head.extend_from_slice(&value_bytes(v));
        }
        let mut offset = 0u64;
        for t in &tensors {
            put_str(&mut head, &t.name);
            head.extend_from_slice(&(t.shape.len() as u32).to_le_bytes());
            // ggml lists dims innermost first.
            for d in t.shape.iter().rev() {
                head.extend_from_slice(&d.to_le_bytes());
            }
            head.extend_from_slice(&t.ty.id().to_le_bytes());
            head.extend_from_slice(&offset.to_le_bytes());
            offset += t.nbytes() + pad(t.nbytes());
        }
        head.resize(head.len() + pad(head.len() as u64) as usize, 0);
        out.write_all(&head).context("writing the GGUF header")?;
        Ok(Self { out, tensors, next: 0 })
    }

    /// The bytes of the next tensor, exactly `nbytes()` long.
    pub fn write_tensor(&mut self, bytes: &[u8]) -> Result<()> {
        let Some(t) = self.tensors.get(self.next) else { bail!("more tensors written than announced") };
        if bytes.len() as u64 != t.nbytes() {
            bail!("tensor {}: {} bytes, expected {} for {:?} {}", t.name, bytes.len(), t.nbytes(), t.shape, t.ty.name());
        }
        self.out.write_all(bytes).with_context(|| format!("writing tensor {}", t.name))?;
        self.out.write_all(&vec![0u8; pad(t.nbytes()) as usize])?;
        self.next += 1;
        Ok(())
    }

    pub fn finish(mut self) -> Result<W> {
        if self.next != self.tensors.len() {
            bail!("{} of {} tensors written", self.next, self.tensors.len());
        }
        self.out.flush()?;
        Ok(self.out)
    }
}

/// float32 → bfloat16 as ggml_compute_fp32_to_bf16 (and gguf-py): NaN made quiet, else round to
/// nearest even.
pub fn bf16_bits(x: f32) -> u16 {
    let n = x.to_bits();
    if n & 0x7fff_ffff > 0x7f80_0000 {
        return (((n & 0xffff_0000) | (64 << 16)) >> 16) as u16;
    }
    ((n as u64 + (0x7fff + ((n >> 16) & 1)) as u64) >> 16) as u16
}

/// Values (row-major, float32) in `ty`'s bytes, bit for bit as gguf-py's quants.quantize.
pub fn encode(values: &[f32], ty: GgmlType) -> Vec<u8> {
    let mut out = Vec::with_capacity(ty.bytes(values.len() as u64) as usize);
    match ty {
        GgmlType::F32 => values.iter().for_each(|v| out.extend_from_slice(&v.to_le_bytes())),
        GgmlType::F16 => values.iter().for_each(|v| out.extend_from_slice(&half::f16::from_f32(*v).to_bits().to_le_bytes())),
        GgmlType::Bf16 => values.iter().for_each(|v| out.extend_from_slice(&bf16_bits(*v).to_le_bytes())),
        GgmlType::Q8_0 => {
            for block in values.chunks_exact(32) {
                // d = amax / 127; id = 1 / d (0 for an all-zero block); q = round half away.
                let amax = block.iter().fold(0f32, |m, v| m.max(v.abs()));
                let d = amax / 127.0;
                let id = if d == 0.0 { 0.0 } else { 1.0 / d };
                out.extend_from_slice(&half::f16::from_f32(d).to_bits().to_le_bytes());
                out.extend(block.iter().map(|v| (v * id).round() as i8 as u8));
            }
        }
    }
    out
}
