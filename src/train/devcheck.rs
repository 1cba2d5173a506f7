//! `steptune device-check nf4|logits`: what scripts/gpu-check.sh asks of a device, as one JSON
//! line each (stdout) and a readable summary (stderr). Both run on the CPU too (`--device cpu`),
//! so CI keeps the checks themselves from rotting; the figures that need a GPU are then null.
//!
//! - `nf4`: NF4 dequantization on the device equals the CPU path bit for bit, and the CPU path
//!   equals bitsandbytes (tests/fixtures/nf4) and an independent tensor-op decoding, over float32,
//!   bfloat16 and float16 outputs, blocksize 64, plain and double-quantized absmax, odd sizes;
//!   then the dequantization's bandwidth.
//! - `logits`: the committed tiny Qwen3 and T5 checkpoints (tests/fixtures/models) against
//!   transformers' logits, on the CPU in float32, on the device in float32, and in bfloat16.
use std::path::Path;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use tch::{Device, Kind, Tensor};

use crate::model::{load_decoder, load_t5};
use crate::nn::nf4::{self, Nf4Tensor};
use crate::nn::weights::{self, Weights};

/// The device a check runs on: `cpu`, `cuda` or `cuda:N`; CUDA must be visible.
pub fn device(spec: &str) -> Result<Device> {
    let d = match spec {
        "cpu" => Device::Cpu,
        "cuda" => Device::Cuda(0),
        s if s.starts_with("cuda:") => Device::Cuda(s[5..].parse().with_context(|| format!("bad device {s}"))?),
        s => bail!("--device must be cpu, cuda or cuda:N, not {s}"),
    };
    if let Device::Cuda(i) = d {
        if !tch::Cuda::is_available() || i as i64 >= tch::Cuda::device_count() {
            bail!(
                "--device {spec}: no such CUDA device is visible (torch built with CUDA: {}, devices: {})",
                crate::ffi::torch_has_cuda(),
                tch::Cuda::device_count()
            );
        }
    }
    Ok(d)
}

fn sync(d: Device) {
    if let Device::Cuda(i) = d {
        tch::Cuda::synchronize(i as i64);
    }
}

fn name(d: Device) -> String {
    match d {
        Device::Cuda(i) => format!("cuda:{i}"),
        _ => "cpu".into(),
    }
}

/// Elements whose bits differ (so -0.0 ≠ 0.0 and NaN = NaN when their bits agree); shapes and
/// kinds must agree.
fn bit_mismatches(a: &Tensor, b: &Tensor) -> Result<i64> {
    if a.kind() != b.kind() || a.size() != b.size() {
        bail!("comparing {:?} {:?} with {:?} {:?}", a.kind(), a.size(), b.kind(), b.size());
    }
    let as_int = match a.kind().elt_size_in_bytes() {
        4 => Kind::Int,
        2 => Kind::Int16,
        n => bail!("no integer view for {n}-byte elements"),
    };
    let (a, b) = (a.contiguous().view_dtype(as_int), b.contiguous().view_dtype(as_int));
    Ok(a.ne_tensor(&b).sum(Kind::Int64).int64_value(&[]))
}

/// NF4 decoded with plain tensor ops, independently of csrc/nf4.cpp's table loop: split every
/// byte into its high (even element) and low nibble, look the codes up, multiply by the block's
/// float32 absmax, round once to the stored dtype.
fn reference_dequantize(q: &Nf4Tensor) -> Tensor {
    let n = q.numel();
    let packed = q.packed.reshape([-1]).to_kind(Kind::Int64); // [ceil(n/2)]
    let codes = Tensor::stack(&[packed.floor_divide_scalar(16), packed.remainder(16)], 1).reshape([-1]).narrow(0, 0, n); // [n]
    let values = nf4::nf4_code(q.packed.device()).index_select(0, &codes); // [n] f32
    let scale = q.absmax_f32().repeat_interleave_self_int(q.blocksize, Some(0), None).narrow(0, 0, n); // [n] f32
    (values * scale).to_kind(q.dtype).reshape(q.shape.as_slice())
}

