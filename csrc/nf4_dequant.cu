// NF4 dequantization on the GPU, bit-compatible with bitsandbytes' 4-bit NF4 storage:
//   - `packed` holds two 4-bit codes per byte; the FIRST (even) element is in the HIGH nibble,
//     the second (odd) element in the low nibble;
//   - `absmax` holds one float32 scale per block of `blocksize` consecutive elements of the
//     flattened weight;
//   - value[i] = NF4[code(i)] * absmax[i / blocksize], for 0 <= i < n (n may be odd and need not be
//     a multiple of blocksize).
// Pure CUDA runtime (no ATen headers): csrc/nf4.cpp checks the tensors and calls these on
// PyTorch's current stream.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "nf4_code.h"

namespace {

__constant__ float kNf4[16] = STEPTUNE_NF4_CODE;

__device__ __forceinline__ void store(float* out, int64_t i, float v) { out[i] = v; }
__device__ __forceinline__ void store(__nv_bfloat16* out, int64_t i, float v) { out[i] = __float2bfloat16_rn(v); }

// One thread per packed byte (two outputs), grid-stride. The code book is copied to shared memory
// so that the data-dependent lookups do not serialise on constant memory.
template <typename T>
__global__ void nf4_dequantize_kernel(const uint8_t* __restrict__ packed, const float* __restrict__ absmax,
                                      T* __restrict__ out, int64_t n, int blocksize) {
  __shared__ float code[16];
  if (threadIdx.x < 16) code[threadIdx.x] = kNf4[threadIdx.x];
  __syncthreads();
  const int64_t n_bytes = (n + 1) / 2;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t b = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; b < n_bytes; b += stride) {
    const uint8_t byte = packed[b];
    const int64_t i = 2 * b;
    store(out, i, code[byte >> 4] * absmax[i / blocksize]);
    if (i + 1 < n) store(out, i + 1, code[byte & 0x0F] * absmax[(i + 1) / blocksize]);
  }
}

template <typename T>
int launch(const uint8_t* packed, const float* absmax, T* out, int64_t n, int blocksize, void* stream) {
  if (n < 0 || blocksize <= 0) return static_cast<int>(cudaErrorInvalidValue);
  if (n == 0) return static_cast<int>(cudaSuccess);
  constexpr int kThreads = 256;
  const int64_t n_bytes = (n + 1) / 2;
  // Enough blocks to fill any current GPU; the grid-stride loop covers the rest.
  const int64_t want = (n_bytes + kThreads - 1) / kThreads;
  const unsigned blocks = static_cast<unsigned>(want < 65535 * 8 ? want : 65535 * 8);
  nf4_dequantize_kernel<T><<<blocks, kThreads, 0, static_cast<cudaStream_t>(stream)>>>(packed, absmax, out, n,
                                                                                       blocksize);
  return static_cast<int>(cudaGetLastError());
}

}  // namespace

extern "C" {

/// Dequantizes `n` NF4 values to float32 on `stream` (a cudaStream_t; null for the legacy default
/// stream). All pointers are device pointers. Returns a cudaError_t (0 on success); the launch is
/// asynchronous, so kernel faults surface on the next synchronising call.
int steptune_nf4_dequantize_f32_cuda(const uint8_t* packed, const float* absmax, float* out, int64_t n,
                                     int blocksize, void* stream) {
  return launch(packed, absmax, out, n, blocksize, stream);
}

/// As steptune_nf4_dequantize_f32_cuda, with bfloat16 output (the product is computed in float32
/// and rounded to nearest even once).
int steptune_nf4_dequantize_bf16_cuda(const uint8_t* packed, const float* absmax, void* out, int64_t n,
                                      int blocksize, void* stream) {
  return launch(packed, absmax, static_cast<__nv_bfloat16*>(out), n, blocksize, stream);
}

}  // extern "C"
