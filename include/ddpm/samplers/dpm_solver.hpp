#pragma once
/// DPM-Solver++ multistep (Lu et al. 2022, "DPM-Solver++", Alg. 2: "2M", and its third-order
/// "3M" and stochastic "SDE" variants), exactly as diffusers v0.31.0 DPMSolverMultistepScheduler
/// computes it for algorithm_type "dpmsolver++" and "sde-dpmsolver++":
///   sigma_i = sqrt((1-abar)/abar) at timesteps[i], plus a final 0 ("zero") or sigma_min;
///   alpha_t = 1/sqrt(sigma^2+1), sigma_t = sigma*alpha_t, lambda = log(alpha_t) - log(sigma_t)
///   x0 from the model output (data prediction), optionally thresholded
///   1st order: x = (sigma_t/sigma_s) x - alpha_t (e^{-h} - 1) x0,           h = lambda_t - lambda_s
///   2nd order (midpoint): D0 = m0, D1 = (m0 - m1)/r0, r0 = h_0/h,
///       x = (sigma_t/sigma_s0) x - alpha_t (e^{-h}-1) D0 - 0.5 alpha_t (e^{-h}-1) D1
///   (heun: ... + alpha_t ((e^{-h}-1)/h + 1) D1)
///   3rd order (dpmsolver++ only): r0 = h_0/h, r1 = h_1/h, D1_0 = (m0-m1)/r0, D1_1 = (m1-m2)/r1,
///       D1 = D1_0 + r0/(r0+r1) (D1_0 - D1_1), D2 = (D1_0 - D1_1)/(r0+r1),
///       x = (sigma_t/sigma_s0) x - alpha_t (e^{-h}-1) D0 + alpha_t ((e^{-h}-1)/h + 1) D1
///           - alpha_t ((e^{-h}-1+h)/h^2 - 1/2) D2
///   sde-dpmsolver++ 1st order: x = (sigma_t/sigma_s) e^{-h} x + alpha_t (1 - e^{-2h}) x0
///       + sigma_t sqrt(1 - e^{-2h}) z;  2nd order adds 0.5 alpha_t (1 - e^{-2h}) D1 (midpoint)
///       or alpha_t ((1 - e^{-2h})/(-2h) + 1) D1 (heun); z ~ N(0, I) drawn every step or supplied.
///   Karras sigmas (use_karras_sigmas): rho = 7 between the training sigma_min and sigma_max,
///       timesteps round(sigma_to_t(sigma)) (samplers/sigmas.hpp).
/// The first step is first order (no history), the second at most second order; the last is first
/// order when final sigma is zero, euler_at_final, or lower_order_final with fewer than 15 steps,
/// and the one before it at most second order under lower_order_final with fewer than 15 steps. Reaching sigma = 0 gives
/// lambda = +inf, e^{-h} = 0 and x = x0 exactly. With zero-terminal-SNR schedules the last
/// alphas_cumprod (0) is replaced by 2^-24 as diffusers does.
#include <ddpm/samplers/common.hpp>
#include <ddpm/samplers/sigmas.hpp>

#include <torch/arg.h>
#include <torch/types.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

