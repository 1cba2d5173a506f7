// NF4 (bitsandbytes' 4-bit NormalFloat storage) on the libtorch side: dequantization on CPU (and on
// the GPU through csrc/nf4_dequant.cu when compiled in), and the 4-bit linear as a
// torch::autograd::Function, which tch cannot express. Its forward dequantizes and multiplies; it
// saves only the packed weight and its quantization state, and backward dequantizes again, so no
// 16-bit copy of a frozen weight lives between forward and backward. That is QLoRA's memory saving.
//
// Layout (bitsandbytes): the row-major flattened weight, n values, in blocks of `blocksize`;
//   packed  uint8 [ceil(n/2)], element 2i in the high nibble of byte i, 2i+1 in the low nibble;
//   absmax  float32 [blocks], or with double quantization uint8 [blocks], decoded as
//           nested_code[q] * nested_absmax[b / nested_blocksize] + offset (float32, in that order).
//   value   = (float)(NF4[code] * absmax[i / blocksize]), rounded once to the output dtype.
#include <ATen/Parallel.h>
#include <torch/torch.h>

#include <cstdint>

#include "ffi_common.h"
#include "nf4_code.h"

#ifdef STEPTUNE_CUDA_KERNELS
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

// csrc/nf4_dequant.cu (compiled by nvcc when built with --features cuda).
extern "C" int steptune_nf4_dequantize_f32_cuda(const uint8_t* packed, const float* absmax, float* out, int64_t n,
                                                int blocksize, void* stream);
extern "C" int steptune_nf4_dequantize_bf16_cuda(const uint8_t* packed, const float* absmax, void* out, int64_t n,
                                                 int blocksize, void* stream);
#endif

using steptune::guarded;
using torch::Tensor;

namespace {

constexpr float kNf4[16] = STEPTUNE_NF4_CODE;

/// The quantization state of one weight, as the Rust side holds it (src/adapt/nf4.rs).
struct Nf4State {
  Tensor packed;         // uint8 [ceil(n/2)] (any shape; read flat)
  Tensor absmax;         // float32 [blocks], or uint8 [blocks] when nested
  Tensor nested_absmax;  // float32 [ceil(blocks / nested_blocksize)], undefined when not nested
  Tensor nested_code;    // float32 [256], undefined when not nested
  double offset = 0.0;
  int64_t blocksize = 64;
  int64_t nested_blocksize = 256;
  int64_t out_features = 0;
  int64_t in_features = 0;
  c10::ScalarType dtype = c10::ScalarType::Float;  // the weight's original dtype

