// C++ that tch cannot express, exposed over extern "C". Tensors cross the boundary as tch's
// `C_tensor` (a `torch::Tensor*`); errors are returned as a message the Rust side turns into anyhow.
#include <torch/torch.h>
#include <torch/version.h>

#include <cstring>
#include <string>

#ifdef STEPTUNE_CUDA_KERNELS
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

// csrc/nf4_dequant.cu (compiled by nvcc when built with --features cuda).
extern "C" int steptune_nf4_dequantize_f32_cuda(const uint8_t* packed, const float* absmax, float* out, int64_t n,
                                                int blocksize, void* stream);
extern "C" int steptune_nf4_dequantize_bf16_cuda(const uint8_t* packed, const float* absmax, void* out, int64_t n,
                                                 int blocksize, void* stream);
#endif

namespace {
thread_local std::string last_error;

template <typename F>
int guarded(F&& body) {
  try {
    body();
    return 0;
  } catch (const std::exception& e) {
    last_error = e.what();
  } catch (...) {
    last_error = "unknown C++ exception";
  }
  return 1;
}
}  // namespace

extern "C" {

/// The message of the last failed call on this thread.
const char* steptune_last_error() { return last_error.c_str(); }

/// The libtorch version the program runs against ("2.11.0"), written into every run folder.
const char* steptune_torch_version() { return TORCH_VERSION; }

/// 1 when this libtorch was built with CUDA (whether or not a GPU is present now).
int steptune_torch_has_cuda() { return torch::cuda::is_available() || at::hasCUDA() ? 1 : 0; }

/// `torch::autograd::backward(outputs, grads)`: pushes an upstream gradient through a graph.
/// tch only offers `backward()` on a scalar; gradient checkpointing needs this to backpropagate
/// the gradient of a recomputed layer's output.
int steptune_backward_with_grad(torch::Tensor** outputs, torch::Tensor** grads, int n) {
  return guarded([&] {
    std::vector<torch::Tensor> outs, gs;
    for (int i = 0; i < n; ++i) {
      outs.push_back(*outputs[i]);
      gs.push_back(*grads[i]);
    }
    torch::autograd::backward(outs, gs);
  });
}

#ifdef STEPTUNE_CUDA_KERNELS
}  // extern "C"

namespace {
// Checks the NF4 inputs and runs one of the kernels of nf4_dequant.cu on the current CUDA stream of
// `packed`'s device; the output (n elements of `dtype`, flat) is allocated on that device.
torch::Tensor nf4_dequantize_cuda(const torch::Tensor& packed, const torch::Tensor& absmax, int64_t n,
                                  int blocksize, torch::ScalarType dtype) {
  TORCH_CHECK(packed.is_cuda(), "nf4_dequantize_cuda: packed must be on a CUDA device, is on ", packed.device());
  TORCH_CHECK(absmax.device() == packed.device(), "nf4_dequantize_cuda: absmax is on ", absmax.device(),
              ", packed on ", packed.device());
  TORCH_CHECK(packed.scalar_type() == torch::kUInt8, "nf4_dequantize_cuda: packed must be uint8, is ",
              packed.scalar_type());
  TORCH_CHECK(absmax.scalar_type() == torch::kFloat32, "nf4_dequantize_cuda: absmax must be float32, is ",
              absmax.scalar_type());
  TORCH_CHECK(n >= 0, "nf4_dequantize_cuda: n must be >= 0, is ", n);
  TORCH_CHECK(blocksize > 0, "nf4_dequantize_cuda: blocksize must be > 0, is ", blocksize);
  TORCH_CHECK(packed.numel() >= (n + 1) / 2, "nf4_dequantize_cuda: ", n, " values need ", (n + 1) / 2,
              " packed bytes, have ", packed.numel());
  const int64_t blocks = (n + blocksize - 1) / blocksize;
  TORCH_CHECK(absmax.numel() >= blocks, "nf4_dequantize_cuda: ", n, " values in blocks of ", blocksize, " need ",
              blocks, " absmax values, have ", absmax.numel());
  const c10::cuda::CUDAGuard guard(packed.device());
  const torch::Tensor p = packed.contiguous();
  const torch::Tensor a = absmax.contiguous();
  torch::Tensor out = torch::empty({n}, packed.options().dtype(dtype));
  if (n == 0) return out;
  void* stream = c10::cuda::getCurrentCUDAStream(packed.device().index()).stream();
  int rc = dtype == torch::kFloat32
               ? steptune_nf4_dequantize_f32_cuda(p.data_ptr<uint8_t>(), a.data_ptr<float>(), out.data_ptr<float>(), n,
                                                  blocksize, stream)
               : steptune_nf4_dequantize_bf16_cuda(p.data_ptr<uint8_t>(), a.data_ptr<float>(), out.data_ptr(), n,
                                                   blocksize, stream);
  TORCH_CHECK(rc == 0, "nf4_dequantize_cuda: kernel launch failed: ",
              cudaGetErrorString(static_cast<cudaError_t>(rc)));
  return out;
}
}  // namespace

extern "C" {

/// NF4 (bitsandbytes layout) dequantization on the GPU: `packed` uint8 (two codes per byte, first
/// in the high nibble), `absmax` float32 per block of `blocksize` values; writes a new flat float32
/// tensor of `n` values on `packed`'s device to `*out`.
int steptune_nf4_dequantize_cuda(torch::Tensor* packed, torch::Tensor* absmax, int64_t n, int blocksize,
                                 torch::Tensor** out) {
  return guarded([&] {
    *out = new torch::Tensor(nf4_dequantize_cuda(*packed, *absmax, n, blocksize, torch::kFloat32));
  });
}

/// As steptune_nf4_dequantize_cuda, with a bfloat16 output.
int steptune_nf4_dequantize_cuda_bf16(torch::Tensor* packed, torch::Tensor* absmax, int64_t n, int blocksize,
                                      torch::Tensor** out) {
  return guarded([&] {
    *out = new torch::Tensor(nf4_dequantize_cuda(*packed, *absmax, n, blocksize, torch::kBFloat16));
  });
}
#endif  // STEPTUNE_CUDA_KERNELS

}  // extern "C"

extern "C" {

/// The default CPU generator's state (a uint8 tensor), so a resumed run draws the same dropout
/// masks as an uninterrupted one. tch has no access to generator state.
int steptune_cpu_rng_get_state(torch::Tensor** out) {
  return guarded([&] {
    auto gen = at::detail::getDefaultCPUGenerator();
    std::lock_guard<std::mutex> lock(gen.mutex());
    *out = new torch::Tensor(gen.get_state());
  });
}

int steptune_cpu_rng_set_state(torch::Tensor* state) {
  return guarded([&] {
    auto gen = at::detail::getDefaultCPUGenerator();
    std::lock_guard<std::mutex> lock(gen.mutex());
    gen.set_state(*state);
  });
}

}  // extern "C"