namespace ddpm {

/// "dpmsolver++" (data prediction) or its stochastic "sde-dpmsolver++" (the deprecated noise
/// prediction "dpmsolver" / "sde-dpmsolver" are not implemented).
enum class DPMSolverAlgorithm { DPMSolverPlusPlus, SDEDPMSolverPlusPlus };
/// Second-order update rule.
enum class DPMSolverType { Midpoint, Heun };
/// The sigma the last step reaches.
enum class FinalSigmasType { Zero, SigmaMin };

namespace detail {
inline const EnumNames<DPMSolverAlgorithm>& dpm_algorithm_names() {
  static const EnumNames<DPMSolverAlgorithm> names = {{DPMSolverAlgorithm::DPMSolverPlusPlus, "dpmsolver++"},
                                                      {DPMSolverAlgorithm::SDEDPMSolverPlusPlus, "sde-dpmsolver++"}};
  return names;
}
inline const EnumNames<DPMSolverType>& dpm_solver_type_names() {
  static const EnumNames<DPMSolverType> names = {{DPMSolverType::Midpoint, "midpoint"},
                                                 {DPMSolverType::Heun, "heun"}};
  return names;
}
inline const EnumNames<FinalSigmasType>& final_sigmas_type_names() {
  static const EnumNames<FinalSigmasType> names = {{FinalSigmasType::Zero, "zero"},
                                                   {FinalSigmasType::SigmaMin, "sigma_min"}};
  return names;
}
}  // namespace detail

DDPM_JSON_ENUM(DPMSolverAlgorithm, detail::dpm_algorithm_names, "algorithm_type")
DDPM_JSON_ENUM(DPMSolverType, detail::dpm_solver_type_names, "solver_type")
DDPM_JSON_ENUM(FinalSigmasType, detail::final_sigmas_type_names, "final_sigmas_type")

/// DPMSolverMultistepScheduler's configuration (diffusers defaults).
struct DPMSolverSamplerOptions {
  TORCH_ARG(NoiseScheduleOptions, schedule) = {};
  TORCH_ARG(PredictionType, prediction_type) = PredictionType::Epsilon;
  /// 1, 2 or 3 (3: "DPM++ 3M"; dpmsolver++ only).
  TORCH_ARG(int64_t, solver_order) = 2;
  TORCH_ARG(DPMSolverAlgorithm, algorithm_type) = DPMSolverAlgorithm::DPMSolverPlusPlus;
  TORCH_ARG(DPMSolverType, solver_type) = DPMSolverType::Midpoint;
  TORCH_ARG(bool, lower_order_final) = true;
  TORCH_ARG(bool, euler_at_final) = false;
  /// Karras et al. (2022) rho = 7 sigmas ("DPM++ 2M Karras").
  TORCH_ARG(bool, use_karras_sigmas) = false;
  TORCH_ARG(FinalSigmasType, final_sigmas_type) = FinalSigmasType::Zero;
  /// Timesteps whose lambda is below this are cut off (-inf: none).
  TORCH_ARG(double, lambda_min_clipped) = -std::numeric_limits<double>::infinity();
  TORCH_ARG(TimestepSpacing, timestep_spacing) = TimestepSpacing::Linspace;
  TORCH_ARG(int64_t, steps_offset) = 0;
  TORCH_ARG(bool, thresholding) = false;
  TORCH_ARG(double, dynamic_thresholding_ratio) = 0.995;
  TORCH_ARG(double, sample_max_value) = 1.0;
};

namespace detail {
/// Reads a number that may be written as the string "-Infinity"/"Infinity"/"NaN" (what Python's
/// json module writes for -inf and what ddpm's loader turns those literals into).
inline void get_optional_extended_double(const nlohmann::json& j, const char* key, double& out,
                                         const std::string& ctx) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return;
  if (it->is_string()) {
    const auto s = it->get<std::string>();
    if (s == "-Infinity" || s == "-inf") { out = -std::numeric_limits<double>::infinity(); return; }
    if (s == "Infinity" || s == "inf") { out = std::numeric_limits<double>::infinity(); return; }
    if (s == "NaN" || s == "nan") { out = std::numeric_limits<double>::quiet_NaN(); return; }
  }
  get_optional(j, key, out, ctx);
}
}  // namespace detail

inline void to_json(nlohmann::json& j, const DPMSolverSamplerOptions& o) {
  j = nlohmann::json::object();
  detail::write_schedule_keys(j, o.schedule());
  j["prediction_type"] = o.prediction_type();
  j["solver_order"] = o.solver_order();
  j["algorithm_type"] = o.algorithm_type();
  j["solver_type"] = o.solver_type();
  j["lower_order_final"] = o.lower_order_final();
  j["euler_at_final"] = o.euler_at_final();
  j["final_sigmas_type"] = o.final_sigmas_type();
  // JSON has no infinities: -inf (diffusers' default) is omitted; +inf is written as "Infinity",
  // which from_json reads.
  if (std::isinf(o.lambda_min_clipped())) {
    if (o.lambda_min_clipped() > 0) j["lambda_min_clipped"] = "Infinity";
  } else {
    j["lambda_min_clipped"] = o.lambda_min_clipped();
  }
  j["timestep_spacing"] = o.timestep_spacing();
  j["steps_offset"] = o.steps_offset();
  j["thresholding"] = o.thresholding();
  j["dynamic_thresholding_ratio"] = o.dynamic_thresholding_ratio();
  j["sample_max_value"] = o.sample_max_value();
  j["use_karras_sigmas"] = o.use_karras_sigmas();
  j["use_exponential_sigmas"] = false;
  j["use_beta_sigmas"] = false;
  j["use_lu_lambdas"] = false;
  j["variance_type"] = nullptr;
}

