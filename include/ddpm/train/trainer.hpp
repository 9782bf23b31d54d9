#pragma once
/// The DDPM training loop (Ho et al. 2020, Algorithm 1) for image data:
/// repeat { x0 ~ data; t ~ U{0..T-1}; eps ~ N(0, I); step on ||target - model(x_t, t)||^2 }
/// with Adam/AdamW, LR warmup (+ optional cosine decay), gradient clipping, an EMA
/// of the weights, crash-safe checkpoints that resume bit-exactly on CPU,
/// metrics.jsonl, loss-curve and sample-grid PNGs, SIGINT/SIGTERM handling and a
/// stop on a non-finite loss. Needs <ddpm/io/png.hpp> (Debian libstb-dev).
///
/// Output directory layout:
///   config.json             the effective TrainConfig (model resolved to a UNet config)
///   metrics.jsonl           one JSON object per log interval: step, loss, lr, img_per_s,
///                           time (training seconds since the run began), grad_norm
///   loss.png                the loss curve (refreshed with each sample grid / checkpoint)
///   samples/step-<N>.png    grids sampled from the EMA model every sample_every steps
///   ckpt-<N>.pt             the last keep_checkpoints checkpoints (see checkpoint.hpp)
///
/// Data-parallel training: the TrainerHooks carry rank / world_size and the
/// collectives. Each rank loads its own disjoint shard of every epoch (BatchLoader),
/// so the global batch is world_size x batch_size; broadcast_parameters runs after
/// model creation and after resuming, average_gradients after every backward pass,
/// and only rank 0 writes files and progress. Every rank resumes from the same
/// checkpoint in out_dir (checked). Stops are collective (allreduce_sum hook): a
/// non-finite loss, SIGINT/SIGTERM or the time limit on ANY rank stops ALL ranks at
/// the same step; the logged loss is the mean over the ranks.
#include <ddpm/data/cifar10.hpp>
#include <ddpm/data/idx.hpp>
#include <ddpm/data/loader.hpp>
#include <ddpm/data/transforms.hpp>
#include <ddpm/detail/json_enum.hpp>
#include <ddpm/detail/json_util.hpp>
#include <ddpm/device.hpp>
#include <ddpm/error.hpp>
#include <ddpm/forward_diffuser.hpp>
#include <ddpm/io/png.hpp>
#include <ddpm/nn/unet.hpp>
#include <ddpm/runtime.hpp>
#include <ddpm/sample.hpp>
#include <ddpm/sampler.hpp>
#include <ddpm/schedule.hpp>
#include <ddpm/train/checkpoint.hpp>
#include <ddpm/train/ema.hpp>
#include <ddpm/train/progress.hpp>

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Parallel.h>
#include <torch/cuda.h>
#include <torch/nn/utils/clip_grad.h>
#include <torch/optim/adam.h>
#include <torch/optim/adamw.h>
#include <torch/serialize/archive.h>
#include <torch/types.h>
#include <torch/version.h>

#include <nlohmann/json.hpp>

#include <atomic>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

