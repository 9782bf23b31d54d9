#pragma once
/// A type-erased sampler (DDPM, DDIM or DPM-Solver++) built from a diffusers
/// scheduler_config.json, and the inverse: writing a config diffusers can load.
#include <ddpm/detail/json_enum.hpp>
#include <ddpm/detail/json_util.hpp>
#include <ddpm/error.hpp>
#include <ddpm/samplers/common.hpp>
#include <ddpm/samplers/ddim.hpp>
#include <ddpm/samplers/ddpm.hpp>
#include <ddpm/samplers/dpm_solver.hpp>

#include <c10/util/Optional.h>
#include <torch/types.h>

#include <nlohmann/json.hpp>

#include <cmath>
#include <fstream>
#include <sstream>
#include <string>
#include <type_traits>
#include <utility>
#include <variant>
#include <vector>

namespace ddpm {

/// Which sampler; JSON / CLI names "ddpm", "ddim", "dpm++".
enum class SamplerKind { DDPM, DDIM, DPMSolver };

namespace detail {
inline const EnumNames<SamplerKind>& sampler_kind_names() {
  static const EnumNames<SamplerKind> names = {
      {SamplerKind::DDPM, "ddpm"}, {SamplerKind::DDIM, "ddim"}, {SamplerKind::DPMSolver, "dpm++"}};
  return names;
}
/// diffusers class name of each kind.
inline const char* scheduler_class_name(SamplerKind k) {
  switch (k) {
    case SamplerKind::DDPM: return "DDPMScheduler";
    case SamplerKind::DDIM: return "DDIMScheduler";
    case SamplerKind::DPMSolver: return "DPMSolverMultistepScheduler";
  }
  return "?";
}
}  // namespace detail

DDPM_JSON_ENUM(SamplerKind, detail::sampler_kind_names, "sampler")

/// Parses "ddpm" / "ddim" / "dpm++" (throws ddpm::Error listing the valid names).
inline SamplerKind sampler_kind_from_string(const std::string& name) {
  return detail::enum_from_string(name, detail::sampler_kind_names(), "sampler");
}
/// "ddpm" / "ddim" / "dpm++".
inline std::string sampler_kind_name(SamplerKind k) {
  return detail::enum_to_string(k, detail::sampler_kind_names(), "sampler");
}

/// One of DDPMSampler, DDIMSampler, DPMSolverSampler behind a single interface.
class AnySampler {
 public:
  using Variant = std::variant<DDPMSampler, DDIMSampler, DPMSolverSampler>;

  AnySampler(DDPMSampler s) : impl_(std::move(s)) {}         // NOLINT(google-explicit-constructor)
  AnySampler(DDIMSampler s) : impl_(std::move(s)) {}         // NOLINT(google-explicit-constructor)
  AnySampler(DPMSolverSampler s) : impl_(std::move(s)) {}    // NOLINT(google-explicit-constructor)

  SamplerKind kind() const {
    switch (impl_.index()) {
      case 0: return SamplerKind::DDPM;
      case 1: return SamplerKind::DDIM;
      default: return SamplerKind::DPMSolver;
    }
  }

  void set_timesteps(int64_t num_inference_steps) {
    std::visit([&](auto& s) { s.set_timesteps(num_inference_steps); }, impl_);
  }
  const std::vector<int64_t>& timesteps() const {
    return std::visit([](const auto& s) -> const std::vector<int64_t>& { return s.timesteps(); }, impl_);
  }
  int64_t num_inference_steps() const {
    return std::visit([](const auto& s) { return s.num_inference_steps(); }, impl_);
  }
  SamplerStepOutput step(const torch::Tensor& model_output, int64_t t, const torch::Tensor& sample,
                         c10::optional<torch::Generator> generator = c10::nullopt,
                         c10::optional<torch::Tensor> variance_noise = c10::nullopt) {
    return std::visit(
        [&](auto& s) { return s.step(model_output, t, sample, generator, variance_noise); }, impl_);
  }
  double init_noise_sigma() const {
    return std::visit([](const auto& s) { return s.init_noise_sigma(); }, impl_);
  }
  const NoiseSchedule& schedule() const {
    return std::visit([](const auto& s) -> const NoiseSchedule& { return s.schedule(); }, impl_);
  }
  PredictionType prediction_type() const {
    return std::visit([](const auto& s) { return s.options().prediction_type(); }, impl_);
  }
  void reset() {
    std::visit([](auto& s) { s.reset(); }, impl_);
  }

  /// The wrapped sampler, or nullptr if it is another kind.
  template <class S>
  S* get_if() { return std::get_if<S>(&impl_); }
  template <class S>
  const S* get_if() const { return std::get_if<S>(&impl_); }
  const Variant& variant() const { return impl_; }
  Variant& variant() { return impl_; }