  int64_t numel() const { return out_features * in_features; }
  bool nested() const { return nested_absmax.defined() && nested_absmax.numel() > 0; }
};

void check_state(const Nf4State& s) {
  const int64_t n = s.numel();
  TORCH_CHECK(s.out_features >= 0 && s.in_features >= 0, "nf4: negative shape [", s.out_features, ", ",
              s.in_features, "]");
  TORCH_CHECK(s.blocksize > 0 && s.nested_blocksize > 0, "nf4: block sizes must be positive");
  TORCH_CHECK(s.packed.scalar_type() == torch::kUInt8, "nf4: packed must be uint8, is ", s.packed.scalar_type());
  TORCH_CHECK(s.packed.numel() >= (n + 1) / 2, "nf4: ", n, " values need ", (n + 1) / 2, " packed bytes, have ",
              s.packed.numel());
  const int64_t blocks = (n + s.blocksize - 1) / s.blocksize;
  TORCH_CHECK(s.absmax.numel() >= blocks, "nf4: ", n, " values in blocks of ", s.blocksize, " need ", blocks,
              " absmax values, have ", s.absmax.numel());
  TORCH_CHECK(s.absmax.device() == s.packed.device(), "nf4: absmax is on ", s.absmax.device(), ", packed on ",
              s.packed.device());
  if (s.nested()) {
    TORCH_CHECK(s.absmax.scalar_type() == torch::kUInt8, "nf4: nested absmax codes must be uint8, are ",
                s.absmax.scalar_type());
    TORCH_CHECK(s.nested_code.defined() && s.nested_code.numel() == 256 &&
                    s.nested_code.scalar_type() == torch::kFloat32,
                "nf4: the nested code must be 256 float32 values");
    TORCH_CHECK(s.nested_absmax.scalar_type() == torch::kFloat32, "nf4: nested absmax must be float32");
    const int64_t blocks2 = (blocks + s.nested_blocksize - 1) / s.nested_blocksize;
    TORCH_CHECK(s.nested_absmax.numel() >= blocks2, "nf4: ", blocks, " absmax values in blocks of ",
                s.nested_blocksize, " need ", blocks2, " nested absmax values, have ", s.nested_absmax.numel());
  } else {
    TORCH_CHECK(s.absmax.scalar_type() == torch::kFloat32, "nf4: absmax must be float32, is ",
                s.absmax.scalar_type());
  }
}

/// absmax as float32 [blocks]: decodes the double-quantized form the way bitsandbytes does
/// (dequantize_blockwise, then `+= offset`, each rounded to float32).
Tensor absmax_f32(const Nf4State& s) {
  const int64_t blocks = (s.numel() + s.blocksize - 1) / s.blocksize;
  if (!s.nested()) return s.absmax.reshape({-1}).narrow(0, 0, blocks);
  const Tensor q = s.absmax.reshape({-1}).narrow(0, 0, blocks).to(torch::kLong);
  const Tensor scale = s.nested_absmax.reshape({-1}).repeat_interleave(s.nested_blocksize).narrow(0, 0, blocks);
  // Two separate float32 operations, as bitsandbytes performs them (no fused multiply-add).
  Tensor v = s.nested_code.index_select(0, q).mul(scale);
  return v.add(static_cast<float>(s.offset));
}

// Per block: the 16 possible values NF4[c] * absmax, each computed once in float32 and rounded once
// to T (bit-identical to rounding every element's product), then one table lookup per element.
template <typename T>
void dequantize_cpu(const uint8_t* packed, const float* absmax, T* out, int64_t n, int64_t blocksize) {
  const int64_t blocks = (n + blocksize - 1) / blocksize;
  const int64_t grain = std::max<int64_t>(1, 16384 / blocksize);
  at::parallel_for(0, blocks, grain, [&](int64_t b0, int64_t b1) {
    T table[16];
    for (int64_t b = b0; b < b1; ++b) {
      const float scale = absmax[b];
      for (int c = 0; c < 16; ++c) table[c] = static_cast<T>(kNf4[c] * scale);
      int64_t i = b * blocksize;
      const int64_t end = std::min(n, (b + 1) * blocksize);
      if (i & 1) {  // an odd block start (odd blocksize): its first value is a low nibble
        out[i] = table[packed[i >> 1] & 0x0F];
        ++i;
      }
      for (; i + 1 < end; i += 2) {
        const uint8_t byte = packed[i >> 1];
        out[i] = table[byte >> 4];
        out[i + 1] = table[byte & 0x0F];
      }
      if (i < end) out[i] = table[packed[i >> 1] >> 4];
    }
  });
}

/// The weight as a dense [out, in] tensor of `dtype` on the state's device.
Tensor dequantize(const Nf4State& s, c10::ScalarType dtype) {
  check_state(s);
  const int64_t n = s.numel();
  const Tensor packed = s.packed.reshape({-1}).contiguous();
  const Tensor absmax = absmax_f32(s).contiguous();
#ifdef STEPTUNE_CUDA_KERNELS
  if (packed.is_cuda()) {
    const c10::cuda::CUDAGuard guard(packed.device());
    const bool bf16 = dtype == torch::kBFloat16;
    Tensor out = torch::empty({n}, packed.options().dtype(bf16 ? torch::kBFloat16 : torch::kFloat32));
    if (n > 0) {
      void* stream = c10::cuda::getCurrentCUDAStream(packed.device().index()).stream();
      const int rc = bf16 ? steptune_nf4_dequantize_bf16_cuda(packed.data_ptr<uint8_t>(), absmax.data_ptr<float>(),
                                                              out.data_ptr(), n, static_cast<int>(s.blocksize), stream)
                          : steptune_nf4_dequantize_f32_cuda(packed.data_ptr<uint8_t>(), absmax.data_ptr<float>(),
                                                             out.data_ptr<float>(), n, static_cast<int>(s.blocksize),
                                                             stream);
      TORCH_CHECK(rc == 0, "nf4 dequantize: CUDA kernel launch failed: ",
                  cudaGetErrorString(static_cast<cudaError_t>(rc)));
    }
    // float32 → float16 rounds once, as bitsandbytes' float32-then-cast does.
    return out.to(dtype).view({s.out_features, s.in_features});
  }
#endif
  TORCH_CHECK(packed.is_cpu(), "nf4 dequantize: tensors on ", packed.device(),
              " need the CUDA kernels (build with --features cuda)");
  Tensor out = torch::empty({n}, packed.options().dtype(dtype));
  const uint8_t* p = packed.data_ptr<uint8_t>();
  const float* a = absmax.data_ptr<float>();
  switch (dtype) {
    case torch::kFloat32:
      dequantize_cpu(p, a, out.data_ptr<float>(), n, s.blocksize);
      break;
    case torch::kBFloat16:
      dequantize_cpu(p, a, out.data_ptr<c10::BFloat16>(), n, s.blocksize);
      break;
    case torch::kFloat16:
      dequantize_cpu(p, a, out.data_ptr<c10::Half>(), n, s.blocksize);
      break;
    default:
      TORCH_CHECK(false, "nf4 dequantize: output dtype ", dtype, " is not float32, bfloat16 or float16");
  }
  return out.view({s.out_features, s.in_features});
}

/// y = x Wᵀ with W dequantized on the fly. Saves the packed weight and its state, never W.
class Nf4Linear : public torch::autograd::Function<Nf4Linear> {
 public:
  // x: [.., in] → [.., out]
  static Tensor forward(torch::autograd::AutogradContext* ctx, const Tensor& x, const Tensor& packed,
                        const Tensor& absmax, const Tensor& nested_absmax, const Tensor& nested_code, double offset,
                        int64_t blocksize, int64_t nested_blocksize, int64_t out_features, int64_t in_features,
                        int64_t dtype) {
    const Nf4State s{packed, absmax, nested_absmax, nested_code, offset, blocksize, nested_blocksize,
                     out_features, in_features, static_cast<c10::ScalarType>(dtype)};
    TORCH_CHECK(x.size(-1) == in_features, "nf4 linear: input has ", x.size(-1), " features, the weight takes ",
                in_features);
    // Dequantize to the stored dtype, then cast to the compute dtype, as bitsandbytes does.
    const Tensor w = dequantize(s, s.dtype).to(x.scalar_type());  // [out, in]
    ctx->save_for_backward({packed, absmax, nested_absmax, nested_code});
    ctx->saved_data["offset"] = offset;
    ctx->saved_data["blocksize"] = blocksize;
    ctx->saved_data["nested_blocksize"] = nested_blocksize;
    ctx->saved_data["out_features"] = out_features;
    ctx->saved_data["in_features"] = in_features;
    ctx->saved_data["dtype"] = dtype;
    return torch::linear(x, w);
  }