namespace ddpm {

namespace detail {
/// Shortest readable form of a number for messages ("13.5", not "13.500000").
inline std::string format_number(double v) {
  std::ostringstream os;
  os << v;
  return os.str();
}
}  // namespace detail

/// Which dataset format to read.
enum class DatasetKind { Auto, Cifar10, FashionMnist, Mnist };
/// Optimizer.
enum class OptimizerKind { AdamW, Adam };
/// Learning-rate schedule after warmup.
enum class LrSchedule { Constant, Cosine };
/// Compute device.
enum class DeviceKind { Auto, Cpu, Cuda };
/// Autocast precision (CUDA only; the CPU always trains in float32).
enum class MixedPrecision { Auto, None, BF16, FP16 };

namespace detail {
inline const EnumNames<DatasetKind>& dataset_kind_names() {
  static const EnumNames<DatasetKind> n = {{DatasetKind::Auto, "auto"},
                                           {DatasetKind::Cifar10, "cifar10"},
                                           {DatasetKind::FashionMnist, "fashion-mnist"},
                                           {DatasetKind::Mnist, "mnist"}};
  return n;
}
inline const EnumNames<OptimizerKind>& optimizer_kind_names() {
  static const EnumNames<OptimizerKind> n = {{OptimizerKind::AdamW, "adamw"}, {OptimizerKind::Adam, "adam"}};
  return n;
}
inline const EnumNames<LrSchedule>& lr_schedule_names() {
  static const EnumNames<LrSchedule> n = {{LrSchedule::Constant, "constant"}, {LrSchedule::Cosine, "cosine"}};
  return n;
}
inline const EnumNames<DeviceKind>& device_kind_names() {
  static const EnumNames<DeviceKind> n = {{DeviceKind::Auto, "auto"}, {DeviceKind::Cpu, "cpu"}, {DeviceKind::Cuda, "cuda"}};
  return n;
}
inline const EnumNames<MixedPrecision>& mixed_precision_names() {
  static const EnumNames<MixedPrecision> n = {{MixedPrecision::Auto, "auto"},
                                              {MixedPrecision::None, "none"},
                                              {MixedPrecision::BF16, "bf16"},
                                              {MixedPrecision::FP16, "fp16"}};
  return n;
}
}  // namespace detail

DDPM_JSON_ENUM(DatasetKind, detail::dataset_kind_names, "dataset")
DDPM_JSON_ENUM(OptimizerKind, detail::optimizer_kind_names, "optimizer")
DDPM_JSON_ENUM(LrSchedule, detail::lr_schedule_names, "lr_schedule")
DDPM_JSON_ENUM(DeviceKind, detail::device_kind_names, "device")
DDPM_JSON_ENUM(MixedPrecision, detail::mixed_precision_names, "mixed_precision")

/// Default data folder: Debian's dataset-fashion-mnist package.
inline constexpr const char* kDefaultDataDir = "/usr/share/datasets/fashion-mnist";

/// Everything a training run is configured by; one JSON object (keys below,
/// documented in docs/training.md). Unknown keys are rejected.
struct TrainConfig {
  // --- data
  /// "auto" (detect from the files), "cifar10", "fashion-mnist" or "mnist".
  DatasetKind dataset = DatasetKind::Auto;
  /// Folder with the dataset files (or a cifar-10-binary.tar.gz).
  std::string data_dir = kDefaultDataDir;
  /// Images are padded (with the background value) to image_size x image_size.
  int64_t image_size = 32;
  /// Random horizontal flips (p = 0.5).
  bool random_flip = true;
  /// Batches prepared ahead by the loader thread (0 = load in the training thread).
  int prefetch = 2;
  // --- model
  /// "seed", "ddpm-cifar10", a path to a UNet config JSON (diffusers config.json
  /// format) or an inline UNet config object. in/out channels follow the data.
  nlohmann::json model = "seed";
  /// The noise schedule (NoiseScheduleOptions JSON: num_train_timesteps, beta_schedule, ...).
  NoiseScheduleOptions schedule{};
  /// The training objective (ForwardDiffuserOptions JSON: prediction_type, loss_weighting, min_snr_gamma).
  ForwardDiffuserOptions objective{};
  // --- optimization
  /// Total optimizer steps of the run (the run ends there; rerun with more to extend).
  int64_t steps = 10000;
  /// Stop (with a checkpoint and a final sample grid) after this many minutes of
  /// wall time in this invocation; 0 = no limit.
  double time_limit_minutes = 0;
  /// Images per step per process (global batch = world_size x batch_size).
  int64_t batch_size = 64;
  /// "adamw" or "adam".
  OptimizerKind optimizer = OptimizerKind::AdamW;
  /// Peak learning rate.
  double lr = 2e-4;
  /// Linear warmup from lr/warmup_steps to lr over this many steps.
  int64_t warmup_steps = 500;
  /// "constant" after warmup, or "cosine" decay to 0 at `steps`.
  LrSchedule lr_schedule = LrSchedule::Constant;
  /// Weight decay (decoupled for AdamW, L2 for Adam).
  double weight_decay = 0.0;
  double adam_beta1 = 0.9;
  double adam_beta2 = 0.999;
  double adam_eps = 1e-8;
  /// Clip the global gradient norm to this value; 0 = no clipping.
  double grad_clip = 1.0;
  /// EMA decay of the sampling weights and whether to use the (1+n)/(10+n) warmup.
  double ema_decay = 0.9999;
  bool ema_warmup = true;
  // --- runtime
  /// Seed of model init, data order, flips, timesteps and noise.
  uint64_t seed = 0;
  /// "auto" (CUDA when available), "cpu" or "cuda".
  DeviceKind device = DeviceKind::Auto;
  /// CUDA autocast: "auto" (bf16 where supported, else none), "none", "bf16", "fp16" (with loss scaling).
  MixedPrecision mixed_precision = MixedPrecision::Auto;
  /// CPU threads for LibTorch; 0 = all cores.
  int num_threads = 0;
  // --- outputs
  /// Output folder; rerunning with the same folder resumes from its newest checkpoint.
  std::string out_dir = "runs/default";
  /// Write a metrics.jsonl line (mean loss of the interval) every N steps.
  int64_t log_every = 10;
  /// Write a sample grid from the EMA model every N steps (0 = only at the end).
  int64_t sample_every = 1000;
  /// Images in each sample grid.
  int64_t sample_count = 64;
  /// Sampler for the grids: "ddpm", "ddim" or "dpm++".
  std::string sampler = "ddim";
  /// Denoising steps for the grids.
  int64_t sample_steps = 50;
  /// Write a checkpoint every N steps (and at the end / on interruption).
  int64_t checkpoint_every = 1000;
  /// How many checkpoints to keep.
  int keep_checkpoints = 3;
};

inline void to_json(nlohmann::json& j, const TrainConfig& c) {
  j = nlohmann::json{{"dataset", c.dataset},
                     {"data_dir", c.data_dir},
                     {"image_size", c.image_size},
                     {"random_flip", c.random_flip},
                     {"prefetch", c.prefetch},
                     {"model", c.model},
                     {"schedule", c.schedule},
                     {"objective", c.objective},
                     {"steps", c.steps},
                     {"time_limit_minutes", c.time_limit_minutes},
                     {"batch_size", c.batch_size},
                     {"optimizer", c.optimizer},
                     {"lr", c.lr},
                     {"warmup_steps", c.warmup_steps},
                     {"lr_schedule", c.lr_schedule},
                     {"weight_decay", c.weight_decay},
                     {"adam_beta1", c.adam_beta1},
                     {"adam_beta2", c.adam_beta2},
                     {"adam_eps", c.adam_eps},
                     {"grad_clip", c.grad_clip},
                     {"ema_decay", c.ema_decay},
                     {"ema_warmup", c.ema_warmup},
                     {"seed", c.seed},
                     {"device", c.device},
                     {"mixed_precision", c.mixed_precision},
                     {"num_threads", c.num_threads},
                     {"out_dir", c.out_dir},
                     {"log_every", c.log_every},
                     {"sample_every", c.sample_every},
                     {"sample_count", c.sample_count},
                     {"sampler", c.sampler},
                     {"sample_steps", c.sample_steps},
                     {"checkpoint_every", c.checkpoint_every},
                     {"keep_checkpoints", c.keep_checkpoints}};
}

/// Checks ranges; throws ddpm::Error naming the key and value.
inline void validate(const TrainConfig& c, const std::string& context = "training config") {
  auto bad = [&](const std::string& key, const std::string& why) {
    throw Error(context + ": \"" + key + "\" " + why);
  };
  if (c.image_size < 4) bad("image_size", "must be >= 4, got " + std::to_string(c.image_size));
  if (c.steps < 0) bad("steps", "must be >= 0, got " + std::to_string(c.steps));
  if (c.batch_size < 1) bad("batch_size", "must be >= 1, got " + std::to_string(c.batch_size));
  if (!(c.lr > 0) || !std::isfinite(c.lr)) bad("lr", "must be a positive number");
  if (c.warmup_steps < 0) bad("warmup_steps", "must be >= 0");
  if (c.weight_decay < 0) bad("weight_decay", "must be >= 0");
  if (c.grad_clip < 0) bad("grad_clip", "must be >= 0 (0 disables clipping)");
  if (c.ema_decay < 0 || c.ema_decay > 1) bad("ema_decay", "must be in [0, 1]");
  if (c.time_limit_minutes < 0) bad("time_limit_minutes", "must be >= 0 (0 = no limit)");
  if (c.num_threads < 0) bad("num_threads", "must be >= 0 (0 = all cores)");
  if (c.prefetch < 0) bad("prefetch", "must be >= 0");
  if (c.log_every < 1) bad("log_every", "must be >= 1");
  if (c.sample_every < 0) bad("sample_every", "must be >= 0");
  if (c.sample_count < 1) bad("sample_count", "must be >= 1");
  if (c.sample_steps < 1) bad("sample_steps", "must be >= 1");
  if (c.checkpoint_every < 0) bad("checkpoint_every", "must be >= 0");
  if (c.keep_checkpoints < 1) bad("keep_checkpoints", "must be >= 1");
  if (c.out_dir.empty()) bad("out_dir", "must not be empty");
  if (c.sampler != "ddpm" && c.sampler != "ddim" && c.sampler != "dpm++") {
    bad("sampler", "must be one of \"ddpm\", \"ddim\", \"dpm++\", got \"" + c.sampler + "\"");
  }
  if (!c.model.is_string() && !c.model.is_object()) {
    bad("model", "must be a preset name, a path to a UNet config JSON or a UNet config object");
  }
}

inline void from_json(const nlohmann::json& j, TrainConfig& c) {
  const std::string ctx = "training config";
  detail::check_known_keys(
      j,
      {"dataset", "data_dir", "image_size", "random_flip", "prefetch", "model", "schedule", "objective", "steps",
       "time_limit_minutes", "batch_size", "optimizer", "lr", "warmup_steps", "lr_schedule", "weight_decay",
       "adam_beta1", "adam_beta2", "adam_eps", "grad_clip", "ema_decay", "ema_warmup", "seed", "device",
       "mixed_precision", "num_threads", "out_dir", "log_every", "sample_every", "sample_count", "sampler",
       "sample_steps", "checkpoint_every", "keep_checkpoints"},
      ctx);
  auto get = [&](const char* key, auto& out) {
    auto it = j.find(key);
    if (it == j.end() || it->is_null()) return;
    try {
      out = it->get<std::decay_t<decltype(out)>>();
    } catch (const Error& e) {
      throw Error(ctx + ": bad value for \"" + key + "\": " + e.what());
    } catch (const nlohmann::json::exception& e) {
      throw Error(ctx + ": bad value for \"" + key + "\": " + it->dump() + " (" + e.what() + ")");
    }
  };
  get("dataset", c.dataset);
  get("data_dir", c.data_dir);
  get("image_size", c.image_size);
  get("random_flip", c.random_flip);
  get("prefetch", c.prefetch);
  if (j.contains("model") && !j.at("model").is_null()) c.model = j.at("model");
  get("schedule", c.schedule);
  get("objective", c.objective);
  get("steps", c.steps);
  get("time_limit_minutes", c.time_limit_minutes);
  get("batch_size", c.batch_size);
  get("optimizer", c.optimizer);
  get("lr", c.lr);
  get("warmup_steps", c.warmup_steps);
  get("lr_schedule", c.lr_schedule);
  get("weight_decay", c.weight_decay);
  get("adam_beta1", c.adam_beta1);
  get("adam_beta2", c.adam_beta2);
  get("adam_eps", c.adam_eps);
  get("grad_clip", c.grad_clip);
  get("ema_decay", c.ema_decay);
  get("ema_warmup", c.ema_warmup);
  get("seed", c.seed);
  get("device", c.device);
  get("mixed_precision", c.mixed_precision);
  get("num_threads", c.num_threads);
  get("out_dir", c.out_dir);
  get("log_every", c.log_every);
  get("sample_every", c.sample_every);
  get("sample_count", c.sample_count);
  get("sampler", c.sampler);
  get("sample_steps", c.sample_steps);
  get("checkpoint_every", c.checkpoint_every);
  get("keep_checkpoints", c.keep_checkpoints);
  validate(c, ctx);
}

/// Resolves TrainConfig::model to UNetOptions (before in/out channels are set from the data).
inline UNetOptions resolve_model_config(const nlohmann::json& model) {
  if (model.is_object()) {
    return unet_options_from_json(model, "training config \"model\"");
  }
  if (!model.is_string()) throw Error("training config \"model\" must be a string or an object");
  const std::string name = model.get<std::string>();
  if (name == "seed") return UNetOptions::seed();
  if (name == "ddpm-cifar10") return UNetOptions::ddpm_cifar10();
  if (name.size() > 5 && name.substr(name.size() - 5) == ".json") return load_unet_config(name);
  throw Error("unknown model \"" + name + "\"; use \"seed\", \"ddpm-cifar10\" or a path to a UNet config .json file");
}

/// Detects the dataset kind from the files in `dir`; throws ddpm::Error listing
/// what was looked for (and where to get CIFAR-10) when nothing matches.
inline DatasetKind detect_dataset(const std::string& dir) {
  if (!find_cifar10(dir).empty()) return DatasetKind::Cifar10;
  if (has_idx_dataset(dir)) {
    std::string lower = dir;
    for (auto& ch : lower) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
    return lower.find("fashion") != std::string::npos ? DatasetKind::FashionMnist : DatasetKind::Mnist;
  }
  throw Error("no dataset found in '" + dir +
              "': expected CIFAR-10 (data_batch_1.bin .. data_batch_5.bin, a cifar-10-batches-bin/ folder or "
              "cifar-10-binary.tar.gz) or MNIST/Fashion-MNIST (train-images-idx3-ubyte[.gz] and "
              "train-labels-idx1-ubyte[.gz]). " + cifar10_download_hint() +
              ". Fashion-MNIST comes with Debian's dataset-fashion-mnist package (" + kDefaultDataDir + ").");
}

/// Loads the training split named by `kind` (Auto: detected) from `dir`.
inline ImageData load_training_data(DatasetKind kind, const std::string& dir) {
  if (kind == DatasetKind::Auto) kind = detect_dataset(dir);
  switch (kind) {
    case DatasetKind::Cifar10: return load_cifar10(dir, true);
    case DatasetKind::FashionMnist: return load_mnist_dir(dir, true, "fashion-mnist");
    case DatasetKind::Mnist: return load_mnist_dir(dir, true, "mnist");
    case DatasetKind::Auto: break;
  }
  throw Error("unreachable dataset kind");
}

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
};

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

