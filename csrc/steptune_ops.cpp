// C++ that tch cannot express, exposed over extern "C". Tensors cross the boundary as tch's
// `C_tensor` (a `torch::Tensor*`); errors are returned as a message the Rust side turns into anyhow.
#include <torch/torch.h>
#include <torch/version.h>

#include <cstring>
#include <string>

#include "ffi_common.h"

namespace {
thread_local std::string last_error;
}  // namespace

void steptune::set_last_error(std::string message) { last_error = std::move(message); }
using steptune::guarded;

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

/// The default generator's state (a uint8 tensor) of the CPU (device_index < 0) or of CUDA device
/// `device_index`: a resumed run draws the same dropout masks as an uninterrupted one, and gradient
/// checkpointing recomputes a layer with the masks of its first forward. tch has no access to it.
int steptune_rng_get_state(int device_index, torch::Tensor** out) {
  return guarded([&] {
    auto gen = device_index < 0 ? at::detail::getDefaultCPUGenerator()
                                : at::globalContext().defaultGenerator(at::Device(at::kCUDA, device_index));
    std::lock_guard<std::mutex> lock(gen.mutex());
    *out = new torch::Tensor(gen.get_state());
  });
}

int steptune_rng_set_state(int device_index, torch::Tensor* state) {
  return guarded([&] {
    auto gen = device_index < 0 ? at::detail::getDefaultCPUGenerator()
                                : at::globalContext().defaultGenerator(at::Device(at::kCUDA, device_index));
    std::lock_guard<std::mutex> lock(gen.mutex());
    gen.set_state(*state);
  });
}

}  // extern "C"
