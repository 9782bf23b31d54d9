#pragma once
/// UniPC multistep sampler (Zhao et al. 2023, "UniPC: A Unified Predictor-Corrector Framework for
/// Fast Sampling of Diffusion Models"), exactly as diffusers v0.31.0 UniPCMultistepScheduler
/// computes it (B(h) = h for bh1, e^h - 1 for bh2; predict_x0: data or noise prediction).
/// With alpha, sigma_vp, lambda from the sigmas (samplers/sigmas.hpp), h = lambda_t - lambda_s0,
/// hh = -h (data prediction) or h, and m_k the converted model outputs (x0 or eps):
///   UniP (predictor) of order p at step i:
///     r_k = (lambda_{s_k} - lambda_{s0}) / h,  D1_k = (m_k - m_0) / r_k   (k = 1..p-1)
///     R[j][k] = r_k^j (r_p = 1),  b_j = h phi_{j+1}(hh) j! / B(h),  rho_p = R^-1 b (0.5 at p = 2)
///     x_t = (sigma_t / sigma_s0) x - alpha_t (e^hh - 1) m_0 - alpha_t B(h) sum_k rho_k D1_k
///     (noise prediction: (alpha_t / alpha_s0) x - sigma_t (e^hh - 1) m_0 - sigma_t B(h) ...)
///   UniC (corrector), applied when the next model output arrives, with the same order:
///     rho_c = R^-1 b (0.5 at order 1),  x_t += -alpha_t B(h) rho_c[-1] (m_t - m_0) and the D1 terms.
/// The order warms up 1, 2, ..., solver_order and, with lower_order_final, falls to the number of
/// remaining steps. The corrector is skipped for the steps listed in disable_corrector.
#include <ddpm/samplers/common.hpp>
#include <ddpm/samplers/dpm_solver.hpp>
#include <ddpm/samplers/sigmas.hpp>

#include <torch/arg.h>
#include <torch/types.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

