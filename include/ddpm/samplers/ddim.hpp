#pragma once
/// DDIM sampling (Song et al. 2021, eq. 12), exactly as diffusers v0.31.0 DDIMScheduler.step:
///   prev_t = t - T // N   (always; NOT the next entry of timesteps())
///   abar_prev = alphas_cumprod[prev_t], or final_alpha_cumprod (1 if set_alpha_to_one, else
///               alphas_cumprod[0]) when prev_t < 0
///   x0, eps from the model output (per prediction type); x0 clipped / thresholded
///   var = (1-abar_prev)/(1-abar_t) (1 - abar_t/abar_prev);  std = eta sqrt(var)
///   x_prev = sqrt(abar_prev) x0 + sqrt(1 - abar_prev - std^2) eps + std z   (z only if eta > 0)
#include <ddpm/samplers/common.hpp>

#include <torch/arg.h>
#include <torch/types.h>

#include <nlohmann/json.hpp>

#include <cstdint>
#include <string>
#include <vector>

namespace ddpm {

/// DDIMScheduler's configuration (diffusers defaults) plus `eta`, the default stochasticity
/// used by step() when no eta is passed (0 = deterministic DDIM, 1 = DDPM-like).
struct DDIMSamplerOptions {
  TORCH_ARG(NoiseScheduleOptions, schedule) = {};
  TORCH_ARG(PredictionType, prediction_type) = PredictionType::Epsilon;
  TORCH_ARG(bool, clip_sample) = true;
  TORCH_ARG(double, clip_sample_range) = 1.0;
  TORCH_ARG(bool, set_alpha_to_one) = true;
  TORCH_ARG(int64_t, steps_offset) = 0;
  TORCH_ARG(TimestepSpacing, timestep_spacing) = TimestepSpacing::Leading;
  TORCH_ARG(bool, thresholding) = false;
  TORCH_ARG(double, dynamic_thresholding_ratio) = 0.995;
  TORCH_ARG(double, sample_max_value) = 1.0;
  TORCH_ARG(double, eta) = 0.0;
};

inline void to_json(nlohmann::json& j, const DDIMSamplerOptions& o) {
  j = nlohmann::json::object();
  detail::write_schedule_keys(j, o.schedule());
  j["prediction_type"] = o.prediction_type();
  j["clip_sample"] = o.clip_sample();
  j["clip_sample_range"] = o.clip_sample_range();
  j["set_alpha_to_one"] = o.set_alpha_to_one();
  j["steps_offset"] = o.steps_offset();
  j["timestep_spacing"] = o.timestep_spacing();
  j["thresholding"] = o.thresholding();
  j["dynamic_thresholding_ratio"] = o.dynamic_thresholding_ratio();
  j["sample_max_value"] = o.sample_max_value();
  if (o.eta() != 0.0) j["eta"] = o.eta();  // ddpm's own key: written only when set
}

/// Reads the keys of DDIMSampler::config_keys() (others are ignored; make_sampler rejects unknown ones).
inline void from_json(const nlohmann::json& j, DDIMSamplerOptions& o) {
  const std::string ctx = "DDIM scheduler config";
  o = DDIMSamplerOptions{};
  detail::read_schedule_keys(j, o.schedule(), ctx);
  detail::get_optional(j, "prediction_type", o.prediction_type(), ctx);
  detail::get_optional(j, "clip_sample", o.clip_sample(), ctx);
  detail::get_optional(j, "clip_sample_range", o.clip_sample_range(), ctx);
  detail::get_optional(j, "set_alpha_to_one", o.set_alpha_to_one(), ctx);
  detail::get_optional(j, "steps_offset", o.steps_offset(), ctx);
  detail::get_optional(j, "timestep_spacing", o.timestep_spacing(), ctx);
  detail::get_optional(j, "thresholding", o.thresholding(), ctx);
  detail::get_optional(j, "dynamic_thresholding_ratio", o.dynamic_thresholding_ratio(), ctx);
  detail::get_optional(j, "sample_max_value", o.sample_max_value(), ctx);
  detail::get_optional(j, "eta", o.eta(), ctx);
}

/// DDIM sampler. Holds its schedule on CPU; step() works on samples on any device.
class DDIMSampler {
 public:
  using Options = DDIMSamplerOptions;
  static constexpr const char* kClassName = "DDIMScheduler";
  /// The scheduler_config keys this sampler reads (others are ignored, as diffusers does).
  static const std::vector<const char*>& config_keys() {
    static const std::vector<const char*> keys = detail::with_schedule_keys({"prediction_type", "clip_sample", "clip_sample_range", "set_alpha_to_one", "steps_offset",
         "timestep_spacing", "thresholding", "dynamic_thresholding_ratio", "sample_max_value", "eta"});
    return keys;
  }
  explicit DDIMSampler(DDIMSamplerOptions options = {})
      : options_(std::move(options)), schedule_(options_.schedule()) {
    detail::check_threshold_options(options_.dynamic_thresholding_ratio(), options_.sample_max_value(),
                                    "DDIMSampler");
    if (!(options_.clip_sample_range() > 0)) {
      throw Error("DDIMSampler: clip_sample_range must be > 0, got " + std::to_string(options_.clip_sample_range()));
    }
    if (!(options_.eta() >= 0)) throw Error("DDIMSampler: eta must be >= 0, got " + std::to_string(options_.eta()));
    final_alpha_cumprod_ = options_.set_alpha_to_one()
                               ? torch::ones({}, torch::TensorOptions().dtype(schedule_.dtype()))
                               : schedule_.alphas_cumprod().select(0, 0).clone();
  }

