#pragma once
/// Evaluation during training (TrainConfig::eval_every > 0): every eval_every steps and at the
/// end the trainer's EMA model generates eval_samples images through the Pipeline from a fixed
/// seed, scored against the committed Fashion-MNIST test statistics (FD-fmnist, KID, class
/// histogram; eval/evaluate.hpp). The trainer appends one {"step", "eval"} line to metrics.jsonl
/// (train/metrics.hpp, which plots eval.png); TrainingEvaluator keeps out_dir/best.pt + best.json
/// (train/run_dir.hpp) for the lowest FD so far and restores that best from best.json on resume.
/// Data parallel: each rank generates its share with its own seed and the ranks' feature
/// statistics are merged by ONE allreduce (allreduce_sum_tensor hook) before the FD is
/// computed; KID is computed on each rank's own share.
#include <ddpm/error.hpp>
#include <ddpm/eval/evaluate.hpp>
#include <ddpm/eval/feature_stats.hpp>
#include <ddpm/eval/frechet.hpp>
#include <ddpm/eval/kid.hpp>
#include <ddpm/guidance.hpp>
#include <ddpm/nn/unet.hpp>
#include <ddpm/pipeline.hpp>
#include <ddpm/sampler.hpp>
#include <ddpm/train/collective.hpp>
#include <ddpm/train/config.hpp>
#include <ddpm/train/run_dir.hpp>

#include <ATen/CPUGeneratorImpl.h>
#include <torch/arg.h>
#include <torch/serialize/archive.h>
#include <torch/types.h>

#include <nlohmann/json.hpp>

#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <functional>
#include <limits>
#include <string>
#include <utility>
#include <vector>