namespace ddpm {

/// UniPC's B(h): bh1 = h, bh2 = e^h - 1.
enum class UniPCSolverType { BH1, BH2 };

namespace detail {
inline const EnumNames<UniPCSolverType>& unipc_solver_type_names() {
  static const EnumNames<UniPCSolverType> names = {{UniPCSolverType::BH1, "bh1"}, {UniPCSolverType::BH2, "bh2"}};
  return names;
}
}  // namespace detail

DDPM_JSON_ENUM(UniPCSolverType, detail::unipc_solver_type_names, "solver_type")

/// UniPCMultistepScheduler's configuration (diffusers defaults).
struct UniPCSamplerOptions {
  TORCH_ARG(NoiseScheduleOptions, schedule) = {};
  TORCH_ARG(int64_t, solver_order) = 2;
  TORCH_ARG(PredictionType, prediction_type) = PredictionType::Epsilon;
  TORCH_ARG(bool, thresholding) = false;
  TORCH_ARG(double, dynamic_thresholding_ratio) = 0.995;
  TORCH_ARG(double, sample_max_value) = 1.0;
  /// Data (x0) prediction (UniPC with DPM-Solver++'s parameterisation) or noise prediction.
  TORCH_ARG(bool, predict_x0) = true;
  TORCH_ARG(UniPCSolverType, solver_type) = UniPCSolverType::BH2;
  TORCH_ARG(bool, lower_order_final) = true;
  /// Step indices whose corrector is skipped.
  TORCH_ARG(std::vector<int64_t>, disable_corrector) = {};
  TORCH_ARG(bool, use_karras_sigmas) = false;
  TORCH_ARG(TimestepSpacing, timestep_spacing) = TimestepSpacing::Linspace;
  TORCH_ARG(int64_t, steps_offset) = 0;
  TORCH_ARG(FinalSigmasType, final_sigmas_type) = FinalSigmasType::Zero;
};

inline void to_json(nlohmann::json& j, const UniPCSamplerOptions& o) {
  j = nlohmann::json::object();
  detail::write_schedule_keys(j, o.schedule());
  j["solver_order"] = o.solver_order();
  j["prediction_type"] = o.prediction_type();
  j["thresholding"] = o.thresholding();
  j["dynamic_thresholding_ratio"] = o.dynamic_thresholding_ratio();
  j["sample_max_value"] = o.sample_max_value();
  j["predict_x0"] = o.predict_x0();
  j["solver_type"] = o.solver_type();
  j["lower_order_final"] = o.lower_order_final();
  j["disable_corrector"] = o.disable_corrector();
  j["solver_p"] = nullptr;
  j["use_karras_sigmas"] = o.use_karras_sigmas();
  j["use_exponential_sigmas"] = false;
  j["use_beta_sigmas"] = false;
  j["timestep_spacing"] = o.timestep_spacing();
  j["steps_offset"] = o.steps_offset();
  j["final_sigmas_type"] = o.final_sigmas_type();
}

/// Reads a UniPCMultistepScheduler config. diffusers maps the DPM-Solver solver types "midpoint",
/// "heun" and "logrho" to bh2; so does this. A solver_p scheduler is not supported.
inline void from_json(const nlohmann::json& j, UniPCSamplerOptions& o) {
  const std::string ctx = "UniPCMultistepScheduler config";
  o = UniPCSamplerOptions{};
  detail::read_schedule_keys(j, o.schedule(), ctx);
  detail::get_optional(j, "solver_order", o.solver_order(), ctx);
  detail::get_optional(j, "prediction_type", o.prediction_type(), ctx);
  detail::get_optional(j, "thresholding", o.thresholding(), ctx);
  detail::get_optional(j, "dynamic_thresholding_ratio", o.dynamic_thresholding_ratio(), ctx);
  detail::get_optional(j, "sample_max_value", o.sample_max_value(), ctx);
  detail::get_optional(j, "predict_x0", o.predict_x0(), ctx);
  auto st = j.find("solver_type");
  if (st != j.end() && st->is_string() && (*st == "midpoint" || *st == "heun" || *st == "logrho")) {
    o.solver_type(UniPCSolverType::BH2);
  } else {
    detail::get_optional(j, "solver_type", o.solver_type(), ctx);
  }
  detail::get_optional(j, "lower_order_final", o.lower_order_final(), ctx);
  detail::get_optional(j, "disable_corrector", o.disable_corrector(), ctx);
  detail::get_optional(j, "use_karras_sigmas", o.use_karras_sigmas(), ctx);
  detail::get_optional(j, "timestep_spacing", o.timestep_spacing(), ctx);
  detail::get_optional(j, "steps_offset", o.steps_offset(), ctx);
  detail::get_optional(j, "final_sigmas_type", o.final_sigmas_type(), ctx);
  detail::reject_true(j, {"use_exponential_sigmas", "use_beta_sigmas"}, ctx);
  auto sp = j.find("solver_p");
  if (sp != j.end() && !sp->is_null()) throw Error(ctx + ": \"solver_p\" (an external predictor) is not supported");
}

/// UniPC multistep sampler (deterministic; stateful: keeps the last outputs and sample).
class UniPCSampler {
 public:
  using Options = UniPCSamplerOptions;
  static constexpr const char* kClassName = "UniPCMultistepScheduler";
  static const std::vector<const char*>& config_keys() {
    static const std::vector<const char*> keys = detail::with_schedule_keys(
        {"solver_order", "prediction_type", "thresholding", "dynamic_thresholding_ratio", "sample_max_value",
         "predict_x0", "solver_type", "lower_order_final", "disable_corrector", "solver_p", "use_karras_sigmas",
         "use_exponential_sigmas", "use_beta_sigmas", "timestep_spacing", "steps_offset", "final_sigmas_type"});
    return keys;
  }
  explicit UniPCSampler(UniPCSamplerOptions options = {})
      : options_(std::move(options)), schedule_(options_.schedule()) {
    const std::string where = "UniPCSampler";
    if (options_.solver_order() < 1 || options_.solver_order() > 3) {
      throw Error(where + ": solver_order must be 1, 2 or 3, got " + std::to_string(options_.solver_order()));
    }
    detail::check_threshold_options(options_.dynamic_thresholding_ratio(), options_.sample_max_value(), where);
    if (options_.final_sigmas_type() == FinalSigmasType::Zero) {
      // diffusers returns NaN (bh1: B(h) = -inf; noise prediction: 0 * inf) or fails to solve a
      // singular system (no lower_order_final) on a last step that reaches sigma = 0.
      if (options_.solver_type() == UniPCSolverType::BH1 || !options_.predict_x0() ||
          (!options_.lower_order_final() && options_.solver_order() > 1)) {
        throw Error(where + ": final_sigmas_type \"zero\" needs solver_type bh2, predict_x0 true and "
                    "lower_order_final true (diffusers produces NaN or a singular solve on the last step "
                    "otherwise); use final_sigmas_type \"sigma_min\"");
      }
    }
    alphas_cumprod_ = detail::sampler_alphas_cumprod(schedule_, options_.schedule().rescale_betas_zero_snr());
    train_sigmas_ = detail::sigmas_from_alphas_cumprod(alphas_cumprod_);
  }

