#pragma once
/// Ancestral DDPM sampling (Ho et al. 2020, Alg. 2), exactly as diffusers v0.31.0
/// DDPMScheduler.step computes it (fixed_small / fixed_large variances):
///   prev_t = t - T // N  (N = T before set_timesteps)
///   abar_prev = alphas_cumprod[prev_t] (1 if prev_t < 0);  beta_eff = 1 - abar_t / abar_prev
///   x0 = per prediction type, then clipped to [-r, r] or dynamically thresholded
///   mean = sqrt(abar_prev) beta_eff / (1-abar_t) x0 + sqrt(1-beta_eff) (1-abar_prev)/(1-abar_t) x_t
///   fixed_small var = max((1-abar_prev)/(1-abar_t) beta_eff, 1e-20); fixed_large var = beta_eff
///   x_prev = mean + sqrt(var) z  (no noise at t = 0)
#include <ddpm/samplers/common.hpp>

#include <torch/arg.h>
#include <torch/types.h>

#include <nlohmann/json.hpp>

#include <cstdint>
#include <string>
#include <vector>

namespace ddpm {

/// DDPM posterior variance choice (diffusers `variance_type`).
enum class VarianceType { FixedSmall, FixedLarge };

namespace detail {
inline const EnumNames<VarianceType>& variance_type_names() {
  static const EnumNames<VarianceType> names = {{VarianceType::FixedSmall, "fixed_small"},
                                                {VarianceType::FixedLarge, "fixed_large"}};
  return names;
}
}  // namespace detail

DDPM_JSON_ENUM(VarianceType, detail::variance_type_names, "variance_type")

/// DDPMScheduler's configuration (diffusers defaults).
struct DDPMSamplerOptions {
  TORCH_ARG(NoiseScheduleOptions, schedule) = {};
  TORCH_ARG(PredictionType, prediction_type) = PredictionType::Epsilon;
  TORCH_ARG(VarianceType, variance_type) = VarianceType::FixedSmall;
  TORCH_ARG(bool, clip_sample) = true;
  TORCH_ARG(double, clip_sample_range) = 1.0;
  TORCH_ARG(bool, thresholding) = false;
  TORCH_ARG(double, dynamic_thresholding_ratio) = 0.995;
  TORCH_ARG(double, sample_max_value) = 1.0;
  TORCH_ARG(TimestepSpacing, timestep_spacing) = TimestepSpacing::Leading;
  TORCH_ARG(int64_t, steps_offset) = 0;
};

/// Flat diffusers scheduler_config keys (schedule keys at the top level).
inline void to_json(nlohmann::json& j, const DDPMSamplerOptions& o) {
  j = nlohmann::json::object();
  detail::write_schedule_keys(j, o.schedule());
  j["prediction_type"] = o.prediction_type();
  j["variance_type"] = o.variance_type();
  j["clip_sample"] = o.clip_sample();
  j["clip_sample_range"] = o.clip_sample_range();
  j["thresholding"] = o.thresholding();
  j["dynamic_thresholding_ratio"] = o.dynamic_thresholding_ratio();
  j["sample_max_value"] = o.sample_max_value();
  j["timestep_spacing"] = o.timestep_spacing();
  j["steps_offset"] = o.steps_offset();
}

/// Reads the keys of DDPMSampler::config_keys() (others are ignored; make_sampler rejects unknown ones).
inline void from_json(const nlohmann::json& j, DDPMSamplerOptions& o) {
  const std::string ctx = "DDPM scheduler config";
  o = DDPMSamplerOptions{};
  detail::read_schedule_keys(j, o.schedule(), ctx);
  detail::get_optional(j, "prediction_type", o.prediction_type(), ctx);
  detail::get_optional(j, "variance_type", o.variance_type(), ctx);
  detail::get_optional(j, "clip_sample", o.clip_sample(), ctx);
  detail::get_optional(j, "clip_sample_range", o.clip_sample_range(), ctx);
  detail::get_optional(j, "thresholding", o.thresholding(), ctx);
  detail::get_optional(j, "dynamic_thresholding_ratio", o.dynamic_thresholding_ratio(), ctx);
  detail::get_optional(j, "sample_max_value", o.sample_max_value(), ctx);
  detail::get_optional(j, "timestep_spacing", o.timestep_spacing(), ctx);
  detail::get_optional(j, "steps_offset", o.steps_offset(), ctx);
}

/// DDPM ancestral sampler. Holds its schedule on CPU; step() works on samples on any device.
class DDPMSampler {
 public:
  using Options = DDPMSamplerOptions;
  static constexpr const char* kClassName = "DDPMScheduler";
  /// The scheduler_config keys this sampler reads (others are ignored, as diffusers does).
  static const std::vector<const char*>& config_keys() {
    static const std::vector<const char*> keys = detail::with_schedule_keys({"prediction_type", "variance_type", "clip_sample", "clip_sample_range", "thresholding",
         "dynamic_thresholding_ratio", "sample_max_value", "timestep_spacing", "steps_offset"});
    return keys;
  }
  explicit DDPMSampler(DDPMSamplerOptions options = {})
      : options_(std::move(options)), schedule_(options_.schedule()) {
    detail::check_threshold_options(options_.dynamic_thresholding_ratio(), options_.sample_max_value(),
                                    "DDPMSampler");
    if (!(options_.clip_sample_range() > 0)) {
      throw Error("DDPMSampler: clip_sample_range must be > 0, got " + std::to_string(options_.clip_sample_range()));
    }
    reset_timesteps();
  }

