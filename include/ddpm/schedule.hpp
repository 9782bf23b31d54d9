#pragma once
/// Noise schedules (beta_t, alpha_bar_t and the derived posterior quantities),
/// computed exactly the way diffusers v0.31.0 computes them so that float32
/// betas and alphas_cumprod are bit-identical to DDPMScheduler / DDIMScheduler /
/// DPMSolverMultistepScheduler.
///
/// Formulas (T = num_train_timesteps, i = 0..T-1):
///   linear:            betas = linspace(beta_start, beta_end, T)            (float32 kernel)
///   scaled_linear:     betas = linspace(beta_start^0.5, beta_end^0.5, T)^2
///   squaredcos_cap_v2: betas_i = min(1 - abar((i+1)/T)/abar(i/T), 0.999),
///                      abar(t) = cos((t+0.008)/1.008 * pi/2)^2           (Nichol & Dhariwal 2021; doubles)
///   sigmoid:           betas = sigmoid(linspace(-6, 6, T)) * (beta_end - beta_start) + beta_start
///   alphas = 1 - betas, alphas_cumprod = cumprod(alphas)   (CPU cumprod accumulates in double)
///   rescale_betas_zero_snr (Lin et al. 2023): s = sqrt(abar); s = (s - s[-1]) * s[0]/(s[0]-s[-1]);
///                      abar = s^2; alphas = [abar[0], abar[1:]/abar[:-1]]; betas = 1 - alphas.
#include <ddpm/detail/json_enum.hpp>
#include <ddpm/detail/json_util.hpp>
#include <ddpm/error.hpp>

#include <torch/arg.h>
#include <torch/types.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <sstream>
#include <string>
#include <vector>