  // grad_out: [.., out] → grad_x: [.., in]; the frozen weight gets no gradient.
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    torch::autograd::variable_list result(11);
    if (!ctx->needs_input_grad(0)) return result;
    const auto saved = ctx->get_saved_variables();
    const Nf4State s{saved[0],
                     saved[1],
                     saved[2],
                     saved[3],
                     ctx->saved_data["offset"].toDouble(),
                     ctx->saved_data["blocksize"].toInt(),
                     ctx->saved_data["nested_blocksize"].toInt(),
                     ctx->saved_data["out_features"].toInt(),
                     ctx->saved_data["in_features"].toInt(),
                     static_cast<c10::ScalarType>(ctx->saved_data["dtype"].toInt())};
    const Tensor& g = grads[0];
    const Tensor w = dequantize(s, s.dtype).to(g.scalar_type());  // [out, in]
    result[0] = g.matmul(w);
    return result;
  }
};

// Absent optional tensors cross as empty ones: autograd's apply() needs every tensor argument defined.
Tensor or_empty(torch::Tensor* t) { return t == nullptr ? torch::empty({0}, torch::kFloat32) : *t; }

}  // namespace

extern "C" {

/// The NF4 weight as a dense [out, in] tensor of `dtype` (a c10::ScalarType) on its device.
/// `nested_absmax`/`nested_code` are null without double quantization.
int steptune_nf4_dequantize(torch::Tensor* packed, torch::Tensor* absmax, torch::Tensor* nested_absmax,
                            torch::Tensor* nested_code, double offset, int64_t blocksize, int64_t nested_blocksize,
                            int64_t out_features, int64_t in_features, int dtype, torch::Tensor** out) {
  return guarded([&] {
    const Nf4State s{*packed, *absmax, or_empty(nested_absmax), or_empty(nested_code), offset, blocksize,
                     nested_blocksize, out_features, in_features, static_cast<c10::ScalarType>(dtype)};
    *out = new torch::Tensor(dequantize(s, s.dtype));
  });
}

/// The decoded absmax, float32 [blocks].
int steptune_nf4_absmax(torch::Tensor* absmax, torch::Tensor* nested_absmax, torch::Tensor* nested_code,
                        double offset, int64_t blocksize, int64_t nested_blocksize, int64_t numel,
                        torch::Tensor** out) {
  return guarded([&] {
    Nf4State s{Tensor(), *absmax, or_empty(nested_absmax), or_empty(nested_code), offset, blocksize,
               nested_blocksize, 1, numel, c10::ScalarType::Float};
    *out = new torch::Tensor(absmax_f32(s).clone());
  });
}

/// y = x Wᵀ through the Nf4Linear autograd function; `dtype` is the weight's stored dtype.
int steptune_nf4_linear(torch::Tensor* x, torch::Tensor* packed, torch::Tensor* absmax, torch::Tensor* nested_absmax,
                        torch::Tensor* nested_code, double offset, int64_t blocksize, int64_t nested_blocksize,
                        int64_t out_features, int64_t in_features, int dtype, torch::Tensor** out) {
  return guarded([&] {
    *out = new torch::Tensor(Nf4Linear::apply(*x, *packed, *absmax, or_empty(nested_absmax),
                                              or_empty(nested_code), offset, blocksize, nested_blocksize,
                                              out_features, in_features, static_cast<int64_t>(dtype)));
  });
}

#ifdef STEPTUNE_CUDA_KERNELS
/// The raw GPU kernel (flat float32 absmax, float32 or bfloat16 output), kept for the kernel's
/// own tests and bandwidth benchmark.
int steptune_nf4_dequantize_cuda_raw(torch::Tensor* packed, torch::Tensor* absmax, int64_t n, int blocksize, int bf16,
                                     torch::Tensor** out) {
  return guarded([&] {
    TORCH_CHECK(packed->is_cuda(), "nf4_dequantize_cuda: packed must be on a CUDA device, is on ", packed->device());
    const Nf4State s{*packed, *absmax, Tensor(), Tensor(), 0.0, blocksize, 256, 1, n,
                     bf16 ? torch::kBFloat16 : torch::kFloat32};
    *out = new torch::Tensor(dequantize(s, s.dtype).reshape({-1}));
  });
}
#endif

}  // extern "C"