  const DDIMSamplerOptions& options() const { return options_; }
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
  int64_t num_inference_steps() const { return num_inference_steps_; }

  /// Picks N of the T timesteps (see detail::spaced_timesteps); throws unless 0 < N <= T.
  void set_timesteps(int64_t num_inference_steps) {
    timesteps_ = detail::as_double_timesteps(detail::spaced_timesteps(schedule_.num_train_timesteps(), num_inference_steps,
                                          options_.timestep_spacing(), options_.steps_offset(),
                                          "DDIMSampler::set_timesteps"));
    num_inference_steps_ = num_inference_steps;
  }
  /// Descending timesteps; empty until set_timesteps is called.
  const std::vector<double>& timesteps() const { return timesteps_; }
  /// Stateless: nothing to reset (kept for a uniform sampler interface).
  void reset() {}

  /// t - T // N (diffusers DDIM always uses this, whatever the spacing).
  int64_t previous_timestep(int64_t t) const {
    TORCH_CHECK(num_inference_steps_ > 0,
                "DDIMSampler: set_timesteps(num_inference_steps) must be called before step()");
    return t - schedule_.num_train_timesteps() / num_inference_steps_;
  }

  /// diffusers _get_variance(t, prev_t): 0-dim tensor in the schedule dtype.
  torch::Tensor variance(int64_t t, int64_t prev_t) const {
    const auto ab_t = schedule_.alphas_cumprod().select(0, t);
    const auto ab_prev = alpha_prod_prev(prev_t);
    const auto beta_prod_t = 1.0 - ab_t;
    const auto beta_prod_prev = 1.0 - ab_prev;
    return (beta_prod_prev / beta_prod_t) * (1.0 - ab_t / ab_prev);
  }

  /// One DDIM step with options().eta().
  SamplerStepOutput step(const torch::Tensor& model_output, double t, const torch::Tensor& sample,
                         c10::optional<torch::Generator> generator = c10::nullopt,
                         c10::optional<torch::Tensor> variance_noise = c10::nullopt) const {
    return step(model_output, t, sample, options_.eta(), std::move(generator), std::move(variance_noise));
  }

  /// One DDIM step x_t -> x_{t - T//N} with the given eta; when eta > 0 the noise z is
  /// `variance_noise` if given, else drawn on CPU from `generator` and moved to sample's device.
  SamplerStepOutput step(const torch::Tensor& model_output, double timestep, const torch::Tensor& sample,
                         double eta, c10::optional<torch::Generator> generator = c10::nullopt,
                         c10::optional<torch::Tensor> variance_noise = c10::nullopt) const {
    const char* where = "DDIMSampler::step";
    const int64_t t = detail::integer_timestep(timestep, where);
    TORCH_CHECK(num_inference_steps_ > 0, where,
                ": set_timesteps(num_inference_steps) must be called before step()");
    detail::check_step_inputs(model_output, t, sample, schedule_.num_train_timesteps(), where);
    detail::check_variance_noise(variance_noise, sample, where);
    TORCH_CHECK(eta >= 0, where, ": eta must be >= 0, got ", eta);
    const int64_t prev_t = previous_timestep(t);
    const auto ab_t = schedule_.alphas_cumprod().select(0, t);
    const auto ab_prev = alpha_prod_prev(prev_t);
    const auto beta_prod_t = 1.0 - ab_t;

    const auto alpha = ab_t.sqrt();
    const auto sigma = beta_prod_t.sqrt();
    // eps from the raw output (before x0 is clipped), as diffusers does.
    auto x0 = predict_x0(model_output, sample, alpha, sigma, options_.prediction_type());
    const auto eps = predict_epsilon(model_output, sample, alpha, sigma, options_.prediction_type());
    x0 = process_x0(x0, x0_processing());
    const auto var = variance(t, prev_t);
    const auto std_dev = eta * var.sqrt();
    const auto direction = (1.0 - ab_prev - std_dev.pow(2)).sqrt() * eps;
    auto prev = ab_prev.sqrt() * x0 + direction;
    if (eta > 0) {
      const auto z = (variance_noise.has_value() && variance_noise->defined())
                         ? variance_noise->to(sample.device(), sample.scalar_type())
                         : detail::draw_noise_like(model_output, generator);
      prev = prev + std_dev * z;
    }
    return {prev, x0};
  }

 private:
  torch::Tensor alpha_prod_prev(int64_t prev_t) const {
    return prev_t >= 0 ? schedule_.alphas_cumprod().select(0, prev_t) : final_alpha_cumprod_;
  }

  DDIMSamplerOptions options_;
  NoiseSchedule schedule_;
  torch::Tensor final_alpha_cumprod_;
  std::vector<double> timesteps_;
  int64_t num_inference_steps_ = 0;
};

DDPM_CHECK_SAMPLER(DDIMSampler);

}  // namespace ddpm
