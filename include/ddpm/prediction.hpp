#pragma once
/// What a denoising model predicts, and the conversions between its output and the clean
/// sample x0 or the noise eps, shared by the forward diffuser (training) and every sampler.
///
/// Every conversion is written for a point of the variance-preserving process
///   x_t = alpha_t x0 + sigma_t eps,   alpha_t = sqrt(abar_t),  sigma_t = sqrt(1 - abar_t)
/// with the velocity v = alpha_t eps - sigma_t x0 (Salimans & Ho 2022). The expressions are
/// written exactly as diffusers v0.31.0 writes them (same operand order), so float32 results
/// are bit-identical to it. Samplers in the sigma (Karras / k-diffusion) parameterisation pass
/// alpha = 1 / sqrt(sigma^2 + 1) and sigma_vp = sigma alpha (see samplers/sigmas.hpp).
///
/// x0 post-processing (clipping to a range, or dynamic thresholding, Saharia et al. 2022) lives
/// here too: it is the same for every sampler that offers it.
#include <ddpm/detail/json_enum.hpp>
#include <ddpm/error.hpp>

#include <torch/types.h>

#include <nlohmann/json.hpp>

#include <string>

namespace ddpm {

/// What the model predicts (diffusers `prediction_type`).
enum class PredictionType { Epsilon, Sample, VPrediction };

namespace detail {
inline const EnumNames<PredictionType>& prediction_type_names() {
  static const EnumNames<PredictionType> names = {{PredictionType::Epsilon, "epsilon"},
                                                  {PredictionType::Sample, "sample"},
                                                  {PredictionType::VPrediction, "v_prediction"}};
  return names;
}
}  // namespace detail

DDPM_JSON_ENUM(PredictionType, detail::prediction_type_names, "prediction_type")

/// x0 implied by a model output at x_t = alpha x0 + sigma eps (alpha, sigma broadcast against
/// x_t: 0-dim tensors or [B, 1, ...]):
///   epsilon: (x_t - sigma eps) / alpha;  sample: the output;  v: alpha x_t - sigma v.
inline torch::Tensor predict_x0(const torch::Tensor& model_output, const torch::Tensor& x_t,
                                const torch::Tensor& alpha, const torch::Tensor& sigma,
                                PredictionType type) {
  switch (type) {
    case PredictionType::Epsilon: return (x_t - sigma * model_output) / alpha;
    case PredictionType::Sample: return model_output;
    case PredictionType::VPrediction: return alpha * x_t - sigma * model_output;
  }
  TORCH_CHECK(false, "predict_x0: invalid prediction type ", static_cast<int>(type));
}

/// eps implied by a model output at x_t = alpha x0 + sigma eps:
///   epsilon: the output;  sample: (x_t - alpha x0) / sigma;  v: alpha v + sigma x_t.
inline torch::Tensor predict_epsilon(const torch::Tensor& model_output, const torch::Tensor& x_t,
                                     const torch::Tensor& alpha, const torch::Tensor& sigma,
                                     PredictionType type) {
  switch (type) {
    case PredictionType::Epsilon: return model_output;
    case PredictionType::Sample: return (x_t - alpha * model_output) / sigma;
    case PredictionType::VPrediction: return alpha * model_output + sigma * x_t;
  }
  TORCH_CHECK(false, "predict_epsilon: invalid prediction type ", static_cast<int>(type));
}

/// x0 implied by a model output at the variance-exploding sample x = x0 + sigma eps (Karras /
/// k-diffusion form used by the Euler and Heun samplers; sigma a 0-dim tensor), with diffusers'
/// operand order: epsilon: x - sigma eps;  sample: the output;
/// v: v (-sigma / sqrt(sigma^2 + 1)) + x / (sigma^2 + 1).
inline torch::Tensor predict_x0_from_sigma(const torch::Tensor& model_output, const torch::Tensor& sample,
                                           const torch::Tensor& sigma, PredictionType type) {
  switch (type) {
    case PredictionType::Epsilon: return sample - sigma * model_output;
    case PredictionType::Sample: return model_output;
    case PredictionType::VPrediction:
      return model_output * (-sigma / (sigma * sigma + 1).sqrt()) + (sample / (sigma * sigma + 1));
  }
  TORCH_CHECK(false, "predict_x0_from_sigma: invalid prediction type ", static_cast<int>(type));
}

/// x0 clipping to [-range, range] (diffusers `clip_sample`).
inline torch::Tensor clip_x0(const torch::Tensor& x0, double range) { return x0.clamp(-range, range); }

/// Dynamic thresholding (Saharia et al. 2022, "Imagen"; diffusers `_threshold_sample`): per
/// sample s = quantile(|x0|, ratio) clamped to [1, max_value]; x0 = clamp(x0, -s, s) / s.
/// x0 [B, ...] with at least 2 dims; computed in float32 for half inputs, as diffusers does.
inline torch::Tensor threshold_x0(const torch::Tensor& x0, double ratio, double max_value) {
  TORCH_CHECK(x0.dim() >= 2, "dynamic thresholding needs a batched sample [B, C, ...], got shape ",
              x0.sizes());
  const auto dtype = x0.scalar_type();
  auto s = x0;
  if (dtype != torch::kFloat32 && dtype != torch::kFloat64) s = s.to(torch::kFloat32);
  const auto sizes = s.sizes().vec();
  s = s.reshape({sizes[0], -1});
  auto q = torch::quantile(s.abs(), ratio, /*dim=*/1);
  q = q.clamp(1.0, max_value).unsqueeze(1);
  s = torch::max(torch::min(s, q), -q) / q;
  return s.reshape(sizes).to(dtype);
}

/// How a sampler post-processes its x0 estimate: thresholding wins over clipping, as in diffusers.
struct X0Processing {
  bool thresholding = false;
  double dynamic_thresholding_ratio = 0.995;
  double sample_max_value = 1.0;
  bool clip_sample = false;
  double clip_sample_range = 1.0;
};

/// Applies X0Processing to x0 [B, ...].
inline torch::Tensor process_x0(const torch::Tensor& x0, const X0Processing& p) {
  if (p.thresholding) return threshold_x0(x0, p.dynamic_thresholding_ratio, p.sample_max_value);
  if (p.clip_sample) return clip_x0(x0, p.clip_sample_range);
  return x0;
}

namespace detail {
/// Checks thresholding options (throws ddpm::Error naming `where`).
inline void check_threshold_options(double ratio, double max_value, const std::string& where) {
  if (!(ratio > 0 && ratio <= 1)) {
    throw Error(where + ": dynamic_thresholding_ratio must be in (0, 1], got " + std::to_string(ratio));
  }
  if (!(max_value > 0)) {
    throw Error(where + ": sample_max_value must be > 0, got " + std::to_string(max_value));
  }
}
}  // namespace detail

}  // namespace ddpm