namespace detail {
inline std::atomic<int>& pending_signal() {
  static std::atomic<int> sig{0};
  return sig;
}
extern "C" inline void ddpm_trainer_signal_handler(int sig) { pending_signal().store(sig); }

/// Installs SIGINT/SIGTERM handlers that only set a flag; restores the previous ones on destruction.
class SignalGuard {
 public:
  SignalGuard() {
    pending_signal().store(0);
    struct sigaction sa {};
    sa.sa_handler = &ddpm_trainer_signal_handler;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = 0;
    sigaction(SIGINT, &sa, &old_int_);
    sigaction(SIGTERM, &sa, &old_term_);
  }
  ~SignalGuard() {
    sigaction(SIGINT, &old_int_, nullptr);
    sigaction(SIGTERM, &old_term_, nullptr);
  }
  SignalGuard(const SignalGuard&) = delete;
  SignalGuard& operator=(const SignalGuard&) = delete;

 private:
  struct sigaction old_int_ {};
  struct sigaction old_term_ {};
};
}  // namespace detail

/// The trainer. Construct, then run() (or call train_step() yourself).
class Trainer {
 public:
  using Log = std::function<void(const std::string&)>;

  /// Loads the data named by config (dataset, data_dir), builds everything and
  /// resumes from config.out_dir when it holds a checkpoint.
  explicit Trainer(TrainConfig config, TrainerHooks hooks = {}, Log log = {})
      : Trainer(std::move(config), ImageData{}, std::move(hooks), std::move(log)) {}

