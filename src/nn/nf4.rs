//! Blockwise NF4 quantization (QLoRA's 4-bit weights), bit-exact with bitsandbytes 0.50
//! (`quantize_4bit(w, blocksize=64, quant_type="nf4", compress_statistics=…)` and
//! `dequantize_4bit` on CPU), and transformers' bitsandbytes 4-bit checkpoint layout.
//!
//! Everything is tensor ops, so the same code runs on CUDA tensors. Bit-exactness on CPU rests
//! on doing the same float operations in the same order as bitsandbytes:
//! - full blocks are scaled by *multiplying* with `1/absmax` (clamped to 1e-38), the partial
//!   last block by *dividing* by its absmax (bnb's default `quantize_4bit` kernel does both);
//! - the code index is `bucketize(scaled, midpoints, right=False)`: a value exactly on a
//!   midpoint takes the lower code;
//! - the nested (double) quantization emulates bnb's native CPU 8-bit kernel, which is not
//!   round-to-nearest (a 65536-entry lookup table over [-1, 1]; see `quantize_blockwise`);
//! - dequantized values are `code * absmax` in float32, then rounded once to the output dtype.
use std::collections::HashMap;

use anyhow::{bail, ensure, Context, Result};
use tch::{Device, Kind, Tensor};

use super::weights::Weights;

/// The 16 NF4 code values (bitsandbytes' `get_4bit_type("nf4")`), sorted.
pub const NF4_CODE: [f32; 16] = [
    -1.0,
    -0.696_192_8,
    -0.525_073_05,
    -0.394_917_5,
    -0.284_441_38,
    -0.184_773_43,
    -0.091_050_036,
    0.0,
    0.079_580_3,
    0.160_930_2,
    0.246_112_3,
    0.337_915_24,
    0.440_709_83,
    0.562_617,
    0.722_956_84,
    1.0,
];

/// bitsandbytes' only nested block size for double quantization.
pub const NESTED_BLOCKSIZE: i64 = 256;

/// One NF4-quantized weight, as bitsandbytes stores it.
#[derive(Debug)]
pub struct Nf4Tensor {
    /// uint8 [ceil(n/2), 1]: two codes per byte, the even (first) element in the high nibble.
    pub packed: Tensor,
    pub absmax: Absmax,
    /// The original shape, e.g. [out, in].
    pub shape: Vec<i64>,
    /// The original dtype (dequantize returns this).
    pub dtype: Kind,
    /// Values per absmax block (64).
    pub blocksize: i64,
}

/// The per-block scales.
#[derive(Debug)]
pub enum Absmax {
    /// f32 [blocks]
    Plain(Tensor),
    /// Double quantization: `absmax = nested_code[quantized] * nested_absmax[b / 256] + offset`.
    Nested {
        /// uint8 [blocks]
        quantized: Tensor,
        /// f32 [ceil(blocks/256)]
        nested_absmax: Tensor,
        /// f32 [256]: bitsandbytes' signed dynamic map.
        nested_code: Tensor,
        /// mean of the float32 absmax.
        offset: f32,
        /// 256
        nested_blocksize: i64,
    },
}

/// The NF4 code table, f32 [16].
pub fn nf4_code(device: Device) -> Tensor {
    Tensor::from_slice(&NF4_CODE).to_device(device)
}

