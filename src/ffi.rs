//! The functions of `csrc/`, called over `extern "C"`; safe wrappers return `anyhow` errors.
use std::ffi::{c_char, c_int, CStr};

use anyhow::{bail, Result};
use tch::{Device, Kind, Tensor};
use torch_sys::C_tensor;

extern "C" {
    fn steptune_last_error() -> *const c_char;
    fn steptune_torch_version() -> *const c_char;
    fn steptune_torch_has_cuda() -> c_int;
    fn steptune_backward_with_grad(outputs: *const *mut C_tensor, grads: *const *mut C_tensor, n: c_int) -> c_int;
    fn steptune_rng_get_state(device_index: c_int, out: *mut *mut C_tensor) -> c_int;
    fn steptune_rng_set_state(device_index: c_int, state: *mut C_tensor) -> c_int;
    fn steptune_adamw_update(param: *mut C_tensor, exp_avg: *mut C_tensor, exp_avg_sq: *mut C_tensor, grad: *mut C_tensor, lr: f64, beta1: f64, beta2: f64, eps: f64, decay: f64, step: i64) -> c_int;
    fn steptune_clear_grad(t: *mut C_tensor) -> c_int;
    fn steptune_chunked_linear_cross_entropy(hidden: *mut C_tensor, weight: *mut C_tensor, targets: *mut C_tensor, chunk: i64, out: *mut *mut C_tensor) -> c_int;
}

// csrc/nf4.cpp: NF4 dequantization (CPU, and GPU when the kernels are compiled) and the 4-bit
// linear's autograd function.
extern "C" {
    fn steptune_nf4_dequantize(
        packed: *mut C_tensor,
        absmax: *mut C_tensor,
        nested_absmax: *mut C_tensor,
        nested_code: *mut C_tensor,
        offset: f64,
        blocksize: i64,
        nested_blocksize: i64,
        out_features: i64,
        in_features: i64,
        dtype: c_int,
        out: *mut *mut C_tensor,
    ) -> c_int;
    fn steptune_nf4_absmax(
        absmax: *mut C_tensor,
        nested_absmax: *mut C_tensor,
        nested_code: *mut C_tensor,
        offset: f64,
        blocksize: i64,
        nested_blocksize: i64,
        numel: i64,
        out: *mut *mut C_tensor,
    ) -> c_int;
    fn steptune_nf4_linear(
        x: *mut C_tensor,
        packed: *mut C_tensor,
        absmax: *mut C_tensor,
        nested_absmax: *mut C_tensor,
        nested_code: *mut C_tensor,
        offset: f64,
        blocksize: i64,
        nested_blocksize: i64,
        out_features: i64,
        in_features: i64,
        dtype: c_int,
        out: *mut *mut C_tensor,
    ) -> c_int;
}

// csrc/cuda_memory.cpp: the CUDA caching allocator's statistics; in a build without CUDA they
// return an error.
extern "C" {
    fn steptune_cuda_memory_stats(device: c_int, out: *mut i64) -> c_int;
    fn steptune_cuda_reset_peak_stats(device: c_int) -> c_int;
}

// The raw CUDA kernel of csrc/nf4_dequant.cu; present only when build.rs compiled it
// (`--features cuda` against the CUDA libtorch).
#[cfg(steptune_cuda_kernels)]
extern "C" {
    fn steptune_nf4_dequantize_cuda_raw(packed: *mut C_tensor, absmax: *mut C_tensor, n: i64, blocksize: c_int, bf16: c_int, out: *mut *mut C_tensor) -> c_int;
}

fn check(rc: c_int, what: &str) -> Result<()> {
    if rc == 0 {
        return Ok(());
    }
    // SAFETY: steptune_last_error returns a NUL-terminated thread-local string.
    let msg = unsafe { CStr::from_ptr(steptune_last_error()) }.to_string_lossy().into_owned();
    bail!("{what}: {msg}")
}

/// The libtorch version this binary runs against, as its headers define it.
pub fn torch_version() -> String {
    // SAFETY: returns a pointer to a static string literal.
    unsafe { CStr::from_ptr(steptune_torch_version()) }.to_string_lossy().into_owned()
}

/// Whether the linked libtorch carries CUDA support.
pub fn torch_has_cuda() -> bool {
    unsafe { steptune_torch_has_cuda() != 0 }
}

