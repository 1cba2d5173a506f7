//! The C++ in csrc/, compiled by build.rs against libtorch and called over extern "C".
use steptune::ffi;
use tch::{Device, Kind, Tensor};

#[test]
fn links_against_libtorch_2_11_0() {
    assert_eq!(ffi::torch_version(), "2.11.0");
}

#[test]
fn backward_with_grad_pushes_an_upstream_gradient() {
    tch::manual_seed(0);
    let x = Tensor::randn([3, 4], (Kind::Float, Device::Cpu)).set_requires_grad(true);
    let y = &x * &x * 3.0; // dy/dx = 6x
    let g = Tensor::randn([3, 4], (Kind::Float, Device::Cpu));
    ffi::backward_with_grad(&[&y], &[&g]).unwrap();
    let expected = &x.detach() * 6.0 * &g;
    let diff = (x.grad() - expected).abs().max().double_value(&[]);
    assert!(diff < 1e-6, "max abs diff {diff}");
}

#[test]
fn backward_with_grad_reports_libtorch_errors() {
    let x = Tensor::ones([2], (Kind::Float, Device::Cpu)); // no grad: nothing to backpropagate into
    let g = Tensor::ones([2], (Kind::Float, Device::Cpu));
    let err = ffi::backward_with_grad(&[&x], &[&g]).unwrap_err().to_string();
    assert!(err.contains("backward_with_grad") && err.contains("grad"), "{err}");
    let y = Tensor::ones([2], (Kind::Float, Device::Cpu));
    assert!(ffi::backward_with_grad(&[&x, &y], &[&g]).is_err());
}

#[test]
fn cpu_rng_state_round_trips() {
    tch::manual_seed(3);
    let state = ffi::cpu_rng_state().unwrap();
    let a = Tensor::rand([5], (Kind::Float, Device::Cpu));
    ffi::set_cpu_rng_state(&state).unwrap();
    let b = Tensor::rand([5], (Kind::Float, Device::Cpu));
    assert_eq!(Vec::<f32>::try_from(&a).unwrap(), Vec::<f32>::try_from(&b).unwrap());
    let c = Tensor::rand([5], (Kind::Float, Device::Cpu));
    assert_ne!(Vec::<f32>::try_from(&a).unwrap(), Vec::<f32>::try_from(&c).unwrap());
    assert!(ffi::set_cpu_rng_state(&Tensor::zeros([3], (Kind::Uint8, Device::Cpu))).is_err());
}

/// A CPU build has the symbols but says it has no CUDA, rather than failing to link or returning zeros.
#[cfg(not(feature = "cuda"))]
#[test]
fn cuda_memory_stats_say_cuda_is_missing_in_a_cpu_build() {
    let err = ffi::cuda_memory_stats(0).unwrap_err().to_string();
    assert!(err.contains("cuda_memory_stats") && err.contains("without CUDA"), "{err}");
    let err = ffi::cuda_reset_peak_stats(0).unwrap_err().to_string();
    assert!(err.contains("without CUDA"), "{err}");
}

/// With CUDA: a 64 MiB tensor raises the peak by at least its size, and a reset brings the peak
/// back to what is still allocated.
#[cfg(feature = "cuda")]
#[test]
fn cuda_memory_stats_follow_an_allocation() {
    assert!(tch::Cuda::is_available(), "this --features cuda build needs a visible GPU for its CUDA tests");
    let before = ffi::cuda_memory_stats(0).unwrap();
    let t = Tensor::zeros([16 << 20], (Kind::Float, Device::Cuda(0)));
    let during = ffi::cuda_memory_stats(0).unwrap();
    assert!(during.allocated >= before.allocated + (64 << 20), "{before:?} → {during:?}");
    assert!(during.peak_allocated >= during.allocated && during.peak_reserved >= during.reserved);
    drop(t);
    ffi::cuda_reset_peak_stats(0).unwrap();
    let after = ffi::cuda_memory_stats(0).unwrap();
    assert!(after.peak_allocated < during.peak_allocated, "{during:?} → {after:?}");
    assert!(ffi::cuda_memory_stats(1 << 20).is_err());
}

/// Without a GPU this only proves the CUDA wrapper is linked and checks its inputs; the kernel's
/// values are compared with the CPU path where a GPU is present (tests/qlora.rs).
#[cfg(feature = "cuda")]
#[test]
fn nf4_dequantize_cuda_is_linked_and_rejects_cpu_tensors() {
    let packed = Tensor::zeros([4], (Kind::Uint8, Device::Cpu));
    let absmax = Tensor::ones([1], (Kind::Float, Device::Cpu));
    for bf16 in [false, true] {
        let err = ffi::nf4_dequantize_cuda(&packed, &absmax, 8, 64, bf16).unwrap_err().to_string();
        assert!(err.contains("must be on a CUDA device"), "{err}");
    }
    assert!(ffi::nf4_dequantize_cuda(&packed, &absmax, 8, 1 << 40, false).is_err());
}