  /// Same, with the training images given (uint8 [N, C, H, W]); `data.images`
  /// undefined = load from the config.
  Trainer(TrainConfig config, ImageData data, TrainerHooks hooks = {}, Log log = {})
      : cfg_(std::move(config)), hooks_(std::move(hooks)), log_(std::move(log)) {
    validate(cfg_);
    if (!log_) {
      // Default: stderr, without garbling a progress bar being drawn.
      log_ = [this](const std::string& s) {
        if (bar_ != nullptr) {
          bar_->message(s);
        } else {
          std::fprintf(stderr, "%s\n", s.c_str());
        }
      };
    }
    setup_runtime();
    if (!data.images.defined()) data = load_training_data(cfg_.dataset, cfg_.data_dir);
    setup_data(std::move(data));
    setup_model();
    resume();
    check_ranks_agree_on_step();
    if (hooks_.broadcast_parameters) {
      hooks_.broadcast_parameters(*model_);
      ema_->reset_to_if_fresh(model_);
    }
    if (is_main()) write_config();
  }

  ~Trainer() {
    if (loader_) loader_->stop();
  }
  Trainer(const Trainer&) = delete;
  Trainer& operator=(const Trainer&) = delete;

  // ---------------------------------------------------------------- accessors
  const TrainConfig& config() const { return cfg_; }
  /// The effective config as written to out_dir/config.json (model resolved).
  nlohmann::json effective_config() const {
    nlohmann::json j = cfg_;
    j["model"] = unet_options_;
    return j;
  }
  UNet& model() { return model_; }
  UNet& ema_model() { return ema_->ema.model(); }
  int64_t step() const { return step_; }
  torch::Device device() const { return device_; }
  const UNetOptions& unet_options() const { return unet_options_; }
  const std::string& dataset_name() const { return dataset_name_; }
  BatchLoader& loader() { return *loader_; }
  const ForwardDiffuser& diffuser() const { return *diffuser_; }
  /// Path of the checkpoint resumed from ("" for a fresh run).
  const std::string& resumed_from() const { return resumed_from_; }

  /// Learning rate at step s (0-based): warmup lr * (s+1)/warmup_steps, then
  /// constant or cosine 0.5 (1 + cos(pi p)) with p the post-warmup progress.
  double lr_at(int64_t s) const {
    double lr = cfg_.lr;
    if (cfg_.warmup_steps > 0 && s < cfg_.warmup_steps) lr *= double(s + 1) / double(cfg_.warmup_steps);
    if (cfg_.lr_schedule == LrSchedule::Cosine && s >= cfg_.warmup_steps) {
      const double span = std::max<double>(1.0, double(cfg_.steps - cfg_.warmup_steps));
      const double p = std::min(1.0, double(s - cfg_.warmup_steps) / span);
      lr *= 0.5 * (1.0 + std::cos(M_PI * p));
    }
    return lr;
  }

  // ---------------------------------------------------------------- training
  /// One optimizer step on the next batch of the data sequence.
  TrainStepOutput train_step() {
    if (!loader_started_) {
      loader_->start(step_);
      loader_started_ = true;
    }
    return train_step(loader_->next());
  }

  /// One optimizer step on `x0` (float [B, C, H, W] in [-1, 1]). A non-finite
  /// loss returns finite = false and changes nothing (weights, EMA, optimizer, step).
  TrainStepOutput train_step(const torch::Tensor& x0_in) {
    TrainStepOutput out;
    out.lr = lr_at(step_);
    for (auto& group : optimizer_->param_groups()) group.options().set_lr(out.lr);
    model_->train();
    const auto x0 = to_device(x0_in, device_);  // CUDA: pinned staging, asynchronous copy
    optimizer_->zero_grad();
    LossOutput lo;
    {
      AutocastGuard amp(device_, autocast_dtype_);  // no-op without a dtype (CPU, "none")
      lo = diffuser_->loss(model_, x0, gen_);
    }
    out.rank_loss = out.loss = lo.loss.item<double>();
    // Collective: a non-finite loss on any rank makes the sum non-finite on every rank,
    // so all ranks skip backward/average_gradients together instead of leaving the others
    // blocked in the gradient allreduce. The same scalar gives the global-batch loss.
    if (collective()) out.loss = hooks_.allreduce_sum(out.rank_loss) / hooks_.world_size;
    if (!std::isfinite(out.loss)) {
      out.finite = false;
      out.step = step_;
      return out;
    }
    const bool scaled = autocast_dtype_.has_value() && *autocast_dtype_ == torch::kHalf;
    (scaled ? lo.loss * loss_scale_ : lo.loss).backward();
    if (hooks_.average_gradients) hooks_.average_gradients(*model_);
    auto params = model_->parameters();
    if (scaled) {
      bool ok = true;
      {
        torch::NoGradGuard g;
        for (auto& p : params) {
          if (!p.grad().defined()) continue;
          p.grad().div_(loss_scale_);
          ok = ok && torch::isfinite(p.grad()).all().item<bool>();
        }
      }
      if (!ok) {  // fp16 overflow: skip this update, halve the scale
        loss_scale_ = std::max(1.0, loss_scale_ / 2);
        good_steps_ = 0;
        optimizer_->zero_grad();
        ++step_;
        out.step = step_;
        return out;
      }
      if (++good_steps_ % 2000 == 0) loss_scale_ *= 2;
    }
    if (cfg_.grad_clip > 0) {
      out.grad_norm = torch::nn::utils::clip_grad_norm_(params, cfg_.grad_clip);
    }
    optimizer_->step();
    ema_->ema.update(model_);
    ++step_;
    out.step = step_;
    return out;
  }

