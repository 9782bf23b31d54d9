#pragma once
/// The optimizer and learning-rate schedule of a training run.
#include <ddpm/train/config.hpp>

#include <torch/optim/adam.h>
#include <torch/optim/adamw.h>
#include <torch/optim/optimizer.h>

#include <algorithm>
#include <cmath>
#include <memory>
#include <vector>

namespace ddpm {

/// Adam or AdamW over `params` with the config's lr, betas, eps and weight decay.
inline std::unique_ptr<torch::optim::Optimizer> make_optimizer(std::vector<torch::Tensor> params,
                                                                const TrainConfig& c) {
  if (c.optimizer == OptimizerKind::AdamW) {
    return std::make_unique<torch::optim::AdamW>(
        params, torch::optim::AdamWOptions(c.lr).betas({c.adam_beta1, c.adam_beta2}).eps(c.adam_eps).weight_decay(
                    c.weight_decay));
  }
  return std::make_unique<torch::optim::Adam>(
      params,
      torch::optim::AdamOptions(c.lr).betas({c.adam_beta1, c.adam_beta2}).eps(c.adam_eps).weight_decay(c.weight_decay));
}

/// Learning rate at step s (0-based): warmup lr * (s+1)/warmup_steps, then constant or
/// cosine 0.5 (1 + cos(pi p)) with p the post-warmup progress towards `steps`.
inline double learning_rate_at(const TrainConfig& c, int64_t s) {
  double lr = c.lr;
  if (c.warmup_steps > 0 && s < c.warmup_steps) lr *= double(s + 1) / double(c.warmup_steps);
  if (c.lr_schedule == LrSchedule::Cosine && s >= c.warmup_steps) {
    const double span = std::max<double>(1.0, double(c.steps - c.warmup_steps));
    const double p = std::min(1.0, double(s - c.warmup_steps) / span);
    lr *= 0.5 * (1.0 + std::cos(M_PI * p));
  }
  return lr;
}

}  // namespace ddpm
