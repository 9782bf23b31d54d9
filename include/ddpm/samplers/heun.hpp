#pragma once
/// Heun's second-order sampler (Karras et al. 2022, Alg. 1, without churn), exactly as diffusers
/// v0.31.0 HeunDiscreteScheduler computes it: two model calls per step, so timesteps() lists
/// t_0, t_1, t_1, ..., t_{N-1}, t_{N-1} (2N - 1 calls) and the sigmas s_0, s_1, s_1, ..., 0.
///   Euler (predictor) call at sigma_i:  d = (x - x0)/sigma_i,  x' = x + d (sigma_{i+1} - sigma_i)
///   corrector call at sigma_{i+1} on x': d' = (x' - x0')/sigma_{i+1},
///                                        x_{i+1} = x + (d + d')/2 (sigma_{i+1} - sigma_i)
/// The last step (to sigma = 0) is a plain Euler step. x0 may be clipped (clip_sample).
#include <ddpm/samplers/common.hpp>
#include <ddpm/samplers/sigmas.hpp>

#include <torch/arg.h>
#include <torch/types.h>

#include <nlohmann/json.hpp>

#include <cstdint>
#include <string>
#include <vector>

namespace ddpm {

/// HeunDiscreteScheduler's configuration (diffusers defaults: linear betas 0.00085 .. 0.012).
struct HeunSamplerOptions {
  TORCH_ARG(NoiseScheduleOptions, schedule) = NoiseScheduleOptions().beta_start(0.00085).beta_end(0.012);
  TORCH_ARG(PredictionType, prediction_type) = PredictionType::Epsilon;
  TORCH_ARG(bool, use_karras_sigmas) = false;
  TORCH_ARG(bool, clip_sample) = false;
  TORCH_ARG(double, clip_sample_range) = 1.0;
  TORCH_ARG(TimestepSpacing, timestep_spacing) = TimestepSpacing::Linspace;
  TORCH_ARG(int64_t, steps_offset) = 0;
};

inline void to_json(nlohmann::json& j, const HeunSamplerOptions& o) {
  j = nlohmann::json::object();
  detail::write_schedule_keys(j, o.schedule());
  j.erase("rescale_betas_zero_snr");  // not a HeunDiscreteScheduler key
  j["prediction_type"] = o.prediction_type();
  j["use_karras_sigmas"] = o.use_karras_sigmas();
  j["use_exponential_sigmas"] = false;
  j["use_beta_sigmas"] = false;
  j["clip_sample"] = o.clip_sample();
  j["clip_sample_range"] = o.clip_sample_range();
  j["timestep_spacing"] = o.timestep_spacing();
  j["steps_offset"] = o.steps_offset();
}

inline void from_json(const nlohmann::json& j, HeunSamplerOptions& o) {
  const std::string ctx = "HeunDiscreteScheduler config";
  o = HeunSamplerOptions{};
  detail::read_schedule_keys(j, o.schedule(), ctx);
  o.schedule().rescale_betas_zero_snr(false);  // not a HeunDiscreteScheduler key: diffusers ignores it
  detail::get_optional(j, "prediction_type", o.prediction_type(), ctx);
  detail::get_optional(j, "use_karras_sigmas", o.use_karras_sigmas(), ctx);
  detail::get_optional(j, "clip_sample", o.clip_sample(), ctx);
  detail::get_optional(j, "clip_sample_range", o.clip_sample_range(), ctx);
  detail::get_optional(j, "timestep_spacing", o.timestep_spacing(), ctx);
  detail::get_optional(j, "steps_offset", o.steps_offset(), ctx);
  detail::reject_true(j, {"use_exponential_sigmas", "use_beta_sigmas"}, ctx);
}

/// Heun sampler (deterministic, stateful: keeps the Euler half-step between its two calls).
class HeunSampler {
 public:
  using Options = HeunSamplerOptions;
  static constexpr const char* kClassName = "HeunDiscreteScheduler";
  static const std::vector<const char*>& config_keys() {
    static const std::vector<const char*> keys = detail::with_schedule_keys(
        {"prediction_type", "use_karras_sigmas", "use_exponential_sigmas", "use_beta_sigmas", "clip_sample",
         "clip_sample_range", "timestep_spacing", "steps_offset"});
    return keys;
  }
  explicit HeunSampler(HeunSamplerOptions options = {}) : options_(std::move(options)), schedule_(options_.schedule()) {
    if (options_.schedule().rescale_betas_zero_snr()) {
      throw Error("HeunSampler: rescale_betas_zero_snr is not supported (diffusers' HeunDiscreteScheduler has no "
                  "such option; its last sigma would be infinite)");
    }
    if (!(options_.clip_sample_range() > 0)) {
      throw Error("HeunSampler: clip_sample_range must be > 0, got " + std::to_string(options_.clip_sample_range()));
    }
    train_sigmas_ = detail::sigmas_from_alphas_cumprod(schedule_.alphas_cumprod());
  }