  const UniPCSamplerOptions& options() const { return options_; }
  const NoiseSchedule& schedule() const { return schedule_; }
  PredictionType prediction_type() const { return options_.prediction_type(); }
  double init_noise_sigma() const { return 1.0; }
  torch::Tensor scale_model_input(const torch::Tensor& sample, double /*t*/) const { return sample; }
  int64_t order() const { return 1; }
  int64_t num_inference_steps() const { return static_cast<int64_t>(timesteps_.size()); }
  const std::vector<double>& timesteps() const { return timesteps_; }
  torch::Tensor sigmas() const { return sigmas_; }
  int64_t step_index() const { return step_index_; }

  /// Integer timesteps as DPMSolverSampler's (N + 1 points, the last dropped), or Karras sigmas
  /// with round(sigma_to_t) timesteps; then the final sigma (0 or sigma_min).
  void set_timesteps(int64_t num_inference_steps) {
    const char* where = "UniPCSampler::set_timesteps";
    const int64_t T = schedule_.num_train_timesteps();
    const int64_t N = num_inference_steps;
    detail::check_num_inference_steps(N, T, where);
    std::vector<int64_t> ts;
    std::vector<double> sig;
    if (options_.use_karras_sigmas()) {
      sig = detail::karras_sigmas(train_sigmas_[0].item<double>(), train_sigmas_[T - 1].item<double>(), N);
      const auto log_sigmas = detail::log_train_sigmas(train_sigmas_);
      for (double s : sig) ts.push_back(static_cast<int64_t>(detail::np_round(detail::sigma_to_t(s, log_sigmas))));
      detail::check_timestep_list(ts, T, where);
      sig.push_back(options_.final_sigmas_type() == FinalSigmasType::SigmaMin ? sig.back() : 0.0);
    } else {
      switch (options_.timestep_spacing()) {
        case TimestepSpacing::Linspace: {
          const auto lin = detail::np_linspace(0.0, static_cast<double>(T - 1), N + 1);
          for (int64_t i = N; i >= 1; --i) ts.push_back(static_cast<int64_t>(detail::np_round(lin[static_cast<size_t>(i)])));
          break;
        }
        case TimestepSpacing::Leading: {
          const int64_t ratio = T / (N + 1);
          detail::check_steps_offset(options_.steps_offset(), T, where);
          for (int64_t i = N; i >= 1; --i) ts.push_back(i * ratio + options_.steps_offset());
          break;
        }
        case TimestepSpacing::Trailing: {
          const double ratio = static_cast<double>(T) / static_cast<double>(N);
          for (double v : detail::np_arange(static_cast<double>(T), 0.0, -ratio)) {
            const auto r = static_cast<int64_t>(detail::np_round(v)) - 1;
            if (r >= 0) ts.push_back(r);
          }
          break;
        }
      }
      detail::check_timestep_list(ts, T, where);
      sig = detail::to_double_vector(train_sigmas_.index_select(0, torch::tensor(ts, torch::kLong)));
      sig.push_back(options_.final_sigmas_type() == FinalSigmasType::SigmaMin ? train_sigmas_[0].item<double>() : 0.0);
    }
    sigmas_ = torch::tensor(sig, torch::kFloat64).to(train_sigmas_.scalar_type());
    timesteps_ = detail::as_double_timesteps(ts);
    reset();
  }