/// One weight checked three ways; returns (vs bitsandbytes, vs the tensor-op decoding, device vs
/// CPU) mismatch counts, each None where not applicable.
fn check_one(q: &Nf4Tensor, bnb: Option<&Tensor>, device: Device) -> Result<(Option<i64>, i64, Option<i64>)> {
    let cpu = nf4::dequantize(q);
    let vs_bnb = bnb.map(|b| bit_mismatches(&cpu, b)).transpose()?;
    let vs_ref = bit_mismatches(&cpu, &reference_dequantize(q))?;
    let vs_dev = match device {
        Device::Cpu => None,
        d => Some(bit_mismatches(&nf4::dequantize(&q.to_device(d)).to_device(Device::Cpu), &cpu)?),
    };
    Ok((vs_bnb, vs_ref, vs_dev))
}

pub struct Nf4Options {
    pub device: Device,
    /// tests/fixtures/nf4: bitsandbytes' quantized cases and their dequantized values.
    pub fixtures: std::path::PathBuf,
    /// The bandwidth tensor, [out, in] (on a GPU an 8B projection: 12288 × 4096).
    pub bench_shape: (i64, i64),
    pub iters: usize,
    /// The device's memory bandwidth in GB/s (H200: 4800), for the ratio.
    pub peak_gbps: Option<f64>,
}

pub fn nf4_check(o: &Nf4Options) -> Result<Value> {
    let _guard = tch::no_grad_guard();
    let load = |f: &str| weights::read_file(&o.fixtures.join(f), None, Device::Cpu, &|_| true);
    let cases: Value = serde_json::from_str(&std::fs::read_to_string(o.fixtures.join("cases.json")).with_context(|| format!("reading {}/cases.json", o.fixtures.display()))?)?;
    let c = load("cases.safetensors")?;
    let mut rows = Vec::new();
    let (mut bnb_bad, mut ref_bad, mut dev_bad, mut elements) = (0i64, 0i64, 0i64, 0i64);
    let mut record = |what: String, q: &Nf4Tensor, bnb: Option<&Tensor>| -> Result<()> {
        let (b, r, d) = check_one(q, bnb, o.device)?;
        bnb_bad += b.unwrap_or(0);
        ref_bad += r;
        dev_bad += d.unwrap_or(0);
        elements += q.numel();
        let nested = matches!(q.absmax, nf4::Absmax::Nested { .. });
        rows.push(json!({"case": what, "shape": q.shape, "dtype": crate::model::kind_name(q.dtype), "double_quant": nested,
                         "mismatch_vs_bitsandbytes": b, "mismatch_vs_reference": r, "mismatch_device_vs_cpu": d}));
        Ok(())
    };
    // bitsandbytes' own quantized weights (float32, bfloat16, float16; odd counts, partial blocks).
    for (file, tag) in [("plain.safetensors", "plain"), ("double.safetensors", "double")] {
        let mut ck: Weights = load(file)?;
        for case in cases.as_array().context("cases.json is a list")? {
            let cname = case["name"].as_str().context("case name")?;
            let p = format!("case.{cname}.weight");
            let q = nf4::from_checkpoint_tensors(&p, &mut ck)?.with_context(|| format!("{file}: {p} is not 4-bit"))?;
            let want = c.get(&format!("{cname}.{tag}.dequant")).with_context(|| format!("no {cname}.{tag}.dequant"))?;
            record(format!("bnb {tag} {cname}"), &q, Some(want))?;
        }
    }
    // Larger odd sizes quantized here: a million and three values, a 4097 × 11 weight.
    tch::manual_seed(11);
    for shape in [vec![1, 1_000_003], vec![4097, 11]] {
        for kind in [Kind::Float, Kind::BFloat16, Kind::Half] {
            for dq in [false, true] {
                let w = Tensor::randn(shape.as_slice(), (Kind::Float, Device::Cpu)).to_kind(kind);
                let q = nf4::quantize(&w, 64, dq)?;
                record(format!("random {}x{} {} {}", shape[0], shape[1], crate::model::kind_name(kind), if dq { "double" } else { "plain" }), &q, None)?;
            }
        }
    }
    let bandwidth = nf4_bandwidth(o)?;
    let ok = bnb_bad == 0 && ref_bad == 0 && dev_bad == 0;
    eprintln!(
        "device-check nf4: {} weights, {elements} values on {}: {} mismatches vs bitsandbytes, {} vs the tensor-op decoding, {}",
        rows.len(),
        name(o.device),
        bnb_bad,
        ref_bad,
        if o.device == Device::Cpu { "no device to compare (cpu)".to_string() } else { format!("{dev_bad} device vs cpu") }
    );
    Ok(json!({
        "device": name(o.device),
        "ok": ok,
        "weights": rows.len(),
        "values": elements,
        "mismatch_vs_bitsandbytes": bnb_bad,
        "mismatch_vs_reference": ref_bad,
        "mismatch_device_vs_cpu": if o.device == Device::Cpu { json!(null) } else { json!(dev_bad) },
        "mismatches": bnb_bad + ref_bad + dev_bad,
        "cases": rows,
        "bandwidth": bandwidth,
    }))
}