 private:
  Variant impl_;
};

/// Builds a sampler from a diffusers scheduler_config object, like diffusers' from_config.
/// The kind defaults from "_class_name" (DDPMScheduler, DDIMScheduler,
/// DPMSolverMultistepScheduler); passing `kind` overrides it (keys meant for the other
/// schedulers are then ignored, as diffusers does). Any key that belongs to none of the three
/// is rejected, naming it.
inline AnySampler make_sampler(const nlohmann::json& scheduler_config,
                               c10::optional<SamplerKind> kind = c10::nullopt) {
  if (!scheduler_config.is_object()) {
    throw Error("scheduler config must be a JSON object, got " + scheduler_config.dump());
  }
  SamplerKind k;
  if (kind.has_value()) {
    k = *kind;
  } else {
    auto it = scheduler_config.find("_class_name");
    if (it == scheduler_config.end() || !it->is_string()) {
      throw Error("scheduler config has no \"_class_name\"; pass the sampler kind explicitly "
                  "(ddpm, ddim or dpm++)");
    }
    const auto cls = it->get<std::string>();
    if (cls == "DDPMScheduler") {
      k = SamplerKind::DDPM;
    } else if (cls == "DDIMScheduler") {
      k = SamplerKind::DDIM;
    } else if (cls == "DPMSolverMultistepScheduler") {
      k = SamplerKind::DPMSolver;
    } else {
      throw Error("unsupported scheduler \"_class_name\": \"" + cls +
                  "\"; supported are DDPMScheduler, DDIMScheduler, DPMSolverMultistepScheduler "
                  "(or pass the sampler kind explicitly)");
    }
  }
  switch (k) {
    case SamplerKind::DDPM: return DDPMSampler(scheduler_config.get<DDPMSamplerOptions>());
    case SamplerKind::DDIM: return DDIMSampler(scheduler_config.get<DDIMSamplerOptions>());
    case SamplerKind::DPMSolver: return DPMSolverSampler(scheduler_config.get<DPMSolverSamplerOptions>());
  }
  throw Error("invalid sampler kind");
}

namespace detail {
/// Python's json module writes -inf/inf/nan as the bare literals -Infinity/Infinity/NaN
/// (diffusers' DPMSolverMultistepScheduler config has "lambda_min_clipped": -Infinity), which
/// strict JSON parsers reject. Rewrites those literals outside strings into the strings
/// "-Infinity"/"Infinity"/"NaN".
inline std::string quote_nonfinite_literals(const std::string& text) {
  std::string out;
  out.reserve(text.size() + 16);
  bool in_string = false;
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (in_string) {
      out += c;
      if (c == '\\' && i + 1 < text.size()) {
        out += text[++i];
      } else if (c == '"') {
        in_string = false;
      }
      continue;
    }
    if (c == '"') {
      in_string = true;
      out += c;
      continue;
    }
    bool replaced = false;
    for (const char* lit : {"-Infinity", "Infinity", "NaN"}) {
      const size_t n = std::char_traits<char>::length(lit);
      if (text.compare(i, n, lit) == 0) {
        out += '"';
        out += lit;
        out += '"';
        i += n - 1;
        replaced = true;
        break;
      }
    }
    if (!replaced) out += c;
  }
  return out;
}
}  // namespace detail

/// Parses a scheduler_config.json, tolerating Python's -Infinity/Infinity/NaN literals
/// (turned into the strings "-Infinity"/"Infinity"/"NaN"); errors name the file.
inline nlohmann::json read_scheduler_config(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw Error("cannot open scheduler config '" + path + "'");
  std::stringstream ss;
  ss << in.rdbuf();
  try {
    return nlohmann::json::parse(detail::quote_nonfinite_literals(ss.str()));
  } catch (const nlohmann::json::exception& e) {
    throw Error("invalid JSON in scheduler config '" + path + "': " + e.what());
  }
}

/// Reads a diffusers scheduler_config.json and builds the sampler (see make_sampler); errors
/// name the file.
inline AnySampler load_sampler(const std::string& scheduler_config_path,
                               c10::optional<SamplerKind> kind = c10::nullopt) {
  const nlohmann::json j = read_scheduler_config(scheduler_config_path);
  try {
    return make_sampler(j, kind);
  } catch (const std::exception& e) {
    throw Error("scheduler config '" + scheduler_config_path + "': " + e.what());
  }
}

/// A scheduler_config diffusers v0.31.0 can load with from_config (with "_class_name").
/// ddpm-only keys are written only when they differ from the default ("dtype" float64,
/// DDIM "eta" != 0); DPM-Solver's lambda_min_clipped is omitted when -inf (diffusers'
/// default), since JSON cannot hold infinities.
inline nlohmann::json to_scheduler_config(const AnySampler& sampler) {
  nlohmann::json j = std::visit([](const auto& s) { return nlohmann::json(s.options()); }, sampler.variant());
  j["_class_name"] = detail::scheduler_class_name(sampler.kind());
  j["_diffusers_version"] = "0.31.0";
  if (j.value("dtype", std::string("float32")) == "float32") j.erase("dtype");
  if (sampler.kind() == SamplerKind::DDIM && j.value("eta", 0.0) == 0.0) j.erase("eta");
  if (sampler.kind() == SamplerKind::DPMSolver) {
    const auto* d = sampler.get_if<DPMSolverSampler>();
    if (std::isinf(d->options().lambda_min_clipped()) && d->options().lambda_min_clipped() < 0) {
      j.erase("lambda_min_clipped");
    }
  }
  return j;
}

}  // namespace ddpm
