#pragma once
/// The forward (noising) process q(x_t | x_0), training targets, conversions between
/// prediction types, the posterior q(x_{t-1} | x_t, x_0) and the simple training loss
/// (Ho et al. 2020, eq. 14), optionally Min-SNR-gamma weighted (Hang et al. 2023).
///
///   x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps                         (diffusers add_noise)
///   v   = sqrt(abar_t) eps - sqrt(1 - abar_t) x_0                         (Salimans & Ho 2022)
#include <ddpm/detail/json_enum.hpp>
#include <ddpm/detail/json_util.hpp>
#include <ddpm/error.hpp>
#include <ddpm/prediction.hpp>
#include <ddpm/schedule.hpp>

#include <ATen/core/Generator.h>
#include <torch/arg.h>
#include <torch/types.h>
#include <torch/utils.h>

#include <nlohmann/json.hpp>

#include <cstdint>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

namespace ddpm {

/// How per-sample losses are weighted over t.
enum class LossWeighting { None, MinSnr };

namespace detail {
inline const EnumNames<LossWeighting>& loss_weighting_names() {
  static const EnumNames<LossWeighting> names = {{LossWeighting::None, "none"},
                                                 {LossWeighting::MinSnr, "min_snr"}};
  return names;
}
}  // namespace detail

DDPM_JSON_ENUM(LossWeighting, detail::loss_weighting_names, "loss_weighting")

struct ForwardDiffuserOptions {
  TORCH_ARG(PredictionType, prediction_type) = PredictionType::Epsilon;
  TORCH_ARG(LossWeighting, loss_weighting) = LossWeighting::None;
  /// gamma of Min-SNR-gamma weighting (Hang et al. 2023 use 5).
  TORCH_ARG(double, min_snr_gamma) = 5.0;
};

inline void to_json(nlohmann::json& j, const ForwardDiffuserOptions& o) {
  j = nlohmann::json{{"prediction_type", o.prediction_type()},
                     {"loss_weighting", o.loss_weighting()},
                     {"min_snr_gamma", o.min_snr_gamma()}};
}

inline void from_json(const nlohmann::json& j, ForwardDiffuserOptions& o) {
  const std::string ctx = "forward diffuser options";
  detail::check_known_keys(j, {"prediction_type", "loss_weighting", "min_snr_gamma"}, ctx);
  o = ForwardDiffuserOptions{};
  detail::get_optional(j, "prediction_type", o.prediction_type(), ctx);
  detail::get_optional(j, "loss_weighting", o.loss_weighting(), ctx);
  detail::get_optional(j, "min_snr_gamma", o.min_snr_gamma(), ctx);
  if (!(o.min_snr_gamma() > 0)) {
    throw Error(ctx + ": min_snr_gamma must be > 0, got " + std::to_string(o.min_snr_gamma()));
  }
}

/// Mean and variance of q(x_{t-1} | x_t, x_0); mean [B, ...], variance and
/// log_variance_clipped [B, 1, ...] (broadcastable to the mean).
struct PosteriorOutput {
  torch::Tensor mean;
  torch::Tensor variance;
  torch::Tensor log_variance_clipped;
};

/// Everything one training-loss evaluation produced.
struct LossOutput {
  torch::Tensor loss;          ///< scalar, differentiable: mean over the batch of w_t * MSE
  torch::Tensor t;             ///< int64 [B] timesteps drawn
  torch::Tensor noise;         ///< [B, ...] epsilon drawn
  torch::Tensor x_t;           ///< [B, ...] noised input given to the model
  torch::Tensor target;        ///< [B, ...] the regression target
  torch::Tensor model_output;  ///< [B, ...] what the model returned
};

namespace detail {

inline std::string fd_shape_str(at::IntArrayRef s) {
  std::ostringstream os;
  os << s;
  return os.str();
}

/// `gen` if defined, else the default generator.
inline c10::optional<at::Generator> generator_or_default(const at::Generator& gen) {
  if (gen.defined()) return gen;
  return c10::nullopt;
}

/// Checks t is an integer [B] tensor with every entry in [0, T) (B = x.size(0) when x is given).
inline void check_timestep_batch(const torch::Tensor& t, const torch::Tensor& x, int64_t T,
                            const char* where) {
  TORCH_CHECK(t.defined(), where, ": timesteps t is undefined");
  TORCH_CHECK(t.dim() == 1, where, ": timesteps t must be 1-D [B], got shape ", t.sizes());
  TORCH_CHECK(!at::isFloatingType(t.scalar_type()) && !at::isComplexType(t.scalar_type()) &&
                  t.scalar_type() != torch::kBool,
              where, ": timesteps t must be an integer tensor (int64), got ", t.scalar_type());
  if (x.defined()) {
    TORCH_CHECK(x.dim() >= 1, where, ": expected a batched tensor [B, ...], got shape ", x.sizes());
    TORCH_CHECK(t.size(0) == x.size(0), where, ": timesteps t has shape ", t.sizes(),
                " but the batch has shape ", x.sizes(), " (need t of shape [", x.size(0), "])");
  }
  if (t.numel() == 0) return;
  const auto range = torch::stack({t.min(), t.max()}).to(torch::kCPU, torch::kLong);  // one sync
  const int64_t lo = range[0].item<int64_t>();
  const int64_t hi = range[1].item<int64_t>();
  TORCH_CHECK(lo >= 0 && hi < T, where, ": timestep ", (lo < 0 ? lo : hi),
              " is out of range [0, ", T, ")");
}

inline void check_same_shape(const torch::Tensor& a, const char* an, const torch::Tensor& b,
                             const char* bn, const char* where) {
  TORCH_CHECK(a.defined() && b.defined(), where, ": ", an, " and ", bn, " must be defined");
  TORCH_CHECK(a.sizes() == b.sizes(), where, ": ", an, " has shape ", a.sizes(), " but ", bn,
              " has shape ", b.sizes());
}

/// arr[t] reshaped to [B, 1, ..., 1] (ndim of `like`), on like's device and in like's dtype.
inline torch::Tensor extract_per_sample(const torch::Tensor& arr, const torch::Tensor& t,
                             const torch::Tensor& like) {
  auto v = arr.to(like.device()).index_select(0, t.to(like.device(), torch::kLong)).to(like.scalar_type());
  std::vector<int64_t> shape(static_cast<size_t>(like.dim()), 1);
  shape[0] = t.size(0);
  return v.view(shape);
}

}  // namespace detail

/// The forward diffusion process over a NoiseSchedule. Tensors may live on any device; the
/// schedule's [T] vectors are moved to the input's device on use (build the diffuser from
/// `schedule.to(device)` to avoid that copy).
class ForwardDiffuser {
 public:
  explicit ForwardDiffuser(NoiseSchedule schedule, ForwardDiffuserOptions options = {})
      : schedule_(std::move(schedule)), options_(std::move(options)) {
    TORCH_CHECK(options_.min_snr_gamma() > 0, "ForwardDiffuser: min_snr_gamma must be > 0, got ",
                options_.min_snr_gamma());
  }

