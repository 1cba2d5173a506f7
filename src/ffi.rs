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