namespace ddpm {

/// How betas are laid out over the T training timesteps (diffusers `beta_schedule`).
enum class BetaSchedule { Linear, ScaledLinear, SquaredCosCapV2, Sigmoid };

namespace detail {
inline const EnumNames<BetaSchedule>& beta_schedule_names() {
  static const EnumNames<BetaSchedule> names = {{BetaSchedule::Linear, "linear"},
                                                {BetaSchedule::ScaledLinear, "scaled_linear"},
                                                {BetaSchedule::SquaredCosCapV2, "squaredcos_cap_v2"},
                                                {BetaSchedule::Sigmoid, "sigmoid"}};
  return names;
}

/// "float32" / "float64" <-> torch dtype (only these two are allowed for schedules).
inline const char* schedule_dtype_name(torch::Dtype d) {
  if (d == torch::kFloat32) return "float32";
  if (d == torch::kFloat64) return "float64";
  throw Error(std::string("schedule dtype must be float32 or float64, got ") + c10::toString(d));
}
inline torch::Dtype schedule_dtype_from_json(const nlohmann::json& j, const std::string& context) {
  if (j.is_string()) {
    const auto s = j.get<std::string>();
    if (s == "float32") return torch::kFloat32;
    if (s == "float64") return torch::kFloat64;
  }
  throw Error(context + ": bad value for \"dtype\": " + detail::truncated_dump(j) +
              "; valid values are \"float32\", \"float64\"");
}
}  // namespace detail

DDPM_JSON_ENUM(BetaSchedule, detail::beta_schedule_names, "beta_schedule")

/// Largest num_train_timesteps a schedule accepts (diffusers' models use 1000, some 4000): a
/// config asking for more is refused before anything is allocated.
constexpr int64_t kMaxTrainTimesteps = 100000;

/// Options of a noise schedule; defaults are diffusers' (DDPM paper linear 1e-4..0.02, T = 1000).
struct NoiseScheduleOptions {
  /// T, the number of diffusion steps used in training.
  TORCH_ARG(int64_t, num_train_timesteps) = 1000;
  TORCH_ARG(BetaSchedule, beta_schedule) = BetaSchedule::Linear;
  TORCH_ARG(double, beta_start) = 1e-4;
  TORCH_ARG(double, beta_end) = 0.02;
  /// Explicit betas [T]; when non-empty they replace beta_schedule (diffusers `trained_betas`).
  TORCH_ARG(std::vector<double>, trained_betas) = {};
  /// Rescale to zero terminal SNR (last beta = 1, last alphas_cumprod = 0).
  TORCH_ARG(bool, rescale_betas_zero_snr) = false;
  /// kFloat32 reproduces diffusers bit-exactly; kFloat64 computes everything in double.
  TORCH_ARG(torch::Dtype, dtype) = torch::kFloat32;
};

namespace detail {
/// The JSON keys owned by NoiseScheduleOptions (diffusers names + "dtype").
inline const std::vector<const char*>& schedule_json_keys() {
  static const std::vector<const char*> keys = {"num_train_timesteps", "beta_schedule",
                                                "beta_start",          "beta_end",
                                                "trained_betas",       "rescale_betas_zero_snr",
                                                "dtype"};
  return keys;
}

/// Writes the schedule keys into `j` (flat, as in a diffusers scheduler_config).
inline void write_schedule_keys(nlohmann::json& j, const NoiseScheduleOptions& o) {
  j["num_train_timesteps"] = o.num_train_timesteps();
  j["beta_schedule"] = o.beta_schedule();
  j["beta_start"] = o.beta_start();
  j["beta_end"] = o.beta_end();
  j["trained_betas"] = o.trained_betas().empty() ? nlohmann::json(nullptr)
                                                 : nlohmann::json(o.trained_betas());
  j["rescale_betas_zero_snr"] = o.rescale_betas_zero_snr();
  j["dtype"] = schedule_dtype_name(o.dtype());
}

/// Reads the schedule keys present in `j` (others are left to the caller).
inline void read_schedule_keys(const nlohmann::json& j, NoiseScheduleOptions& o,
                               const std::string& context) {
  if (!j.is_object()) throw Error(context + " must be a JSON object");
  get_optional(j, "num_train_timesteps", o.num_train_timesteps(), context);
  get_optional(j, "beta_schedule", o.beta_schedule(), context);
  get_optional(j, "beta_start", o.beta_start(), context);
  get_optional(j, "beta_end", o.beta_end(), context);
  get_optional(j, "trained_betas", o.trained_betas(), context);
  get_optional(j, "rescale_betas_zero_snr", o.rescale_betas_zero_snr(), context);
  auto it = j.find("dtype");
  if (it != j.end() && !it->is_null()) o.dtype(schedule_dtype_from_json(*it, context));
}

/// Like check_known_keys, for a runtime list of keys.
inline void check_known_keys_list(const nlohmann::json& j, const std::vector<const char*>& known,
                                  const std::string& context) {
  if (!j.is_object()) throw Error(context + " must be a JSON object");
  for (auto it = j.begin(); it != j.end(); ++it) {
    const std::string& key = it.key();
    if (!key.empty() && key[0] == '_') continue;
    if (std::none_of(known.begin(), known.end(), [&](const char* k) { return key == k; })) {
      std::string list;
      for (const char* k : known) list += (list.empty() ? "" : ", ") + std::string(k);
      throw Error(context + ": unknown key \"" + key + "\" (known keys: " + list + ")");
    }
  }
}
}  // namespace detail

inline void to_json(nlohmann::json& j, const NoiseScheduleOptions& o) {
  j = nlohmann::json::object();
  detail::write_schedule_keys(j, o);
}

inline void from_json(const nlohmann::json& j, NoiseScheduleOptions& o) {
  o = NoiseScheduleOptions{};
  detail::check_known_keys_list(j, detail::schedule_json_keys(), "noise schedule options");
  detail::read_schedule_keys(j, o, "noise schedule options");
}

namespace detail {

/// diffusers' betas_for_alpha_bar(T, max_beta=0.999, "cosine"), in Python doubles.
inline std::vector<double> cosine_betas(int64_t T) {
  const double pi = 3.141592653589793;  // math.pi
  auto alpha_bar = [pi](double t) { return std::pow(std::cos((t + 0.008) / 1.008 * pi / 2), 2.0); };
  std::vector<double> betas(static_cast<size_t>(T));
  for (int64_t i = 0; i < T; ++i) {
    const double t1 = static_cast<double>(i) / static_cast<double>(T);
    const double t2 = static_cast<double>(i + 1) / static_cast<double>(T);
    betas[static_cast<size_t>(i)] = std::min(1 - alpha_bar(t2) / alpha_bar(t1), 0.999);
  }
  return betas;
}

/// Lin et al. 2023, "Common Diffusion Noise Schedules and Sample Steps are Flawed", Alg. 1,
/// with diffusers' exact tensor operations (in the dtype of `betas`).
inline torch::Tensor rescale_zero_terminal_snr(const torch::Tensor& betas) {
  const auto alphas = 1.0 - betas;
  const auto alphas_cumprod = torch::cumprod(alphas, 0);
  auto s = alphas_cumprod.sqrt();
  const auto s0 = s[0].clone();
  const auto sT = s[-1].clone();
  s = s - sT;
  s = s * (s0 / (s0 - sT));
  const auto abar = s.pow(2);
  const auto ratios = abar.slice(0, 1) / abar.slice(0, 0, abar.size(0) - 1);
  const auto new_alphas = torch::cat({abar.slice(0, 0, 1), ratios});
  return 1.0 - new_alphas;
}

/// betas [T] from the options, in options.dtype(), on CPU (diffusers' recipe).
inline torch::Tensor make_betas(const NoiseScheduleOptions& o) {
  const int64_t T = o.num_train_timesteps();
  const auto opts = torch::TensorOptions().dtype(o.dtype());
  torch::Tensor betas;
  if (!o.trained_betas().empty()) {
    if (static_cast<int64_t>(o.trained_betas().size()) != T) {
      throw Error("trained_betas has " + std::to_string(o.trained_betas().size()) +
                  " entries but num_train_timesteps is " + std::to_string(T));
    }
    betas = torch::tensor(o.trained_betas(), torch::kFloat64).to(o.dtype());
  } else {
    switch (o.beta_schedule()) {
      case BetaSchedule::Linear:
        betas = torch::linspace(o.beta_start(), o.beta_end(), T, opts);
        break;
      case BetaSchedule::ScaledLinear:
        // Python's `beta_start**0.5` is C pow(x, 0.5).
        betas = torch::linspace(std::pow(o.beta_start(), 0.5), std::pow(o.beta_end(), 0.5), T, opts)
                    .pow(2);
        break;
      case BetaSchedule::SquaredCosCapV2:
        betas = torch::tensor(cosine_betas(T), torch::kFloat64).to(o.dtype());
        break;
      case BetaSchedule::Sigmoid:
        betas = torch::sigmoid(torch::linspace(-6, 6, T, opts)) * (o.beta_end() - o.beta_start()) +
                o.beta_start();
        break;
    }
  }
  return betas;
}

/// Throws naming the first beta outside (0, 1] (NaN included).
inline void check_betas(const torch::Tensor& betas, const char* stage) {
  const auto b = betas.to(torch::kFloat64).contiguous();
  const double* p = b.data_ptr<double>();
  for (int64_t i = 0; i < b.numel(); ++i) {
    if (!(p[i] > 0.0 && p[i] <= 1.0)) {  // also catches NaN
      std::ostringstream os;
      os << "noise schedule: betas[" << i << "] = " << p[i] << " " << stage
         << " is not in (0, 1]; betas must be finite and in (0, 1]";
      throw Error(os.str());
    }
  }
}

}  // namespace detail

/// A noise schedule: betas and every quantity derived from them, each a 1-D tensor [T]
/// in options().dtype() on device() (CPU unless moved with to()).
class NoiseSchedule {
 public:
  explicit NoiseSchedule(NoiseScheduleOptions options = {}) : options_(std::move(options)) {
    const int64_t T = options_.num_train_timesteps();
    if (T <= 0) throw Error("noise schedule: num_train_timesteps must be > 0, got " + std::to_string(T));
    if (T > kMaxTrainTimesteps) {
      throw Error("noise schedule: num_train_timesteps = " + std::to_string(T) + " exceeds the limit " +
                  std::to_string(kMaxTrainTimesteps));
    }
    if (options_.dtype() != torch::kFloat32 && options_.dtype() != torch::kFloat64) {
      detail::schedule_dtype_name(options_.dtype());  // throws naming the dtype
    }
    if (options_.trained_betas().empty()) {
      if (!std::isfinite(options_.beta_start()) || !std::isfinite(options_.beta_end())) {
        throw Error("noise schedule: beta_start and beta_end must be finite, got " +
                    std::to_string(options_.beta_start()) + " and " +
                    std::to_string(options_.beta_end()));
      }
    }
    betas_ = detail::make_betas(options_);
    detail::check_betas(betas_, "(before rescaling)");
    if (options_.rescale_betas_zero_snr()) {
      if (T < 2) throw Error("noise schedule: rescale_betas_zero_snr needs num_train_timesteps >= 2");
      betas_ = detail::rescale_zero_terminal_snr(betas_);
      detail::check_betas(betas_, "(after zero-SNR rescaling)");
    }
    alphas_ = 1.0 - betas_;
    alphas_cumprod_ = torch::cumprod(alphas_, 0);
    const auto one = torch::ones({1}, betas_.options());
    alphas_cumprod_prev_ = torch::cat({one, alphas_cumprod_.slice(0, 0, T - 1)});
    sqrt_alphas_cumprod_ = alphas_cumprod_.sqrt();
    sqrt_one_minus_alphas_cumprod_ = (1.0 - alphas_cumprod_).sqrt();
    // Ho et al. 2020, eq. (7): q(x_{t-1} | x_t, x_0) = N(coef1 x_0 + coef2 x_t, var).
    const auto one_minus_ab = 1.0 - alphas_cumprod_;
    const auto one_minus_ab_prev = 1.0 - alphas_cumprod_prev_;
    posterior_variance_ = betas_ * one_minus_ab_prev / one_minus_ab;
    // var[0] = 0: like the DDPM reference code, log uses var[1] in its place.
    if (T > 1) {
      posterior_log_variance_clipped_ =
          torch::cat({posterior_variance_.slice(0, 1, 2), posterior_variance_.slice(0, 1)}).log();
    } else {
      posterior_log_variance_clipped_ = posterior_variance_.clamp_min(1e-20).log();
    }
    posterior_mean_coef1_ = betas_ * alphas_cumprod_prev_.sqrt() / one_minus_ab;
    posterior_mean_coef2_ = one_minus_ab_prev * alphas_.sqrt() / one_minus_ab;
    snr_ = alphas_cumprod_ / one_minus_ab;
  }

