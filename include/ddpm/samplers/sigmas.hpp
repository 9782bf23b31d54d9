#pragma once
/// Sigma (k-diffusion / Karras et al. 2022) parameterisation shared by the Euler, Heun, UniPC and
/// DPM-Solver samplers, computed as diffusers v0.31.0 computes it (numpy float64 where diffusers
/// uses numpy, float32 where it uses torch):
///   sigma_t = sqrt((1 - abar_t) / abar_t)                    (torch, float32 schedule)
///   x_sigma = x_vp / alpha_t = x_vp sqrt(sigma^2 + 1)        (the variance-exploding sample)
///   alpha = 1 / sqrt(sigma^2 + 1),  sigma_vp = sigma alpha,  lambda = log alpha - log sigma_vp
///   Karras sigmas (rho = 7): (s_max^(1/rho) + ramp (s_min^(1/rho) - s_max^(1/rho)))^rho,
///       ramp = linspace(0, 1, N)
///   sigma_to_t: piecewise-linear interpolation of t in log sigma (diffusers `_sigma_to_t`)
///   np_interp: numpy's np.interp (float64, exact x == xp[j] returns fp[j])
#include <ddpm/prediction.hpp>
#include <ddpm/samplers/common.hpp>

#include <c10/util/Optional.h>
#include <torch/types.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