  /// The training loss of the current model on `x0` with noise and timesteps from
  /// a generator seeded with `seed` (no update; eval mode, no gradients).
  double evaluate_loss(const torch::Tensor& x0, uint64_t seed) {
    torch::NoGradGuard g;
    model_->eval();
    auto gen = at::detail::createCPUGenerator(seed);
    return diffuser_->loss(model_, x0.to(device_), gen).loss.item<double>();
  }

  /// `n` images sampled from the EMA model with the configured sampler and
  /// steps, from a fixed seed (so successive grids show the same noise): [n, C, S, S] in model space.
  torch::Tensor sample_images(int64_t n, const std::function<bool(const SampleStep&)>& on_step = {}) {
    auto sampler = make_sampler(scheduler_config(), sampler_kind());
    sampler.set_timesteps(cfg_.sample_steps);
    auto gen = at::detail::createCPUGenerator(cfg_.seed + 0x5eed);
    auto& m = ema_->ema.model();
    m->eval();
    torch::NoGradGuard g;
    const int64_t c = unet_options_.in_channels(), s = cfg_.image_size;
    torch::Tensor x_T = torch::randn({n, c, s, s}, gen, torch::TensorOptions().dtype(torch::kFloat32));
    return sample_from(m, sampler, x_T.to(device_), gen, on_step).to(torch::kCPU);
  }

  /// The diffusers-style scheduler config of this run (schedule + prediction type).
  nlohmann::json scheduler_config() const {
    nlohmann::json j = cfg_.schedule;
    j.erase("dtype");
    j["prediction_type"] = cfg_.objective.prediction_type();
    return j;
  }

  SamplerKind sampler_kind() const {
    if (cfg_.sampler == "ddpm") return SamplerKind::DDPM;
    if (cfg_.sampler == "dpm++") return SamplerKind::DPMSolver;
    return SamplerKind::DDIM;
  }

  /// Writes a checkpoint of the current state (rank 0 only) and returns its path.
  std::string save_checkpoint() {
    if (!is_main()) return "";
    torch::serialize::OutputArchive a;
    write_state(a);
    last_checkpoint_ = ckpt_->save(step_, a);
    return last_checkpoint_;
  }

  /// Writes out_dir/samples/step-<N>.png from the EMA model and refreshes loss.png.
  /// With data parallelism every rank samples the same grid (the EMA weights and the
  /// sampling seed are the same everywhere) and rank 0 writes it: this keeps the ranks in
  /// step, where rank-0-only sampling of a large grid could outlast the collective
  /// timeout of the ranks waiting for it.
  std::string write_samples() {
    if (!is_main()) {
      if (hooks_.world_size > 1) (void)sample_images(cfg_.sample_count);
      return "";
    }
    namespace fs = std::filesystem;
    fs::create_directories(fs::path(cfg_.out_dir) / "samples");
    char name[48];
    std::snprintf(name, sizeof name, "step-%09lld.png", static_cast<long long>(step_));
    const std::string path = (fs::path(cfg_.out_dir) / "samples" / name).string();
    const auto images = sample_images(cfg_.sample_count);
    save_image_grid(path, images, ImageRange::MinusOneToOne);
    write_loss_curve();
    return path;
  }

  /// Redraws out_dir/loss.png from the metrics so far.
  void write_loss_curve() {
    if (!is_main()) return;
    save_loss_curve((std::filesystem::path(cfg_.out_dir) / "loss.png").string(), curve_steps_, curve_losses_);
  }