  /// beta_t [T].
  const torch::Tensor& betas() const { return betas_; }
  /// alpha_t = 1 - beta_t [T].
  const torch::Tensor& alphas() const { return alphas_; }
  /// alpha_bar_t = prod_{s<=t} alpha_s [T].
  const torch::Tensor& alphas_cumprod() const { return alphas_cumprod_; }
  /// alpha_bar_{t-1} with alpha_bar_{-1} = 1 [T].
  const torch::Tensor& alphas_cumprod_prev() const { return alphas_cumprod_prev_; }
  /// sqrt(alpha_bar_t) [T].
  const torch::Tensor& sqrt_alphas_cumprod() const { return sqrt_alphas_cumprod_; }
  /// sqrt(1 - alpha_bar_t) [T].
  const torch::Tensor& sqrt_one_minus_alphas_cumprod() const { return sqrt_one_minus_alphas_cumprod_; }
  /// beta~_t = beta_t (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t) [T] (0 at t = 0).
  const torch::Tensor& posterior_variance() const { return posterior_variance_; }
  /// log([beta~_1, beta~_1, beta~_2, ...]) [T] (finite at t = 0).
  const torch::Tensor& posterior_log_variance_clipped() const { return posterior_log_variance_clipped_; }
  /// beta_t sqrt(alpha_bar_{t-1}) / (1 - alpha_bar_t) [T], the x_0 coefficient of the posterior mean.
  const torch::Tensor& posterior_mean_coef1() const { return posterior_mean_coef1_; }
  /// (1 - alpha_bar_{t-1}) sqrt(alpha_t) / (1 - alpha_bar_t) [T], the x_t coefficient.
  const torch::Tensor& posterior_mean_coef2() const { return posterior_mean_coef2_; }
  /// SNR_t = alpha_bar_t / (1 - alpha_bar_t) [T].
  const torch::Tensor& snr() const { return snr_; }

