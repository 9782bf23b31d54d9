#pragma once
/// What the trainer returns: the result of one optimizer step and of a whole run().
#include <torch/types.h>

#include <cmath>
#include <cstdint>
#include <string>

namespace ddpm {

/// Result of one optimizer step.
struct TrainStepOutput {
  /// The step number after this step (1 for the first step).
  int64_t step = 0;
  /// The batch's loss (before the update); with data parallelism (allreduce_sum hook
  /// set) the mean over the ranks, i.e. the loss of the global batch.
  double loss = 0;
  /// This rank's own batch loss (equal to `loss` in a single process).
  double rank_loss = 0;
  /// Global gradient norm before clipping (NaN when not computed).
  double grad_norm = NAN;
  /// Learning rate used.
  double lr = 0;
  /// False when the loss was NaN/Inf (on any rank): then no update was applied (on any rank).
  bool finite = true;
  /// Class-conditional runs: the labels the UNet was given (int64 [B], CPU), after replacing
  /// a share p_uncond of them by the null class; undefined for unconditional runs.
  torch::Tensor class_labels;
};

/// Why run() returned.
enum class RunStatus { Completed, TimeLimit, Interrupted, NonFiniteLoss };

/// Result of Trainer::run.
struct RunResult {
  RunStatus status = RunStatus::Completed;
  int64_t step = 0;
  /// Last checkpoint written or loaded ("" when none).
  std::string checkpoint;
  /// Last sample grid written ("" when none).
  std::string sample_grid;
  std::string message;
};

}  // namespace ddpm
