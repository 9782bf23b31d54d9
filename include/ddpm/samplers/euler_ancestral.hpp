#pragma once
/// Euler ancestral sampler (k-diffusion `sample_euler_ancestral`), exactly as diffusers v0.31.0
/// EulerAncestralDiscreteScheduler computes it. With x0 from the model output at sigma_i:
///   sigma_up   = sqrt(sigma_{i+1}^2 (sigma_i^2 - sigma_{i+1}^2) / sigma_i^2)
///   sigma_down = sqrt(sigma_{i+1}^2 - sigma_up^2)
///   x_{i+1} = x + (x - x0)/sigma_i (sigma_down - sigma_i) + sigma_up z,   z ~ N(0, I)
/// z is drawn every step (also the last, where sigma_up = 0) from the generator, or supplied.
/// Timesteps / sigmas / scaling are EulerSampler's (no Karras option; sample prediction is not
/// supported, as in diffusers).
#include <ddpm/samplers/common.hpp>
#include <ddpm/samplers/sigmas.hpp>

#include <torch/arg.h>
#include <torch/types.h>

#include <nlohmann/json.hpp>

#include <cstdint>
#include <string>
#include <vector>

namespace ddpm {

/// EulerAncestralDiscreteScheduler's configuration (diffusers defaults).
struct EulerAncestralSamplerOptions {
  TORCH_ARG(NoiseScheduleOptions, schedule) = {};
  /// epsilon or v_prediction (diffusers raises for sample).
  TORCH_ARG(PredictionType, prediction_type) = PredictionType::Epsilon;
  TORCH_ARG(TimestepSpacing, timestep_spacing) = TimestepSpacing::Linspace;
  TORCH_ARG(int64_t, steps_offset) = 0;
};

inline void to_json(nlohmann::json& j, const EulerAncestralSamplerOptions& o) {
  j = nlohmann::json::object();
  detail::write_schedule_keys(j, o.schedule());
  j["prediction_type"] = o.prediction_type();
  j["timestep_spacing"] = o.timestep_spacing();
  j["steps_offset"] = o.steps_offset();
}

inline void from_json(const nlohmann::json& j, EulerAncestralSamplerOptions& o) {
  const std::string ctx = "EulerAncestralDiscreteScheduler config";
  o = EulerAncestralSamplerOptions{};
  detail::read_schedule_keys(j, o.schedule(), ctx);
  detail::get_optional(j, "prediction_type", o.prediction_type(), ctx);
  detail::get_optional(j, "timestep_spacing", o.timestep_spacing(), ctx);
  detail::get_optional(j, "steps_offset", o.steps_offset(), ctx);
}

/// Euler ancestral sampler (stochastic). Holds its sigmas on CPU.
class EulerAncestralSampler {
 public:
  using Options = EulerAncestralSamplerOptions;
  static constexpr const char* kClassName = "EulerAncestralDiscreteScheduler";
  static const std::vector<const char*>& config_keys() {
    static const std::vector<const char*> keys =
        detail::with_schedule_keys({"prediction_type", "timestep_spacing", "steps_offset"});
    return keys;
  }
  explicit EulerAncestralSampler(EulerAncestralSamplerOptions options = {})
      : options_(std::move(options)), schedule_(options_.schedule()) {
    if (options_.prediction_type() == PredictionType::Sample) {
      throw Error("EulerAncestralSampler: prediction_type \"sample\" is not supported (diffusers' "
                  "EulerAncestralDiscreteScheduler supports epsilon and v_prediction)");
    }
    train_sigmas_ = detail::sigmas_from_alphas_cumprod(
        detail::sampler_alphas_cumprod(schedule_, options_.schedule().rescale_betas_zero_snr()));
  }

  const EulerAncestralSamplerOptions& options() const { return options_; }
  const NoiseSchedule& schedule() const { return schedule_; }
  PredictionType prediction_type() const { return options_.prediction_type(); }
  int64_t order() const { return 1; }
  int64_t num_inference_steps() const { return static_cast<int64_t>(timesteps_.size()); }
  const std::vector<double>& timesteps() const { return timesteps_; }
  torch::Tensor sigmas() const { return sigmas_; }
  double init_noise_sigma() const { return detail::euler_init_noise_sigma(sigmas_, options_.timestep_spacing()); }
  int64_t step_index() const { return step_index_; }

  void set_timesteps(int64_t num_inference_steps) {
    auto s = detail::euler_sigma_schedule(train_sigmas_, num_inference_steps, options_.timestep_spacing(),
                                          options_.steps_offset(), false, c10::nullopt, c10::nullopt, 0.0,
                                          "EulerAncestralSampler::set_timesteps");
    sigmas_ = detail::sigmas_in(s.sigmas, schedule_.dtype());
    timesteps_ = detail::timesteps_in(s.timesteps, schedule_.dtype());
    reset();
  }
  void reset() { step_index_ = -1; }

  /// x / sqrt(sigma^2 + 1) at the current step (locates t on the first call).
  torch::Tensor scale_model_input(const torch::Tensor& sample, double t) {
    return detail::scale_by_sigma(sample, timesteps_, sigmas_, step_index_, t,
                                  "EulerAncestralSampler::scale_model_input");
  }

  /// One ancestral step; z comes from `noise` [same shape as sample] when given, else is drawn
  /// on CPU from `generator` (the default generator when absent).
  SamplerStepOutput step(const torch::Tensor& model_output, double t, const torch::Tensor& sample,
                         c10::optional<at::Generator> generator = c10::nullopt,
                         c10::optional<torch::Tensor> noise = c10::nullopt) {
    const char* where = "EulerAncestralSampler::step";
    detail::check_variance_noise(noise, sample, where);
    const auto s = detail::sigma_step_start(model_output, sample, t, timesteps_, sigmas_, step_index_,
                                            schedule_.dtype(), options_.prediction_type(), where);
    const auto& s_from = s.sigma;
    const auto s_to = sigmas_[step_index_ + 1];
    const auto sigma_up = (s_to * s_to * (s_from * s_from - s_to * s_to) / (s_from * s_from)).sqrt();
    const auto sigma_down = (s_to * s_to - sigma_up * sigma_up).sqrt();
    const auto derivative = (s.x - s.x0) / s.sigma;
    const auto dt = sigma_down - s.sigma;
    auto prev = s.x + derivative * dt;
    const auto z = (noise.has_value() && noise->defined()) ? noise->to(model_output.device(), model_output.scalar_type())
                                                           : detail::draw_noise_like(model_output, generator);
    prev = prev + z * sigma_up;
    ++step_index_;
    return {prev.to(model_output.scalar_type()), s.x0};
  }

 private:
  EulerAncestralSamplerOptions options_;
  NoiseSchedule schedule_;
  torch::Tensor train_sigmas_, sigmas_;
  std::vector<double> timesteps_;
  int64_t step_index_ = -1;
};

DDPM_CHECK_SAMPLER(EulerAncestralSampler);

}  // namespace ddpm
