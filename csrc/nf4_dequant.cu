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

#include <algorithm>
#include <cstdint>

#include "nf4_code.h"

namespace {

__constant__ float kNf4[16] = STEPTUNE_NF4_CODE;

__device__ __forceinline__ void store(float* out, int64_t i, float v) { out[i] = v; }
__device__ __forceinline__ void store(__nv_bfloat16* out, int64_t i, float v) { out[i] = __float2bfloat16_rn(v); }

// One thread per packed byte (two outputs), grid-stride, for values `first` (even) to n: any
// blocksize and alignment. The code book is copied to shared memory so that the data-dependent
// lookups do not serialise on constant memory.
template <typename T>
__global__ void nf4_dequantize_kernel(const uint8_t* __restrict__ packed, const float* __restrict__ absmax,
                                      T* __restrict__ out, int64_t first, int64_t n, int blocksize) {
  __shared__ float code[16];
  if (threadIdx.x < 16) code[threadIdx.x] = kNf4[threadIdx.x];
  __syncthreads();
  const int64_t n_bytes = (n + 1) / 2;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t b = first / 2 + static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; b < n_bytes; b += stride) {
    const uint8_t byte = packed[b];
    const int64_t i = 2 * b;
    store(out, i, code[byte >> 4] * absmax[i / blocksize]);
    if (i + 1 < n) store(out, i + 1, code[byte & 0x0F] * absmax[(i + 1) / blocksize]);
  }
}

// Eight values per thread: one 4-byte load of codes, one absmax (blocksize a power of two >= 8,
// so the eight share a block), one 16-byte (bf16) or two 16-byte (f32) stores. The arithmetic is
// the scalar kernel's, so the bits are too; the scalar kernel covers the last n % 8 values.
__device__ __forceinline__ void decode8(const float* code, uint32_t word, float a, float v[8]) {
#pragma unroll
  for (int k = 0; k < 4; ++k) {
    const uint32_t byte = (word >> (8 * k)) & 0xFF;
    v[2 * k] = code[byte >> 4] * a;
    v[2 * k + 1] = code[byte & 0x0F] * a;
  }
}

__device__ __forceinline__ void store8(float* out, int64_t group, const float v[8]) {
  float4* o = reinterpret_cast<float4*>(out) + 2 * group;
  o[0] = make_float4(v[0], v[1], v[2], v[3]);
  o[1] = make_float4(v[4], v[5], v[6], v[7]);
}

__device__ __forceinline__ void store8(__nv_bfloat16* out, int64_t group, const float v[8]) {
  uint4 packed;
  uint32_t* w = reinterpret_cast<uint32_t*>(&packed);
#pragma unroll
  for (int k = 0; k < 4; ++k) {
    const uint32_t lo = __bfloat16_as_ushort(__float2bfloat16_rn(v[2 * k]));
    const uint32_t hi = __bfloat16_as_ushort(__float2bfloat16_rn(v[2 * k + 1]));
    w[k] = lo | (hi << 16);
  }
  reinterpret_cast<uint4*>(out)[group] = packed;
}

template <typename T>
__global__ void nf4_dequantize_vec8_kernel(const uint8_t* __restrict__ packed, const float* __restrict__ absmax,
                                           T* __restrict__ out, int64_t groups, int log2_blocksize) {
  __shared__ float code[16];
  if (threadIdx.x < 16) code[threadIdx.x] = kNf4[threadIdx.x];
  __syncthreads();
  const uint32_t* words = reinterpret_cast<const uint32_t*>(packed);
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t g = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; g < groups; g += stride) {
    float v[8];
    decode8(code, words[g], absmax[(8 * g) >> log2_blocksize], v);
    store8(out, g, v);
  }
}

template <typename T>
int launch(const uint8_t* packed, const float* absmax, T* out, int64_t n, int blocksize, void* stream) {
  if (n < 0 || blocksize <= 0) return static_cast<int>(cudaErrorInvalidValue);
  if (n == 0) return static_cast<int>(cudaSuccess);
  constexpr int kThreads = 256;
  constexpr int64_t kMaxBlocks = 65535 * 8;  // enough to fill any current GPU; grid-stride loops cover the rest
  auto grid = [&](int64_t work) { return static_cast<unsigned>(std::min((work + kThreads - 1) / kThreads, kMaxBlocks)); };
  cudaStream_t s = static_cast<cudaStream_t>(stream);
  const bool pow2 = blocksize >= 8 && (blocksize & (blocksize - 1)) == 0;
  const bool aligned = reinterpret_cast<uintptr_t>(packed) % 4 == 0 && reinterpret_cast<uintptr_t>(out) % 16 == 0;
  int64_t done = 0;
  if (pow2 && aligned && n >= 8) {
    const int64_t groups = n / 8;
    int log2_bs = 0;
    while ((1 << log2_bs) < blocksize) ++log2_bs;
    nf4_dequantize_vec8_kernel<T><<<grid(groups), kThreads, 0, s>>>(packed, absmax, out, groups, log2_bs);
    done = 8 * groups;
  }
  if (done < n) {
    nf4_dequantize_kernel<T><<<grid((n - done + 1) / 2), kThreads, 0, s>>>(packed, absmax, out, done, n, blocksize);
  }
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