/// Backpropagates `grads[i]` (the gradient of the loss with respect to `outputs[i]`) through the
/// graph that produced `outputs`, accumulating into the leaves' `.grad()`.
pub fn backward_with_grad(outputs: &[&Tensor], grads: &[&Tensor]) -> Result<()> {
    if outputs.len() != grads.len() {
        bail!("backward_with_grad: {} outputs but {} gradients", outputs.len(), grads.len());
    }
    let outs: Vec<*mut C_tensor> = outputs.iter().map(|t| t.as_ptr() as *mut C_tensor).collect();
    let gs: Vec<*mut C_tensor> = grads.iter().map(|t| t.as_ptr() as *mut C_tensor).collect();
    // SAFETY: the pointers are live tch tensors for the duration of the call; C++ copies the
    // handles (refcounted) and does not keep them.
    check(unsafe { steptune_backward_with_grad(outs.as_ptr(), gs.as_ptr(), outs.len() as c_int) }, "backward_with_grad")
}

fn device_index(device: Device) -> c_int {
    match device {
        Device::Cuda(i) => i as c_int,
        _ => -1,
    }
}

/// The default CPU generator's state: what dropout and `randn` draw from next.
pub fn cpu_rng_state() -> Result<Tensor> {
    rng_state(Device::Cpu)
}

pub fn set_cpu_rng_state(state: &Tensor) -> Result<()> {
    set_rng_state(Device::Cpu, state)
}

/// The default generator's state of `device` (the CPU's, or a GPU's).
pub fn rng_state(device: Device) -> Result<Tensor> {
    let mut out: *mut C_tensor = std::ptr::null_mut();
    check(unsafe { steptune_rng_get_state(device_index(device), &mut out) }, "rng_state")?;
    // SAFETY: C++ returned a heap-allocated torch::Tensor*, which from_ptr takes ownership of.
    Ok(unsafe { Tensor::from_ptr(out) })
}

pub fn set_rng_state(device: Device, state: &Tensor) -> Result<()> {
    check(unsafe { steptune_rng_set_state(device_index(device), state.as_ptr() as *mut C_tensor) }, "set_rng_state")
}

/// One NF4 weight's quantization state as the C++ side reads it (see csrc/nf4.cpp for the layout).
pub struct Nf4Parts<'a> {
    /// uint8 [ceil(n/2)]
    pub packed: &'a Tensor,
    /// float32 [blocks], or uint8 [blocks] with `nested`
    pub absmax: &'a Tensor,
    /// Double quantization: (nested_absmax f32 [blocks/256], nested_code f32 [256], offset, nested blocksize).
    pub nested: Option<(&'a Tensor, &'a Tensor, f64, i64)>,
    pub blocksize: i64,
    /// The weight's 2-D shape [out, in] (a 1-D tensor is [1, n]).
    pub out_features: i64,
    pub in_features: i64,
    /// The dtype the weight was stored in before quantization.
    pub dtype: Kind,
}

/// c10::ScalarType's number for the float kinds a weight is stored in (tch keeps its own private).
fn scalar_type(kind: Kind) -> Result<c_int> {
    Ok(match kind {
        Kind::Half => 5,
        Kind::Float => 6,
        Kind::BFloat16 => 15,
        other => bail!("NF4 weights are float32, bfloat16 or float16, not {other:?}"),
    })
}

fn ptr(t: &Tensor) -> *mut C_tensor {
    t.as_ptr() as *mut C_tensor
}

fn nested_ptrs(p: &Nf4Parts) -> (*mut C_tensor, *mut C_tensor, f64, i64) {
    match p.nested {
        Some((a, c, off, bs)) => (ptr(a), ptr(c), off, bs),
        None => (std::ptr::null_mut(), std::ptr::null_mut(), 0.0, 256),
    }
}

/// The dense [out, in] weight in its stored dtype; on the GPU through the CUDA kernel.
pub fn nf4_dequantize(p: &Nf4Parts) -> Result<Tensor> {
    let (na, nc, off, nbs) = nested_ptrs(p);
    let mut out: *mut C_tensor = std::ptr::null_mut();
    // SAFETY: every pointer is a live tch tensor (or null where optional) for the call; on success
    // C++ stores a `new torch::Tensor` in `out`, whose ownership from_ptr takes.
    check(
        unsafe { steptune_nf4_dequantize(ptr(p.packed), ptr(p.absmax), na, nc, off, p.blocksize, nbs, p.out_features, p.in_features, scalar_type(p.dtype)?, &mut out) },
        "nf4_dequantize",
    )?;
    Ok(unsafe { Tensor::from_ptr(out) })
}

/// The decoded per-block absmax, float32 [blocks] (a copy).
pub fn nf4_absmax(p: &Nf4Parts) -> Result<Tensor> {
    let (na, nc, off, nbs) = nested_ptrs(p);
    let mut out: *mut C_tensor = std::ptr::null_mut();
    check(unsafe { steptune_nf4_absmax(ptr(p.absmax), na, nc, off, p.blocksize, nbs, p.out_features * p.in_features, &mut out) }, "nf4_absmax")?;
    Ok(unsafe { Tensor::from_ptr(out) })
}