/// Accepts any DDPM/DDIM/DPM-Solver scheduler key (others' keys are ignored); rejects unknown
/// keys and features that are not implemented (exponential/beta sigmas, Lu lambdas, learned
/// variances, algorithms other than dpmsolver++ and sde-dpmsolver++).
inline void from_json(const nlohmann::json& j, DPMSolverSamplerOptions& o) {
  const std::string ctx = "DPM-Solver scheduler config";
  o = DPMSolverSamplerOptions{};
  detail::read_schedule_keys(j, o.schedule(), ctx);
  detail::get_optional(j, "prediction_type", o.prediction_type(), ctx);
  detail::get_optional(j, "solver_order", o.solver_order(), ctx);
  detail::get_optional(j, "algorithm_type", o.algorithm_type(), ctx);
  detail::get_optional(j, "solver_type", o.solver_type(), ctx);
  detail::get_optional(j, "lower_order_final", o.lower_order_final(), ctx);
  detail::get_optional(j, "euler_at_final", o.euler_at_final(), ctx);
  detail::get_optional(j, "final_sigmas_type", o.final_sigmas_type(), ctx);
  detail::get_optional_extended_double(j, "lambda_min_clipped", o.lambda_min_clipped(), ctx);
  detail::get_optional(j, "timestep_spacing", o.timestep_spacing(), ctx);
  detail::get_optional(j, "steps_offset", o.steps_offset(), ctx);
  detail::get_optional(j, "thresholding", o.thresholding(), ctx);
  detail::get_optional(j, "dynamic_thresholding_ratio", o.dynamic_thresholding_ratio(), ctx);
  detail::get_optional(j, "sample_max_value", o.sample_max_value(), ctx);
  detail::get_optional(j, "use_karras_sigmas", o.use_karras_sigmas(), ctx);
  for (const char* k : {"use_exponential_sigmas", "use_beta_sigmas", "use_lu_lambdas"}) {
    bool v = false;
    detail::get_optional(j, k, v, ctx);
    if (v) throw Error(ctx + ": \"" + k + "\": true is not supported (only the default sigmas)");
  }
  auto vt = j.find("variance_type");
  if (vt != j.end() && vt->is_string() && (*vt == "learned" || *vt == "learned_range")) {
    throw Error(ctx + ": variance_type \"" + vt->get<std::string>() +
                "\" (learned variances) is not supported");
  }
}

/// DPM-Solver++ multistep sampler (stateful: keeps the previous x0 prediction). Holds its
/// sigmas on CPU; step() works on samples on any device.
class DPMSolverSampler {
 public:
  using Options = DPMSolverSamplerOptions;
  static constexpr const char* kClassName = "DPMSolverMultistepScheduler";
  /// The scheduler_config keys this sampler reads (others are ignored, as diffusers does).
  static const std::vector<const char*>& config_keys() {
    static const std::vector<const char*> keys = detail::with_schedule_keys({"prediction_type", "solver_order", "algorithm_type", "solver_type", "lower_order_final",
         "euler_at_final", "use_karras_sigmas", "use_exponential_sigmas", "use_beta_sigmas",
         "use_lu_lambdas", "final_sigmas_type", "lambda_min_clipped", "variance_type",
         "timestep_spacing", "steps_offset", "thresholding", "dynamic_thresholding_ratio",
         "sample_max_value"});
    return keys;
  }
  explicit DPMSolverSampler(DPMSolverSamplerOptions options = {})
      : options_(std::move(options)), schedule_(options_.schedule()) {
    const std::string where = "DPMSolverSampler";
    if (options_.solver_order() < 1 || options_.solver_order() > 3) {
      throw Error(where + ": solver_order must be 1, 2 or 3, got " + std::to_string(options_.solver_order()));
    }
    if (options_.solver_order() == 3 && options_.algorithm_type() == DPMSolverAlgorithm::SDEDPMSolverPlusPlus) {
      throw Error(where + ": solver_order 3 is not defined for algorithm_type \"sde-dpmsolver++\" (diffusers has no "
                  "third-order SDE update); use solver_order 2");
    }
    detail::check_threshold_options(options_.dynamic_thresholding_ratio(), options_.sample_max_value(),
                                    where);
    if (std::isnan(options_.lambda_min_clipped())) throw Error(where + ": lambda_min_clipped is NaN");
    alphas_cumprod_ = schedule_.alphas_cumprod().clone();
    if (options_.schedule().rescale_betas_zero_snr()) {
      alphas_cumprod_[-1] = std::pow(2.0, -24);  // diffusers: avoid sigma = inf at the last step
    }
    const auto alpha_t = alphas_cumprod_.sqrt();
    const auto sigma_t = (1.0 - alphas_cumprod_).sqrt();
    lambda_t_ = alpha_t.log() - sigma_t.log();
    train_sigmas_ = ((1.0 - alphas_cumprod_) / alphas_cumprod_).sqrt();
  }