/// bitsandbytes' `create_dynamic_map(signed=True)`, f32 [256] on `device`: for exponents
/// i = 0..7, the midpoints of `linspace(0.1, 1, 2^i + 1)` (float32) times 10^(i-6), both signs,
/// plus 0 and 1, sorted. Built with the same float32 ops on CPU (libtorch's linspace), so it
/// equals bnb's table bit for bit.
pub fn dynamic_map(device: Device) -> Tensor {
    // 10 ** (i - 6) as Python computes it (correctly rounded doubles), then used as f32 scalars.
    const POW10: [f64; 7] = [1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0];
    let opts = (Kind::Float, Device::Cpu);
    let mut parts = Vec::new();
    for (i, p) in POW10.iter().enumerate() {
        let items = (1i64 << i) + 1;
        let b = Tensor::linspace(0.1, 1.0, items, opts);
        let means = (b.narrow(0, 0, items - 1) + b.narrow(0, 1, items - 1)) / 2.0;
        parts.push(&means * *p);
        parts.push(&means * -*p);
    }
    parts.push(Tensor::from_slice(&[0f32, 1.0]));
    let all = Tensor::cat(&parts, 0);
    let (sorted, _) = all.sort(0, false);
    sorted.to_device(device)
}

fn check_float(kind: Kind, what: &str) -> Result<()> {
    if !matches!(kind, Kind::Float | Kind::BFloat16 | Kind::Half) {
        bail!("NF4 quantization needs a float32, bfloat16 or float16 tensor; {what} is {kind:?}");
    }
    Ok(())
}

fn blocks_of(n: i64, bs: i64) -> i64 {
    (n + bs - 1) / bs
}

/// Pads a 1-D tensor with zeros to a multiple of `bs` and views it as [blocks, bs].
fn as_blocks(t: &Tensor, bs: i64) -> Tensor {
    let n = t.size()[0];
    let pad = blocks_of(n, bs) * bs - n;
    let t = if pad > 0 { t.constant_pad_nd([0, pad]) } else { t.shallow_clone() };
    t.view([-1, bs])
}

/// Quantizes a float weight to NF4 in blocks of `blocksize` over its row-major flattening.
/// With `double_quant`, the f32 absmax are quantized again (8-bit, blocks of 256) as bnb's
/// `compress_statistics=True` does.
pub fn quantize(w: &Tensor, blocksize: i64, double_quant: bool) -> Result<Nf4Tensor> {
    check_float(w.kind(), "the weight")?;
    ensure!(
        [32, 64, 128, 256, 512, 1024, 2048, 4096].contains(&blocksize),
        "NF4 blocksize must be one of 32, 64, …, 4096 (bitsandbytes' choices), got {blocksize}"
    );
    let n = w.numel() as i64;
    ensure!(n > 0, "cannot NF4-quantize an empty tensor");
    let _guard = tch::no_grad_guard();
    let device = w.device();
    let flat = w.detach().reshape([-1]).to_kind(Kind::Float); // [n] f32 (exact from bf16/f16)
    let rem = n % blocksize;
    let full = n - rem;
    let mut absmax = Vec::new();
    let mut scaled = Vec::new();
    if full > 0 {
        let a = flat.narrow(0, 0, full).view([full / blocksize, blocksize]);
        let am = a.abs().amax([1i64].as_slice(), false); // [full/bs]; 0 stays 0 here
        // bnb: A * (1.0 / absmax.clamp(min=1e-38)): multiply by the reciprocal.
        let inv = am.clamp_min(1e-38).reciprocal().unsqueeze(1);
        scaled.push((a * inv).clamp(-1.0, 1.0).reshape([-1]));
        absmax.push(am);
    }
    if rem > 0 {
        let t = flat.narrow(0, full, rem);
        let am = t.abs().amax([0i64].as_slice(), false).clamp_min(1e-38); // [] clamped, as bnb stores it
        scaled.push((t / &am).clamp(-1.0, 1.0)); // bnb divides on the tail
        absmax.push(am.unsqueeze(0));
    }
    let absmax = Tensor::cat(&absmax, 0); // [blocks] f32
    let mut scaled = Tensor::cat(&scaled, 0);
    if n % 2 == 1 {
        scaled = scaled.constant_pad_nd([0, 1]); // the last low nibble codes a padding 0.0 (index 7)
    }
    let code = nf4_code(device);
    let mids = (code.narrow(0, 0, 15) + code.narrow(0, 1, 15)) / 2.0; // [15]
    let q = scaled.bucketize(&mids, false, false); // int64 [n or n+1]; ties to the lower code
    let hi = q.slice(0, 0, None, 2);
    let lo = q.slice(0, 1, None, 2);
    let packed = (hi * 16 + lo).to_kind(Kind::Uint8).unsqueeze(1); // [ceil(n/2), 1]
    let absmax = if double_quant { nested_quantize(&absmax) } else { Absmax::Plain(absmax) };
    Ok(Nf4Tensor { packed, absmax, shape: w.size(), dtype: w.kind(), blocksize })
}