  const NoiseSchedule& schedule() const { return schedule_; }
  const ForwardDiffuserOptions& options() const { return options_; }
  int64_t num_train_timesteps() const { return schedule_.num_train_timesteps(); }

  /// x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) noise; x0, noise [B, ...], t int64 [B].
  torch::Tensor q_sample(const torch::Tensor& x0, const torch::Tensor& t,
                         const torch::Tensor& noise) const {
    detail::check_same_shape(x0, "x0", noise, "noise", "ForwardDiffuser::q_sample");
    detail::check_timestep_batch(t, x0, num_train_timesteps(), "ForwardDiffuser::q_sample");
    return detail::extract_per_sample(schedule_.sqrt_alphas_cumprod(), t, x0) * x0 +
           detail::extract_per_sample(schedule_.sqrt_one_minus_alphas_cumprod(), t, x0) * noise;
  }

  /// v = sqrt(abar_t) noise - sqrt(1 - abar_t) x0 (diffusers get_velocity); [B, ...].
  torch::Tensor velocity(const torch::Tensor& x0, const torch::Tensor& noise,
                         const torch::Tensor& t) const {
    detail::check_same_shape(x0, "x0", noise, "noise", "ForwardDiffuser::velocity");
    detail::check_timestep_batch(t, x0, num_train_timesteps(), "ForwardDiffuser::velocity");
    return detail::extract_per_sample(schedule_.sqrt_alphas_cumprod(), t, x0) * noise -
           detail::extract_per_sample(schedule_.sqrt_one_minus_alphas_cumprod(), t, x0) * x0;
  }