  int64_t num_train_timesteps() const { return options_.num_train_timesteps(); }
  const NoiseScheduleOptions& options() const { return options_; }
  torch::Device device() const { return betas_.device(); }
  torch::Dtype dtype() const { return betas_.scalar_type(); }

  /// A copy with every tensor moved to `device`.
  NoiseSchedule to(torch::Device device) const { return to(device, dtype()); }
  /// A copy with every tensor moved to `device` and cast to `dtype` (values are cast,
  /// not recomputed: build from options with dtype(kFloat64) for a float64 computation).
  NoiseSchedule to(torch::Device device, torch::Dtype dtype) const {
    NoiseSchedule s = *this;
    for (torch::Tensor* t : s.all()) *t = t->to(device, dtype);
    return s;
  }

 private:
  std::vector<torch::Tensor*> all() {
    return {&betas_, &alphas_, &alphas_cumprod_, &alphas_cumprod_prev_, &sqrt_alphas_cumprod_,
            &sqrt_one_minus_alphas_cumprod_, &posterior_variance_, &posterior_log_variance_clipped_,
            &posterior_mean_coef1_, &posterior_mean_coef2_, &snr_};
  }

  NoiseScheduleOptions options_;
  torch::Tensor betas_, alphas_, alphas_cumprod_, alphas_cumprod_prev_, sqrt_alphas_cumprod_,
      sqrt_one_minus_alphas_cumprod_, posterior_variance_, posterior_log_variance_clipped_,
      posterior_mean_coef1_, posterior_mean_coef2_, snr_;
};

}  // namespace ddpm