namespace ddpm {
namespace detail {

/// Training sigmas [T] = sqrt((1 - abar) / abar) in abar's dtype (bit-exact to diffusers' torch
/// expression `((1 - ac) / ac) ** 0.5`).
inline torch::Tensor sigmas_from_alphas_cumprod(const torch::Tensor& alphas_cumprod) {
  return ((1.0 - alphas_cumprod) / alphas_cumprod).sqrt();
}

/// A 1-D CPU tensor as a std::vector<double> (float32 values widened exactly).
inline std::vector<double> to_double_vector(const torch::Tensor& t) {
  const auto c = t.to(torch::kFloat64).cpu().contiguous();
  return std::vector<double>(c.data_ptr<double>(), c.data_ptr<double>() + c.numel());
}

/// np.interp(x, xp, fp) in float64 with xp increasing: left/right values outside the range; the
/// slope form slope * (x - xp[j]) + fp[j] numpy uses; x == xp[j] gives fp[j] exactly.
inline std::vector<double> np_interp(const std::vector<double>& x, const std::vector<double>& xp,
                                     const std::vector<double>& fp) {
  TORCH_CHECK(!xp.empty() && xp.size() == fp.size(), "np_interp: xp and fp must be non-empty and of equal length");
  std::vector<double> out(x.size());
  for (size_t i = 0; i < x.size(); ++i) {
    const double v = x[i];
    if (std::isnan(v)) {
      out[i] = v;
    } else if (v < xp.front()) {
      out[i] = fp.front();
    } else if (v >= xp.back()) {
      out[i] = fp.back();
    } else {
      const size_t j = static_cast<size_t>(std::upper_bound(xp.begin(), xp.end(), v) - xp.begin()) - 1;
      if (v == xp[j]) {
        out[i] = fp[j];
      } else {
        const double slope = (fp[j + 1] - fp[j]) / (xp[j + 1] - xp[j]);
        out[i] = slope * (v - xp[j]) + fp[j];
        if (std::isnan(out[i])) out[i] = slope * (v - xp[j + 1]) + fp[j + 1];
      }
    }
  }
  return out;
}

/// sigma(t) for float timesteps: np.interp(t, arange(T), train_sigmas) (float64).
inline std::vector<double> interp_sigmas(const std::vector<double>& timesteps, const torch::Tensor& train_sigmas) {
  const auto fp = to_double_vector(train_sigmas);
  std::vector<double> xp(fp.size());
  for (size_t i = 0; i < xp.size(); ++i) xp[i] = static_cast<double>(i);
  return np_interp(timesteps, xp, fp);
}

/// Karras et al. (2022) eq. 5 sigmas, rho = 7, from sigma_max down to sigma_min [N] (float64,
/// as diffusers' `_convert_to_karras`).
inline std::vector<double> karras_sigmas(double sigma_min, double sigma_max, int64_t n, double rho = 7.0) {
  const auto ramp = np_linspace(0.0, 1.0, n);
  const double min_inv_rho = std::pow(sigma_min, 1.0 / rho);
  const double max_inv_rho = std::pow(sigma_max, 1.0 / rho);
  std::vector<double> out(ramp.size());
  for (size_t i = 0; i < ramp.size(); ++i) out[i] = std::pow(max_inv_rho + ramp[i] * (min_inv_rho - max_inv_rho), rho);
  return out;
}

/// log of the training sigmas as float32 values (diffusers: np.log of a float32 array).
inline std::vector<float> log_train_sigmas(const torch::Tensor& train_sigmas) {
  const auto l = train_sigmas.to(torch::kFloat32).log().contiguous();
  return std::vector<float>(l.data_ptr<float>(), l.data_ptr<float>() + l.numel());
}

/// diffusers `_sigma_to_t`: the fractional training timestep whose log sigma is log(sigma),
/// interpolating linearly between the two neighbouring training log sigmas (clipped to [0, T-1]).
inline double sigma_to_t(double sigma, const std::vector<float>& log_sigmas) {
  const double log_sigma = std::log(std::max(sigma, 1e-10));
  const int64_t T = static_cast<int64_t>(log_sigmas.size());
  TORCH_CHECK(T >= 2, "sigma_to_t needs at least 2 training sigmas");
  // low_idx = argmax(cumsum(dists >= 0)) = the last index whose log sigma <= log_sigma (0 if none)
  int64_t count = 0, best = -1, low = 0;
  for (int64_t i = 0; i < T; ++i) {
    if (log_sigma - static_cast<double>(log_sigmas[static_cast<size_t>(i)]) >= 0) ++count;
    if (count > best) {
      best = count;
      low = i;
    }
  }
  low = std::min(low, T - 2);
  const int64_t high = low + 1;
  const float lo = log_sigmas[static_cast<size_t>(low)];
  const float hi = log_sigmas[static_cast<size_t>(high)];
  double w = (static_cast<double>(lo) - log_sigma) / static_cast<double>(lo - hi);
  w = std::min(std::max(w, 0.0), 1.0);
  return (1.0 - w) * static_cast<double>(low) + w * static_cast<double>(high);
}

/// Float timesteps of the Euler / Heun samplers before any sigma conversion (diffusers
/// EulerDiscreteScheduler.set_timesteps, computed in float32 as numpy does):
///   linspace: linspace(0, T-1, N, dtype=float32)[::-1]
///   leading:  round(arange(N) * (T // N))[::-1] + steps_offset
///   trailing: round(arange(T, 0, -T/N)) - 1
inline std::vector<double> float_spaced_timesteps(int64_t T, int64_t N, TimestepSpacing spacing,
                                                  int64_t steps_offset, const char* where) {
  check_num_inference_steps(N, T, where);
  std::vector<double> ts;
  switch (spacing) {
    case TimestepSpacing::Linspace: {
      // np.linspace(..., dtype=float32) computes in float64 and casts.
      const auto lin = np_linspace(0.0, static_cast<double>(T - 1), N);
      for (auto it = lin.rbegin(); it != lin.rend(); ++it) ts.push_back(static_cast<double>(static_cast<float>(*it)));
      break;
    }
    case TimestepSpacing::Leading: {
      check_steps_offset(steps_offset, T, where);
      const int64_t ratio = T / N;
      for (int64_t i = N - 1; i >= 0; --i) {
        ts.push_back(static_cast<double>(static_cast<float>(static_cast<double>(i * ratio)) +
                                         static_cast<float>(steps_offset)));
      }
      break;
    }
    case TimestepSpacing::Trailing: {
      const double ratio = static_cast<double>(T) / static_cast<double>(N);
      for (double v : np_arange(static_cast<double>(T), 0.0, -ratio)) {
        ts.push_back(static_cast<double>(static_cast<float>(np_round(v)) - 1.0f));
      }
      break;
    }
  }
  for (size_t i = 0; i < ts.size(); ++i) {
    TORCH_CHECK(ts[i] >= 0 && ts[i] <= static_cast<double>(T - 1), where, ": inference timestep ", ts[i],
                " (index ", i, ") is out of range [0, ", T - 1, "]; check steps_offset and timestep_spacing");
  }
  return ts;
}

/// Rounds doubles to float32 and back (numpy .astype(np.float32)).
inline std::vector<double> round_to_float32(std::vector<double> v) {
  for (auto& x : v) x = static_cast<double>(static_cast<float>(x));
  return v;
}

/// A list of doubles as a float32 tensor [n] (numpy .astype(np.float32) then torch.from_numpy).
inline torch::Tensor float32_tensor(const std::vector<double>& v) {
  return torch::tensor(v, torch::kFloat64).to(torch::kFloat32);
}

/// alpha = 1/sqrt(sigma^2 + 1), sigma_vp = sigma alpha, lambda = log alpha - log sigma_vp for a
/// 0-dim sigma tensor (diffusers `_sigma_to_alpha_sigma_t`; lambda = +inf at sigma = 0).
struct AlphaSigmaLambda {
  torch::Tensor alpha, sigma, lambda;
};
inline AlphaSigmaLambda alpha_sigma_lambda(const torch::Tensor& sigma) {
  const auto alpha = (sigma * sigma + 1).sqrt().reciprocal();
  const auto sig = sigma * alpha;
  return {alpha, sig, alpha.log() - sig.log()};
}

/// Timesteps and sigmas [N+1] (float64, before diffusers' float32 cast) of the Euler-type samplers
/// (EulerDiscrete, EulerAncestralDiscrete, HeunDiscrete set_timesteps): spaced float timesteps,
/// sigmas = np.interp(t, arange(T), train_sigmas); with Karras sigmas, sigma_min / sigma_max
/// default to the interpolated last / first sigma and the timesteps become sigma_to_t(sigma);
/// then sigma_last is appended.
struct SigmaSchedule {
  std::vector<double> timesteps;
  std::vector<double> sigmas;
};
inline SigmaSchedule euler_sigma_schedule(const torch::Tensor& train_sigmas, int64_t N, TimestepSpacing spacing,
                                          int64_t steps_offset, bool karras, c10::optional<double> sigma_min,
                                          c10::optional<double> sigma_max, double sigma_last, const char* where) {
  const int64_t T = train_sigmas.size(0);
  SigmaSchedule s;
  s.timesteps = float_spaced_timesteps(T, N, spacing, steps_offset, where);
  s.sigmas = interp_sigmas(s.timesteps, train_sigmas);
  if (karras) {
    const double lo = sigma_min.has_value() ? *sigma_min : s.sigmas.back();
    const double hi = sigma_max.has_value() ? *sigma_max : s.sigmas.front();
    s.sigmas = karras_sigmas(lo, hi, N);
    const auto log_sigmas = log_train_sigmas(train_sigmas);
    for (size_t i = 0; i < s.sigmas.size(); ++i) s.timesteps[i] = sigma_to_t(s.sigmas[i], log_sigmas);
  }
  s.sigmas.push_back(sigma_last);
  return s;
}

/// Checks model_output / sample of a step (shapes equal, floating point).
inline void check_float_step_inputs(const torch::Tensor& model_output, const torch::Tensor& sample, const char* where) {
  TORCH_CHECK(model_output.defined() && sample.defined(), where, ": model_output and sample must be defined tensors");
  TORCH_CHECK(model_output.sizes() == sample.sizes(), where, ": model_output has shape ", model_output.sizes(),
              " but sample has shape ", sample.sizes());
  TORCH_CHECK(at::isFloatingType(sample.scalar_type()), where, ": sample must be floating point, got ",
              sample.scalar_type());
}

/// The step index of timestep t in `timesteps` as diffusers' index_for_timestep: the second
/// match when t occurs more than once (so that a restart lands after a duplicated first entry).
inline int64_t index_for_timestep(const std::vector<double>& timesteps, double t, const char* where) {
  std::vector<int64_t> hits;
  for (size_t i = 0; i < timesteps.size(); ++i) {
    if (timesteps[i] == t) hits.push_back(static_cast<int64_t>(i));
  }
  TORCH_CHECK(!hits.empty(), where, ": timestep ", t, " is not one of the ", timesteps.size(),
              " inference timesteps set by set_timesteps");
  return hits.size() > 1 ? hits[1] : hits[0];
}

/// Sets step_index on the first call of a trajectory (index_for_timestep), else checks that t is
/// the timestep the sampler expects next.
inline void locate_step(const std::vector<double>& timesteps, int64_t& step_index, double t, const char* where) {
  TORCH_CHECK(!timesteps.empty(), where, ": set_timesteps(num_inference_steps) must be called first");
  if (step_index < 0) {
    step_index = index_for_timestep(timesteps, t, where);
    return;
  }
  const int64_t N = static_cast<int64_t>(timesteps.size());
  TORCH_CHECK(step_index < N, where, ": all ", N, " steps were already taken; call set_timesteps() or reset()");
  TORCH_CHECK(timesteps[static_cast<size_t>(step_index)] == t, where, ": expected timestep ",
              timesteps[static_cast<size_t>(step_index)], " (step ", step_index, " of ", N, "), got ", t);
}

/// Euler-family init_noise_sigma: max sigma (linspace, trailing) or sqrt(max^2 + 1) (leading),
/// computed in the sigmas' dtype as diffusers does.
inline double euler_init_noise_sigma(const torch::Tensor& sigmas, TimestepSpacing spacing) {
  if (!sigmas.defined() || sigmas.numel() == 0) return 1.0;
  const auto m = sigmas.max();
  if (spacing == TimestepSpacing::Leading) return (m * m + 1).sqrt().item<double>();
  return m.item<double>();
}

/// A sigma schedule as the Euler-type samplers store it (diffusers' casts): the sigmas in the
/// schedule's dtype, the timesteps rounded to float32 unless the schedule is float64.
inline torch::Tensor sigmas_in(const std::vector<double>& sigmas, torch::ScalarType dtype) {
  return torch::tensor(sigmas, torch::kFloat64).to(dtype);
}
inline std::vector<double> timesteps_in(const std::vector<double>& timesteps, torch::ScalarType dtype) {
  return dtype == torch::kFloat64 ? timesteps : round_to_float32(timesteps);
}

/// scale_model_input of the sigma samplers (Euler, Euler ancestral, Heun): locates t
/// (locate_step) and returns sample / sqrt(sigma^2 + 1) at that step, as diffusers computes it.
inline torch::Tensor scale_by_sigma(const torch::Tensor& sample, const std::vector<double>& timesteps,
                                    const torch::Tensor& sigmas, int64_t& step_index, double t, const char* where) {
  locate_step(timesteps, step_index, t, where);
  const auto sigma = sigmas[step_index];
  return sample / (sigma * sigma + 1).sqrt();
}

/// The start of an Euler / Euler ancestral step: checks the inputs, locates t (locate_step), and
/// gives the sample in the working dtype (float64 for a float64 schedule, else float32), the
/// sigma at the step and the x0 the model output predicts (predict_x0_from_sigma).
struct SigmaStepStart {
  torch::Tensor x, sigma, x0;
};
inline SigmaStepStart sigma_step_start(const torch::Tensor& model_output, const torch::Tensor& sample, double t,
                                       const std::vector<double>& timesteps, const torch::Tensor& sigmas,
                                       int64_t& step_index, torch::ScalarType schedule_dtype,
                                       PredictionType prediction_type, const char* where) {
  check_float_step_inputs(model_output, sample, where);
  locate_step(timesteps, step_index, t, where);
  const auto work = schedule_dtype == torch::kFloat64 ? torch::kFloat64 : torch::kFloat32;
  const auto x = sample.to(work);
  const auto sigma = sigmas[step_index];
  return {x, sigma, predict_x0_from_sigma(model_output, x, sigma, prediction_type)};
}

}  // namespace detail
}  // namespace ddpm