  /// Forgets the history (set_timesteps does this).
  void reset() {
    model_outputs_.clear();
    lower_order_nums_ = 0;
    this_order_ = 0;
    last_sample_ = torch::Tensor();
    step_index_ = -1;
  }

  /// One UniC correction of the incoming sample (when possible) followed by a UniP prediction.
  /// Deterministic: generator / noise are unused.
  SamplerStepOutput step(const torch::Tensor& model_output, double t, const torch::Tensor& sample,
                         c10::optional<at::Generator> generator = c10::nullopt,
                         c10::optional<torch::Tensor> noise = c10::nullopt) {
    (void)generator;
    (void)noise;
    const char* where = "UniPCSampler::step";
    detail::check_float_step_inputs(model_output, sample, where);
    detail::locate_step(timesteps_, step_index_, t, where);
    const int64_t i = step_index_;
    const int64_t N = static_cast<int64_t>(timesteps_.size());
    const auto& dc = options_.disable_corrector();
    const bool use_corrector =
        i > 0 && std::find(dc.begin(), dc.end(), i - 1) == dc.end() && last_sample_.defined();
    const auto as = detail::alpha_sigma_lambda(sigmas_[i]);
    auto x0 = predict_x0(model_output, sample, as.alpha, as.sigma, options_.prediction_type());
    if (options_.thresholding()) {
      x0 = threshold_x0(x0, options_.dynamic_thresholding_ratio(), options_.sample_max_value());
    }
    const auto converted = options_.predict_x0()
                               ? x0
                               : predict_epsilon(model_output, sample, as.alpha, as.sigma, options_.prediction_type());
    torch::Tensor x = sample;
    if (use_corrector) x = corrector(converted, last_sample_, sample, this_order_, i);
    model_outputs_.push_back(converted);
    if (static_cast<int64_t>(model_outputs_.size()) > options_.solver_order()) {
      model_outputs_.erase(model_outputs_.begin());
    }
    int64_t order = options_.solver_order();
    if (options_.lower_order_final()) order = std::min(order, N - i);
    this_order_ = std::min(order, lower_order_nums_ + 1);
    last_sample_ = x;
    const auto prev = predictor(x, this_order_, i);
    if (lower_order_nums_ < options_.solver_order()) ++lower_order_nums_;
    ++step_index_;
    return {prev, x0};
  }

 private:
  struct Coefficients {
    torch::Tensor hh, h_phi_1, B_h;
    std::vector<torch::Tensor> rks;  // r_1 .. r_{p-1}
    torch::Tensor R, b;              // [p, p], [p]
  };
  /// rks, R, b and B(h) for an update from lambda_s0 with h, using the lambdas of `others`.
  Coefficients coefficients(const torch::Tensor& h, const torch::Tensor& lambda_s0,
                            const std::vector<torch::Tensor>& other_lambdas, int64_t order) const {
    Coefficients c;
    for (const auto& l : other_lambdas) c.rks.push_back((l - lambda_s0) / h);
    std::vector<torch::Tensor> rk = c.rks;
    rk.push_back(torch::ones({}, h.options()));
    const auto rks = torch::stack(rk);
    c.hh = options_.predict_x0() ? -h : h;
    c.h_phi_1 = torch::expm1(c.hh);
    auto h_phi_k = c.h_phi_1 / c.hh - 1;
    double factorial = 1;
    c.B_h = options_.solver_type() == UniPCSolverType::BH1 ? c.hh : torch::expm1(c.hh);
    std::vector<torch::Tensor> R, b;
    for (int64_t k = 1; k <= order; ++k) {
      R.push_back(torch::pow(rks, static_cast<double>(k - 1)));
      b.push_back(h_phi_k * factorial / c.B_h);
      factorial *= static_cast<double>(k + 1);
      h_phi_k = h_phi_k / c.hh - 1 / factorial;
    }
    c.R = torch::stack(R);
    c.b = torch::stack(b);
    return c;
  }