  /// Trains until config().steps (or `max_steps` more steps when >= 0), the time
  /// limit, a signal or a non-finite loss; logs, samples and checkpoints on the way.
  RunResult run(int64_t max_steps = -1) {
    detail::SignalGuard signals;
    RunResult res;
    const int64_t target = max_steps >= 0 ? std::min(cfg_.steps, step_ + max_steps) : cfg_.steps;
    const auto t_start = std::chrono::steady_clock::now();
    auto since_start = [&] {
      return std::chrono::duration<double>(std::chrono::steady_clock::now() - t_start).count();
    };
    std::unique_ptr<ProgressBar> bar;
    struct BarReset {
      ProgressBar*& p;
      ~BarReset() { p = nullptr; }
    } bar_reset{bar_};
    if (is_main()) {
      if (show_progress_) {
        bar = std::make_unique<ProgressBar>(cfg_.steps, step_, "train");
        bar->set_time_limit(cfg_.time_limit_minutes * 60.0);
        bar_ = bar.get();
      }
      log(std::string(resumed_from_.empty() ? "starting" : "resuming") + " at step " + std::to_string(step_) +
          " of " + std::to_string(cfg_.steps) + " on " + device_.str() + " (" + std::to_string(at::get_num_threads()) +
          " threads), " + dataset_name_ + " " + std::to_string(loader_->num_images()) + " images, global batch " +
          std::to_string(cfg_.batch_size * hooks_.world_size) + ", " + std::to_string(num_parameters()) +
          " parameters");
    }
    double interval_loss = 0, interval_time = 0;
    int64_t interval_steps = 0;
    double last_grad_norm = NAN;
    int64_t sampled_at = -1;  // step of the last sample grid written by this run
    while (step_ < target) {
      const int sig = detail::pending_signal().load();
      const bool time_up = cfg_.time_limit_minutes > 0 && since_start() > cfg_.time_limit_minutes * 60.0;
      const StopVote vote = stop_vote(sig != 0, time_up);
      if (vote.signal) {
        res.status = RunStatus::Interrupted;
        res.message = sig != 0 ? std::string("interrupted by ") + (sig == SIGINT ? "SIGINT" : "SIGTERM")
                               : std::string("interrupted (a signal reached another rank)");
        break;
      }
      if (vote.time_limit) {
        res.status = RunStatus::TimeLimit;
        res.message = time_up ? "time limit of " + detail::format_number(cfg_.time_limit_minutes) + " minutes reached"
                              : std::string("time limit reached (on another rank)");
        break;
      }
      const auto t0 = std::chrono::steady_clock::now();
      const auto so = train_step();
      const double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      if (!so.finite) {
        res.status = RunStatus::NonFiniteLoss;
        const double bad = std::isfinite(so.rank_loss) ? so.loss : so.rank_loss;
        res.message = "loss is " + std::string(std::isnan(bad) ? "NaN" : "infinite") + " at step " +
                      std::to_string(step_ + 1) +
                      (hooks_.world_size > 1
                           ? std::string(std::isfinite(so.rank_loss) ? " on another rank" : " on this rank") +
                                 " (rank " + std::to_string(hooks_.rank) + "/" + std::to_string(hooks_.world_size) + ")"
                           : std::string()) +
                      " (lr " + std::to_string(so.lr) +
                      "); stopping without saving. The last good checkpoint is " +
                      (last_checkpoint_.empty() ? std::string("(none)") : last_checkpoint_) +
                      ". Try a lower --lr, more warmup_steps or grad_clip.";
        log("error: " + res.message);
        res.step = step_;
        res.checkpoint = last_checkpoint_;
        if (hooks_.barrier) hooks_.barrier();
        return res;
      }
      train_seconds_ += dt;
      interval_time += dt;
      interval_loss += so.loss;
      ++interval_steps;
      if (std::isfinite(so.grad_norm)) last_grad_norm = so.grad_norm;
      const double ips = interval_time > 0 ? interval_steps * cfg_.batch_size * hooks_.world_size / interval_time : 0;
      if (bar) bar->update(step_, so.loss, ips);
      if (step_ % cfg_.log_every == 0 || step_ == target) {
        append_metrics(step_, interval_loss / interval_steps, so.lr, ips, last_grad_norm);
        interval_loss = interval_time = 0;
        interval_steps = 0;
      }
      const bool at_end = step_ == cfg_.steps;
      if ((cfg_.sample_every > 0 && step_ % cfg_.sample_every == 0) || at_end) {
        if (bar) bar->finish();
        res.sample_grid = write_samples();
        if (is_main()) log("wrote " + res.sample_grid);
        sampled_at = step_;
      }
      if ((cfg_.checkpoint_every > 0 && step_ % cfg_.checkpoint_every == 0) || at_end) {
        save_checkpoint();
        if (hooks_.barrier) hooks_.barrier();
      }
    }
    if (bar) bar->finish();
    // Final outputs for a stop before the end of training (time limit, signal, max_steps).
    if (step_ != cfg_.steps || res.status != RunStatus::Completed) {
      if (interval_steps > 0) append_metrics(step_, interval_loss / interval_steps, lr_at(step_ - 1),
                                             interval_time > 0 ? interval_steps * cfg_.batch_size * hooks_.world_size / interval_time : 0,
                                             last_grad_norm);
      if (last_checkpoint_step_ != step_) save_checkpoint();
      if (hooks_.barrier) hooks_.barrier();
      if (res.status == RunStatus::TimeLimit && sampled_at != step_) {
        res.sample_grid = write_samples();
        if (is_main()) log("wrote " + res.sample_grid);
      }
    }
    write_loss_curve();
    res.step = step_;
    res.checkpoint = last_checkpoint_;
    if (res.message.empty()) res.message = "finished at step " + std::to_string(step_);
    return res;
  }

  /// Show a progress bar during run() (default true; rank 0 only).
  void set_show_progress(bool on) { show_progress_ = on; }

  int64_t num_parameters() const {
    int64_t n = 0;
    for (const auto& p : model_->parameters()) n += p.numel();
    return n;
  }

 private:
  // EMA holder with a "fresh" flag so a broadcast can reset the EMA copy.
  struct EmaState {
    EMA<UNet> ema;
    bool fresh;
    EmaState(const UNet& m, EMAOptions o) : ema(m, o), fresh(true) {}
    void reset_to_if_fresh(const UNet& m) {
      if (fresh) ema.reset_to(m);
    }
  };

  bool is_main() const { return hooks_.rank == 0; }

  /// True when the ranks make their decisions together (data parallelism with the
  /// allreduce_sum hook).
  bool collective() const { return hooks_.world_size > 1 && static_cast<bool>(hooks_.allreduce_sum); }

  struct StopVote {
    bool signal = false;
    bool time_limit = false;
  };

  /// Whether ANY rank saw a signal / ran out of time (one scalar allreduce: with n ranks,
  /// each rank contributes signal + time_up * (n + 1), so the sum s + t (n + 1) with
  /// s, t <= n decodes exactly). Single process: the local flags.
  StopVote stop_vote(bool signal, bool time_up) {
    if (!collective()) return {signal, time_up};
    const int64_t n1 = static_cast<int64_t>(hooks_.world_size) + 1;
    const double mine = (signal ? 1.0 : 0.0) + (time_up ? static_cast<double>(n1) : 0.0);
    const int64_t sum = std::llround(hooks_.allreduce_sum(mine));
    return {sum % n1 > 0, sum / n1 > 0};
  }

  /// After resuming: every rank must continue from the same step (the same checkpoint in
  /// a shared out_dir), or they would disagree on how many steps remain and one would
  /// wait in a collective until its timeout. n * sum(s^2) == sum(s)^2 iff all s are equal;
  /// every rank computes the same verdict from the same sums, so all throw or none does.
  void check_ranks_agree_on_step() {
    if (!collective()) return;
    const double s = static_cast<double>(step_);
    const double sum = hooks_.allreduce_sum(s);
    const double sum_sq = hooks_.allreduce_sum(s * s);
    if (static_cast<double>(hooks_.world_size) * sum_sq != sum * sum) {
      throw Error("rank " + std::to_string(hooks_.rank) + "/" + std::to_string(hooks_.world_size) +
                  ": the ranks resumed at different steps (this rank: " +
                  (resumed_from_.empty() ? std::string("no checkpoint in '" + cfg_.out_dir + "', step 0")
                                         : "step " + std::to_string(step_) + " from " + resumed_from_) +
                  ", mean over ranks: " + std::to_string(sum / hooks_.world_size) +
                  "). Every rank must see the same out_dir: use a shared file system across machines");
    }
  }

  void log(const std::string& s) {
    if (is_main()) log_(s);
  }

