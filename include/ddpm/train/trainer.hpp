#pragma once
/// The DDPM training loop (Ho et al. 2020, Algorithm 1) for image data:
/// repeat { (x0, labels) ~ data; t ~ U{0..T-1}; eps ~ N(0, I); step on ||target - model(x_t, t)||^2 }
/// with an EMA of the weights, crash-safe checkpoints that resume bit-exactly on CPU,
/// metrics, sample grids, SIGINT/SIGTERM handling and a stop on a non-finite loss.
/// Its parts live beside it: the config (train/config.hpp), the datasets (data/registry.hpp),
/// device and AMP (train/device.hpp), the model, EMA, optimizer and one optimizer step
/// (train/state.hpp), the LR schedule (train/optim.hpp), checkpoints (train/checkpoint.hpp), the
/// run directory's files (train/run_dir.hpp), metrics (train/metrics.hpp), evaluation during
/// training (train/evaluation.hpp), data-parallel collectives (train/collective.hpp) and
/// signals (train/signals.hpp). Needs <ddpm/io/png.hpp> (Debian libstb-dev).
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
/// Class-conditional training (num_classes > 0; train/state.hpp): labels from the data, dropped to
/// the null class with probability p_uncond; sample grids have one class per row and, like
/// evaluation, use guidance_scale; class names go into checkpoints and class_names.json.
///
/// Evaluation during training (eval_every > 0; train/evaluation.hpp): every eval_every steps
/// and at the end, one {"step", "eval"} line in metrics.jsonl, eval.png and best.pt/best.json.
#include <ddpm/data/loader.hpp>
#include <ddpm/data/registry.hpp>
#include <ddpm/data/transforms.hpp>
#include <ddpm/error.hpp>
#include <ddpm/eval/evaluate.hpp>
#include <ddpm/forward_diffuser.hpp>
#include <ddpm/guidance.hpp>
#include <ddpm/nn/unet.hpp>
#include <ddpm/pipeline.hpp>
#include <ddpm/runtime.hpp>
#include <ddpm/sampler.hpp>
#include <ddpm/train/checkpoint.hpp>
#include <ddpm/train/collective.hpp>
#include <ddpm/train/config.hpp>
#include <ddpm/train/device.hpp>
#include <ddpm/train/evaluation.hpp>
#include <ddpm/train/metrics.hpp>
#include <ddpm/train/optim.hpp>
#include <ddpm/train/progress.hpp>
#include <ddpm/train/run_dir.hpp>
#include <ddpm/train/run_result.hpp>
#include <ddpm/train/signals.hpp>
#include <ddpm/train/state.hpp>
#include <ddpm/train/training_data.hpp>

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Parallel.h>
#include <torch/serialize/archive.h>
#include <torch/types.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <cstdint>
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

  /// Same, with the training images given (uint8 [N, C, H, W], or a stream of images of the
  /// training size); neither `data.images` nor `data.stream` = load from the config.
  Trainer(TrainConfig config, ImageData data, TrainerHooks hooks = {}, Log log = {})
      : cfg_(std::move(config)), hooks_(std::move(hooks)), log_(std::move(log)), run_dir_(cfg_.out_dir) {
    validate(cfg_);
    if (!log_) log_ = log_to_stderr_or(bar_);  // without garbling a progress bar being drawn
    setup_runtime();
    if (!data.images.defined() && !data.stream) {
      data = dataset_registry().load(cfg_.dataset, cfg_.data_dir, true, dataset_options_of(cfg_));
    }
    setup_data(std::move(data));
    setup_evaluation();
    state_ = std::make_unique<TrainState>(cfg_, model_options_of(cfg_, loader_channels_), device_, autocast_dtype_,
                                          hooks_);
    state_->set_class_names(class_names_);
    ckpt_ = std::make_unique<CheckpointManager>(cfg_.out_dir, cfg_.keep_checkpoints);
    resume();
    check_ranks_agree_on_step(hooks_, step(),
                              resumed_from_.empty() ? "no checkpoint in '" + cfg_.out_dir + "', step 0"
                                                    : "step " + std::to_string(step()) + " from " + resumed_from_);
    state_->broadcast_parameters();
    if (is_main()) run_dir_.write_config(effective_config(), cfg_.num_classes > 0 ? class_names_ : std::vector<std::string>{});
  }

  ~Trainer() { if (loader_) loader_->stop(); }
  Trainer(const Trainer&) = delete;
  Trainer& operator=(const Trainer&) = delete;

  const TrainConfig& config() const { return cfg_; }
  /// The effective config as written to out_dir/config.json (model resolved).
  nlohmann::json effective_config() const { return state_->effective_config(); }
  UNet& model() { return state_->model(); }
  UNet& ema_model() { return state_->ema_model(); }
  /// The model, EMA, optimizer and generator being trained (train/state.hpp).
  TrainState& state() { return *state_; }
  int64_t step() const { return state_->step(); }
  torch::Device device() const { return device_; }
  const UNetOptions& unet_options() const { return state_->unet_options(); }
  const std::string& dataset_name() const { return dataset_name_; }
  /// Class names of the training data, by label (empty for unlabelled data).
  const std::vector<std::string>& class_names() const { return class_names_; }
  BatchLoader& loader() { return *loader_; }
  const ForwardDiffuser& diffuser() const { return state_->diffuser(); }
  /// Path of the checkpoint resumed from ("" for a fresh run).
  const std::string& resumed_from() const { return resumed_from_; }

  /// Learning rate at step s (0-based): see learning_rate_at (train/optim.hpp); a time-limited
  /// cosine schedule uses the horizon run() last projected.
  double lr_at(int64_t s) const { return learning_rate_at(cfg_, s, state_->lr_horizon()); }

  /// One optimizer step on the next batch of the data sequence.
  TrainStepOutput train_step() {
    if (!loader_started_) {
      loader_->start(step());
      loader_started_ = true;
    }
    Batch batch = loader_->next();
    log_loader_warnings();
    return train_step(batch);
  }

  /// One optimizer step on unlabelled images `x0` (float [B, C, H, W] in [-1, 1]).
  TrainStepOutput train_step(const torch::Tensor& x0) { return train_step(Batch{x0, c10::nullopt}); }

  /// One optimizer step on `batch` (TrainState::step): a non-finite loss returns finite = false
  /// and changes nothing (weights, EMA, optimizer, step).
  TrainStepOutput train_step(const Batch& batch) { return state_->step(batch); }

  /// The training loss of the current model on `x0` with noise and timesteps from
  /// a generator seeded with `seed` (no update; eval mode, no gradients); class-conditional:
  /// with `labels` (int64 [B]), or the null class when undefined.
  double evaluate_loss(const torch::Tensor& x0, uint64_t seed, const torch::Tensor& labels = {}) {
    return state_->loss_of(x0, seed, labels);
  }

  /// `n` images sampled from the EMA model with the configured sampler and
  /// steps, from a fixed seed (so successive grids show the same noise): [n, C, S, S] in model space.
  /// The one place the trainer samples (sample grids). Class-conditional runs: one class per row
  /// of save_image_grid's default square layout (class_grid_labels), guided with guidance_scale
  /// in the configured guidance interval.
  /// In batches of default_sampling_batch(device) (16 on a CPU: 1.27x faster than 64 there).
  torch::Tensor sample_images(int64_t n, const GenerateCallback& on_progress = {}) {
    auto gen = at::detail::createCPUGenerator(cfg_.seed + 0x5eed);
    auto opts = GenerateOptions()
                    .num_inference_steps(cfg_.sample_steps)
                    .batch_size(default_sampling_batch(device_))
                    .sample_size(cfg_.image_size)
                    .clamp(false);
    if (cfg_.num_classes > 0) {
      opts.class_labels(class_grid_labels(n, cfg_.num_classes))
          .guidance_scale(cfg_.guidance_scale)
          .guidance_interval_min(cfg_.guidance_interval_min)
          .guidance_interval_max(cfg_.guidance_interval_max);
    }
    return grid_pipeline().generate(n, gen, opts, on_progress);
  }

  /// The EMA model with the configured grid sampler (cfg.sampler: any registered name or preset).
  Pipeline grid_pipeline() {
    return Pipeline(state_->ema_model(), make_sampler(scheduler_config(), cfg_.sampler), device_);
  }

  /// The diffusers-style scheduler config of this run (see scheduler_config_of).
  nlohmann::json scheduler_config() const { return scheduler_config_of(cfg_); }

  /// Writes a checkpoint of the current state (rank 0 only) and returns its path.
  std::string save_checkpoint() {
    if (!is_main()) return "";
    torch::serialize::OutputArchive a;
    state_->save(a);
    last_checkpoint_step_ = step();
    last_checkpoint_ = ckpt_->save(step(), a);
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
    const std::string path = run_dir_.write_sample_grid(step(), sample_images(cfg_.sample_count));
    write_loss_curve();
    return path;
  }

  /// Redraws out_dir/loss.png from the metrics so far.
  void write_loss_curve() { metrics_->write_curve(); }

  /// Generates config().eval_samples images from the EMA model and scores them; collective with
  /// data parallelism (TrainingEvaluator::evaluate, train/evaluation.hpp). Throws ddpm::Error
  /// when eval_every was not configured (no evaluator).
  EvalResult evaluate() {
    if (!evaluator_) throw Error("Trainer::evaluate: evaluation is off (set eval_every > 0)");
    return evaluator_->evaluate(state_->ema_model(), scheduler_config(), hooks_, device_);
  }

  /// Lowest evaluation distance so far (from out_dir/best.json after a resume; +inf when none)
  /// and its step (-1 when none).
  double best_eval_distance() const {
    return evaluator_ ? evaluator_->best_distance() : std::numeric_limits<double>::infinity();
  }
  int64_t best_eval_step() const { return evaluator_ ? evaluator_->best_step() : -1; }

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
    const int64_t target = max_steps >= 0 ? std::min(cfg_.steps, step() + max_steps) : cfg_.steps;
    const auto t_start = std::chrono::steady_clock::now();
    const int64_t global_batch = cfg_.batch_size * hooks_.world_size;
    std::unique_ptr<ProgressBar> bar;
    struct BarReset {
      ProgressBar*& p;
      ~BarReset() { p = nullptr; }
    } bar_reset{bar_};
    if (is_main()) {
      if (show_progress_) {
        bar = std::make_unique<ProgressBar>(cfg_.steps, step(), "train");
        bar->set_time_limit(cfg_.time_limit_minutes * 60.0);
        bar_ = bar.get();
      }
      log(std::string(resumed_from_.empty() ? "starting" : "resuming") + " at step " + std::to_string(step()) +
          " of " + std::to_string(cfg_.steps) + " on " + device_.str() + " (" + std::to_string(at::get_num_threads()) +
          " threads), " + dataset_name_ + " " + std::to_string(loader_->num_images()) + " images, global batch " +
          std::to_string(global_batch) + ", " + std::to_string(num_parameters()) + " parameters" +
          (cfg_.num_classes > 0 ? ", class-conditional (" + std::to_string(cfg_.num_classes) + " classes, p_uncond " +
                                      detail::format_number(cfg_.p_uncond) + ")"
                                : std::string()));
    }
    LogInterval interval;
    int64_t sampled_at = -1;  // step of the last sample grid written by this run
    const int64_t first_step = step();
    // A cosine schedule with a time limit decays to 0 at the step the limit will allow, projected
    // before every step from this run's own pace (time_limit_horizon): rank 0's projection, so
    // that every rank uses the same learning rate.
    const bool time_horizon = cfg_.lr_schedule == LrSchedule::Cosine && cfg_.time_limit_minutes > 0;
    state_->set_lr_horizon(0);
    while (step() < target) {
      const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - t_start).count();
      const bool time_up = cfg_.time_limit_minutes > 0 && elapsed > cfg_.time_limit_minutes * 60.0;
      const StopDecision stop = stop_decision(hooks_, detail::pending_signal().load(), time_up, cfg_.time_limit_minutes);
      res.status = stop.status;
      res.message = stop.message;
      if (res.status != RunStatus::Completed) break;
      if (time_horizon) {
        double h = static_cast<double>(
            time_limit_horizon(first_step, step() - first_step, elapsed, cfg_.time_limit_minutes * 60.0));
        if (hooks_.collective()) h = hooks_.allreduce_sum(is_main() ? h : 0.0);
        state_->set_lr_horizon(static_cast<int64_t>(h));
      }
      const auto t0 = std::chrono::steady_clock::now();
      const auto so = train_step();
      const double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      if (!so.finite) {
        res.status = RunStatus::NonFiniteLoss;
        res.message = non_finite_loss_message(hooks_, step() + 1, so.loss, so.rank_loss, so.lr, last_checkpoint_);
        log("error: " + res.message);
        res.step = step();
        res.checkpoint = last_checkpoint_;
        if (hooks_.barrier) hooks_.barrier();
        return res;
      }
      state_->add_train_seconds(dt);
      interval.add(so.loss, dt, so.grad_norm);
      const double ips = interval.images_per_second(global_batch);
      if (bar) bar->update(step(), so.loss, ips);
      if (step() % cfg_.log_every == 0 || step() == target) {
        append_metrics(step(), interval.mean_loss(), so.lr, ips, interval.grad_norm);
        interval.clear();
      }
      const bool at_end = step() == cfg_.steps;
      if ((cfg_.sample_every > 0 && step() % cfg_.sample_every == 0) || at_end) {
        if (bar) bar->finish();
        res.sample_grid = write_samples();
        if (is_main()) log("wrote " + res.sample_grid);
        sampled_at = step();
      }
      if ((cfg_.checkpoint_every > 0 && step() % cfg_.checkpoint_every == 0) || at_end) {
        save_checkpoint();
        if (hooks_.barrier) hooks_.barrier();
      }
      if (cfg_.eval_every > 0 && (step() % cfg_.eval_every == 0 || at_end)) {
        if (bar) bar->finish();
        run_evaluation();
      }
      for (auto& cb : callbacks_) {
        if (step() % cb.every == 0) cb.fn(*this);
      }
    }
    if (bar) bar->finish();
    // Final outputs for a stop before the end of training (time limit, signal, max_steps).
    if (step() != cfg_.steps || res.status != RunStatus::Completed) {
      if (interval.steps > 0) {
        append_metrics(step(), interval.mean_loss(), lr_at(step() - 1), interval.images_per_second(global_batch),
                       interval.grad_norm);
      }
      if (last_checkpoint_step_ != step()) save_checkpoint();
      if (hooks_.barrier) hooks_.barrier();
      if (res.status == RunStatus::TimeLimit && sampled_at != step()) {
        res.sample_grid = write_samples();
        if (is_main()) log("wrote " + res.sample_grid);
      }
    }
    write_loss_curve();
    res.step = step();
    res.checkpoint = last_checkpoint_;
    if (res.message.empty()) res.message = "finished at step " + std::to_string(step());
    return res;
  }

  /// Show a progress bar during run() (default true; rank 0 only).
  void set_show_progress(bool on) { show_progress_ = on; }

  int64_t num_parameters() const { return state_->num_parameters(); }

 private:
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
    metrics_ = std::make_unique<MetricsLog>(cfg_.out_dir, is_main());
  }

  void setup_data(ImageData data) {
    dataset_name_ = data.name;
    class_names_ = data.class_names;
    TrainingLoader tl = make_training_loader(cfg_, data, hooks_.rank, hooks_.world_size);
    loader_ = std::move(tl.loader);
    loader_channels_ = tl.channels;
    log_loader_warnings();
  }

  /// Logs the loader's warnings (files skipped by a streamed dataset), from this thread.
  void log_loader_warnings() {
    for (const auto& w : loader_->take_warnings()) log("warning: " + w);
  }

  /// eval_every > 0: checks that the data fits the evaluator, loads it and restores the best so far.
  void setup_evaluation() {
    if (cfg_.eval_every <= 0) return;
    check_evaluation_fits(cfg_, loader_channels_, dataset_name_, hooks_.world_size);
    evaluator_ = std::make_unique<TrainingEvaluator>(evaluation_options_of(cfg_).class_names(class_names_), run_dir_, device_,
                                                     [this](const std::string& m) { log(m); });
  }

  /// One evaluation (all ranks): score, log to metrics.jsonl, redraw eval.png and keep best.pt.
  void run_evaluation() {
    const EvalResult r = evaluate();
    if (!is_main()) return;
    metrics_->append_eval(step(), r.to_json());
    log(evaluator_
            ->record(step(), r,
                     [this](torch::serialize::OutputArchive& a) { state_->save(a, /*sync_scaler=*/false); })
            .message);
    write_loss_curve();
  }

  void resume() {
    if (is_main()) {
      for (const auto& p : ckpt_->remove_stale_temporaries()) log_("removed the stale temporary " + p);
    }
    resumed_from_ = state_->resume(*ckpt_, [&](const std::string& p, const std::string& why) {
      log_("warning: skipping checkpoint " + p + ": " + why);
    });
    if (resumed_from_.empty()) {
      metrics_->truncate_to(0);  // lines of an attempt killed before its first checkpoint
      return;
    }
    last_checkpoint_ = resumed_from_;
    last_checkpoint_step_ = step();
    if (step() > cfg_.steps) {
      throw Error("checkpoint '" + resumed_from_ + "' is at step " + std::to_string(step()) + ", beyond steps = " +
                  std::to_string(cfg_.steps) + "; raise --steps to continue training");
    }
    metrics_->truncate_to(step());
  }

  void append_metrics(int64_t step, double loss, double lr, double ips, double grad_norm) {
    metrics_->append(step, loss, lr, ips, state_->train_seconds(), grad_norm);
  }

  TrainConfig cfg_;
  TrainerHooks hooks_;
  Log log_;
  RunDir run_dir_;
  torch::Device device_{torch::kCPU};
  c10::optional<torch::ScalarType> autocast_dtype_;
  std::unique_ptr<BatchLoader> loader_;
  bool loader_started_ = false;
  int64_t loader_channels_ = 0;
  std::string dataset_name_;
  std::vector<std::string> class_names_;
  std::unique_ptr<TrainState> state_;
  std::unique_ptr<CheckpointManager> ckpt_;
  std::string last_checkpoint_;
  int64_t last_checkpoint_step_ = -1;
  std::string resumed_from_;
  std::unique_ptr<MetricsLog> metrics_;
  struct Callback {
    int64_t every;
    std::function<void(Trainer&)> fn;
  };
  std::vector<Callback> callbacks_;
  std::unique_ptr<TrainingEvaluator> evaluator_;
  bool show_progress_ = true;
  ProgressBar* bar_ = nullptr;
};

}  // namespace ddpm