  const DPMSolverSamplerOptions& options() const { return options_; }
  /// The noise schedule (without the 2^-24 substitution, which is internal to the sigmas).
  const NoiseSchedule& schedule() const { return schedule_; }
  double init_noise_sigma() const { return 1.0; }
  /// The model sees x_t itself (variance-preserving sampler).
  torch::Tensor scale_model_input(const torch::Tensor& sample, double /*t*/) const { return sample; }
  /// One model call per step.
  int64_t order() const { return 1; }
  PredictionType prediction_type() const { return options_.prediction_type(); }
  int64_t num_inference_steps() const { return static_cast<int64_t>(timesteps_.size()); }
  /// sigmas for the inference timesteps plus the final one [N+1] (schedule dtype, CPU).
  torch::Tensor sigmas() const { return sigmas_; }
  /// Index of the next step (0 after set_timesteps/reset; -1 means "locate t on the next step").
  int64_t step_index() const { return step_index_; }

  /// diffusers DPMSolverMultistepScheduler.set_timesteps (N + 1 points, the last dropped):
  ///   linspace: round(linspace(0, L-1, N+1))[::-1][:-1];  leading: arange(N+1) * (L // (N+1))
  ///   reversed, last dropped, + steps_offset;  trailing: round(arange(L, 0, -T/N)) - 1,
  /// where L = T minus the timesteps clipped by lambda_min_clipped. Also resets the history.
  void set_timesteps(int64_t num_inference_steps) {
    const char* where = "DPMSolverSampler::set_timesteps";
    const int64_t T = schedule_.num_train_timesteps();
    const int64_t N = num_inference_steps;
    detail::check_num_inference_steps(N, T, where);
    // clipped_idx = searchsorted(flip(lambda_t), lambda_min_clipped): # of lambdas < the bound.
    int64_t clipped = 0;
    {
      const auto lam = lambda_t_.to(torch::kFloat64).contiguous();
      const double* p = lam.data_ptr<double>();
      for (int64_t i = T - 1; i >= 0 && p[i] < options_.lambda_min_clipped(); --i) ++clipped;
    }
    const int64_t last = T - clipped;
    if (last <= 0) {
      throw Error(std::string(where) + ": lambda_min_clipped = " +
                  std::to_string(options_.lambda_min_clipped()) + " clips every timestep");
    }
    std::vector<int64_t> ts;
    switch (options_.timestep_spacing()) {
      case TimestepSpacing::Linspace: {
        const auto lin = detail::np_linspace(0.0, static_cast<double>(last - 1), N + 1);
        for (int64_t i = N; i >= 1; --i) ts.push_back(static_cast<int64_t>(detail::np_round(lin[static_cast<size_t>(i)])));
        break;
      }
      case TimestepSpacing::Leading: {
        const int64_t ratio = last / (N + 1);
        detail::check_steps_offset(options_.steps_offset(), T, where);
        for (int64_t i = N; i >= 1; --i) ts.push_back(i * ratio + options_.steps_offset());
        break;
      }
      case TimestepSpacing::Trailing: {
        const double ratio = static_cast<double>(T) / static_cast<double>(N);
        for (double v : detail::np_arange(static_cast<double>(last), 0.0, -ratio)) {
          const auto r = static_cast<int64_t>(detail::np_round(v)) - 1;
          if (r >= 0) ts.push_back(r);
        }
        break;
      }
    }
    torch::Tensor picked;
    if (options_.use_karras_sigmas()) {
      // diffusers: Karras sigmas between the training sigma_min and sigma_max (lambda_min_clipped
      // and the spacing above do not matter), timesteps round(sigma_to_t(sigma)).
      const auto ks = detail::karras_sigmas(train_sigmas_[0].item<double>(), train_sigmas_[T - 1].item<double>(), N);
      const auto log_sigmas = detail::log_train_sigmas(train_sigmas_);
      ts.clear();
      for (double sg : ks) ts.push_back(static_cast<int64_t>(detail::np_round(detail::sigma_to_t(sg, log_sigmas))));
      picked = torch::tensor(ks, torch::kFloat64).to(train_sigmas_.scalar_type());
    }
    detail::check_timestep_list(ts, T, where);
    if (!picked.defined()) picked = train_sigmas_.index_select(0, torch::tensor(ts, torch::kLong));
    torch::Tensor last_sigma;
    if (options_.final_sigmas_type() == FinalSigmasType::Zero) {
      last_sigma = torch::zeros({1}, train_sigmas_.options());
    } else {
      const auto ab0 = alphas_cumprod_.slice(0, 0, 1);
      last_sigma = ((1.0 - ab0) / ab0).sqrt();
    }
    sigmas_ = torch::cat({picked, last_sigma});
    timesteps_ = detail::as_double_timesteps(ts);
    // Karras + sigma_min ends on sigma_min twice (h = 0 on the last step); a higher-order last
    // step then divides by h (heun) or h^2 (order 3): diffusers returns NaN. Refuse instead.
    const int64_t last_order = order_rule(N - 1, N, std::min<int64_t>(N - 1, options_.solver_order()));
    if (options_.use_karras_sigmas() && options_.final_sigmas_type() == FinalSigmasType::SigmaMin &&
        (last_order == 3 || (last_order == 2 && options_.solver_type() == DPMSolverType::Heun))) {
      throw Error(std::string(where) + ": use_karras_sigmas with final_sigmas_type \"sigma_min\" repeats sigma_min, "
                  "so the last step (order " + std::to_string(last_order) + ", " + std::to_string(N) +
                  " steps) has h = 0 and diffusers returns NaN; use fewer than 15 steps with lower_order_final, "
                  "euler_at_final, or final_sigmas_type \"zero\"");
    }
    reset();
  }

