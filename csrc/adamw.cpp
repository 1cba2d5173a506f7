// The optimizer's C++ side. One AdamW update of one parameter, op for op as torch.optim.AdamW's single-tensor path
// (foreach=False, fused=False: what transformers' Trainer runs on CPUs). tch has no scaled
// addcmul_/addcdiv_, and composing them from its operators allocated a temporary per arithmetic
// step (eight full-size tensors per parameter); here only the denominator is allocated.
#include <torch/torch.h>

#include <cmath>

#include "ffi_common.h"

extern "C" {

/// param, exp_avg, exp_avg_sq, grad: float32 tensors of one shape, updated in place.
/// `step` counts from 1; `decay` is 1 - lr·weight_decay (1 when the parameter does not decay).
int steptune_adamw_update(torch::Tensor* param, torch::Tensor* exp_avg, torch::Tensor* exp_avg_sq,
                          torch::Tensor* grad, double lr, double beta1, double beta2, double eps, double decay,
                          int64_t step) {
  return steptune::guarded([&] {
    torch::NoGradGuard no_grad;
    if (decay != 1.0) param->mul_(decay);
    exp_avg->lerp_(*grad, 1.0 - beta1);
    exp_avg_sq->mul_(beta2).addcmul_(*grad, *grad, 1.0 - beta2);
    const double bias_correction1 = 1.0 - std::pow(beta1, static_cast<double>(step));
    const double bias_correction2 = 1.0 - std::pow(beta2, static_cast<double>(step));
    const double step_size = lr / bias_correction1;
    const torch::Tensor denom = (exp_avg_sq->sqrt() / std::sqrt(bias_correction2)).add_(eps);
    param->addcdiv_(*exp_avg, denom, -step_size);
  });
}

/// Drops a tensor's `.grad` (torch's `zero_grad(set_to_none=True)`): the next backward assigns
/// its gradient instead of adding it to a buffer of zeros, a pass over memory saved per parameter.
int steptune_clear_grad(torch::Tensor* t) {
  return steptune::guarded([&] { t->mutable_grad().reset(); });
}

}  // extern "C"