  void setup_runtime() {
    const int threads = cfg_.num_threads > 0 ? cfg_.num_threads
                                             : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
    ddpm::set_num_threads(threads);  // LibTorch and OpenBLAS pools together
    const bool cuda = torch::cuda::is_available();
    if (cfg_.device == DeviceKind::Cuda && !cuda) {
      throw Error("device \"cuda\" requested but CUDA is not available (this LibTorch has no CUDA or no GPU is visible)");
    }
    device_ = (cfg_.device == DeviceKind::Cuda || (cfg_.device == DeviceKind::Auto && cuda)) ? torch::Device(torch::kCUDA)
                                                                                              : torch::Device(torch::kCPU);
    if (device_.is_cuda() && hooks_.world_size > 1) {
      // One GPU per process on each machine (NCCL needs distinct devices).
      const auto n = static_cast<int>(torch::cuda::device_count());
      device_ = torch::Device(torch::kCUDA, static_cast<c10::DeviceIndex>(n > 0 ? hooks_.local_rank % n : 0));
    }
    if (device_.is_cuda()) {
      switch (cfg_.mixed_precision) {
        case MixedPrecision::BF16: autocast_dtype_ = torch::kBFloat16; break;
        case MixedPrecision::FP16: autocast_dtype_ = torch::kHalf; break;
        case MixedPrecision::Auto:
          if (bf16_supported(device_)) autocast_dtype_ = torch::kBFloat16;  // compute capability >= 8.0
          break;
        case MixedPrecision::None: break;
      }
    } else if (cfg_.mixed_precision == MixedPrecision::BF16 || cfg_.mixed_precision == MixedPrecision::FP16) {
      log_("note: mixed_precision applies to CUDA only; training in float32 on the CPU");
    }
    gen_ = at::detail::createCPUGenerator(cfg_.seed * 6364136223846793005ull + 1442695040888963407ull +
                                          static_cast<uint64_t>(hooks_.rank));
  }

  void setup_data(ImageData data) {
    TORCH_CHECK(data.images.defined() && data.images.dim() == 4 && data.images.scalar_type() == torch::kUInt8,
                "Trainer: training images must be uint8 [N, C, H, W]");
    dataset_name_ = data.name;
    torch::Tensor images = data.images;
    loader_channels_ = images.size(1);
    if (images.size(2) > cfg_.image_size || images.size(3) > cfg_.image_size) {
      throw Error("images of " + std::to_string(images.size(2)) + "x" + std::to_string(images.size(3)) +
                  " do not fit image_size " + std::to_string(cfg_.image_size));
    }
    if (images.size(2) != cfg_.image_size || images.size(3) != cfg_.image_size) {
      images = pad_to_size(images, cfg_.image_size, background_value(images));
    }
    BatchLoaderOptions lo;
    lo.batch_size = cfg_.batch_size;
    lo.seed = cfg_.seed;
    lo.rank = hooks_.rank;
    lo.world_size = hooks_.world_size;
    lo.random_flip = cfg_.random_flip;
    lo.prefetch = cfg_.prefetch;
    loader_ = std::make_unique<BatchLoader>(images, lo);
  }

  void setup_model() {
    unet_options_ = resolve_model_config(cfg_.model);
    const int64_t channels = data_channels();
    unet_options_.in_channels(channels).out_channels(channels).sample_size(cfg_.image_size);
    unet_options_.validate("model config");
    if (cfg_.image_size % unet_options_.size_multiple() != 0) {
      throw Error("image_size " + std::to_string(cfg_.image_size) + " is not a multiple of " +
                  std::to_string(unet_options_.size_multiple()) + " as the UNet's " +
                  std::to_string(unet_options_.num_levels()) + " levels require");
    }
    torch::manual_seed(cfg_.seed);
    model_ = UNet(unet_options_);
    model_->to(device_);
    ema_ = std::make_unique<EmaState>(model_, EMAOptions().decay(cfg_.ema_decay).warmup(cfg_.ema_warmup));
    auto params = model_->parameters();
    if (cfg_.optimizer == OptimizerKind::AdamW) {
      optimizer_ = std::make_unique<torch::optim::AdamW>(
          params, torch::optim::AdamWOptions(cfg_.lr)
                      .betas({cfg_.adam_beta1, cfg_.adam_beta2})
                      .eps(cfg_.adam_eps)
                      .weight_decay(cfg_.weight_decay));
    } else {
      optimizer_ = std::make_unique<torch::optim::Adam>(
          params, torch::optim::AdamOptions(cfg_.lr)
                      .betas({cfg_.adam_beta1, cfg_.adam_beta2})
                      .eps(cfg_.adam_eps)
                      .weight_decay(cfg_.weight_decay));
    }
    diffuser_ = std::make_unique<ForwardDiffuser>(NoiseSchedule(cfg_.schedule), cfg_.objective);
    ckpt_ = std::make_unique<CheckpointManager>(cfg_.out_dir, cfg_.keep_checkpoints);
  }

  int64_t data_channels() const { return loader_channels_; }

  void write_state(torch::serialize::OutputArchive& a) {
    torch::serialize::OutputArchive m, e, o;
    model_->save(m);
    ema_->ema.save(e);
    optimizer_->save(o);
    a.write("model", m);
    a.write("ema", e);
    a.write("optimizer", o);
    a.write("step", torch::tensor(step_, torch::kInt64), true);
    a.write("train_seconds", torch::tensor(train_seconds_, torch::kFloat64), true);
    a.write("loss_scale", torch::tensor(loss_scale_, torch::kFloat64), true);
    a.write("good_steps", torch::tensor(good_steps_, torch::kInt64), true);
    archive_write_generator(a, "rng_train", gen_);
    archive_write_generator(a, "rng_global_cpu", at::detail::getDefaultCPUGenerator());
    archive_write_string(a, "config", effective_config().dump());
    archive_write_string(a, "unet_config", nlohmann::json(unet_options_).dump());
    archive_write_string(a, "scheduler_config", scheduler_config().dump());
    last_checkpoint_step_ = step_;
  }