/// bnb's `quantize_blockwise(absmax - mean, blocksize=256)` with the signed dynamic map.
fn nested_quantize(absmax: &Tensor) -> Absmax {
    let nb = absmax.size()[0];
    let offset_t = absmax.mean(Kind::Float); // [] f32, libtorch's reduction like bnb's `.mean()`
    let offset = offset_t.double_value(&[]) as f32;
    let centered = absmax - &offset_t; // [nb]
    let (quantized, nested_absmax) = quantize_blockwise(&centered, NESTED_BLOCKSIZE);
    debug_assert_eq!(quantized.size(), [nb]);
    Absmax::Nested { quantized, nested_absmax, nested_code: dynamic_map(absmax.device()), offset, nested_blocksize: NESTED_BLOCKSIZE }
}

/// Entries of bnb's quantization lookup table: [-1, 1] cut into 65536 points.
const LUT_SIZE: usize = 65536;

/// bnb's `build_quantize_lut` for the signed dynamic map: entry i is the number of midpoints
/// `0.5 * (code[j] + code[j+1])` strictly below `-1 + 2i / 65535`, all in float32 and in bnb's
/// order of operations (plain Rust f32 arithmetic is the same IEEE single rounding per op).
/// Built once: the map is a constant.
fn dynamic_map_lut() -> &'static [u8] {
    static LUT: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    LUT.get_or_init(|| {
        let code = Vec::<f32>::try_from(dynamic_map(Device::Cpu)).expect("the dynamic map is f32 [256]");
        let mids: Vec<f32> = code.windows(2).map(|w| (w[0] + w[1]) * 0.5).collect();
        let mut j = 0usize;
        (0..LUT_SIZE)
            .map(|i| {
                let val = (2.0f32 * i as f32) / (LUT_SIZE - 1) as f32 - 1.0f32;
                while j < mids.len() && mids[j] < val {
                    j += 1;
                }
                j as u8
            })
            .collect()
    })
}