  const HeunSamplerOptions& options() const { return options_; }
  const NoiseSchedule& schedule() const { return schedule_; }
  PredictionType prediction_type() const { return options_.prediction_type(); }
  /// Two model calls per step.
  int64_t order() const { return 2; }
  /// N, the number of sigma intervals (timesteps() has 2N - 1 entries).
  int64_t num_inference_steps() const { return num_steps_; }
  const std::vector<double>& timesteps() const { return timesteps_; }
  /// [2N] sigmas s_0, s_1, s_1, ..., s_{N-1}, s_{N-1}, 0 as diffusers stores them.
  torch::Tensor sigmas() const { return sigmas_; }
  double init_noise_sigma() const { return detail::euler_init_noise_sigma(sigmas_, options_.timestep_spacing()); }
  int64_t step_index() const { return step_index_; }
  /// True when the next step() is an Euler (first) call.
  bool state_in_first_order() const { return !dt_.defined(); }

  void set_timesteps(int64_t num_inference_steps) {
    auto s = detail::euler_sigma_schedule(train_sigmas_, num_inference_steps, options_.timestep_spacing(),
                                          options_.steps_offset(), options_.use_karras_sigmas(), c10::nullopt,
                                          c10::nullopt, 0.0, "HeunSampler::set_timesteps");
    // Karras timesteps stay float64 in diffusers (torch.from_numpy of a float64 array).
    const auto ts = options_.use_karras_sigmas() ? s.timesteps : detail::timesteps_in(s.timesteps, schedule_.dtype());
    std::vector<double> sigmas = {s.sigmas.front()};
    for (size_t i = 1; i + 1 < s.sigmas.size(); ++i) sigmas.insert(sigmas.end(), {s.sigmas[i], s.sigmas[i]});
    sigmas.push_back(s.sigmas.back());
    timesteps_ = {ts.front()};
    for (size_t i = 1; i < ts.size(); ++i) timesteps_.insert(timesteps_.end(), {ts[i], ts[i]});
    sigmas_ = detail::sigmas_in(sigmas, schedule_.dtype());
    num_steps_ = num_inference_steps;
    reset();
  }

  /// Forgets the step index and a pending half-step.
  void reset() {
    step_index_ = -1;
    dt_ = torch::Tensor();
    prev_derivative_ = torch::Tensor();
    sample_ = torch::Tensor();
  }

  /// x / sqrt(sigma^2 + 1) at the current step (locates t on the first call).
  torch::Tensor scale_model_input(const torch::Tensor& sample, double t) {
    return detail::scale_by_sigma(sample, timesteps_, sigmas_, step_index_, t, "HeunSampler::scale_model_input");
  }

  /// The Euler call (state_in_first_order) or the corrector call of a Heun step.
  SamplerStepOutput step(const torch::Tensor& model_output, double t, const torch::Tensor& sample,
                         c10::optional<at::Generator> generator = c10::nullopt,
                         c10::optional<torch::Tensor> noise = c10::nullopt) {
    (void)generator;
    (void)noise;
    const char* where = "HeunSampler::step";
    detail::check_float_step_inputs(model_output, sample, where);
    detail::locate_step(timesteps_, step_index_, t, where);
    const bool first = state_in_first_order();
    const auto sigma = first ? sigmas_[step_index_] : sigmas_[step_index_ - 1];
    const auto sigma_next = first ? sigmas_[step_index_ + 1] : sigmas_[step_index_];
    const auto& sigma_input = first ? sigma : sigma_next;
    auto x0 = predict_x0_from_sigma(model_output, sample, sigma_input, options_.prediction_type());
    if (options_.clip_sample()) x0 = clip_x0(x0, options_.clip_sample_range());
    torch::Tensor prev;
    if (first) {
      const auto derivative = (sample - x0) / sigma;
      dt_ = sigma_next - sigma;
      prev_derivative_ = derivative;
      sample_ = sample;
      prev = sample + derivative * dt_;
    } else {
      auto derivative = (sample - x0) / sigma_next;
      derivative = (prev_derivative_ + derivative) / 2;
      prev = sample_ + derivative * dt_;
      dt_ = torch::Tensor();
      prev_derivative_ = torch::Tensor();
      sample_ = torch::Tensor();
    }
    ++step_index_;
    return {prev, x0};
  }

 private:
  HeunSamplerOptions options_;
  NoiseSchedule schedule_;
  torch::Tensor train_sigmas_, sigmas_;
  std::vector<double> timesteps_;
  int64_t num_steps_ = 0;
  int64_t step_index_ = -1;
  torch::Tensor dt_, prev_derivative_, sample_;
};

DDPM_CHECK_SAMPLER(HeunSampler);

}  // namespace ddpm