  torch::Tensor predictor(const torch::Tensor& x, int64_t order, int64_t i) const {
    const auto t = detail::alpha_sigma_lambda(sigmas_[i + 1]);
    const auto s0 = detail::alpha_sigma_lambda(sigmas_[i]);
    const auto h = t.lambda - s0.lambda;
    const size_t n = model_outputs_.size();
    const auto& m0 = model_outputs_[n - 1];
    std::vector<torch::Tensor> lambdas;
    for (int64_t k = 1; k < order; ++k) lambdas.push_back(detail::alpha_sigma_lambda(sigmas_[i - k]).lambda);
    const auto c = coefficients(h, s0.lambda, lambdas, order);
    torch::Tensor pred_res;
    if (order >= 2) {
      const auto rhos = order == 2 ? torch::full({1}, 0.5, h.options())
                                   : at::linalg_solve(c.R.slice(0, 0, -1).slice(1, 0, -1), c.b.slice(0, 0, -1));
      for (int64_t k = 1; k < order; ++k) {
        const auto D1 = (model_outputs_[n - 1 - static_cast<size_t>(k)] - m0) / c.rks[static_cast<size_t>(k - 1)];
        const auto term = rhos[k - 1] * D1;
        pred_res = pred_res.defined() ? pred_res + term : term;
      }
    }
    torch::Tensor x_t;
    if (options_.predict_x0()) {
      x_t = t.sigma / s0.sigma * x - t.alpha * c.h_phi_1 * m0;
      if (pred_res.defined()) x_t = x_t - t.alpha * c.B_h * pred_res;
    } else {
      x_t = t.alpha / s0.alpha * x - t.sigma * c.h_phi_1 * m0;
      if (pred_res.defined()) x_t = x_t - t.sigma * c.B_h * pred_res;
    }
    return x_t.to(x.scalar_type());
  }

  torch::Tensor corrector(const torch::Tensor& model_t, const torch::Tensor& last_sample,
                          const torch::Tensor& /*this_sample: diffusers' signature; the update needs only last_sample*/,
                          int64_t order, int64_t i) const {
    const auto t = detail::alpha_sigma_lambda(sigmas_[i]);
    const auto s0 = detail::alpha_sigma_lambda(sigmas_[i - 1]);
    const auto h = t.lambda - s0.lambda;
    const size_t n = model_outputs_.size();
    const auto& m0 = model_outputs_[n - 1];
    std::vector<torch::Tensor> lambdas;
    for (int64_t k = 1; k < order; ++k) lambdas.push_back(detail::alpha_sigma_lambda(sigmas_[i - (k + 1)]).lambda);
    const auto c = coefficients(h, s0.lambda, lambdas, order);
    const auto rhos = order == 1 ? torch::full({1}, 0.5, h.options())
                                 : at::linalg_solve(c.R, c.b);
    torch::Tensor corr_res;
    for (int64_t k = 1; k < order; ++k) {
      const auto D1 = (model_outputs_[n - 1 - static_cast<size_t>(k)] - m0) / c.rks[static_cast<size_t>(k - 1)];
      const auto term = rhos[k - 1] * D1;
      corr_res = corr_res.defined() ? corr_res + term : term;
    }
    const auto D1_t = model_t - m0;
    const auto last = rhos[order - 1] * D1_t;
    const auto res = corr_res.defined() ? corr_res + last : last;
    torch::Tensor x_t;
    if (options_.predict_x0()) {
      x_t = t.sigma / s0.sigma * last_sample - t.alpha * c.h_phi_1 * m0;
      x_t = x_t - t.alpha * c.B_h * res;
    } else {
      x_t = t.alpha / s0.alpha * last_sample - t.sigma * c.h_phi_1 * m0;
      x_t = x_t - t.sigma * c.B_h * res;
    }
    return x_t.to(last_sample.scalar_type());
  }

  UniPCSamplerOptions options_;
  NoiseSchedule schedule_;
  torch::Tensor alphas_cumprod_, train_sigmas_, sigmas_;
  std::vector<double> timesteps_;
  std::vector<torch::Tensor> model_outputs_;
  int64_t lower_order_nums_ = 0;
  int64_t this_order_ = 0;
  torch::Tensor last_sample_;
  int64_t step_index_ = -1;
};

DDPM_CHECK_SAMPLER(UniPCSampler);

}  // namespace ddpm