/// One AdamW update of one float32 parameter in place, as torch.optim.AdamW computes it
/// (csrc/adamw.cpp). `decay` = 1 − lr·weight_decay; `step` counts from 1.
#[allow(clippy::too_many_arguments)]
pub fn adamw_update(param: &Tensor, exp_avg: &Tensor, exp_avg_sq: &Tensor, grad: &Tensor, lr: f64, betas: (f64, f64), eps: f64, decay: f64, step: i64) -> Result<()> {
    check(unsafe { steptune_adamw_update(ptr(param), ptr(exp_avg), ptr(exp_avg_sq), ptr(grad), lr, betas.0, betas.1, eps, decay, step) }, "the AdamW update")
}

/// Drops `t`'s gradient (set_to_none): the next backward assigns instead of accumulating.
pub fn clear_grad(t: &Tensor) -> Result<()> {
    check(unsafe { steptune_clear_grad(ptr(t)) }, "clearing a gradient")
}

/// Σ cross_entropy(hidden Wᵀ, targets) with the logits made `chunk` rows at a time, through a
/// C++ autograd function (csrc/lm_loss.cpp). hidden: [n, h], weight: [V, h], targets: [n] → [] f32
pub fn chunked_linear_cross_entropy(hidden: &Tensor, weight: &Tensor, targets: &Tensor, chunk: i64) -> Result<Tensor> {
    let mut out: *mut C_tensor = std::ptr::null_mut();
    check(unsafe { steptune_chunked_linear_cross_entropy(ptr(hidden), ptr(weight), ptr(targets), chunk, &mut out) }, "the chunked LM-head loss")?;
    Ok(unsafe { Tensor::from_ptr(out) })
}

/// y = x Wᵀ with the 4-bit weight, through a C++ autograd function that saves only the packed
/// weight and its state and dequantizes again in backward. x: [.., in] → [.., out]
pub fn nf4_linear(x: &Tensor, p: &Nf4Parts) -> Result<Tensor> {
    let (na, nc, off, nbs) = nested_ptrs(p);
    let mut out: *mut C_tensor = std::ptr::null_mut();
    check(
        unsafe { steptune_nf4_linear(ptr(x), ptr(p.packed), ptr(p.absmax), na, nc, off, p.blocksize, nbs, p.out_features, p.in_features, scalar_type(p.dtype)?, &mut out) },
        "nf4_linear",
    )?;
    Ok(unsafe { Tensor::from_ptr(out) })
}

/// The CUDA kernel alone: `n` NF4 values (`packed` uint8, `absmax` float32 per `blocksize`) to a
/// flat float32 or bfloat16 tensor on `packed`'s GPU. Runs on the current CUDA stream.
#[cfg(steptune_cuda_kernels)]
pub fn nf4_dequantize_cuda(packed: &Tensor, absmax: &Tensor, n: i64, blocksize: i64, bf16: bool) -> Result<Tensor> {
    let Ok(bs) = c_int::try_from(blocksize) else {
        bail!("nf4_dequantize_cuda: blocksize {blocksize} out of range");
    };
    let mut out: *mut C_tensor = std::ptr::null_mut();
    check(unsafe { steptune_nf4_dequantize_cuda_raw(ptr(packed), ptr(absmax), n, bs, bf16 as c_int, &mut out) }, "nf4_dequantize_cuda")?;
    Ok(unsafe { Tensor::from_ptr(out) })
}

/// What PyTorch's CUDA caching allocator holds on one device, in bytes, over all its pools:
/// `torch.cuda.memory_allocated`, `max_memory_allocated`, `memory_reserved`, `max_memory_reserved`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CudaMemoryStats {
    pub allocated: i64,
    pub peak_allocated: i64,
    pub reserved: i64,
    pub peak_reserved: i64,
}

/// The allocator's statistics of CUDA device `device`; an error in a build without CUDA or for a
/// device that does not exist.
pub fn cuda_memory_stats(device: usize) -> Result<CudaMemoryStats> {
    let mut out = [0i64; 4];
    let dev = c_int::try_from(device)?;
    // SAFETY: `out` has the four slots the C++ side writes.
    check(unsafe { steptune_cuda_memory_stats(dev, out.as_mut_ptr()) }, "cuda_memory_stats")?;
    Ok(CudaMemoryStats { allocated: out[0], peak_allocated: out[1], reserved: out[2], peak_reserved: out[3] })
}

/// Starts the peaks of `cuda_memory_stats` afresh from the current values
/// (`torch.cuda.reset_peak_memory_stats`).
pub fn cuda_reset_peak_stats(device: usize) -> Result<()> {
    check(unsafe { steptune_cuda_reset_peak_stats(c_int::try_from(device)?) }, "cuda_reset_peak_stats")
}
