#pragma once
/// Data-parallel training's collectives (TrainerHooks) and the decisions the ranks make
/// together: stopping (a signal or the time limit on any rank stops all: stop_decision) and checking that
/// every rank resumed at the same step.
#include <ddpm/detail/fields.hpp>
#include <ddpm/error.hpp>
#include <ddpm/train/run_result.hpp>

#include <ATen/CPUGeneratorImpl.h>

#include <torch/nn/module.h>
#include <torch/types.h>

#include <cmath>
#include <csignal>
#include <cstdint>
#include <functional>
#include <string>

namespace ddpm {

/// Collectives for data-parallel training (all optional; defaults = one process).
/// Distributed::hooks<TrainerHooks>() fills every member. Every rank must call the
/// collectives in the same order, so the trainer makes its stop decisions (non-finite
/// loss, SIGINT/SIGTERM, time limit) together through `allreduce_sum` when it is set.
struct TrainerHooks {
  int rank = 0;
  int world_size = 1;
  /// Index of this process on its machine: with world_size > 1 on CUDA, the trainer uses
  /// cuda:(local_rank % device count).
  int local_rank = 0;
  /// Called after model creation and after resuming: make every rank hold rank 0's weights.
  std::function<void(torch::nn::Module&)> broadcast_parameters;
  /// Called after every backward pass: replace each gradient by its mean over ranks.
  std::function<void(torch::nn::Module&)> average_gradients;
  /// Called where ranks must meet (after checkpoints are written, at the end).
  std::function<void()> barrier;
  /// Sum of a scalar over the ranks (collective). Used once per step for the loss (whose
  /// mean is logged, and which stops every rank when it is non-finite on any rank) and
  /// once per step for the stop flags (a signal or the time limit on any rank stops all),
  /// and after resuming to check that every rank resumed at the same step. Unset with
  /// world_size > 1: each rank decides alone (a NaN on one rank then leaves the others
  /// waiting in average_gradients until their timeout).
  std::function<double(double)> allreduce_sum;
  /// Element-wise sum of a float64 CPU tensor over the ranks (collective; returns a new CPU
  /// tensor). Used by evaluation during training to merge the ranks' feature statistics
  /// (FeatureStats::pack) with one call. Unset with world_size > 1: each rank's evaluation
  /// then scores only its own share of the samples (rank 0's is logged).
  std::function<torch::Tensor(const torch::Tensor&)> allreduce_sum_tensor;

  /// True when the ranks make their decisions together (world_size > 1 with allreduce_sum).
  bool collective() const { return world_size > 1 && static_cast<bool>(allreduce_sum); }
};

/// Whether any rank saw a signal / ran out of time.
struct StopVote {
  bool signal = false;
  bool time_limit = false;
};

/// One scalar allreduce: with n ranks each contributes signal + time_up * (n + 1), so the
/// sum s + t (n + 1) with s, t <= n decodes exactly. Single process: the local flags.
inline StopVote stop_vote(const TrainerHooks& h, bool signal, bool time_up) {
  if (!h.collective()) return {signal, time_up};
  const int64_t n1 = static_cast<int64_t>(h.world_size) + 1;
  const double mine = (signal ? 1.0 : 0.0) + (time_up ? static_cast<double>(n1) : 0.0);
  const int64_t sum = std::llround(h.allreduce_sum(mine));
  return {sum % n1 > 0, sum / n1 > 0};
}

/// Why training stops before its next step (status Completed: it goes on).
struct StopDecision {
  RunStatus status = RunStatus::Completed;
  std::string message;
};

/// The ranks' stop decision before a step (one stop_vote): `signal` is the SIGINT/SIGTERM this
/// rank received (0 = none), `time_up` whether this rank is past the time limit of
/// `limit_minutes`. A signal on any rank interrupts all; so does the time limit.
inline StopDecision stop_decision(const TrainerHooks& h, int signal, bool time_up, double limit_minutes) {
  const StopVote vote = stop_vote(h, signal != 0, time_up);
  if (vote.signal) {
    return {RunStatus::Interrupted, signal != 0 ? std::string("interrupted by ") + (signal == SIGINT ? "SIGINT" : "SIGTERM")
                                                : std::string("interrupted (a signal reached another rank)")};
  }
  if (vote.time_limit) {
    return {RunStatus::TimeLimit, time_up ? "time limit of " + detail::format_number(limit_minutes) + " minutes reached"
                                          : std::string("time limit reached (on another rank)")};
  }
  return {};
}

/// After resuming: every rank must continue from the same step (the same checkpoint in a
/// shared out_dir), or they would disagree on how many steps remain and one would wait in
/// a collective until its timeout. n * sum(s^2) == sum(s)^2 iff all s are equal; every rank
/// computes the same verdict from the same sums, so all throw or none does. `where`
/// describes this rank's state for the message.
inline void check_ranks_agree_on_step(const TrainerHooks& h, int64_t step, const std::string& where) {
  if (!h.collective()) return;
  const double s = static_cast<double>(step);
  const double sum = h.allreduce_sum(s);
  const double sum_sq = h.allreduce_sum(s * s);
  if (static_cast<double>(h.world_size) * sum_sq != sum * sum) {
    throw Error("rank " + std::to_string(h.rank) + "/" + std::to_string(h.world_size) +
                ": the ranks resumed at different steps (this rank: " + where +
                ", mean over ranks: " + std::to_string(sum / h.world_size) +
                "). Every rank must see the same out_dir: use a shared file system across machines");
  }
}

/// Why training stops at `step` with a non-finite `loss` (the mean over ranks; this
/// rank's own is `rank_loss`): which rank, the lr, and the last good checkpoint.
inline std::string non_finite_loss_message(const TrainerHooks& h, int64_t step, double loss, double rank_loss,
                                           double lr, const std::string& last_checkpoint) {
  const double bad = std::isfinite(rank_loss) ? loss : rank_loss;
  std::string where;
  if (h.world_size > 1) {
    where = std::string(std::isfinite(rank_loss) ? " on another rank" : " on this rank") + " (rank " +
            std::to_string(h.rank) + "/" + std::to_string(h.world_size) + ")";
  }
  return "loss is " + std::string(std::isnan(bad) ? "NaN" : "infinite") + " at step " + std::to_string(step) + where +
         " (lr " + std::to_string(lr) + "); stopping without saving. The last good checkpoint is " +
         (last_checkpoint.empty() ? std::string("(none)") : last_checkpoint) +
         ". Try a lower --lr, more warmup_steps or grad_clip.";
}

/// The noise/timestep generator of `rank` (CPU), a function of seed, rank and the step it
/// starts at: ranks draw independent noise, also after a resume (step > 0).
inline at::Generator rank_generator(uint64_t seed, int rank, int64_t step) {
  return at::detail::createCPUGenerator(seed * 6364136223846793005ull + 1442695040888963407ull +
                                        static_cast<uint64_t>(rank) + static_cast<uint64_t>(step) * 0x9E3779B97F4A7C15ull);
}

}  // namespace ddpm
