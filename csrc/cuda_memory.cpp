// The CUDA caching allocator's statistics (torch.cuda.max_memory_allocated / max_memory_reserved
// and torch.cuda.reset_peak_memory_stats in Python), which tch does not expose. A build without
// the `cuda` feature (no STEPTUNE_CUDA) still has these symbols: they fail with a message, so the
// Rust side can say "no CUDA in this build" instead of failing to link.
#include <torch/torch.h>

#include <cstdint>

#include "ffi_common.h"

#ifdef STEPTUNE_CUDA
#include <ATen/Context.h>
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAFunctions.h>
#endif

using steptune::guarded;

namespace {
#ifdef STEPTUNE_CUDA
// The allocator holds one record per device only after CUDA's lazy initialisation, which Python
// runs before every torch.cuda.memory_* call; do the same, and refuse devices that do not exist.
void check_device(int device) {
  at::globalContext().lazyInitDevice(c10::DeviceType::CUDA);
  const int count = c10::cuda::device_count();
  TORCH_CHECK(device >= 0 && device < count, "cuda memory stats: no CUDA device ", device, " (", count,
              " visible)");
}
#endif
}  // namespace

extern "C" {

/// out[0..4] = allocated bytes now, peak allocated, reserved bytes now, peak reserved, all over
/// every pool (StatType::AGGREGATE), for CUDA device `device`; peaks since the process started or
/// the last steptune_cuda_reset_peak_stats.
int steptune_cuda_memory_stats(int device, int64_t* out) {
  return guarded([&] {
#ifdef STEPTUNE_CUDA
    check_device(device);
    const auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(static_cast<c10::DeviceIndex>(device));
    const auto agg = static_cast<size_t>(c10::CachingAllocator::StatType::AGGREGATE);
    out[0] = stats.allocated_bytes[agg].current;
    out[1] = stats.allocated_bytes[agg].peak;
    out[2] = stats.reserved_bytes[agg].current;
    out[3] = stats.reserved_bytes[agg].peak;
#else
    (void)device;
    (void)out;
    TORCH_CHECK(false, "cuda memory stats: this steptune was built without CUDA (cargo build --features cuda)");
#endif
  });
}

/// Starts new peaks at the current values (torch.cuda.reset_peak_memory_stats).
int steptune_cuda_reset_peak_stats(int device) {
  return guarded([&] {
#ifdef STEPTUNE_CUDA
    check_device(device);
    c10::cuda::CUDACachingAllocator::resetPeakStats(static_cast<c10::DeviceIndex>(device));
#else
    (void)device;
    TORCH_CHECK(false, "cuda memory stats: this steptune was built without CUDA (cargo build --features cuda)");
#endif
  });
}

}  // extern "C"