/// Dequantization throughput on one [out, in] weight with bfloat16 output, timed over `iters`
/// calls between two synchronizations. Bytes per call are those a perfect kernel moves: the
/// packed codes (n/2) and the float32 absmax (4n/64) read, the bfloat16 values (2n) written.
/// On a CUDA build the raw kernel (float32 absmax) is timed alone, and the full path (double-quant
/// absmax decoded first, as the 4-bit linear runs it) beside it.
fn nf4_bandwidth(o: &Nf4Options) -> Result<Value> {
    let d = o.device;
    let (rows, cols) = o.bench_shape;
    let n = rows * cols;
    let w = Tensor::randn([rows, cols], (Kind::Float, d)).to_kind(Kind::BFloat16); // drawn on the device
    let full = nf4::quantize(&w, 64, true)?;
    drop(w);
    let bytes = n as f64 / 2.0 + 4.0 * (n as f64 / 64.0).ceil() + 2.0 * n as f64;
    let time = |f: &dyn Fn() -> Result<Tensor>| -> Result<f64> {
        let _ = f()?; // warm-up: kernel load, allocator
        sync(d);
        let start = Instant::now();
        for _ in 0..o.iters.max(1) {
            let _ = f()?;
        }
        sync(d);
        Ok(start.elapsed().as_secs_f64() / o.iters.max(1) as f64)
    };
    let full_s = time(&|| Ok(nf4::dequantize(&full)))?;
    let kernel_s = kernel_seconds(&full, n, &time)?;
    let gbps = |s: f64| bytes / s / 1e9;
    let primary = kernel_s.unwrap_or(full_s);
    let ratio = o.peak_gbps.map(|p| gbps(primary) / p);
    eprintln!(
        "device-check nf4: dequantize {rows}x{cols} → bf16 on {}: {}full path {:.1} µs = {:.1} GB/s{}",
        name(d),
        kernel_s.map(|s| format!("kernel {:.1} µs = {:.1} GB/s, ", s * 1e6, gbps(s))).unwrap_or_default(),
        full_s * 1e6,
        gbps(full_s),
        match (ratio, o.peak_gbps) {
            (Some(r), Some(p)) => format!("; {:.1}% of the {p:.0} GB/s peak", r * 100.0),
            _ => String::new(),
        }
    );
    Ok(json!({
        "shape": [rows, cols],
        "iters": o.iters,
        "bytes_per_call": bytes,
        "bytes_formula": "n/2 packed + 4*ceil(n/64) absmax read, 2n bf16 written",
        "kernel_seconds": kernel_s,
        "kernel_gbps": kernel_s.map(gbps),
        "full_path_seconds": full_s,
        "full_path_gbps": gbps(full_s),
        "gbps": gbps(primary),
        "peak_gbps": o.peak_gbps,
        "ratio_to_peak": ratio,
    }))
}

/// The raw CUDA kernel alone (float32 absmax, decoded once beforehand), on a CUDA build.
#[cfg(steptune_cuda_kernels)]
fn kernel_seconds(q: &Nf4Tensor, n: i64, time: &dyn Fn(&dyn Fn() -> Result<Tensor>) -> Result<f64>) -> Result<Option<f64>> {
    if q.packed.device() == Device::Cpu {
        return Ok(None);
    }
    let absmax = q.absmax_f32(); // [blocks] f32
    time(&|| crate::ffi::nf4_dequantize_cuda(&q.packed, &absmax, n, q.blocksize, true)).map(Some)
}

#[cfg(not(steptune_cuda_kernels))]
fn kernel_seconds(_q: &Nf4Tensor, _n: i64, _time: &dyn Fn(&dyn Fn() -> Result<Tensor>) -> Result<f64>) -> Result<Option<f64>> {
    Ok(None)
}

fn max_abs(a: &Tensor, b: &Tensor) -> f64 {
    (a.to_kind(Kind::Float) - b.to_kind(Kind::Float)).abs().max().double_value(&[])
}

