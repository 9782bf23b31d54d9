#pragma once
/// What training advances and a checkpoint holds: the UNet, its EMA, the optimizer, the fp16
/// loss scaler, this rank's noise/timestep generator, the step and the training time, with the
/// forward diffuser that gives the loss. step(batch) is one optimizer step of Ho et al. (2020),
/// Algorithm 1 (t ~ U{0..T-1}, eps ~ N(0, I), a gradient step on ||target - model(x_t, t)||^2)
/// with autocast, loss scaling, gradient averaging over the ranks, clipping and the EMA update;
/// save() / resume() write and read it in the checkpoint layout of train/checkpoint.hpp.
/// Class-conditional training (cfg.num_classes > 0): the UNet gets num_class_embeds =
/// num_classes + 1 (the last is the null class) and every step feeds it the batch's labels, each
/// replaced by the null class with probability p_uncond (drop_labels, drawn from this rank's
/// generator before the timesteps and noise, so a resumed run draws the same).
#include <ddpm/data/loader.hpp>
#include <ddpm/device.hpp>
#include <ddpm/error.hpp>
#include <ddpm/forward_diffuser.hpp>
#include <ddpm/guidance.hpp>
#include <ddpm/nn/unet.hpp>
#include <ddpm/schedule.hpp>
#include <ddpm/train/checkpoint.hpp>
#include <ddpm/train/collective.hpp>
#include <ddpm/train/config.hpp>
#include <ddpm/train/ema.hpp>
#include <ddpm/train/optim.hpp>
#include <ddpm/train/run_result.hpp>

#include <ATen/CPUGeneratorImpl.h>
#include <c10/util/Optional.h>
#include <torch/nn/utils/clip_grad.h>
#include <torch/optim/optimizer.h>
#include <torch/serialize/archive.h>
#include <torch/types.h>
#include <torch/utils.h>

#include <nlohmann/json.hpp>

#include <cmath>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace ddpm {

/// The model being trained and everything one optimizer step changes (one per rank).
class TrainState {
 public:
  /// Builds the UNet of `unet_options` (initial weights drawn after torch::manual_seed(cfg.seed)),
  /// its EMA, the optimizer and the forward diffuser of `cfg` on `device`. `autocast_dtype`: the
  /// mixed-precision dtype (none: full precision); `hooks`: this rank's collectives.
  TrainState(TrainConfig cfg, UNetOptions unet_options, torch::Device device,
             c10::optional<torch::ScalarType> autocast_dtype, TrainerHooks hooks)
      : cfg_(std::move(cfg)), unet_options_(std::move(unet_options)), device_(device),
        autocast_dtype_(autocast_dtype), hooks_(std::move(hooks)), gen_(rank_generator(cfg_.seed, hooks_.rank, 0)) {
    torch::manual_seed(cfg_.seed);
    model_ = UNet(unet_options_);
    model_->to(device_);
    ema_ = std::make_unique<EMA<UNet>>(model_, EMAOptions().decay(cfg_.ema_decay).warmup(cfg_.ema_warmup));
    optimizer_ = make_optimizer(model_->parameters(), cfg_);
    diffuser_ = std::make_unique<ForwardDiffuser>(NoiseSchedule(cfg_.schedule), cfg_.objective);
  }
  TrainState(const TrainState&) = delete;
  TrainState& operator=(const TrainState&) = delete;

  UNet& model() { return model_; }
  UNet& ema_model() { return ema_->model(); }
  const ForwardDiffuser& diffuser() const { return *diffuser_; }
  const UNetOptions& unet_options() const { return unet_options_; }
  int64_t step() const { return step_; }
  /// The step where a cosine learning-rate schedule reaches 0 when it comes before `steps`
  /// (0: none; see learning_rate_at). Set by Trainer::run for a time-limited run.
  int64_t lr_horizon() const { return lr_horizon_; }
  void set_lr_horizon(int64_t step) { lr_horizon_ = step; }
  /// Seconds spent in optimizer steps over the whole run (resumed runs included).
  double train_seconds() const { return train_seconds_; }
  void add_train_seconds(double s) { train_seconds_ += s; }
  int64_t num_parameters() const {
    int64_t n = 0;
    for (const auto& p : model_->parameters()) n += p.numel();
    return n;
  }
  /// The training data's class names (by label), written into every checkpoint.
  void set_class_names(std::vector<std::string> names) { class_names_ = std::move(names); }
  const std::vector<std::string>& class_names() const { return class_names_; }
  /// The effective TrainConfig as written to config.json and checkpoints (model resolved).
  nlohmann::json effective_config() const {
    nlohmann::json j = cfg_;
    j["model"] = unet_options_;
    return j;
  }

