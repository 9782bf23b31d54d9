#pragma once
/// The DDPM training loop (Ho et al. 2020, Algorithm 1) for image data:
/// repeat { (x0, labels) ~ data; t ~ U{0..T-1}; eps ~ N(0, I); step on ||target - model(x_t, t)||^2 }
/// with an EMA of the weights, crash-safe checkpoints that resume bit-exactly on CPU,
/// metrics, sample grids, SIGINT/SIGTERM handling and a stop on a non-finite loss.
/// Its parts live beside it: the config (train/config.hpp), the datasets
/// (data/registry.hpp), device and AMP (train/device.hpp), optimizer and LR schedule
/// (train/optim.hpp), checkpoints and the run directory (train/checkpoint.hpp), metrics
/// (train/metrics.hpp), data-parallel collectives (train/collective.hpp) and signals
/// (train/signals.hpp). Needs <ddpm/io/png.hpp> (Debian libstb-dev).
///
/// Data-parallel training: the TrainerHooks carry rank / world_size and the
/// collectives. Each rank loads its own disjoint shard of every epoch (BatchLoader),
/// so the global batch is world_size x batch_size; broadcast_parameters runs after
/// model creation and after resuming, average_gradients after every backward pass,
/// and only rank 0 writes files and progress. Every rank resumes from the same
/// checkpoint in out_dir (checked). Stops are collective (allreduce_sum hook): a
/// non-finite loss, SIGINT/SIGTERM or the time limit on ANY rank stops ALL ranks at
/// the same step; the logged loss is the mean over the ranks.
///
/// Evaluation during training (eval_every > 0): every eval_every steps and at the end the
/// EMA model generates eval_samples images through the Pipeline from a fixed seed, scored
/// against the committed Fashion-MNIST test statistics (FD-fmnist, KID, class histogram;
/// eval/evaluate.hpp). One {"step", "eval"} line goes to metrics.jsonl, eval.png plots the FD,
/// and out_dir/best.pt (a full checkpoint, outside the ckpt-<N>.pt rotation) + best.json hold
/// the EMA weights with the lowest FD so far. Data parallel: each rank generates its share
/// with its own seed and the ranks' feature statistics are merged by ONE allreduce
/// (allreduce_sum_tensor hook) before rank 0 computes the FD; KID is computed on rank 0's share.
#include <ddpm/data/loader.hpp>
#include <ddpm/data/registry.hpp>
#include <ddpm/data/transforms.hpp>
#include <ddpm/detail/json_util.hpp>
#include <ddpm/device.hpp>
#include <ddpm/error.hpp>
#include <ddpm/eval/evaluate.hpp>
#include <ddpm/forward_diffuser.hpp>
#include <ddpm/io/png.hpp>
#include <ddpm/nn/unet.hpp>
#include <ddpm/runtime.hpp>
#include <ddpm/pipeline.hpp>
#include <ddpm/sampler.hpp>
#include <ddpm/schedule.hpp>
#include <ddpm/train/checkpoint.hpp>
#include <ddpm/train/collective.hpp>
#include <ddpm/train/config.hpp>
#include <ddpm/train/device.hpp>
#include <ddpm/train/ema.hpp>
#include <ddpm/train/metrics.hpp>
#include <ddpm/train/optim.hpp>
#include <ddpm/train/progress.hpp>
#include <ddpm/train/run_result.hpp>
#include <ddpm/train/signals.hpp>

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Parallel.h>
#include <torch/nn/utils/clip_grad.h>
#include <torch/optim/optimizer.h>
#include <torch/serialize/archive.h>
#include <torch/types.h>

#include <nlohmann/json.hpp>

#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <limits>
#include <memory>
#include <string>
#include <thread>
#include <vector>

namespace ddpm {

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
    if (!data.images.defined()) data = dataset_registry().load(cfg_.dataset, cfg_.data_dir);
    setup_data(std::move(data));
    setup_evaluation();
    setup_model();
    resume();
    check_ranks_agree_on_step(hooks_, step_,
                              resumed_from_.empty() ? "no checkpoint in '" + cfg_.out_dir + "', step 0"
                                                    : "step " + std::to_string(step_) + " from " + resumed_from_);
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
  /// Class names of the training data, by label (empty for unlabelled data).
  const std::vector<std::string>& class_names() const { return class_names_; }
  BatchLoader& loader() { return *loader_; }
  const ForwardDiffuser& diffuser() const { return *diffuser_; }
  /// Path of the checkpoint resumed from ("" for a fresh run).
  const std::string& resumed_from() const { return resumed_from_; }