/// Bounds, relative to the largest |logit| of the reference (at least 1): float32 on any device
/// within 1e-4 of transformers and of the CPU (the test suite's bound). bfloat16 (8 bits of
/// mantissa, every weight and activation rounded) within 1e-1 of float32: on the CPU the tiny
/// Qwen3 models differ by 0.5-0.8% of their largest logit and the tiny T5 ones by 3-6%, so this
/// bound catches a broken bf16 path (a wrong cast, garbage, an overflow), not rounding.
pub const FP32_REL_BOUND: f64 = 1e-4;
pub const BF16_REL_BOUND: f64 = 1e-1;

pub fn logits_check(fixtures: &Path, device: Device) -> Result<Value> {
    let _guard = tch::no_grad_guard();
    let mut models = Vec::new();
    let mut ok = true;
    // Qwen3 (two shapes) and T5 (v1.1 gated-gelu and original ReLU), each with transformers' logits.
    for m in ["qwen3_a", "qwen3_b", "t5_tiny_v11", "t5_tiny_orig"] {
        let dir = fixtures.join(m);
        let e = weights::read_file(&dir.join("expected.safetensors"), None, Device::Cpu, &|_| true).with_context(|| format!("{}", dir.display()))?;
        // logits(kind, device) → float32 on the CPU, at the places transformers' fixture holds:
        // Qwen3 [b, t, V] with padded places zeroed; T5 [b, t, |vocab_index|].
        let logits = |kind: Kind, d: Device| -> Result<Tensor> {
            Ok(if m.starts_with("qwen3") {
                let model = load_decoder(&dir, kind, d)?;
                let out = model.forward(&e["input_ids"].to_device(d)).to_device(Device::Cpu).to_kind(Kind::Float);
                out * e["attention_mask"].unsqueeze(-1).to_kind(Kind::Float)
            } else {
                let model = load_t5(&dir, kind, d)?;
                let (ids, mask, labels) = (e["prompt_ids"].to_device(d), e["prompt_mask"].to_device(d), e["labels"].to_device(d));
                model.forward(&ids, &mask, &labels, false).to_device(Device::Cpu).to_kind(Kind::Float).index_select(2, &e["vocab_index"])
            })
        };
        let want = if m.starts_with("qwen3") { &e["logits"] * e["attention_mask"].unsqueeze(-1).to_kind(Kind::Float) } else { e["logits_at"].shallow_clone() };
        let scale = want.abs().max().double_value(&[]).max(1.0);
        let cpu32 = logits(Kind::Float, Device::Cpu)?;
        let fp32_vs_hf = max_abs(&cpu32, &want);
        let (dev32_vs_cpu, dev32_vs_hf) = match device {
            Device::Cpu => (None, None),
            d => {
                let g = logits(Kind::Float, d)?;
                (Some(max_abs(&g, &cpu32)), Some(max_abs(&g, &want)))
            }
        };
        let bf16 = max_abs(&logits(Kind::BFloat16, device)?, &cpu32);
        let (fp32_bound, bf16_bound) = (FP32_REL_BOUND * scale, BF16_REL_BOUND * scale);
        let this_ok = fp32_vs_hf <= fp32_bound
            && dev32_vs_cpu.is_none_or(|x| x <= fp32_bound)
            && dev32_vs_hf.is_none_or(|x| x <= fp32_bound)
            && bf16 <= bf16_bound;
        ok &= this_ok;
        eprintln!(
            "device-check logits: {m}: fp32 cpu vs transformers {fp32_vs_hf:.2e}{}; bf16 {} vs fp32 cpu {bf16:.2e} (bound {bf16_bound:.2e}); fp32 bound {fp32_bound:.2e}: {}",
            dev32_vs_cpu.map(|x| format!(", fp32 {} vs cpu {x:.2e}", name(device))).unwrap_or_default(),
            name(device),
            if this_ok { "ok" } else { "FAILED" }
        );
        models.push(json!({
            "model": m, "max_abs_logit": scale, "ok": this_ok,
            "fp32_cpu_vs_transformers": fp32_vs_hf,
            "fp32_device_vs_cpu": dev32_vs_cpu, "fp32_device_vs_transformers": dev32_vs_hf,
            "bf16_device_vs_fp32_cpu": bf16,
            "fp32_bound": fp32_bound, "bf16_bound": bf16_bound,
        }));
    }
    Ok(json!({"device": name(device), "ok": ok, "fp32_rel_bound": FP32_REL_BOUND, "bf16_rel_bound": BF16_REL_BOUND, "models": models}))
}