/// bitsandbytes' `functional.quantize_blockwise(a, code=create_dynamic_map(signed=True),
/// blocksize)` for a float32 tensor, as its native CPU kernel (`cquantize_blockwise_cpu_fp32`,
/// csrc/cpu_ops.cpp `quantize_cpu_impl`, bnb 0.50.x on x86-64) computes it: returns the uint8
/// codes [n] and the f32 per-block absmax [ceil(n/blocksize)]. This is the nested quantization
/// of double-quantized NF4 (blocksize 256).
///
/// bnb's kernel is *not* round-to-nearest, so the rounding is emulated step by step rather than
/// done as a nearest-code search (which disagrees with bnb on ~0.1% of a uniform grid, and on
/// most values within ~1e-3 of zero: bnb does not even map 0.0 to the zero code):
/// 1. absmax = max |x| over the block (NaN ignored); a block with absmax 0 is all code 0;
/// 2. v = clamp(x * (1/absmax), -1, 1): multiplied by the f32 reciprocal, not divided;
/// 3. j = trunc(fma((v + 1) * 0.5, 65535, 0.5)) in f32 — the compiled kernel contracts the
///    multiply-add into one FMA, emulated exactly here in f64 (the product and sum are exact
///    there) followed by one rounding to f32; a NaN v gives j = 0, as x86's conversion does;
/// 4. code = lut[j] with the 65536-entry table of `dynamic_map_lut`.
///
/// All tensor ops, so it also runs on CUDA tensors.
pub fn quantize_blockwise(a: &Tensor, blocksize: i64) -> (Tensor, Tensor) {
    assert!(blocksize > 0, "quantize_blockwise: blocksize {blocksize}");
    let _guard = tch::no_grad_guard();
    let device = a.device();
    let flat = a.detach().reshape([-1]).to_kind(Kind::Float);
    let n = flat.size()[0];
    if n == 0 {
        return (Tensor::zeros([0], (Kind::Uint8, device)), Tensor::zeros([0], (Kind::Float, device)));
    }
    let blocks = as_blocks(&flat, blocksize); // [nb, bs], zero padded (padding never raises absmax)
    // bnb: absmax = max(0, std::max over fabs(x)); std::max keeps the running value against NaN.
    let mag = blocks.abs();
    let mag = mag.masked_fill(&mag.isnan(), 0.0);
    let absmax = mag.amax([1i64].as_slice(), false); // [nb]
    let inv = absmax.reciprocal().unsqueeze(1); // 1.0f / absmax; inf for an all-zero block
    let v = (&blocks * inv).clamp(-1.0, 1.0);
    let t = (v + 1.0) * 0.5; // f32, a multiple of 2^-25 in [0, 1]
    let j = (t.to_kind(Kind::Double) * 65535.0 + 0.5).to_kind(Kind::Float); // the FMA, rounded once
    let j = j.masked_fill(&j.isnan(), 0.0).floor().to_kind(Kind::Int64); // >= 0: floor is trunc
    let lut = Tensor::from_slice(dynamic_map_lut()).to_device(device);
    let codes = lut.index_select(0, &j.reshape([-1])).view([-1, blocksize]);
    // bnb writes 0 for every value of a block whose absmax is 0 (x * inf would be NaN or inf).
    let codes = codes.masked_fill(&absmax.eq(0.0).unsqueeze(1), 0);
    (codes.reshape([-1]).narrow(0, 0, n), absmax)
}

/// Back to the original shape and dtype: `code[q] * absmax[block]` in f32, rounded once. The
/// arithmetic is csrc/nf4.cpp's, the same that the 4-bit linear runs in forward and backward (on
/// the GPU through csrc/nf4_dequant.cu).
pub fn dequantize(q: &Nf4Tensor) -> Tensor {
    let _guard = tch::no_grad_guard();
    crate::ffi::nf4_dequantize(&q.parts()).unwrap_or_else(|e| panic!("{e:#}")).reshape(q.shape.as_slice())
}

/// x: [.., in] → [.., out], through the 4-bit autograd function of csrc/nf4.cpp: it saves only
/// the packed weight and its state, and dequantizes again in backward.
pub fn linear(x: &Tensor, q: &Nf4Tensor) -> Tensor {
    crate::ffi::nf4_linear(x, &q.parts()).unwrap_or_else(|e| panic!("{e:#}"))
}

impl Nf4Tensor {
    /// The f32 per-block scales [blocks]; for double quantization dequantized like bnb's
    /// `dequantize_blockwise(...) + offset`: `code[q] * nested_absmax` then `+ offset`, in f32.
    pub fn absmax_f32(&self) -> Tensor {
        crate::ffi::nf4_absmax(&self.parts()).unwrap_or_else(|e| panic!("{e:#}"))
    }

    /// The state as csrc/nf4.cpp reads it; a weight of any other rank counts as one row.
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

    /// Bytes this weight takes in memory and in a checkpoint, not counting the code tables that
    /// every weight shares (NF4's 16 values, the nested 256): packed codes, then f32 absmax, or
    /// with double quant uint8 absmax + f32 nested absmax + the f32 offset.
    /// Per parameter: 0.5 + 4/64 = 0.5625, or with double quant 0.5 + 1/64 + 4/(64·256) ≈ 0.51587.
    pub fn storage_bytes(&self) -> i64 {
        let packed = self.packed.numel() as i64;
        packed
            + match &self.absmax {
                Absmax::Plain(a) => 4 * a.numel() as i64,
                Absmax::Nested { quantized, nested_absmax, .. } => quantized.numel() as i64 + 4 * nested_absmax.numel() as i64 + 4,
            }
    }