  const DDPMSamplerOptions& options() const { return options_; }
  /// This sampler's x0 clipping / thresholding settings.
  X0Processing x0_processing() const {
    return {options_.thresholding(), options_.dynamic_thresholding_ratio(), options_.sample_max_value(),
            options_.clip_sample(), options_.clip_sample_range()};
  }
  const NoiseSchedule& schedule() const { return schedule_; }
  double init_noise_sigma() const { return 1.0; }
  /// The model sees x_t itself (variance-preserving sampler).
  torch::Tensor scale_model_input(const torch::Tensor& sample, double /*t*/) const { return sample; }
  /// One model call per step.
  int64_t order() const { return 1; }
  PredictionType prediction_type() const { return options_.prediction_type(); }
  /// No sigmas (undefined tensor).
  torch::Tensor sigmas() const { return {}; }
  /// N after set_timesteps(N); 0 before (all T steps are used then).
  int64_t num_inference_steps() const { return num_inference_steps_; }

  /// Picks N of the T timesteps (see detail::spaced_timesteps); throws unless 0 < N <= T.
  void set_timesteps(int64_t num_inference_steps) {
    timesteps_ = detail::as_double_timesteps(detail::spaced_timesteps(schedule_.num_train_timesteps(), num_inference_steps,
                                          options_.timestep_spacing(), options_.steps_offset(),
                                          "DDPMSampler::set_timesteps"));
    num_inference_steps_ = num_inference_steps;
  }
  /// Descending timesteps; T-1, ..., 0 until set_timesteps is called.
  const std::vector<double>& timesteps() const { return timesteps_; }
  /// Stateless: nothing to reset (kept for a uniform sampler interface).
  void reset() {}

  /// t - T // N (t - 1 before set_timesteps), like diffusers' previous_timestep.
  int64_t previous_timestep(int64_t t) const {
    const int64_t T = schedule_.num_train_timesteps();
    const int64_t n = num_inference_steps_ > 0 ? num_inference_steps_ : T;
    return t - T / n;
  }

  /// diffusers _get_variance(t): 0-dim tensor in the schedule dtype.
  torch::Tensor variance(int64_t t) const {
    TORCH_CHECK(t >= 0 && t < schedule_.num_train_timesteps(), "DDPMSampler::variance: timestep ", t,
                " is out of range [0, ", schedule_.num_train_timesteps(), ")");
    const auto ab = schedule_.alphas_cumprod().select(0, t);
    const auto ab_prev = alpha_prod_prev(previous_timestep(t));
    const auto current_beta = 1.0 - ab / ab_prev;
    if (options_.variance_type() == VarianceType::FixedLarge) return current_beta;
    auto var = (1.0 - ab_prev) / (1.0 - ab) * current_beta;
    return var.clamp_min(1e-20);
  }

  /// One reverse step x_t -> x_{prev_t}; model_output and sample [B, ...] (same shape, any
  /// device). For t > 0 noise z is `variance_noise` if given, else drawn on CPU from
  /// `generator` (default generator if absent) and moved to sample's device.
  SamplerStepOutput step(const torch::Tensor& model_output, double timestep, const torch::Tensor& sample,
                         c10::optional<torch::Generator> generator = c10::nullopt,
                         c10::optional<torch::Tensor> variance_noise = c10::nullopt) const {
    const char* where = "DDPMSampler::step";
    const int64_t t = detail::integer_timestep(timestep, where);
    detail::check_step_inputs(model_output, t, sample, schedule_.num_train_timesteps(), where);
    detail::check_variance_noise(variance_noise, sample, where);
    const int64_t prev_t = previous_timestep(t);
    const auto ab_t = schedule_.alphas_cumprod().select(0, t);
    const auto ab_prev = alpha_prod_prev(prev_t);
    const auto beta_prod_t = 1.0 - ab_t;
    const auto beta_prod_prev = 1.0 - ab_prev;
    const auto current_alpha = ab_t / ab_prev;
    const auto current_beta = 1.0 - current_alpha;

    auto x0 = predict_x0(model_output, sample, ab_t.sqrt(), beta_prod_t.sqrt(), options_.prediction_type());
    x0 = process_x0(x0, x0_processing());
    const auto x0_coeff = ab_prev.sqrt() * current_beta / beta_prod_t;
    const auto xt_coeff = current_alpha.sqrt() * beta_prod_prev / beta_prod_t;
    auto prev = x0_coeff * x0 + xt_coeff * sample;
    if (t > 0) {
      const auto z = (variance_noise.has_value() && variance_noise->defined())
                         ? variance_noise->to(sample.device(), sample.scalar_type())
                         : detail::draw_noise_like(model_output, generator);
      prev = prev + variance(t).sqrt() * z;
    }
    return {prev, x0};
  }

 private:
  torch::Tensor alpha_prod_prev(int64_t prev_t) const {
    if (prev_t >= 0) return schedule_.alphas_cumprod().select(0, prev_t);
    return torch::ones({}, torch::TensorOptions().dtype(schedule_.dtype()));
  }
  void reset_timesteps() {
    const int64_t T = schedule_.num_train_timesteps();
    timesteps_.resize(static_cast<size_t>(T));
    for (int64_t i = 0; i < T; ++i) timesteps_[static_cast<size_t>(i)] = T - 1 - i;
    num_inference_steps_ = 0;
  }

  DDPMSamplerOptions options_;
  NoiseSchedule schedule_;
  std::vector<double> timesteps_;
  int64_t num_inference_steps_ = 0;
};

DDPM_CHECK_SAMPLER(DDPMSampler);

}  // namespace ddpm