  /// Learning rate at step s (0-based): see learning_rate_at (train/optim.hpp).
  double lr_at(int64_t s) const { return learning_rate_at(cfg_, s); }

  // ---------------------------------------------------------------- training
  /// One optimizer step on the next batch of the data sequence.
  TrainStepOutput train_step() {
    if (!loader_started_) {
      loader_->start(step_);
      loader_started_ = true;
    }
    return train_step(loader_->next());
  }

  /// One optimizer step on unlabelled images `x0` (float [B, C, H, W] in [-1, 1]).
  TrainStepOutput train_step(const torch::Tensor& x0) { return train_step(Batch{x0, c10::nullopt}); }

  /// One optimizer step on `batch` (its labels are carried for class conditioning; the
  /// unconditional loss does not read them). A non-finite loss returns finite = false and
  /// changes nothing (weights, EMA, optimizer, step).
  TrainStepOutput train_step(const Batch& batch) {
    TrainStepOutput out;
    out.lr = lr_at(step_);
    for (auto& group : optimizer_->param_groups()) group.options().set_lr(out.lr);
    model_->train();
    const auto x0 = to_device(batch.images, device_);  // CUDA: pinned staging, asynchronous copy
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
    if (hooks_.collective()) out.loss = hooks_.allreduce_sum(out.rank_loss) / hooks_.world_size;
    if (!std::isfinite(out.loss)) {
      out.finite = false;
      out.step = step_;
      return out;
    }
    const bool scaled = autocast_dtype_.has_value() && *autocast_dtype_ == torch::kHalf;
    (scaled ? scaler_.scale(lo.loss) : lo.loss).backward();
    if (hooks_.average_gradients) hooks_.average_gradients(*model_);
    auto params = model_->parameters();
    const bool overflow = scaled && !scaler_.unscale_(params);
    if (scaled) scaler_.update(overflow);
    if (overflow) {  // fp16 overflow: skip this update
      optimizer_->zero_grad();
      ++step_;
      out.step = step_;
      return out;
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
  /// The one place the trainer samples (sample grids).
  torch::Tensor sample_images(int64_t n, const GenerateCallback& on_progress = {}) {
    auto gen = at::detail::createCPUGenerator(cfg_.seed + 0x5eed);
    return grid_pipeline().generate(
        n, gen, GenerateOptions().num_inference_steps(cfg_.sample_steps).batch_size(n).sample_size(cfg_.image_size)
                    .clamp(false),
        on_progress);
  }

  /// The EMA model with the configured grid sampler (cfg.sampler: any registered name or preset).
  Pipeline grid_pipeline() {
    return Pipeline(ema_->ema.model(), make_sampler(scheduler_config(), cfg_.sampler), device_);
  }

  /// The diffusers-style scheduler config of this run (see scheduler_config_of).
  nlohmann::json scheduler_config() const { return scheduler_config_of(cfg_); }

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
  void write_loss_curve() { metrics_->write_curve(); }

  /// Generates config().eval_samples images from the EMA model (over all ranks, from a fixed
  /// seed) and scores them (see the header comment). Collective with data parallelism: every
  /// rank must call it, and every rank gets the merged FD, class histogram and confidence (KID:
  /// from its own share). Without the allreduce_sum_tensor hook each rank scores only its own
  /// share. Throws ddpm::Error when eval_every was not configured (no evaluator).
  EvalResult evaluate() {
    if (!evaluator_) throw Error("Trainer::evaluate: evaluation is off (set eval_every > 0)");
    const auto t0 = std::chrono::steady_clock::now();
    const int64_t world = hooks_.world_size, rank = hooks_.rank;
    const int64_t total = cfg_.eval_samples;
    const int64_t share = total / world + (rank < total % world ? 1 : 0);
    auto gen = at::detail::createCPUGenerator(cfg_.seed + 0xe7a1ull + static_cast<uint64_t>(rank) * 0x9E3779B97F4A7C15ull);
    const std::string sampler = cfg_.eval_sampler.empty() ? cfg_.sampler : cfg_.eval_sampler;
    Pipeline pipe(ema_->ema.model(), make_sampler(scheduler_config(), sampler), device_);
    const torch::Tensor images = pipe.generate(
        share, gen,
        GenerateOptions().num_inference_steps(cfg_.eval_steps).batch_size(cfg_.eval_batch_size).sample_size(cfg_.image_size));
    FeatureNetwork& net = *evaluator_->net;
    EvalOptions opts = evaluator_->options;
    opts.allow_few_samples(true);  // small eval_samples: warned about once in setup_evaluation
    if (world == 1 || !hooks_.allreduce_sum_tensor) {
      EvalResult r = evaluate_samples(images, evaluator_->reference, net, opts);
      r.wall_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      return r;
    }
    // Data parallel: merge [n, Σx, Σxxᵀ | class counts | Σ confidence] with one allreduce.
    ExtractedFeatures ex = extract_features(net, images, opts.batch_size());
    const int64_t d = net.dim();
    const int64_t k = static_cast<int64_t>(ex.class_histogram.size());
    torch::Tensor hist = torch::zeros({k}, torch::kFloat64);
    for (int64_t i = 0; i < k; ++i) hist[i] = static_cast<double>(ex.class_histogram[static_cast<size_t>(i)]);
    const double conf = std::isfinite(ex.mean_confidence) ? ex.mean_confidence * static_cast<double>(share) : 0.0;
    const torch::Tensor packed = torch::cat({ex.stats.pack(), hist, torch::full({1}, conf, torch::kFloat64)});
    const torch::Tensor sum = hooks_.allreduce_sum_tensor(packed).to(torch::kCPU, torch::kFloat64);
    TORCH_CHECK(sum.numel() == packed.numel(), "Trainer::evaluate: allreduce_sum_tensor changed the size");
    const FeatureStats merged = FeatureStats::unpack(sum.slice(0, 0, 1 + d + d * d), d);
    const GaussianStats& ref = evaluator_->reference;
    EvalResult r;
    r.n = merged.count();
    r.metric = net.metric();
    r.features = net.name();
    r.reference_n = ref.n;
    r.fd = frechet_distance(merged.mean(), merged.covariance(), ref.mu, ref.sigma).distance;
    if (ref.samples.defined() && ref.samples.size(0) >= 2 && ex.features.size(0) >= 2) {
      // KID needs the feature rows: rank 0's share (an unbiased estimate from fewer samples).
      double scale = 1.0;
      if (net.normalize_kid()) scale = std::sqrt(ref.sigma.trace().item<double>() / static_cast<double>(d));
      const KidResult kid = kernel_inception_distance(ex.features / scale, ref.samples / scale, opts.kid());
      r.kid = kid.mean;
      r.kid_std = kid.std;
    }
    for (int64_t i = 0; i < k; ++i) r.class_histogram.push_back(std::llround(sum[1 + d + d * d + i].item<double>()));
    r.class_names = net.class_names();
    if (k > 0 && r.n > 0) r.mean_confidence = sum[sum.numel() - 1].item<double>() / static_cast<double>(r.n);
    r.wall_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    return r;
  }

  /// Lowest evaluation distance so far (from out_dir/best.json after a resume; +inf when none)
  /// and its step (-1 when none).
  double best_eval_distance() const { return best_fd_; }
  int64_t best_eval_step() const { return best_step_; }

  /// Calls `fn(trainer)` during run() every `every` steps (after that step's sample grid and
  /// checkpoint), e.g. a periodic evaluation; on every rank, so it may use collectives.
  void add_periodic_callback(int64_t every, std::function<void(Trainer&)> fn) {
    if (every < 1) throw Error("add_periodic_callback: every must be >= 1, got " + std::to_string(every));
    callbacks_.push_back({every, std::move(fn)});
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
      const StopVote vote = stop_vote(hooks_, sig != 0, time_up);
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
        res.message = non_finite_loss_message(hooks_, step_ + 1, so.loss, so.rank_loss, so.lr, last_checkpoint_);
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
      if (cfg_.eval_every > 0 && (step_ % cfg_.eval_every == 0 || at_end)) {
        if (bar) bar->finish();
        run_evaluation();
      }
      for (auto& cb : callbacks_) {
        if (step_ % cb.every == 0) cb.fn(*this);
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

  void log(const std::string& s) {
    if (is_main()) log_(s);
  }

  void setup_runtime() {
    const int threads = cfg_.num_threads > 0 ? cfg_.num_threads
                                             : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
    ddpm::set_num_threads(threads);  // LibTorch and OpenBLAS pools together
    device_ = resolve_training_device(cfg_.device, hooks_.world_size, hooks_.local_rank);
    autocast_dtype_ = resolve_autocast_dtype(cfg_.mixed_precision, device_, log_);
    gen_ = rank_generator(cfg_.seed, hooks_.rank, 0);
    metrics_ = std::make_unique<MetricsLog>(cfg_.out_dir, is_main());
  }

  void setup_data(ImageData data) {
    dataset_name_ = data.name;
    class_names_ = data.class_names;
    const torch::Tensor images = fit_to_size(data.images, cfg_.image_size);
    loader_channels_ = images.size(1);
    loader_ = std::make_unique<BatchLoader>(images, loader_options_of(cfg_, hooks_.rank, hooks_.world_size), data.labels);
  }

  void setup_model() {
    unet_options_ = model_options_of(cfg_, data_channels());
    torch::manual_seed(cfg_.seed);
    model_ = UNet(unet_options_);
    model_->to(device_);
    ema_ = std::make_unique<EmaState>(model_, EMAOptions().decay(cfg_.ema_decay).warmup(cfg_.ema_warmup));
    optimizer_ = make_optimizer(model_->parameters(), cfg_);
    diffuser_ = std::make_unique<ForwardDiffuser>(NoiseSchedule(cfg_.schedule), cfg_.objective);
    ckpt_ = std::make_unique<CheckpointManager>(cfg_.out_dir, cfg_.keep_checkpoints);
  }

  int64_t data_channels() const { return loader_channels_; }

  /// eval_every > 0: loads the committed classifier + test statistics, after checking that the
  /// data fits it; restores the best distance from out_dir/best.json.
  void setup_evaluation() {
    if (cfg_.eval_every <= 0) return;
    const int64_t c = data_channels(), size = cfg_.image_size;
    if (c != 1 || (size != 28 && size != 32)) {
      throw Error("training config: \"eval_every\" = " + std::to_string(cfg_.eval_every) +
                  " scores samples with the Fashion-MNIST classifier's features, which need 1-channel 28x28 or "
                  "32x32 images, but this run trains on " + std::to_string(c) + "-channel " + std::to_string(size) +
                  "x" + std::to_string(size) + " images (" + dataset_name_ +
                  "); set eval_every to 0 (--eval-every 0) to train without evaluation");
    }
    if (cfg_.eval_samples < hooks_.world_size) {
      throw Error("training config: \"eval_samples\" = " + std::to_string(cfg_.eval_samples) + " is fewer than the " +
                  std::to_string(hooks_.world_size) + " ranks; every rank generates at least one image");
    }
    evaluator_ = std::make_unique<Evaluator>(make_fmnist_evaluator());
    evaluator_->net->to(device_);
    if (cfg_.eval_samples <= evaluator_->net->dim()) {
      log("warning: eval_samples = " + std::to_string(cfg_.eval_samples) + " <= the " +
          std::to_string(evaluator_->net->dim()) + " feature dimensions: the " + evaluator_->net->metric() +
          " is strongly biased (use > 10x that for numbers to compare)");
    }
    const std::string best_json = cfg_.out_dir + "/best.json";
    if (detail::file_readable(best_json)) {
      try {
        const auto j = detail::read_json_file(best_json);
        if (j.at("fd").is_number()) best_fd_ = j.at("fd").get<double>();
        best_step_ = j.at("step").get<int64_t>();
      } catch (const std::exception& e) {
        log("warning: ignoring " + best_json + ": " + e.what());
      }
    }
  }

  /// One evaluation (all ranks): score, log to metrics.jsonl, redraw eval.png and keep best.pt.
  void run_evaluation() {
    const EvalResult r = evaluate();
    if (!is_main()) return;
    metrics_->append_eval(step_, r.to_json());
    const bool better = std::isfinite(r.fd) && r.fd < best_fd_;
    char buf[160];
    std::snprintf(buf, sizeof buf, "eval step %lld: %s %.4g, KID %.4g (%lld samples, %.1f s)%s",
                  static_cast<long long>(step_), r.metric.c_str(), r.fd, r.kid, static_cast<long long>(r.n),
                  r.wall_seconds, better ? ", new best" : "");
    log(buf);
    if (better) {
      torch::serialize::OutputArchive a;
      write_training_state(a, state(), effective_config(), unet_options_, scheduler_config());
      write_checkpoint_file(cfg_.out_dir + "/best.pt", a);
      best_fd_ = r.fd;
      best_step_ = step_;
      nlohmann::ordered_json j;
      j["step"] = step_;
      j["metric"] = r.metric;
      j["fd"] = r.fd;
      j["kid"] = std::isfinite(r.kid) ? nlohmann::ordered_json(r.kid) : nlohmann::ordered_json();
      j["n"] = r.n;
      j["checkpoint"] = "best.pt";
      detail::write_json_file(cfg_.out_dir + "/best.json", nlohmann::json::parse(j.dump()));
    }
    write_loss_curve();
  }

  TrainingStateRef state() {
    return {*model_, ema_->ema, *optimizer_, step_, train_seconds_, loss_scale_, good_steps_, gen_};
  }

  void write_state(torch::serialize::OutputArchive& a) {
    loss_scale_ = scaler_.scale_value();
    good_steps_ = scaler_.good_steps();
    write_training_state(a, state(), effective_config(), unet_options_, scheduler_config());
    last_checkpoint_step_ = step_;
  }

  void resume() {
    torch::serialize::InputArchive a;
    const std::string path = ckpt_->load_latest(
        a, [&](const std::string& p, const std::string& why) { log_("warning: skipping checkpoint " + p + ": " + why); },
        device_);
    if (path.empty()) return;
    try {
      read_training_state(a, state());
      scaler_.load(loss_scale_, good_steps_);
      ema_->fresh = false;
    } catch (const c10::Error& err) {
      throw Error("cannot resume from '" + path + "': it does not match this configuration (" +
                  err.what_without_backtrace() +
                  "). Use a new --out folder or the model settings the checkpoint was trained with.");
    }
    if (hooks_.rank != 0) {
      // The checkpoint holds rank 0's noise/timestep generator. Other ranks continue on
      // their own stream (seeded from seed, rank and step), so the ranks still draw
      // independent noise after a resume.
      gen_ = rank_generator(cfg_.seed, hooks_.rank, step_);
    }
    resumed_from_ = path;
    last_checkpoint_ = path;
    last_checkpoint_step_ = step_;
    if (step_ > cfg_.steps) {
      throw Error("checkpoint '" + path + "' is at step " + std::to_string(step_) + ", beyond steps = " +
                  std::to_string(cfg_.steps) + "; raise --steps to continue training");
    }
    metrics_->truncate_to(step_);
  }

  void append_metrics(int64_t step, double loss, double lr, double ips, double grad_norm) {
    metrics_->append(step, loss, lr, ips, train_seconds_, grad_norm);
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
  std::vector<std::string> class_names_;
  UNetOptions unet_options_;
  UNet model_{nullptr};
  std::unique_ptr<EmaState> ema_;
  std::unique_ptr<torch::optim::Optimizer> optimizer_;
  std::unique_ptr<ForwardDiffuser> diffuser_;
  std::unique_ptr<CheckpointManager> ckpt_;
  int64_t step_ = 0;
  double train_seconds_ = 0;
  LossScaler scaler_;  // fp16 autocast only
  double loss_scale_ = 0;   // scaler_'s state as stored in checkpoints
  int64_t good_steps_ = 0;
  std::string last_checkpoint_;
  int64_t last_checkpoint_step_ = -1;
  std::string resumed_from_;
  std::unique_ptr<MetricsLog> metrics_;
  struct Callback {
    int64_t every;
    std::function<void(Trainer&)> fn;
  };
  std::vector<Callback> callbacks_;
  std::unique_ptr<Evaluator> evaluator_;
  double best_fd_ = std::numeric_limits<double>::infinity();
  int64_t best_step_ = -1;
  bool show_progress_ = true;
  ProgressBar* bar_ = nullptr;
};

}  // namespace ddpm