    /// Elements of the original weight.
    pub fn numel(&self) -> i64 {
        self.shape.iter().product()
    }

    pub fn to_device(&self, d: Device) -> Nf4Tensor {
        let absmax = match &self.absmax {
            Absmax::Plain(a) => Absmax::Plain(a.to_device(d)),
            Absmax::Nested { quantized, nested_absmax, nested_code, offset, nested_blocksize } => Absmax::Nested {
                quantized: quantized.to_device(d),
                nested_absmax: nested_absmax.to_device(d),
                nested_code: nested_code.to_device(d),
                offset: *offset,
                nested_blocksize: *nested_blocksize,
            },
        };
        Nf4Tensor { packed: self.packed.to_device(d), absmax, shape: self.shape.clone(), dtype: self.dtype, blocksize: self.blocksize }
    }
}

/// The suffix of the tensor holding the quant state's JSON, as bitsandbytes packs it.
pub const QUANT_STATE_SUFFIX: &str = "quant_state.bitsandbytes__nf4";

fn dtype_name(k: Kind) -> &'static str {
    match k {
        Kind::BFloat16 => "bfloat16",
        Kind::Half => "float16",
        _ => "float32",
    }
}

fn kind_of_name(s: &str) -> Option<Kind> {
    match s {
        "float32" => Some(Kind::Float),
        "bfloat16" => Some(Kind::BFloat16),
        "float16" => Some(Kind::Half),
        _ => None,
    }
}