  /// One optimizer step on `batch` at the learning rate of the current step (its labels are
  /// carried for class conditioning; the unconditional loss does not read them). A non-finite
  /// loss (on any rank) returns finite = false and changes nothing (weights, EMA, optimizer, step).
  TrainStepOutput step(const Batch& batch) {
    TrainStepOutput out;
    out.lr = learning_rate_at(cfg_, step_, lr_horizon_);
    for (auto& group : optimizer_->param_groups()) group.options().set_lr(out.lr);
    model_->train();
    const auto x0 = to_device(batch.images, device_);  // CUDA: pinned staging, asynchronous copy
    optimizer_->zero_grad();
    LossOutput lo;
    if (cfg_.num_classes > 0) {
      if (!batch.labels.has_value() || !batch.labels->defined()) {
        throw Error("training config: \"num_classes\" = " + std::to_string(cfg_.num_classes) +
                    " but the batch has no labels");
      }
      out.class_labels = drop_labels(batch.labels->to(torch::kCPU), cfg_.p_uncond, cfg_.num_classes, gen_);
      const torch::Tensor labels = out.class_labels.to(device_);
      AutocastGuard amp(device_, autocast_dtype_);
      lo = diffuser_->loss([&](const torch::Tensor& x_t, const torch::Tensor& t) { return model_->forward(x_t, t, labels); },
                           x0, gen_);
    } else {
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
    ema_->update(model_);
    ++step_;
    out.step = step_;
    return out;
  }

  /// The training loss of the current model on `x0` with noise and timesteps from a generator
  /// seeded with `seed` (no update; eval mode, no gradients). A class-conditional model is given
  /// `labels` (int64 [B]), or the null class when they are undefined.
  double loss_of(const torch::Tensor& x0, uint64_t seed, const torch::Tensor& labels = {}) {
    torch::NoGradGuard g;
    model_->eval();
    auto gen = at::detail::createCPUGenerator(seed);
    if (cfg_.num_classes <= 0) return diffuser_->loss(model_, x0.to(device_), gen).loss.item<double>();
    const torch::Tensor l = labels.defined() ? labels.to(device_, torch::kLong)
                                             : torch::full({x0.size(0)}, cfg_.num_classes,
                                                           torch::TensorOptions().dtype(torch::kLong).device(device_));
    return diffuser_
        ->loss([&](const torch::Tensor& x_t, const torch::Tensor& t) { return model_->forward(x_t, t, l); },
               x0.to(device_), gen)
        .loss.item<double>();
  }

  /// Writes the state and the three JSON configs into `a` (write_training_state; `sync_scaler`:
  /// store the loss scaler's current state, else the one of the last save or resume).
  void save(torch::serialize::OutputArchive& a, bool sync_scaler = true) {
    if (sync_scaler) {
      loss_scale_ = scaler_.scale_value();
      good_steps_ = scaler_.good_steps();
    }
    write_training_state(a, ref(), effective_config(), unet_options_, scheduler_config_of(cfg_), class_names_);
  }

  /// Restores the newest readable checkpoint of `manager` (resume_training_state) and returns
  /// its path ("" when there is none). Ranks other than 0 then continue on their own noise
  /// stream: the checkpoint holds rank 0's generator, and each rank's is seeded from seed, rank
  /// and step, so the ranks still draw independent noise after a resume.
  std::string resume(const CheckpointManager& manager,
                     const std::function<void(const std::string&, const std::string&)>& on_reject = {}) {
    const std::string path = resume_training_state(manager, ref(), device_, on_reject, effective_config());
    if (path.empty()) return path;
    scaler_.load(loss_scale_, good_steps_);
    ema_fresh_ = false;
    if (hooks_.rank != 0) gen_ = rank_generator(cfg_.seed, hooks_.rank, step_);
    return path;
  }

  /// Data parallel (broadcast_parameters hook): every rank takes rank 0's weights, and a fresh
  /// (not resumed) EMA restarts from them.
  void broadcast_parameters() {
    if (!hooks_.broadcast_parameters) return;
    hooks_.broadcast_parameters(*model_);
    if (ema_fresh_) ema_->reset_to(model_);
  }

 private:
  TrainingStateRef ref() { return {*model_, *ema_, *optimizer_, step_, train_seconds_, loss_scale_, good_steps_, gen_}; }

  TrainConfig cfg_;
  UNetOptions unet_options_;
  torch::Device device_;
  c10::optional<torch::ScalarType> autocast_dtype_;
  TrainerHooks hooks_;
  at::Generator gen_;
  UNet model_{nullptr};
  std::unique_ptr<EMA<UNet>> ema_;
  bool ema_fresh_ = true;  // not resumed: a weight broadcast also resets the EMA copy
  std::unique_ptr<torch::optim::Optimizer> optimizer_;
  std::unique_ptr<ForwardDiffuser> diffuser_;
  int64_t step_ = 0;
  int64_t lr_horizon_ = 0;
  double train_seconds_ = 0;
  LossScaler scaler_;       // fp16 autocast only
  double loss_scale_ = 0;   // scaler_'s state as stored in checkpoints
  int64_t good_steps_ = 0;
  std::vector<std::string> class_names_;
};

}  // namespace ddpm