  /// Descending timesteps; empty until set_timesteps is called.
  const std::vector<double>& timesteps() const { return timesteps_; }

  /// Forgets the solver history so that a new trajectory can start (set_timesteps does this).
  void reset() {
    model_outputs_.clear();
    lower_order_nums_ = 0;
    step_index_ = -1;
  }

  /// One multistep update x_t -> x_{t_next}. Steps must follow timesteps() in order (the first
  /// call may start at any entry). sde-dpmsolver++ draws z from `generator` on CPU (float32)
  /// unless `variance_noise` supplies it; dpmsolver++ ignores both.
  SamplerStepOutput step(const torch::Tensor& model_output, double timestep, const torch::Tensor& sample,
                         c10::optional<torch::Generator> generator = c10::nullopt,
                         c10::optional<torch::Tensor> variance_noise = c10::nullopt) {
    const char* where = "DPMSolverSampler::step";
    const int64_t t = detail::integer_timestep(timestep, where);
    TORCH_CHECK(!timesteps_.empty(), where,
                ": set_timesteps(num_inference_steps) must be called before step()");
    detail::check_step_inputs(model_output, t, sample, schedule_.num_train_timesteps(), where);
    const int64_t N = static_cast<int64_t>(timesteps_.size());
    if (step_index_ < 0) {
      std::vector<int64_t> hits;
      for (int64_t i = 0; i < N; ++i) if (timesteps_[static_cast<size_t>(i)] == t) hits.push_back(i);
      TORCH_CHECK(!hits.empty(), where, ": timestep ", t, " is not one of the ", N,
                  " inference timesteps set by set_timesteps");
      step_index_ = hits.size() > 1 ? hits[1] : hits[0];  // diffusers' _init_step_index
    } else {
      TORCH_CHECK(step_index_ < N, where, ": all ", N,
                  " steps were already taken; call set_timesteps() or reset() to start again");
      TORCH_CHECK(timesteps_[static_cast<size_t>(step_index_)] == t, where, ": expected timestep ",
                  timesteps_[static_cast<size_t>(step_index_)], " (step ", step_index_, " of ", N,
                  "), got ", t);
    }
    detail::check_variance_noise(variance_noise, sample, where);
    const int64_t i = step_index_;

    const auto x0 = convert_model_output(model_output, sample, i);
    model_outputs_.push_back(x0);
    if (static_cast<int64_t>(model_outputs_.size()) > options_.solver_order()) {
      model_outputs_.erase(model_outputs_.begin());
    }
    const auto work = schedule_.dtype() == torch::kFloat64 ? torch::kFloat64 : torch::kFloat32;
    const auto x = sample.to(work);
    torch::Tensor noise;
    if (options_.algorithm_type() == DPMSolverAlgorithm::SDEDPMSolverPlusPlus) {
      noise = (variance_noise.has_value() && variance_noise->defined())
                  ? variance_noise->to(model_output.device(), work)
                  : detail::draw_noise_like(x, generator);
    }
    torch::Tensor prev;
    switch (order_for(i, N)) {
      case 1: prev = first_order_update(x0, x, i, noise); break;
      case 2: prev = second_order_update(x, i, noise); break;
      default: prev = third_order_update(x, i); break;
    }
    if (lower_order_nums_ < options_.solver_order()) ++lower_order_nums_;
    ++step_index_;
    return {prev.to(model_output.scalar_type()), x0};
  }

