#pragma once
/// The optimizer and learning-rate schedule of a training run.
#include <ddpm/train/config.hpp>

#include <torch/optim/adam.h>
#include <torch/optim/adamw.h>
#include <torch/optim/optimizer.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
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
/// cosine 0.5 (1 + cos(pi p)) with p the post-warmup progress towards the last step, which is
/// `steps`, or `horizon` when that comes first (> 0: the step the time limit will allow, see
/// time_limit_horizon).
inline double learning_rate_at(const TrainConfig& c, int64_t s, int64_t horizon = 0) {
  double lr = c.lr;
  if (c.warmup_steps > 0 && s < c.warmup_steps) lr *= double(s + 1) / double(c.warmup_steps);
  if (c.lr_schedule == LrSchedule::Cosine && s >= c.warmup_steps) {
    const int64_t end = horizon > 0 ? std::min(horizon, c.steps) : c.steps;
    const double span = std::max<double>(1.0, double(end - c.warmup_steps));
    const double p = std::min(1.0, double(s - c.warmup_steps) / span);
    lr *= 0.5 * (1.0 + std::cos(M_PI * p));
  }
  return lr;
}

/// The step a time-limited run will reach, projected from its own pace: a run that started at
/// step `first_step` and has made `steps_done` steps in `elapsed_s` seconds (everything it did
/// included: sample grids, checkpoints, evaluations) reaches first_step + limit_s * steps_done /
/// elapsed_s when its time limit of `limit_s` seconds is up. 0 (no horizon) before the first step.
/// With lr_schedule "cosine" and a time limit, the trainer decays the learning rate to 0 there
/// instead of at `steps`, which a time-limited run may never reach.
inline int64_t time_limit_horizon(int64_t first_step, int64_t steps_done, double elapsed_s, double limit_s) {
  if (steps_done <= 0 || elapsed_s <= 0 || limit_s <= 0) return 0;
  const double projected = static_cast<double>(first_step) + limit_s * static_cast<double>(steps_done) / elapsed_s;
  return static_cast<int64_t>(std::min(projected, 9.0e15));
}

}  // namespace ddpm