namespace ddpm {

/// What an evaluation during training generates (evaluation_options_of reads it from a TrainConfig).
struct TrainingEvalOptions {
  /// Images per evaluation, over all ranks.
  TORCH_ARG(int64_t, num_samples) = 1000;
  /// Any registered sampler name or preset.
  TORCH_ARG(std::string, sampler) = "dpmpp_2m";
  TORCH_ARG(int64_t, num_inference_steps) = 20;
  /// Images per generation batch; 0: default_sampling_batch(device) (16 on a CPU, 128 on a GPU).
  TORCH_ARG(int64_t, batch_size) = 0;
  TORCH_ARG(int64_t, image_size) = 32;
  /// Rank r draws its noise from seed + 0xe7a1 + r * 0x9E3779B97F4A7C15.
  TORCH_ARG(uint64_t, seed) = 0;
  /// Class-conditional runs (> 0): every class equally often (image i of a rank's share gets
  /// class i % num_classes), guided with guidance_scale in the guidance interval (fractions of
  /// num_train_timesteps, GenerateOptions) as the grids are.
  TORCH_ARG(int64_t, num_classes) = 0;
  TORCH_ARG(double, guidance_scale) = 1.0;
  TORCH_ARG(double, guidance_interval_min) = 0.0;
  TORCH_ARG(double, guidance_interval_max) = 1.0;
  /// The training data's class names by label. When they are the classifier's (Fashion-MNIST),
  /// a class-conditional evaluation also scores the class accuracy (eval/class_accuracy.hpp).
  TORCH_ARG(std::vector<std::string>, class_names) = {};
};

/// The evaluation settings of a training config (eval_sampler "" = the grid sampler).
inline TrainingEvalOptions evaluation_options_of(const TrainConfig& c) {
  return TrainingEvalOptions()
      .num_samples(c.eval_samples)
      .sampler(c.eval_sampler.empty() ? c.sampler : c.eval_sampler)
      .num_inference_steps(c.eval_steps)
      .batch_size(c.eval_batch_size)
      .image_size(c.image_size)
      .seed(c.seed)
      .num_classes(c.num_classes)
      .guidance_scale(c.guidance_scale)
      .guidance_interval_min(c.guidance_interval_min)
      .guidance_interval_max(c.guidance_interval_max);
}

/// Throws ddpm::Error unless the training data (`channels`-channel images of c.image_size,
/// from `dataset`) fits the Fashion-MNIST classifier's features and every one of `world_size`
/// ranks gets at least one evaluation image.
inline void check_evaluation_fits(const TrainConfig& c, int64_t channels, const std::string& dataset, int world_size) {
  const int64_t size = c.image_size;
  if (channels != 1 || (size != 28 && size != 32)) {
    throw Error("training config: \"eval_every\" = " + std::to_string(c.eval_every) +
                " scores samples with the Fashion-MNIST classifier's features, which need 1-channel 28x28 or "
                "32x32 images, but this run trains on " + std::to_string(channels) + "-channel " + std::to_string(size) +
                "x" + std::to_string(size) + " images (" + dataset +
                "); set eval_every to 0 (--eval-every 0) to train without evaluation");
  }
  if (c.eval_samples < world_size) {
    throw Error("training config: \"eval_samples\" = " + std::to_string(c.eval_samples) + " is fewer than the " +
                std::to_string(world_size) + " ranks; every rank generates at least one image");
  }
}

namespace detail {

/// evaluate_samples over the ranks: this rank's `images` are its share; the FD, class
/// histogram, mean confidence and (with opts.intended_classes) class accuracy come from the
/// ranks' statistics merged by ONE call of `allreduce_sum_tensor` on
/// [n, Σx, Σxxᵀ | class counts | Σ confidence | hits per class | totals per class]; KID from
/// this rank's share. wall_seconds is left 0.
inline EvalResult evaluate_across_ranks(const torch::Tensor& images, const Evaluator& evaluator, const EvalOptions& opts,
                                        const std::function<torch::Tensor(const torch::Tensor&)>& allreduce_sum_tensor) {
  FeatureNetwork& net = *evaluator.net;
  ExtractedFeatures ex = extract_features(net, images, opts.batch_size());
  const int64_t d = net.dim();
  const int64_t k = static_cast<int64_t>(ex.class_histogram.size());
  torch::Tensor hist = torch::zeros({k}, torch::kFloat64);
  for (int64_t i = 0; i < k; ++i) hist[i] = static_cast<double>(ex.class_histogram[static_cast<size_t>(i)]);
  const double share = static_cast<double>(images.size(0));
  const double conf = std::isfinite(ex.mean_confidence) ? ex.mean_confidence * share : 0.0;
  const bool accuracy = !opts.intended_classes().empty() && ex.predictions.defined();
  torch::Tensor acc = torch::zeros({accuracy ? 2 * k : 0}, torch::kFloat64);
  if (accuracy) {
    const ClassAccuracy mine = class_accuracy(ex.predictions, opts.intended_classes(), k);
    for (int64_t i = 0; i < k; ++i) {
      acc[i] = static_cast<double>(mine.hits[static_cast<size_t>(i)]);
      acc[k + i] = static_cast<double>(mine.totals[static_cast<size_t>(i)]);
    }
  }
  const torch::Tensor packed = torch::cat({ex.stats.pack(), hist, torch::full({1}, conf, torch::kFloat64), acc});
  const torch::Tensor sum = allreduce_sum_tensor(packed).to(torch::kCPU, torch::kFloat64);
  TORCH_CHECK(sum.numel() == packed.numel(), "Trainer::evaluate: allreduce_sum_tensor changed the size");
  const FeatureStats merged = FeatureStats::unpack(sum.slice(0, 0, 1 + d + d * d), d);
  const GaussianStats& ref = evaluator.reference;
  EvalResult r;
  r.n = merged.count();
  r.metric = net.metric();
  r.features = net.name();
  r.reference_n = ref.n;
  r.fd = frechet_distance(merged.mean(), merged.covariance(), ref.mu, ref.sigma).distance;
  if (ref.samples.defined() && ref.samples.size(0) >= 2 && ex.features.size(0) >= 2) {
    // KID needs the feature rows: this rank's share (an unbiased estimate from fewer samples).
    double scale = 1.0;
    if (net.normalize_kid()) scale = std::sqrt(ref.sigma.trace().item<double>() / static_cast<double>(d));
    const KidResult kid = kernel_inception_distance(ex.features / scale, ref.samples / scale, opts.kid());
    r.kid = kid.mean;
    r.kid_std = kid.std;
  }
  for (int64_t i = 0; i < k; ++i) r.class_histogram.push_back(std::llround(sum[1 + d + d * d + i].item<double>()));
  r.class_names = net.class_names();
  const int64_t tail = 1 + d + d * d + k;  // index of Σ confidence
  if (k > 0 && r.n > 0) r.mean_confidence = sum[tail].item<double>() / static_cast<double>(r.n);
  if (accuracy) {
    for (int64_t i = 0; i < k; ++i) {
      r.class_accuracy.hits.push_back(std::llround(sum[tail + 1 + i].item<double>()));
      r.class_accuracy.totals.push_back(std::llround(sum[tail + 1 + k + i].item<double>()));
    }
  }
  return r;
}

}  // namespace detail

/// What TrainingEvaluator::record decided.
struct EvalRecordOutput {
  /// The result beat the best so far: best.pt and best.json were written.
  bool new_best = false;
  /// "eval step N: FD-fmnist ..., KID ... (n samples, s s)[, new best]" for the log.
  std::string message;
};

/// The evaluation a trainer runs every eval_every steps: the committed Fashion-MNIST
/// evaluator on the trainer's device, and the best distance so far with its best.pt.
class TrainingEvaluator {
 public:
  using Log = std::function<void(const std::string&)>;

