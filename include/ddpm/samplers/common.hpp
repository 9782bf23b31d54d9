#pragma once
/// Pieces shared by the samplers (DDPM, DDIM, DPM-Solver++, ...): timestep spacing exactly as
/// diffusers v0.31.0 / numpy compute it, noise drawing and argument checks. (x0 conversions,
/// clipping and thresholding are in prediction.hpp; the protocol in samplers/protocol.hpp.)
#include <ddpm/detail/json_enum.hpp>
#include <ddpm/detail/json_util.hpp>
#include <ddpm/error.hpp>
#include <ddpm/prediction.hpp>
#include <ddpm/samplers/protocol.hpp>
#include <ddpm/schedule.hpp>

#include <ATen/core/Generator.h>
#include <c10/util/Optional.h>
#include <torch/types.h>

#include <nlohmann/json.hpp>

#include <cmath>
#include <cstdint>
#include <initializer_list>
#include <string>
#include <vector>

namespace ddpm {

/// How inference timesteps are picked from 0..T-1 (diffusers `timestep_spacing`; see
/// Lin et al. 2023, Table 2).
enum class TimestepSpacing { Leading, Trailing, Linspace };

namespace detail {
inline const EnumNames<TimestepSpacing>& timestep_spacing_names() {
  static const EnumNames<TimestepSpacing> names = {{TimestepSpacing::Leading, "leading"},
                                                   {TimestepSpacing::Trailing, "trailing"},
                                                   {TimestepSpacing::Linspace, "linspace"}};
  return names;
}
}  // namespace detail

DDPM_JSON_ENUM(TimestepSpacing, detail::timestep_spacing_names, "timestep_spacing")

namespace detail {

/// numpy's np.round / ndarray.round: round half to even (166.5 -> 166, 499.5 -> 500).
/// std::round would round half away from zero. Relies on the default FE_TONEAREST mode.
inline double np_round(double x) { return std::nearbyint(x); }

/// np.linspace(start, stop, num) (endpoint=True), element by element as numpy computes it:
/// y[i] = i * ((stop - start) / (num - 1)) + start, y[num-1] = stop.
inline std::vector<double> np_linspace(double start, double stop, int64_t num) {
  std::vector<double> y(static_cast<size_t>(std::max<int64_t>(num, 0)));
  if (num <= 0) return y;
  const int64_t div = num - 1;
  const double delta = stop - start;
  for (int64_t i = 0; i < num; ++i) {
    double v = static_cast<double>(i);
    if (div > 0) {
      const double step = delta / static_cast<double>(div);
      v = (step == 0) ? v / static_cast<double>(div) * delta : v * step;
    } else {
      v = v * delta;
    }
    y[static_cast<size_t>(i)] = v + start;
  }
  if (num > 1) y.back() = stop;
  return y;
}

/// np.arange(start, stop, step) for doubles: length ceil((stop - start) / step); numpy fills
/// y[0] = start, y[1] = start + step, y[i] = start + i * (y[1] - y[0]).
inline std::vector<double> np_arange(double start, double stop, double step) {
  const double len_d = std::ceil((stop - start) / step);
  const int64_t len = len_d > 0 ? static_cast<int64_t>(len_d) : 0;
  std::vector<double> y(static_cast<size_t>(len));
  if (len == 0) return y;
  y[0] = start;
  if (len == 1) return y;
  y[1] = start + step;
  const double delta = y[1] - y[0];
  for (int64_t i = 2; i < len; ++i) y[static_cast<size_t>(i)] = start + static_cast<double>(i) * delta;
  return y;
}

/// Throws ddpm::Error unless 0 < n <= T, naming both (a setting, not a tensor: the sampler
/// protocol's contract, and exit status 2 in the CLIs).
inline void check_num_inference_steps(int64_t n, int64_t T, const char* where) {
  if (n <= 0 || n > T) {
    throw Error(std::string(where) + ": num_inference_steps must be in [1, num_train_timesteps = " + std::to_string(T) +
                "], got " + std::to_string(n));
  }
}

/// Throws unless 0 <= steps_offset < T (the "leading" spacing adds it to timesteps in [0, T);
/// checked before that sum, so a huge offset cannot overflow; the other spacings ignore it).
inline void check_steps_offset(int64_t steps_offset, int64_t T, const char* where) {
  if (steps_offset < 0 || steps_offset >= T) {
    throw Error(std::string(where) + ": steps_offset must be in [0, num_train_timesteps = " + std::to_string(T) +
                "), got " + std::to_string(steps_offset));
  }
}

/// Throws if any timestep is outside [0, T) (e.g. a large steps_offset).
inline void check_timestep_list(const std::vector<int64_t>& ts, int64_t T, const char* where) {
  for (size_t i = 0; i < ts.size(); ++i) {
    TORCH_CHECK(ts[i] >= 0 && ts[i] < T, where, ": inference timestep ", ts[i], " (index ", i,
                ") is out of range [0, ", T, "); check steps_offset and timestep_spacing");
  }
}

/// DDPMScheduler / DDIMScheduler.set_timesteps (diffusers v0.31.0), descending:
///   leading:  arange(N) * (T // N) + steps_offset, reversed
///   trailing: round(arange(T, 0, -T/N)) - 1
///   linspace: round(linspace(0, T-1, N)), reversed
/// (Trailing may produce one extra entry of -1 from numpy's float arange for some N, e.g.
/// N = 61 with T = 1000; diffusers would then index alphas_cumprod[-1]. Such negative
/// entries are dropped here.)
inline std::vector<int64_t> spaced_timesteps(int64_t T, int64_t N, TimestepSpacing spacing,
                                             int64_t steps_offset, const char* where) {
  check_num_inference_steps(N, T, where);
  std::vector<int64_t> ts;
  switch (spacing) {
    case TimestepSpacing::Leading: {
      check_steps_offset(steps_offset, T, where);
      const int64_t ratio = T / N;
      for (int64_t i = N - 1; i >= 0; --i) ts.push_back(i * ratio + steps_offset);
      break;
    }
    case TimestepSpacing::Trailing: {
      const double ratio = static_cast<double>(T) / static_cast<double>(N);
      for (double v : np_arange(static_cast<double>(T), 0.0, -ratio)) {
        const auto r = static_cast<int64_t>(np_round(v)) - 1;
        if (r >= 0) ts.push_back(r);
      }
      break;
    }
    case TimestepSpacing::Linspace: {
      const auto lin = np_linspace(0.0, static_cast<double>(T - 1), N);
      for (auto it = lin.rbegin(); it != lin.rend(); ++it) ts.push_back(static_cast<int64_t>(np_round(*it)));
      break;
    }
  }
  check_timestep_list(ts, T, where);
  return ts;
}

/// Standard normal noise shaped like `like`, drawn with `generator` (default CPU generator
/// when absent) on the generator's device (CPU unless a CUDA generator is given, see
/// ddpm::make_generator) in float32 (float64 for float64 samples), then moved to like's device/dtype.
inline torch::Tensor draw_noise_like(const torch::Tensor& like, const c10::optional<at::Generator>& generator) {
  const auto draw_dtype = like.scalar_type() == torch::kFloat64 ? torch::kFloat64 : torch::kFloat32;
  c10::optional<at::Generator> g;
  if (generator.has_value() && generator->defined()) g = generator;
  const torch::Device on = g.has_value() ? g->device() : torch::Device(torch::kCPU);
  return torch::randn(like.sizes(), g, torch::TensorOptions().dtype(draw_dtype).device(on))
      .to(like.device(), like.scalar_type());
}

/// Checks the arguments of a sampler step.
inline void check_step_inputs(const torch::Tensor& model_output, int64_t t, const torch::Tensor& sample,
                              int64_t T, const char* where) {
  TORCH_CHECK(model_output.defined() && sample.defined(), where,
              ": model_output and sample must be defined tensors");
  TORCH_CHECK(model_output.sizes() == sample.sizes(), where, ": model_output has shape ",
              model_output.sizes(), " but sample has shape ", sample.sizes());
  TORCH_CHECK(at::isFloatingType(sample.scalar_type()), where, ": sample must be floating point, got ",
              sample.scalar_type());
  TORCH_CHECK(t >= 0 && t < T, where, ": timestep ", t, " is out of range [0, ", T, ")");
}

inline void check_variance_noise(const c10::optional<torch::Tensor>& noise, const torch::Tensor& sample,
                                 const char* where) {
  if (noise.has_value() && noise->defined()) {
    TORCH_CHECK(noise->sizes() == sample.sizes(), where, ": variance_noise has shape ", noise->sizes(),
                " but sample has shape ", sample.sizes());
  }
}

/// The keys of the noise schedule inside a scheduler_config (shared by every sampler).
inline std::vector<const char*> with_schedule_keys(std::initializer_list<const char*> own) {
  std::vector<const char*> keys = {"num_train_timesteps", "beta_start", "beta_end", "beta_schedule",
                                   "trained_betas", "rescale_betas_zero_snr", "dtype"};
  keys.insert(keys.end(), own.begin(), own.end());
  return keys;
}

/// A protocol timestep (double) as the integer training timestep a discrete sampler steps at;
/// throws c10::Error naming `where` if t is not an integer.
inline int64_t integer_timestep(double t, const char* where) {
  TORCH_CHECK(std::isfinite(t) && t == std::floor(t) && std::abs(t) < 9.0e15, where,
              ": timestep ", t, " is not an integer (this sampler steps on integer timesteps)");
  return static_cast<int64_t>(t);
}

/// Reads an optional number that may be null (diffusers' sigma_min / sigma_max).
inline void get_optional_nullable_double(const nlohmann::json& j, const char* key, c10::optional<double>& out,
                                         const std::string& ctx) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return;
  if (!it->is_number()) throw Error(ctx + ": \"" + key + "\" must be a number or null, got " + it->dump());
  out = it->get<double>();
}
/// An optional number as JSON (null when absent).
inline nlohmann::json nullable(const c10::optional<double>& v) {
  return v.has_value() ? nlohmann::json(*v) : nlohmann::json(nullptr);
}
/// Rejects `true` for diffusers sigma options ddpm does not implement.
inline void reject_true(const nlohmann::json& j, std::initializer_list<const char*> keys, const std::string& ctx) {
  for (const char* k : keys) {
    bool v = false;
    get_optional(j, k, v, ctx);
    if (v) throw Error(ctx + ": \"" + k + "\": true is not supported");
  }
}
/// Rejects a string key whose value is not `allowed`.
inline void require_string(const nlohmann::json& j, const char* key, const char* allowed, const std::string& ctx) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return;
  if (!it->is_string() || it->get<std::string>() != allowed) {
    throw Error(ctx + ": \"" + key + "\" = " + it->dump() + " is not supported (only \"" + allowed + "\")");
  }
}
/// alphas_cumprod with diffusers' 2^-24 substitution for zero-terminal-SNR schedules.
inline torch::Tensor sampler_alphas_cumprod(const NoiseSchedule& s, bool rescale_zero_snr) {
  auto ac = s.alphas_cumprod().clone();
  if (rescale_zero_snr) ac[-1] = std::pow(2.0, -24);
  return ac;
}
/// Integer timesteps as the protocol's doubles.
inline std::vector<double> as_double_timesteps(const std::vector<int64_t>& ts) {
  return std::vector<double>(ts.begin(), ts.end());
}

}  // namespace detail
}  // namespace ddpm