  /// Order the update at step index i used / will use in an uninterrupted trajectory (for tests
  /// and diagnostics).
  int64_t order_at(int64_t i) const {
    return order_rule(i, static_cast<int64_t>(timesteps_.size()), std::min<int64_t>(i, options_.solver_order()));
  }

 private:
  /// diffusers' choice: first order with no history / at a lower_order_final last step; second
  /// with one previous output / at a lower_order_second step; else solver_order.
  int64_t order_rule(int64_t i, int64_t N, int64_t history) const {
    const bool lower_final =
        i == N - 1 && (options_.euler_at_final() || (options_.lower_order_final() && N < 15) ||
                       options_.final_sigmas_type() == FinalSigmasType::Zero);
    const bool lower_second = i == N - 2 && options_.lower_order_final() && N < 15;
    if (options_.solver_order() == 1 || history < 1 || lower_final) return 1;
    if (options_.solver_order() == 2 || history < 2 || lower_second) return 2;
    return 3;
  }
  int64_t order_for(int64_t i, int64_t N) const { return order_rule(i, N, lower_order_nums_); }

  struct AlphaSigma {
    torch::Tensor alpha, sigma, lambda;
  };
  /// alpha_t = 1/sqrt(sigma^2+1), sigma_t = sigma alpha_t, lambda = log alpha_t - log sigma_t
  /// (0-dim tensors in the schedule dtype).
  AlphaSigma alpha_sigma(int64_t idx) const {
    const auto sigma = sigmas_.select(0, idx);
    const auto alpha = (sigma * sigma + 1).sqrt().reciprocal();
    const auto sig = sigma * alpha;
    return {alpha, sig, alpha.log() - sig.log()};
  }

  torch::Tensor convert_model_output(const torch::Tensor& model_output, const torch::Tensor& sample,
                                     int64_t i) const {
    const auto as = alpha_sigma(i);
    auto x0 = predict_x0(model_output, sample, as.alpha, as.sigma, options_.prediction_type());
    if (options_.thresholding()) {
      x0 = threshold_x0(x0, options_.dynamic_thresholding_ratio(), options_.sample_max_value());
    }
    return x0;
  }

