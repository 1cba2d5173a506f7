// The language-model head and its cross-entropy over chunks of labelled positions, as one
// torch::autograd::Function (tch cannot define one). The [tokens, vocab] logits of a micro-batch
// (1.2 GB in fp32 per 2,048 tokens at Qwen3's 151,936 vocabulary, and as much again for their
// gradient) never exist at once: forward keeps only the last chunk's log-probabilities; backward
// takes that chunk first, then recomputes the others' logits one at a time, and accumulates the
// hidden states' and the head's gradients (a batch within one chunk costs no recompute). Each chunk runs
// the same operations autograd runs on the whole (log_softmax, its backward from the output), so
// the numbers differ from the unchunked path only in summation order.
#include <torch/torch.h>

#include "ffi_common.h"

namespace {
using torch::Tensor;
using steptune::guarded;
constexpr int64_t kIgnoreIndex = -100;

/// sum over rows of cross_entropy(hidden Wᵀ, targets), rows with target -100 left out.
class ChunkedLinearCrossEntropy : public torch::autograd::Function<ChunkedLinearCrossEntropy> {
 public:
  // hidden: [n, h] (the model's kind), weight: [V, h], targets: [n] int64 → loss: [] float32
  static Tensor forward(torch::autograd::AutogradContext* ctx, const Tensor& hidden, const Tensor& weight,
                        const Tensor& targets, int64_t chunk, bool keep_last) {
    TORCH_CHECK(hidden.dim() == 2 && weight.dim() == 2 && hidden.size(1) == weight.size(1),
                "chunked cross-entropy: hidden ", hidden.sizes(), " and head ", weight.sizes(), " do not match");
    TORCH_CHECK(targets.dim() == 1 && targets.size(0) == hidden.size(0), "chunked cross-entropy: ",
                targets.size(0), " targets for ", hidden.size(0), " rows");
    TORCH_CHECK(chunk > 0, "chunked cross-entropy: chunk must be positive, got ", chunk);
    const int64_t n = hidden.size(0);
    Tensor loss = torch::zeros({}, hidden.options().dtype(torch::kFloat32));
    Tensor last_log_probs;
    for (int64_t start = 0; start < n; start += chunk) {
      const int64_t len = std::min(chunk, n - start);
      const Tensor t = targets.narrow(0, start, len);                                                 // [c]
      last_log_probs.reset();  // at most two fp32 [c, V] at once: these logits and their log-probs
      const Tensor logits = torch::linear(hidden.narrow(0, start, len), weight).to(torch::kFloat32);  // [c, V]
      last_log_probs = logits.log_softmax(-1);                                                        // [c, V]
      loss += torch::nll_loss(last_log_probs, t, {}, at::Reduction::Sum, kIgnoreIndex);
    }
    ctx->save_for_backward({hidden, weight, targets});
    ctx->saved_data["chunk"] = chunk;
    // Not a saved variable: backward drops it as soon as its chunk is done. Without a backward
    // to come (eval loss under no_grad) nothing is kept.
    if (keep_last && n > 0) ctx->saved_data["last_log_probs"] = last_log_probs;
    return loss;
  }

  // grad: [] → d hidden [n, h], d weight [V, h]: per chunk, exp(log_softmax)·grad − grad at the
  // target (log_softmax's backward from its output), cast to the model's kind as autograd casts the
  // logits' gradient, then through the head's matmul.
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const Tensor &hidden = saved[0], &weight = saved[1], &targets = saved[2];
    const int64_t chunk = ctx->saved_data["chunk"].toInt();
    const int64_t n = hidden.size(0);
    const bool want_hidden = ctx->needs_input_grad(0), want_weight = ctx->needs_input_grad(1);
    const Tensor g = grads[0].to(torch::kFloat32);
    const bool one_chunk = n <= chunk;
    Tensor d_hidden = want_hidden && !one_chunk ? torch::empty_like(hidden) : Tensor();
    // The head's gradient sums over chunks in float32, rounded once to the weight's kind.
    Tensor d_weight;
    const int64_t last_start = n == 0 ? 0 : (n - 1) / chunk * chunk;
    for (int64_t start = last_start; start >= 0 && n > 0 && (want_hidden || want_weight); start -= chunk) {
      const int64_t len = std::min(chunk, n - start);
      const Tensor h = hidden.narrow(0, start, len);  // [c, h]
      const Tensor t = targets.narrow(0, start, len);  // [c]
      const Tensor keep = t.ne(kIgnoreIndex).unsqueeze(1);  // [c, 1]
      Tensor d_logits;  // [c, V]
      if (start == last_start && ctx->saved_data.count("last_log_probs")) {
        d_logits = ctx->saved_data["last_log_probs"].toTensor();
        ctx->saved_data.erase("last_log_probs");
      } else {
        d_logits = torch::linear(h, weight).to(torch::kFloat32).log_softmax(-1);
      }
      d_logits.exp_().mul_(g);
      d_logits.scatter_add_(1, t.clamp_min(0).unsqueeze(1), (-g).expand({len, 1}).contiguous());
      d_logits.mul_(keep);
      const Tensor d = d_logits.to(hidden.scalar_type());  // [c, V]
      if (want_hidden && one_chunk) d_hidden = d.matmul(weight);
      if (want_hidden && !one_chunk) d_hidden.narrow(0, start, len).copy_(d.matmul(weight));
      if (want_weight) {
        const Tensor part = d.t().matmul(h);  // [V, h]
        if (d_weight.defined()) d_weight.add_(part);
        else d_weight = part.to(torch::kFloat32);
      }
    }
    return {d_hidden, d_weight.defined() ? d_weight.to(weight.scalar_type()) : Tensor(), Tensor(), Tensor(), Tensor()};
  }
};
}  // namespace

extern "C" {

/// The summed cross-entropy of `hidden` [n, h] through the head `weight` [V, h] against `targets`
/// [n], `chunk` rows at a time; a float32 scalar with a graph to both inputs.
int steptune_chunked_linear_cross_entropy(torch::Tensor* hidden, torch::Tensor* weight, torch::Tensor* targets,
                                          int64_t chunk, torch::Tensor** out) {
  return guarded([&] {
    const bool backward_to_come = torch::GradMode::is_enabled() && (hidden->requires_grad() || weight->requires_grad());
    *out = new torch::Tensor(ChunkedLinearCrossEntropy::apply(*hidden, *weight, *targets, chunk, backward_to_come));
  });
}

}  // extern "C"
