#pragma once
/// Euler sampler of Karras et al. 2022 (Alg. 2 without churn), exactly as diffusers v0.31.0
/// EulerDiscreteScheduler computes it. In the variance-exploding form x = x0 + sigma eps:
///   model input  x / sqrt(sigma_i^2 + 1)                 (what a VP-trained model expects)
///   x0           from the output (prediction.hpp predict_x0_from_sigma)
///   d = (x - x0) / sigma_i,   x_{i+1} = x + d (sigma_{i+1} - sigma_i)
/// sigmas: np.interp of the training sigmas at float timesteps (linspace / leading / trailing),
/// optionally Karras' rho = 7 schedule (timesteps then follow by sigma_to_t), final sigma 0 or
/// sigma_min; x_T = noise * init_noise_sigma (max sigma, or sqrt(max^2 + 1) for leading).
#include <ddpm/samplers/common.hpp>
#include <ddpm/samplers/sigmas.hpp>

#include <torch/arg.h>
#include <torch/types.h>

#include <nlohmann/json.hpp>

#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

namespace ddpm {

/// EulerDiscreteScheduler's configuration (diffusers defaults).
struct EulerSamplerOptions {
  TORCH_ARG(NoiseScheduleOptions, schedule) = {};
  TORCH_ARG(PredictionType, prediction_type) = PredictionType::Epsilon;
  /// Karras et al. (2022) rho = 7 sigmas between sigma_min and sigma_max.
  TORCH_ARG(bool, use_karras_sigmas) = false;
  /// Karras endpoints (default: the interpolated last / first sigma).
  TORCH_ARG(c10::optional<double>, sigma_min) = c10::nullopt;
  TORCH_ARG(c10::optional<double>, sigma_max) = c10::nullopt;
  TORCH_ARG(TimestepSpacing, timestep_spacing) = TimestepSpacing::Linspace;
  TORCH_ARG(int64_t, steps_offset) = 0;
  /// Zero: the last step reaches sigma 0 (x0); SigmaMin: sqrt((1-abar_0)/abar_0).
  TORCH_ARG(bool, final_sigma_min) = false;
};

inline void to_json(nlohmann::json& j, const EulerSamplerOptions& o) {
  j = nlohmann::json::object();
  detail::write_schedule_keys(j, o.schedule());
  j["prediction_type"] = o.prediction_type();
  j["interpolation_type"] = "linear";
  j["use_karras_sigmas"] = o.use_karras_sigmas();
  j["use_exponential_sigmas"] = false;
  j["use_beta_sigmas"] = false;
  j["sigma_min"] = detail::nullable(o.sigma_min());
  j["sigma_max"] = detail::nullable(o.sigma_max());
  j["timestep_spacing"] = o.timestep_spacing();
  j["timestep_type"] = "discrete";
  j["steps_offset"] = o.steps_offset();
  j["final_sigmas_type"] = o.final_sigma_min() ? "sigma_min" : "zero";
}

/// Reads an EulerDiscreteScheduler config; rejects what is not implemented (exponential / beta
/// sigmas, log_linear interpolation, continuous timesteps).
inline void from_json(const nlohmann::json& j, EulerSamplerOptions& o) {
  const std::string ctx = "EulerDiscreteScheduler config";
  o = EulerSamplerOptions{};
  detail::read_schedule_keys(j, o.schedule(), ctx);
  detail::get_optional(j, "prediction_type", o.prediction_type(), ctx);
  detail::get_optional(j, "use_karras_sigmas", o.use_karras_sigmas(), ctx);
  detail::get_optional_nullable_double(j, "sigma_min", o.sigma_min(), ctx);
  detail::get_optional_nullable_double(j, "sigma_max", o.sigma_max(), ctx);
  detail::get_optional(j, "timestep_spacing", o.timestep_spacing(), ctx);
  detail::get_optional(j, "steps_offset", o.steps_offset(), ctx);
  detail::reject_true(j, {"use_exponential_sigmas", "use_beta_sigmas"}, ctx);
  detail::require_string(j, "interpolation_type", "linear", ctx);
  detail::require_string(j, "timestep_type", "discrete", ctx);
  auto it = j.find("final_sigmas_type");
  if (it != j.end() && !it->is_null()) {
    const std::string v = it->is_string() ? it->get<std::string>() : it->dump();
    if (v != "zero" && v != "sigma_min") {
      throw Error(ctx + ": \"final_sigmas_type\" must be \"zero\" or \"sigma_min\", got " + it->dump());
    }
    o.final_sigma_min(v == "sigma_min");
  }
}

/// Euler (Karras et al. 2022) sampler. Stateful (step index); holds its sigmas on CPU.
class EulerSampler {
 public:
  using Options = EulerSamplerOptions;
  static constexpr const char* kClassName = "EulerDiscreteScheduler";
  static const std::vector<const char*>& config_keys() {
    static const std::vector<const char*> keys = detail::with_schedule_keys(
        {"prediction_type", "interpolation_type", "use_karras_sigmas", "use_exponential_sigmas", "use_beta_sigmas",
         "sigma_min", "sigma_max", "timestep_spacing", "timestep_type", "steps_offset", "final_sigmas_type"});
    return keys;
  }
  explicit EulerSampler(EulerSamplerOptions options = {})
      : options_(std::move(options)), schedule_(options_.schedule()) {
    alphas_cumprod_ = detail::sampler_alphas_cumprod(schedule_, options_.schedule().rescale_betas_zero_snr());
    train_sigmas_ = detail::sigmas_from_alphas_cumprod(alphas_cumprod_);
  }