  /// The regression target for options().prediction_type(): noise, x0 or v; [B, ...].
  torch::Tensor target(const torch::Tensor& x0, const torch::Tensor& noise,
                       const torch::Tensor& t) const {
    detail::check_same_shape(x0, "x0", noise, "noise", "ForwardDiffuser::target");
    detail::check_timestep_batch(t, x0, num_train_timesteps(), "ForwardDiffuser::target");
    switch (options_.prediction_type()) {
      case PredictionType::Epsilon: return noise;
      case PredictionType::Sample: return x0;
      case PredictionType::VPrediction: return velocity(x0, noise, t);
    }
    TORCH_CHECK(false, "ForwardDiffuser::target: invalid prediction type");
  }

  /// x0 implied by a model output of options().prediction_type() at (x_t, t):
  /// eps: (x_t - sqrt(1-abar) eps)/sqrt(abar); sample: itself; v: sqrt(abar) x_t - sqrt(1-abar) v.
  torch::Tensor pred_x0(const torch::Tensor& model_output, const torch::Tensor& x_t,
                        const torch::Tensor& t) const {
    detail::check_same_shape(model_output, "model_output", x_t, "x_t", "ForwardDiffuser::pred_x0");
    detail::check_timestep_batch(t, x_t, num_train_timesteps(), "ForwardDiffuser::pred_x0");
    const auto a = detail::extract_per_sample(schedule_.sqrt_alphas_cumprod(), t, x_t);
    const auto s = detail::extract_per_sample(schedule_.sqrt_one_minus_alphas_cumprod(), t, x_t);
    return predict_x0(model_output, x_t, a, s, options_.prediction_type());
  }

  /// epsilon implied by a model output: eps: itself; sample: (x_t - sqrt(abar) x0)/sqrt(1-abar);
  /// v: sqrt(abar) v + sqrt(1-abar) x_t.
  torch::Tensor pred_epsilon(const torch::Tensor& model_output, const torch::Tensor& x_t,
                             const torch::Tensor& t) const {
    detail::check_same_shape(model_output, "model_output", x_t, "x_t", "ForwardDiffuser::pred_epsilon");
    detail::check_timestep_batch(t, x_t, num_train_timesteps(), "ForwardDiffuser::pred_epsilon");
    const auto a = detail::extract_per_sample(schedule_.sqrt_alphas_cumprod(), t, x_t);
    const auto s = detail::extract_per_sample(schedule_.sqrt_one_minus_alphas_cumprod(), t, x_t);
    return predict_epsilon(model_output, x_t, a, s, options_.prediction_type());
  }

  /// q(x_{t-1} | x_t, x_0): mean = coef1_t x0 + coef2_t x_t, variance beta~_t (Ho et al. eq. 6-7).
  PosteriorOutput q_posterior(const torch::Tensor& x0, const torch::Tensor& x_t,
                              const torch::Tensor& t) const {
    detail::check_same_shape(x0, "x0", x_t, "x_t", "ForwardDiffuser::q_posterior");
    detail::check_timestep_batch(t, x0, num_train_timesteps(), "ForwardDiffuser::q_posterior");
    PosteriorOutput out;
    out.mean = detail::extract_per_sample(schedule_.posterior_mean_coef1(), t, x0) * x0 +
               detail::extract_per_sample(schedule_.posterior_mean_coef2(), t, x0) * x_t;
    out.variance = detail::extract_per_sample(schedule_.posterior_variance(), t, x0);
    out.log_variance_clipped = detail::extract_per_sample(schedule_.posterior_log_variance_clipped(), t, x0);
    return out;
  }

  /// t ~ U{0, ..., T-1}: int64 [batch] on CPU, drawn from `gen` (a CPU generator; an undefined
  /// one means the default generator).
  torch::Tensor sample_timesteps(int64_t batch, torch::Generator gen) const {
    TORCH_CHECK(batch >= 0, "ForwardDiffuser::sample_timesteps: batch must be >= 0, got ", batch);
    return torch::randint(0, num_train_timesteps(), {batch}, detail::generator_or_default(gen),
                          torch::TensorOptions().dtype(torch::kLong));
  }

