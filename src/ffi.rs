//! The functions of `csrc/`, called over `extern "C"`; safe wrappers return `anyhow` errors.
use std::ffi::{c_char, c_int, CStr};

use anyhow::{bail, Result};
use tch::Tensor;
use torch_sys::C_tensor;

extern "C" {
    fn steptune_last_error() -> *const c_char;
    fn steptune_torch_version() -> *const c_char;
    fn steptune_torch_has_cuda() -> c_int;
    fn steptune_backward_with_grad(outputs: *const *mut C_tensor, grads: *const *mut C_tensor, n: c_int) -> c_int;
    fn steptune_cpu_rng_get_state(out: *mut *mut C_tensor) -> c_int;
    fn steptune_cpu_rng_set_state(state: *mut C_tensor) -> c_int;
}

// csrc/steptune_ops.cpp around csrc/nf4_dequant.cu; present only when build.rs compiled the kernels
// (`--features cuda` against the CUDA libtorch).
#[cfg(steptune_cuda_kernels)]
extern "C" {
    fn steptune_nf4_dequantize_cuda(
        packed: *mut C_tensor,
        absmax: *mut C_tensor,
        n: i64,
        blocksize: c_int,
        out: *mut *mut C_tensor,
    ) -> c_int;
    fn steptune_nf4_dequantize_cuda_bf16(
        packed: *mut C_tensor,
        absmax: *mut C_tensor,
        n: i64,
        blocksize: c_int,
        out: *mut *mut C_tensor,
    ) -> c_int;
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

/// The default CPU generator's state: what dropout and `randn` draw from next.
pub fn cpu_rng_state() -> Result<Tensor> {
    let mut out: *mut C_tensor = std::ptr::null_mut();
    check(unsafe { steptune_cpu_rng_get_state(&mut out) }, "cpu_rng_state")?;
    // SAFETY: C++ returned a heap-allocated torch::Tensor*, which from_ptr takes ownership of.
    Ok(unsafe { Tensor::from_ptr(out) })
}

pub fn set_cpu_rng_state(state: &Tensor) -> Result<()> {
    check(unsafe { steptune_cpu_rng_set_state(state.as_ptr() as *mut C_tensor) }, "set_cpu_rng_state")
}

/// Dequantizes `n` NF4 values stored the bitsandbytes way (`packed`: uint8, two 4-bit codes per
/// byte, the first in the high nibble; `absmax`: float32, one scale per `blocksize` values of the
/// flattened weight) on the GPU, into a new flat float32 tensor on `packed`'s device. Runs on the
/// current CUDA stream.
#[cfg(steptune_cuda_kernels)]
pub fn nf4_dequantize_cuda(packed: &Tensor, absmax: &Tensor, n: i64, blocksize: i64) -> Result<Tensor> {
    nf4_dequantize_cuda_impl(packed, absmax, n, blocksize, false)
}

/// As [`nf4_dequantize_cuda`], with a bfloat16 output.
#[cfg(steptune_cuda_kernels)]
pub fn nf4_dequantize_cuda_bf16(packed: &Tensor, absmax: &Tensor, n: i64, blocksize: i64) -> Result<Tensor> {
    nf4_dequantize_cuda_impl(packed, absmax, n, blocksize, true)
}

#[cfg(steptune_cuda_kernels)]
fn nf4_dequantize_cuda_impl(packed: &Tensor, absmax: &Tensor, n: i64, blocksize: i64, bf16: bool) -> Result<Tensor> {
    let Ok(bs) = c_int::try_from(blocksize) else {
        bail!("nf4_dequantize_cuda: blocksize {blocksize} out of range");
    };
    let f = if bf16 { steptune_nf4_dequantize_cuda_bf16 } else { steptune_nf4_dequantize_cuda };
    let mut out: *mut C_tensor = std::ptr::null_mut();
    // SAFETY: packed/absmax are live tch tensors for the call; on success C++ stores a
    // `new torch::Tensor` in `out`, whose ownership from_ptr takes.
    check(
        unsafe { f(packed.as_ptr() as *mut C_tensor, absmax.as_ptr() as *mut C_tensor, n, bs, &mut out) },
        "nf4_dequantize_cuda",
    )?;
    Ok(unsafe { Tensor::from_ptr(out) })
}