  torch::Tensor first_order_update(const torch::Tensor& x0, const torch::Tensor& x, int64_t i,
                                   const torch::Tensor& noise) const {
    const auto t = alpha_sigma(i + 1);
    const auto s = alpha_sigma(i);
    const auto h = t.lambda - s.lambda;
    if (noise.defined()) {
      const auto e2 = (-2.0 * h).exp();
      return (t.sigma / s.sigma * (-h).exp()) * x + (t.alpha * (1 - e2)) * x0 + t.sigma * (1.0 - e2).sqrt() * noise;
    }
    return (t.sigma / s.sigma) * x - (t.alpha * ((-h).exp() - 1.0)) * x0;
  }

  torch::Tensor third_order_update(const torch::Tensor& x, int64_t i) const {
    const auto t = alpha_sigma(i + 1);
    const auto s0 = alpha_sigma(i);
    const auto s1 = alpha_sigma(i - 1);
    const auto s2 = alpha_sigma(i - 2);
    const size_t n = model_outputs_.size();
    const auto& m0 = model_outputs_[n - 1];
    const auto& m1 = model_outputs_[n - 2];
    const auto& m2 = model_outputs_[n - 3];
    const auto h = t.lambda - s0.lambda;
    const auto h0 = s0.lambda - s1.lambda;
    const auto h1 = s1.lambda - s2.lambda;
    const auto r0 = h0 / h;
    const auto r1 = h1 / h;
    const auto& D0 = m0;
    const auto D1_0 = r0.reciprocal() * (m0 - m1);
    const auto D1_1 = r1.reciprocal() * (m1 - m2);
    const auto D1 = D1_0 + (r0 / (r0 + r1)) * (D1_0 - D1_1);
    const auto D2 = (r0 + r1).reciprocal() * (D1_0 - D1_1);
    const auto em1 = (-h).exp() - 1.0;
    return (t.sigma / s0.sigma) * x - (t.alpha * em1) * D0 + (t.alpha * (em1 / h + 1.0)) * D1 -
           (t.alpha * (((-h).exp() - 1.0 + h) / (h * h) - 0.5)) * D2;
  }

  torch::Tensor second_order_update(const torch::Tensor& x, int64_t i, const torch::Tensor& noise) const {
    const auto t = alpha_sigma(i + 1);
    const auto s0 = alpha_sigma(i);
    const auto s1 = alpha_sigma(i - 1);
    const auto& m0 = model_outputs_[model_outputs_.size() - 1];
    const auto& m1 = model_outputs_[model_outputs_.size() - 2];
    const auto h = t.lambda - s0.lambda;
    const auto h0 = s0.lambda - s1.lambda;
    const auto r0 = h0 / h;
    const auto& D0 = m0;
    const auto D1 = r0.reciprocal() * (m0 - m1);
    if (noise.defined()) {
      const auto e2 = (-2.0 * h).exp();
      const auto base = (t.sigma / s0.sigma * (-h).exp()) * x + (t.alpha * (1 - e2)) * D0;
      const auto z = t.sigma * (1.0 - e2).sqrt() * noise;
      if (options_.solver_type() == DPMSolverType::Midpoint) return base + 0.5 * (t.alpha * (1 - e2)) * D1 + z;
      return base + (t.alpha * ((1.0 - e2) / (-2.0 * h) + 1.0)) * D1 + z;
    }
    const auto em1 = (-h).exp() - 1.0;
    if (options_.solver_type() == DPMSolverType::Midpoint) {
      return (t.sigma / s0.sigma) * x - (t.alpha * em1) * D0 - 0.5 * (t.alpha * em1) * D1;
    }
    return (t.sigma / s0.sigma) * x - (t.alpha * em1) * D0 + (t.alpha * (em1 / h + 1.0)) * D1;
  }

  DPMSolverSamplerOptions options_;
  NoiseSchedule schedule_;
  torch::Tensor alphas_cumprod_, lambda_t_, train_sigmas_, sigmas_;
  std::vector<double> timesteps_;
  std::vector<torch::Tensor> model_outputs_;
  int64_t lower_order_nums_ = 0;
  int64_t step_index_ = -1;
};

DDPM_CHECK_SAMPLER(DPMSolverSampler);

}  // namespace ddpm