  /// Per-sample loss weights w_t, float32 [B] on t's device. None: 1. MinSnr (gamma g,
  /// SNR = abar/(1-abar)): epsilon min(SNR,g)/SNR, v min(SNR,g)/(SNR+1), sample min(SNR,g);
  /// where SNR = 0 (zero-terminal-SNR last step) an epsilon weight of 0/0 is replaced by 1
  /// as diffusers' training scripts do.
  torch::Tensor loss_weights(const torch::Tensor& t) const {
    detail::check_timestep_batch(t, torch::Tensor(), num_train_timesteps(), "ForwardDiffuser::loss_weights");
    const auto opts = torch::TensorOptions().dtype(torch::kFloat32).device(t.device());
    if (options_.loss_weighting() == LossWeighting::None) return torch::ones({t.size(0)}, opts);
    const auto snr = schedule_.snr().to(t.device()).index_select(0, t.to(torch::kLong)).to(torch::kFloat64);
    const auto clipped = snr.clamp_max(options_.min_snr_gamma());
    torch::Tensor w;
    switch (options_.prediction_type()) {
      case PredictionType::Epsilon:
        w = torch::where(snr == 0, torch::ones_like(snr), clipped / snr);
        break;
      case PredictionType::VPrediction: w = clipped / (snr + 1); break;
      case PredictionType::Sample: w = clipped; break;
    }
    return w.to(torch::kFloat32);
  }

  /// One evaluation of the training loss: draws t ~ U{0..T-1} then noise ~ N(0, I) from `gen`
  /// on CPU (so results do not depend on x0's device), x_t = q_sample(x0, t, noise), calls
  /// `model(x_t, t)` (t int64 [B] on x0's device), and returns mean_b w_t * mean((out - target)^2)
  /// computed in float32 (or float64 for float64 inputs).
  template <class Model>
  LossOutput loss(Model&& model, const torch::Tensor& x0, torch::Generator gen) const {
    TORCH_CHECK(x0.defined() && x0.dim() >= 1 && x0.size(0) > 0,
                "ForwardDiffuser::loss: x0 must be a non-empty batch [B, ...], got ",
                x0.defined() ? detail::fd_shape_str(x0.sizes()) : std::string("undefined"));
    TORCH_CHECK(at::isFloatingType(x0.scalar_type()), "ForwardDiffuser::loss: x0 must be floating point, got ",
                x0.scalar_type());
    LossOutput out;
    const auto g = detail::generator_or_default(gen);
    const auto draw_dtype = x0.scalar_type() == torch::kFloat64 ? torch::kFloat64 : torch::kFloat32;
    out.t = sample_timesteps(x0.size(0), gen).to(x0.device());
    out.noise = torch::randn(x0.sizes(), g, torch::TensorOptions().dtype(draw_dtype))
                    .to(x0.device(), x0.scalar_type());
    out.x_t = q_sample(x0, out.t, out.noise);
    out.target = target(x0, out.noise, out.t);
    out.model_output = model(out.x_t, out.t);
    TORCH_CHECK(out.model_output.defined(), "ForwardDiffuser::loss: the model returned an undefined tensor");
    TORCH_CHECK(out.model_output.sizes() == x0.sizes(), "ForwardDiffuser::loss: model output has shape ",
                out.model_output.sizes(), " but x0 has shape ", x0.sizes());
    const auto acc = x0.scalar_type() == torch::kFloat64 ? torch::kFloat64 : torch::kFloat32;
    const auto diff = out.model_output.to(acc) - out.target.to(acc);
    auto per_sample = diff.pow(2).reshape({x0.size(0), -1}).mean(1);  // [B]
    if (options_.loss_weighting() != LossWeighting::None) {
      per_sample = per_sample * loss_weights(out.t).to(acc);
    }
    out.loss = per_sample.mean();
    return out;
  }

 private:
  NoiseSchedule schedule_;
  ForwardDiffuserOptions options_;
};

}  // namespace ddpm