  const EulerSamplerOptions& options() const { return options_; }
  const NoiseSchedule& schedule() const { return schedule_; }
  PredictionType prediction_type() const { return options_.prediction_type(); }
  int64_t order() const { return 1; }
  int64_t num_inference_steps() const { return static_cast<int64_t>(timesteps_.size()); }
  const std::vector<double>& timesteps() const { return timesteps_; }
  /// [N+1] sigmas (schedule dtype, CPU), the last one 0 or sigma_min.
  torch::Tensor sigmas() const { return sigmas_; }
  double init_noise_sigma() const { return detail::euler_init_noise_sigma(sigmas_, options_.timestep_spacing()); }
  int64_t step_index() const { return step_index_; }

  void set_timesteps(int64_t num_inference_steps) {
    const char* where = "EulerSampler::set_timesteps";
    double last = 0.0;
    if (options_.final_sigma_min()) last = train_sigmas_[0].item<double>();
    auto s = detail::euler_sigma_schedule(train_sigmas_, num_inference_steps, options_.timestep_spacing(),
                                          options_.steps_offset(), options_.use_karras_sigmas(), options_.sigma_min(),
                                          options_.sigma_max(), last, where);
    sigmas_ = detail::sigmas_in(s.sigmas, schedule_.dtype());
    timesteps_ = detail::timesteps_in(s.timesteps, schedule_.dtype());
    reset();
  }

  void reset() { step_index_ = -1; }

  /// x / sqrt(sigma^2 + 1) at the current step (locates t on the first call).
  torch::Tensor scale_model_input(const torch::Tensor& sample, double t) {
    return detail::scale_by_sigma(sample, timesteps_, sigmas_, step_index_, t, "EulerSampler::scale_model_input");
  }

  /// One Euler step sigma_i -> sigma_{i+1}; deterministic (generator / noise unused).
  SamplerStepOutput step(const torch::Tensor& model_output, double t, const torch::Tensor& sample,
                         c10::optional<at::Generator> generator = c10::nullopt,
                         c10::optional<torch::Tensor> noise = c10::nullopt) {
    (void)generator;
    (void)noise;
    const char* where = "EulerSampler::step";
    const auto s = detail::sigma_step_start(model_output, sample, t, timesteps_, sigmas_, step_index_,
                                            schedule_.dtype(), options_.prediction_type(), where);
    const auto derivative = (s.x - s.x0) / s.sigma;
    const auto dt = sigmas_[step_index_ + 1] - s.sigma;
    const auto prev = s.x + derivative * dt;
    ++step_index_;
    return {prev.to(model_output.scalar_type()), s.x0};
  }

 private:
  EulerSamplerOptions options_;
  NoiseSchedule schedule_;
  torch::Tensor alphas_cumprod_, train_sigmas_, sigmas_;
  std::vector<double> timesteps_;
  int64_t step_index_ = -1;
};

DDPM_CHECK_SAMPLER(EulerSampler);

}  // namespace ddpm