  void resume() {
    torch::serialize::InputArchive a;
    const std::string path = ckpt_->load_latest(
        a, [&](const std::string& p, const std::string& why) { log_("warning: skipping checkpoint " + p + ": " + why); },
        device_);
    if (path.empty()) return;
    try {
      torch::serialize::InputArchive m, e, o;
      a.read("model", m);
      model_->load(m);
      a.read("ema", e);
      ema_->ema.load(e);
      ema_->fresh = false;
      a.read("optimizer", o);
      optimizer_->load(o);
      torch::Tensor t;
      a.read("step", t, true);
      step_ = t.item<int64_t>();
      a.read("train_seconds", t, true);
      train_seconds_ = t.item<double>();
      a.read("loss_scale", t, true);
      loss_scale_ = t.item<double>();
      a.read("good_steps", t, true);
      good_steps_ = t.item<int64_t>();
      archive_read_generator(a, "rng_train", gen_);
      at::Generator global = at::detail::getDefaultCPUGenerator();
      archive_read_generator(a, "rng_global_cpu", global);
    } catch (const c10::Error& err) {
      throw Error("cannot resume from '" + path + "': it does not match this configuration (" +
                  err.what_without_backtrace() +
                  "). Use a new --out folder or the model settings the checkpoint was trained with.");
    }
    if (hooks_.rank != 0) {
      // The checkpoint holds rank 0's noise/timestep generator. Other ranks continue on
      // their own stream (seeded from seed, rank and step), so the ranks still draw
      // independent noise after a resume.
      gen_ = at::detail::createCPUGenerator(cfg_.seed * 6364136223846793005ull + 1442695040888963407ull +
                                            static_cast<uint64_t>(hooks_.rank) +
                                            static_cast<uint64_t>(step_) * 0x9E3779B97F4A7C15ull);
    }
    resumed_from_ = path;
    last_checkpoint_ = path;
    last_checkpoint_step_ = step_;
    if (step_ > cfg_.steps) {
      throw Error("checkpoint '" + path + "' is at step " + std::to_string(step_) + ", beyond steps = " +
                  std::to_string(cfg_.steps) + "; raise --steps to continue training");
    }
    load_metrics();
  }

  /// Reloads metrics.jsonl up to the resumed step (dropping lines written after
  /// the checkpoint, so the file and the curve match an uninterrupted run).
  void load_metrics() {
    if (!is_main()) return;
    const std::string path = cfg_.out_dir + "/metrics.jsonl";
    std::ifstream in(path);
    if (!in) return;
    std::vector<std::string> keep;
    std::string line;
    while (std::getline(in, line)) {
      if (line.empty()) continue;
      try {
        const auto j = nlohmann::json::parse(line);
        const int64_t s = j.at("step").get<int64_t>();
        if (s > step_) break;
        keep.push_back(line);
        curve_steps_.push_back(static_cast<double>(s));
        curve_losses_.push_back(j.at("loss").get<double>());
      } catch (const std::exception&) {
        break;  // a torn last line
      }
    }
    in.close();
    std::ofstream out(path, std::ios::trunc);
    for (const auto& l : keep) out << l << '\n';
  }

  void append_metrics(int64_t step, double loss, double lr, double ips, double grad_norm) {
    curve_steps_.push_back(static_cast<double>(step));
    curve_losses_.push_back(loss);
    if (!is_main()) return;
    nlohmann::json j = {{"step", step}, {"loss", loss}, {"lr", lr}, {"img_per_s", ips}, {"time", train_seconds_}};
    j["grad_norm"] = std::isfinite(grad_norm) ? nlohmann::json(grad_norm) : nlohmann::json(nullptr);
    std::ofstream out(cfg_.out_dir + "/metrics.jsonl", std::ios::app);
    out << j.dump() << '\n';
  }

  void write_config() {
    std::filesystem::create_directories(cfg_.out_dir);
    detail::write_json_file(cfg_.out_dir + "/config.json", effective_config());
  }

  TrainConfig cfg_;
  TrainerHooks hooks_;
  Log log_;
  torch::Device device_{torch::kCPU};
  c10::optional<torch::ScalarType> autocast_dtype_;
  at::Generator gen_;
  std::unique_ptr<BatchLoader> loader_;
  bool loader_started_ = false;
  int64_t loader_channels_ = 0;
  std::string dataset_name_;
  UNetOptions unet_options_;
  UNet model_{nullptr};
  std::unique_ptr<EmaState> ema_;
  std::unique_ptr<torch::optim::Optimizer> optimizer_;
  std::unique_ptr<ForwardDiffuser> diffuser_;
  std::unique_ptr<CheckpointManager> ckpt_;
  int64_t step_ = 0;
  double train_seconds_ = 0;
  double loss_scale_ = 65536.0;
  int64_t good_steps_ = 0;
  std::string last_checkpoint_;
  int64_t last_checkpoint_step_ = -1;
  std::string resumed_from_;
  std::vector<double> curve_steps_, curve_losses_;
  bool show_progress_ = true;
  ProgressBar* bar_ = nullptr;
};

/// Reads a training checkpoint for sampling: the EMA weights in a UNet built
/// from the stored config, plus the diffusers-style scheduler config.
struct LoadedCheckpoint {
  UNet ema_model{nullptr};
  UNetOptions unet_options;
  nlohmann::json scheduler_config;
  nlohmann::json train_config;
  int64_t step = 0;
  std::string path;  ///< the checkpoint file that was read
};

/// `path` is a checkpoint file, or a run directory: then its newest checkpoint
/// that passes the integrity check (as the trainer resumes).
inline LoadedCheckpoint load_training_checkpoint(const std::string& path_or_dir,
                                                 torch::Device device = torch::Device(torch::kCPU)) {
  torch::serialize::InputArchive a;
  std::string path = path_or_dir;
  if (std::filesystem::is_directory(path_or_dir)) {
    path = CheckpointManager(path_or_dir).load_latest(a, {}, device);
    if (path.empty()) {
      throw Error("no readable checkpoint (ckpt-<step>.pt) in directory '" + path_or_dir + "'");
    }
  } else {
    read_checkpoint_file(path, a, device);
  }
  LoadedCheckpoint out;
  out.path = path;
  try {
    out.unet_options = unet_options_from_json(nlohmann::json::parse(archive_read_string(a, "unet_config")),
                                              "checkpoint '" + path + "' unet_config");
    out.scheduler_config = nlohmann::json::parse(archive_read_string(a, "scheduler_config"));
    out.train_config = nlohmann::json::parse(archive_read_string(a, "config"));
    torch::Tensor t;
    a.read("step", t, true);
    out.step = t.item<int64_t>();
    out.ema_model = UNet(out.unet_options);
    torch::serialize::InputArchive e, w;
    a.read("ema", e);
    e.read("weights", w);
    out.ema_model->load(w);
  } catch (const c10::Error& err) {
    throw Error("checkpoint '" + path + "' is not a complete ddpm training checkpoint: " + err.what_without_backtrace());
  } catch (const nlohmann::json::exception& err) {
    throw Error("checkpoint '" + path + "' holds invalid JSON: " + err.what());
  }
  out.ema_model->to(device);
  out.ema_model->eval();
  return out;
}

}  // namespace ddpm