  /// Loads the committed classifier and test statistics (ddpm::Error when they cannot be
  /// found), warns through `log` when num_samples is too few for an unbiased FD, and restores
  /// the best so far from run_dir's best.json (a malformed one is ignored with a warning).
  TrainingEvaluator(TrainingEvalOptions options, RunDir run_dir, torch::Device device, const Log& log = {})
      : options_(std::move(options)), run_dir_(std::move(run_dir)), evaluator_(make_fmnist_evaluator()) {
    evaluator_.net->to(device);
    const int64_t dim = evaluator_.net->dim();
    if (log && options_.num_samples() <= dim) {
      log("warning: eval_samples = " + std::to_string(options_.num_samples()) + " <= the " + std::to_string(dim) +
          " feature dimensions: the " + evaluator_.net->metric() +
          " is strongly biased (use > 10x that for numbers to compare)");
    }
    try {
      if (const auto best = run_dir_.read_best()) {
        best_fd_ = best->fd;
        best_step_ = best->step;
      }
    } catch (const std::exception& e) {
      if (log) log("warning: ignoring " + run_dir_.best_record_path() + ": " + e.what());
    }
  }

  /// Generates this rank's share of num_samples images from `ema_model` with the configured
  /// sampler (built from `scheduler_config`) and scores them. Collective with data parallelism
  /// (hooks.world_size > 1 and hooks.allreduce_sum_tensor): every rank must call it, and every
  /// rank gets the merged FD, class histogram and confidence (KID: from its own share). Without
  /// that hook each rank scores only its own share.
  EvalResult evaluate(const UNet& ema_model, const nlohmann::json& scheduler_config, const TrainerHooks& hooks,
                      torch::Device device) const {
    const auto t0 = std::chrono::steady_clock::now();
    const int64_t world = hooks.world_size, rank = hooks.rank;
    const int64_t total = options_.num_samples();
    const int64_t share = total / world + (rank < total % world ? 1 : 0);
    auto gen = at::detail::createCPUGenerator(options_.seed() + 0xe7a1ull +
                                              static_cast<uint64_t>(rank) * 0x9E3779B97F4A7C15ull);
    Pipeline pipe(ema_model, make_sampler(scheduler_config, options_.sampler()), device);
    auto gopts = GenerateOptions()
                     .num_inference_steps(options_.num_inference_steps())
                     .batch_size(options_.batch_size() > 0 ? options_.batch_size() : default_sampling_batch(device))
                     .sample_size(options_.image_size());
    if (options_.num_classes() > 0) {
      gopts.class_labels(cyclic_class_labels(share, options_.num_classes()))
          .guidance_scale(options_.guidance_scale())
          .guidance_interval_min(options_.guidance_interval_min())
          .guidance_interval_max(options_.guidance_interval_max());
    }
    const torch::Tensor images = pipe.generate(share, gen, gopts);
    EvalOptions opts = evaluator_.options;
    opts.allow_few_samples(true);  // small num_samples: warned about once by the constructor
    if (scores_class_accuracy()) opts.intended_classes(gopts.class_labels());
    EvalResult r = (world == 1 || !hooks.allreduce_sum_tensor)
                       ? evaluate_samples(images, evaluator_.reference, *evaluator_.net, opts)
                       : detail::evaluate_across_ranks(images, evaluator_, opts, hooks.allreduce_sum_tensor);
    r.wall_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    return r;
  }

  /// Rank 0, after evaluate() at `step`: when `r` has a finite distance below the best so far,
  /// writes best.pt (the archive `write_state` fills: a full training checkpoint) and best.json,
  /// and remembers it.
  EvalRecordOutput record(int64_t step, const EvalResult& r,
                          const std::function<void(torch::serialize::OutputArchive&)>& write_state) {
    EvalRecordOutput out;
    out.new_best = std::isfinite(r.fd) && r.fd < best_fd_;
    char buf[224];
    char acc[48] = "";
    if (!r.class_accuracy.empty()) std::snprintf(acc, sizeof acc, ", class accuracy %.1f%%", 100 * r.class_accuracy.mean());
    std::snprintf(buf, sizeof buf, "eval step %lld: %s %.4g, KID %.4g%s (%lld samples, %.1f s)%s",
                  static_cast<long long>(step), r.metric.c_str(), r.fd, r.kid, acc, static_cast<long long>(r.n),
                  r.wall_seconds, out.new_best ? ", new best" : "");
    out.message = buf;
    if (out.new_best) {
      torch::serialize::OutputArchive a;
      write_state(a);
      BestEvalRecord best;
      best.step = step;
      best.metric = r.metric;
      best.fd = r.fd;
      best.kid = r.kid;
      best.n = r.n;
      run_dir_.write_best(a, best);
      best_fd_ = r.fd;
      best_step_ = step;
    }
    return out;
  }

  /// A class-conditional run on the classifier's classes (the same names, in the same order):
  /// evaluate() also scores the class accuracy.
  bool scores_class_accuracy() const {
    return options_.num_classes() > 0 && !options_.class_names().empty() &&
           options_.class_names() == evaluator_.net->class_names();
  }

  /// Lowest distance so far (+inf when none) and its step (-1 when none).
  double best_distance() const { return best_fd_; }
  int64_t best_step() const { return best_step_; }
  const TrainingEvalOptions& options() const { return options_; }

 private:
  TrainingEvalOptions options_;
  RunDir run_dir_;
  Evaluator evaluator_;
  double best_fd_ = std::numeric_limits<double>::infinity();
  int64_t best_step_ = -1;
};

}  // namespace ddpm