/// Formats a float as Python's `repr(float)` does (shortest round-trip digits; scientific with
/// a two-digit signed exponent below 1e-4 or from 1e16), so the JSON bytes match `json.dumps`.
pub fn python_float_repr(x: f64) -> String {
    if x == 0.0 {
        return if x.is_sign_negative() { "-0.0".into() } else { "0.0".into() };
    }
    let sci = format!("{x:e}"); // e.g. "-5.121093988418579e-2", shortest round-trip digits
    let (mant, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let (sign, mant) = mant.strip_prefix('-').map(|m| ("-", m)).unwrap_or(("", mant));
    let digits: String = mant.chars().filter(|c| c.is_ascii_digit()).collect();
    if !(-4..16).contains(&exp) {
        let m = if digits.len() > 1 { format!("{}.{}", &digits[..1], &digits[1..]) } else { digits };
        return format!("{sign}{m}e{}{:02}", if exp < 0 { '-' } else { '+' }, exp.abs());
    }
    let point = exp + 1; // digits before the decimal point
    let body = if point <= 0 {
        format!("0.{}{}", "0".repeat((-point) as usize), digits)
    } else if point as usize >= digits.len() {
        format!("{}{}.0", digits, "0".repeat(point as usize - digits.len()))
    } else {
        format!("{}.{}", &digits[..point as usize], &digits[point as usize..])
    };
    format!("{sign}{body}")
}

/// The quant state's non-tensor items as bnb's `pack_dict_to_tensor` writes them:
/// `json.dumps` of quant_type, blocksize, dtype, shape [, nested_blocksize, nested_dtype,
/// nested_offset] in that order.
pub fn quant_state_json(q: &Nf4Tensor) -> String {
    let shape: Vec<String> = q.shape.iter().map(|s| s.to_string()).collect();
    let mut s = format!("{{\"quant_type\": \"nf4\", \"blocksize\": {}, \"dtype\": \"{}\", \"shape\": [{}]", q.blocksize, dtype_name(q.dtype), shape.join(", "));
    if let Absmax::Nested { offset, nested_blocksize, .. } = &q.absmax {
        s += &format!(", \"nested_blocksize\": {nested_blocksize}, \"nested_dtype\": \"float32\", \"nested_offset\": {}", python_float_repr(*offset as f64));
    }
    s + "}"
}

/// The tensors transformers saves for one 4-bit linear weight `name` (e.g.
/// `model.layers.0.mlp.up_proj.weight`): the packed codes under `name` itself, then
/// `QuantState.as_dict(packed=True)` under `name.`: absmax, quant_map, [nested_absmax,
/// nested_quant_map,] quant_state.bitsandbytes__nf4 (uint8 JSON bytes).
pub fn to_checkpoint_tensors(name: &str, q: &Nf4Tensor) -> Vec<(String, Tensor)> {
    let dev = q.packed.device();
    let mut out = vec![(name.to_string(), q.packed.shallow_clone())];
    match &q.absmax {
        Absmax::Plain(a) => {
            out.push((format!("{name}.absmax"), a.shallow_clone()));
            out.push((format!("{name}.quant_map"), nf4_code(dev)));
        }
        Absmax::Nested { quantized, nested_absmax, nested_code, .. } => {
            out.push((format!("{name}.absmax"), quantized.shallow_clone()));
            out.push((format!("{name}.quant_map"), nf4_code(dev)));
            out.push((format!("{name}.nested_absmax"), nested_absmax.shallow_clone()));
            out.push((format!("{name}.nested_quant_map"), nested_code.shallow_clone()));
        }
    }
    let json = quant_state_json(q);
    out.push((format!("{name}.{QUANT_STATE_SUFFIX}"), Tensor::from_slice(json.as_bytes()).to_device(dev)));
    out
}

fn take(w: &mut Weights, key: &str, name: &str) -> Result<Tensor> {
    w.remove(key).with_context(|| format!("4-bit weight {name}: the checkpoint has its quant state but no tensor {key}"))
}

/// Reads one 4-bit weight `name` back from checkpoint tensors in transformers' bitsandbytes
/// layout, removing the tensors it consumes from `w`. `Ok(None)` when `name` is not quantized
/// (no `name.quant_state.bitsandbytes__nf4`). Float parts are read as f32 whatever kind the
/// loader converted them to.
pub fn from_checkpoint_tensors(name: &str, w: &mut Weights) -> Result<Option<Nf4Tensor>> {
    if w.contains_key(&format!("{name}.quant_state.bitsandbytes__fp4")) {
        bail!("{name} is stored as bitsandbytes FP4; steptune reads NF4 only");
    }
    let state_key = format!("{name}.{QUANT_STATE_SUFFIX}");
    let Some(state) = w.remove(&state_key) else { return Ok(None) };
    ensure!(state.kind() == Kind::Uint8, "{state_key} should be uint8 JSON bytes, is {:?}", state.kind());
    let bytes = Vec::<u8>::try_from(state.to_device(Device::Cpu).reshape([-1])).with_context(|| format!("reading {state_key}"))?;
    let js: serde_json::Value = serde_json::from_slice(&bytes).with_context(|| format!("{state_key} is not JSON"))?;
    let field = |k: &str| js.get(k).with_context(|| format!("{state_key} has no `{k}`"));
    let qt = field("quant_type")?.as_str().unwrap_or("");
    ensure!(qt == "nf4", "{state_key}: quant_type `{qt}` is not nf4");
    let blocksize = field("blocksize")?.as_i64().with_context(|| format!("{state_key}: blocksize is not an integer"))?;
    ensure!(blocksize > 0, "{state_key}: blocksize {blocksize}");
    let dt = field("dtype")?.as_str().unwrap_or("");
    let dtype = kind_of_name(dt).with_context(|| format!("{state_key}: dtype `{dt}` is not float32, bfloat16 or float16"))?;
    let shape: Vec<i64> = field("shape")?
        .as_array()
        .and_then(|a| a.iter().map(|v| v.as_i64()).collect::<Option<Vec<_>>>())
        .with_context(|| format!("{state_key}: shape is not a list of integers"))?;
    let n: i64 = shape.iter().product();
    let blocks = blocks_of(n, blocksize);

    let packed = take(w, name, name)?;
    ensure!(packed.kind() == Kind::Uint8, "{name}: packed 4-bit codes should be uint8, are {:?}", packed.kind());
    ensure!(packed.numel() as i64 == (n + 1) / 2, "{name}: {} packed bytes for shape {shape:?} (expected {})", packed.numel(), (n + 1) / 2);
    let packed = packed.reshape([(n + 1) / 2, 1]);
    let qmap_key = format!("{name}.quant_map");
    let qmap = take(w, &qmap_key, name)?.to_kind(Kind::Float).to_device(Device::Cpu);
    ensure!(
        qmap.size() == [16] && Vec::<f32>::try_from(&qmap)? == NF4_CODE,
        "{qmap_key} is not the NF4 code table"
    );
    let absmax_key = format!("{name}.absmax");
    let absmax = take(w, &absmax_key, name)?;
    ensure!(absmax.size() == [blocks], "{absmax_key}: shape {:?}, expected [{blocks}] for {n} values in blocks of {blocksize}", absmax.size());
    let absmax = if js.get("nested_absmax").is_some() || js.get("nested_offset").is_some() || w.contains_key(&format!("{name}.nested_absmax")) {
        ensure!(absmax.kind() == Kind::Uint8, "{absmax_key}: double-quantized absmax should be uint8, is {:?}", absmax.kind());
        let nbs = field("nested_blocksize")?.as_i64().with_context(|| format!("{state_key}: nested_blocksize is not an integer"))?;
        ensure!(nbs > 0, "{state_key}: nested_blocksize {nbs}");
        let offset = field("nested_offset")?.as_f64().with_context(|| format!("{state_key}: nested_offset is not a number"))? as f32;
        let nd = field("nested_dtype")?.as_str().unwrap_or("");
        ensure!(nd == "float32", "{state_key}: nested_dtype `{nd}` is not float32");
        let na_key = format!("{name}.nested_absmax");
        let nested_absmax = take(w, &na_key, name)?.to_kind(Kind::Float);
        ensure!(nested_absmax.size() == [blocks_of(blocks, nbs)], "{na_key}: shape {:?}, expected [{}]", nested_absmax.size(), blocks_of(blocks, nbs));
        let nc_key = format!("{name}.nested_quant_map");
        let nested_code = take(w, &nc_key, name)?.to_kind(Kind::Float);
        ensure!(nested_code.size() == [256], "{nc_key}: shape {:?}, expected [256]", nested_code.size());
        Absmax::Nested { quantized: absmax, nested_absmax, nested_code, offset, nested_blocksize: nbs }
    } else {
        Absmax::Plain(absmax.to_kind(Kind::Float))
    };
    Ok(Some(Nf4Tensor { packed, absmax, shape, dtype, blocksize }))
}

/// Load-time quantization: every tensor whose name `is_target` is quantized (blocks of 64) and
/// its 16-bit original dropped at once, so peak memory is the quantized model plus one
/// full-precision weight. Returns the quantized weights by name; `w` keeps the rest.
pub fn quantize_weights_in_place(w: &mut Weights, is_target: impl Fn(&str) -> bool, double_quant: bool) -> Result<HashMap<String, Nf4Tensor>> {
    let names: Vec<String> = w.keys().filter(|k| is_target(k)).cloned().collect();
    let mut out = HashMap::with_capacity(names.len());
    for name in names {
        let t = w.remove(&name).expect("name taken from the map");
        let q = quantize(&t, 64, double_quant).with_context(|| format!("quantizing {name}"))?;
        drop(t);
        out.insert(name, q);
    }
    Ok(out)
}
