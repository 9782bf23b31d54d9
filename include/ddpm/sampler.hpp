#pragma once
/// The sampler registry: every sampler the library offers is registered ONCE, in
/// DDPM_SAMPLER_REGISTRY below, and from that one table come the SamplerKind enum, the
/// type-erased AnySampler, the names the CLI and configs accept (with aliases), and the mapping
/// from / to diffusers' scheduler_config.json "_class_name". Named presets (A1111 / k-diffusion
/// names such as "dpmpp_2m_karras") are a registered sampler plus config overrides.
///
/// Adding a sampler: write its header (a type satisfying samplers/protocol.hpp), include it
/// here, add one X(...) line to DDPM_SAMPLER_REGISTRY, and test it.
#include <ddpm/detail/json_enum.hpp>
#include <ddpm/detail/json_util.hpp>
#include <ddpm/error.hpp>
#include <ddpm/samplers/common.hpp>
#include <ddpm/samplers/ddim.hpp>
#include <ddpm/samplers/ddpm.hpp>
#include <ddpm/samplers/dpm_solver.hpp>
#include <ddpm/samplers/euler.hpp>
#include <ddpm/samplers/euler_ancestral.hpp>
#include <ddpm/samplers/heun.hpp>
#include <ddpm/samplers/protocol.hpp>
#include <ddpm/samplers/unipc.hpp>

#include <c10/util/Optional.h>
#include <torch/types.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <sstream>
#include <string>
#include <type_traits>
#include <utility>
#include <variant>
#include <vector>

/// X(Kind, Type, "name", "aliases separated by spaces", "one-line description").
/// The diffusers class name is Type::kClassName.
#define DDPM_SAMPLER_REGISTRY(X)                                                                 \
  X(DDPM, DDPMSampler, "ddpm", "", "DDPM ancestral sampling (Ho et al. 2020); stochastic")       \
  X(DDIM, DDIMSampler, "ddim", "", "DDIM (Song et al. 2021); deterministic at eta = 0")          \
  X(DPMSolver, DPMSolverSampler, "dpm++", "dpmpp_2m dpm_solver",                                  \
    "DPM-Solver++(2M) multistep (Lu et al. 2022); DPMSolverMultistepScheduler as configured")       \
  X(Euler, EulerSampler, "euler", "euler_discrete",                                                \
    "Euler (Karras et al. 2022), EulerDiscreteScheduler; deterministic")                          \
  X(EulerAncestral, EulerAncestralSampler, "euler_a", "euler_ancestral",                          \
    "Euler ancestral (k-diffusion), EulerAncestralDiscreteScheduler; stochastic")                 \
  X(Heun, HeunSampler, "heun", "",                                                                 \
    "Heun 2nd order (Karras et al. 2022), HeunDiscreteScheduler; 2 model calls per step")         \
  X(UniPC, UniPCSampler, "unipc", "unipc_bh2",                                                     \
    "UniPC predictor-corrector (Zhao et al. 2023), UniPCMultistepScheduler (bh2, order 2)")

namespace ddpm {

#define DDPM_X_KIND(kind, type, name, aliases, help) kind,
/// Which registered sampler (order of DDPM_SAMPLER_REGISTRY).
enum class SamplerKind { DDPM_SAMPLER_REGISTRY(DDPM_X_KIND) };
#undef DDPM_X_KIND

/// One registered sampler.
struct SamplerInfo {
  SamplerKind kind;
  std::string name;                  ///< canonical CLI / config name
  std::vector<std::string> aliases;  ///< other accepted names
  std::string class_name;            ///< diffusers scheduler class ("_class_name")
  std::string help;                  ///< one line for `sample --sampler list`
};

/// A named variant of a registered sampler: its config overrides (diffusers keys).
struct SamplerPreset {
  std::string name;
  SamplerKind kind;
  nlohmann::json overrides;
  std::string help;
};

namespace detail {
inline std::vector<std::string> split_words(const char* s) {
  std::vector<std::string> out;
  std::istringstream in(s);
  for (std::string w; in >> w;) out.push_back(w);
  return out;
}
template <class V>
struct drop_first_alternative;
template <class F, class... R>
struct drop_first_alternative<std::variant<F, R...>> {
  using type = std::variant<R...>;
};
}  // namespace detail

/// Every registered sampler, in registry order.
inline const std::vector<SamplerInfo>& registered_samplers() {
#define DDPM_X_INFO(kind, type, name, aliases, help) \
  SamplerInfo{SamplerKind::kind, name, detail::split_words(aliases), type::kClassName, help},
  static const std::vector<SamplerInfo> infos = {DDPM_SAMPLER_REGISTRY(DDPM_X_INFO)};
#undef DDPM_X_INFO
  return infos;
}

/// Named presets (registered sampler + overrides).
inline const std::vector<SamplerPreset>& sampler_presets() {
  static const std::vector<SamplerPreset> presets = {
      {"dpmpp_2m_karras", SamplerKind::DPMSolver, {{"use_karras_sigmas", true}},
       "DPM++ 2M Karras: DPMSolverMultistepScheduler + use_karras_sigmas=true"},
      {"dpmpp_2m_sde", SamplerKind::DPMSolver, {{"algorithm_type", "sde-dpmsolver++"}},
       "DPM++ 2M SDE: DPMSolverMultistepScheduler + algorithm_type=sde-dpmsolver++; stochastic"},
      {"dpmpp_2m_sde_karras", SamplerKind::DPMSolver,
       {{"algorithm_type", "sde-dpmsolver++"}, {"use_karras_sigmas", true}},
       "DPM++ 2M SDE Karras: + algorithm_type=sde-dpmsolver++, use_karras_sigmas=true; stochastic"},
      {"dpmpp_3m", SamplerKind::DPMSolver, {{"solver_order", 3}},
       "DPM++ 3M: DPMSolverMultistepScheduler + solver_order=3"},
      {"dpmpp_3m_karras", SamplerKind::DPMSolver, {{"solver_order", 3}, {"use_karras_sigmas", true}},
       "DPM++ 3M Karras: + solver_order=3, use_karras_sigmas=true"},
      {"euler_karras", SamplerKind::Euler, {{"use_karras_sigmas", true}},
       "Euler Karras: EulerDiscreteScheduler + use_karras_sigmas=true"},
      {"heun_karras", SamplerKind::Heun, {{"use_karras_sigmas", true}},
       "Heun Karras: HeunDiscreteScheduler + use_karras_sigmas=true"},
      {"unipc_bh1", SamplerKind::UniPC, {{"solver_type", "bh1"}, {"final_sigmas_type", "sigma_min"}},
       "UniPC bh1: UniPCMultistepScheduler + solver_type=bh1, final_sigmas_type=sigma_min"},
      {"unipc_3", SamplerKind::UniPC, {{"solver_order", 3}},
       "UniPC order 3: UniPCMultistepScheduler + solver_order=3"},
  };
  return presets;
}

/// The registry entry of a kind.
inline const SamplerInfo& sampler_info(SamplerKind kind) {
  for (const auto& i : registered_samplers()) {
    if (i.kind == kind) return i;
  }
  throw Error("invalid sampler kind " + std::to_string(static_cast<int>(kind)));
}

/// Every name a user may give (canonical names, aliases, presets), for CLI choices and errors.
inline std::vector<std::string> sampler_names() {
  std::vector<std::string> out;
  for (const auto& i : registered_samplers()) {
    out.push_back(i.name);
    out.insert(out.end(), i.aliases.begin(), i.aliases.end());
  }
  for (const auto& p : sampler_presets()) out.push_back(p.name);
  return out;
}

/// A resolved sampler name: the kind and the config overrides a preset carries ({} otherwise).
struct SamplerChoice {
  SamplerKind kind;
  nlohmann::json overrides = nlohmann::json::object();
};

/// Resolves a canonical name, an alias, a preset or a diffusers class name; throws ddpm::Error
/// listing every accepted name.
inline SamplerChoice resolve_sampler_name(const std::string& name) {
  for (const auto& i : registered_samplers()) {
    if (name == i.name || name == i.class_name ||
        std::find(i.aliases.begin(), i.aliases.end(), name) != i.aliases.end()) {
      return {i.kind, nlohmann::json::object()};
    }
  }
  for (const auto& p : sampler_presets()) {
    if (name == p.name) return {p.kind, p.overrides};
  }
  std::string list;
  for (const auto& n : sampler_names()) list += (list.empty() ? "\"" : ", \"") + n + "\"";
  throw Error("unknown sampler \"" + name + "\"; valid values are " + list);
}

/// Parses a sampler name (canonical, alias or class name; presets need resolve_sampler_name).
inline SamplerKind sampler_kind_from_string(const std::string& name) {
  const auto c = resolve_sampler_name(name);
  if (!c.overrides.empty()) {
    throw Error("sampler \"" + name + "\" is a preset of \"" + sampler_info(c.kind).name +
                "\" with config overrides; use resolve_sampler_name / make_sampler(config, name)");
  }
  return c.kind;
}
/// The canonical name of a kind ("ddpm", "ddim", "dpm++", ...).
inline std::string sampler_kind_name(SamplerKind k) { return sampler_info(k).name; }

inline void to_json(nlohmann::json& j, SamplerKind k) { j = sampler_kind_name(k); }
inline void from_json(const nlohmann::json& j, SamplerKind& k) {
  if (!j.is_string()) throw Error("sampler must be a string, got " + detail::truncated_dump(j));
  k = sampler_kind_from_string(j.get<std::string>());
}

/// Any registered sampler behind one interface (the Sampler protocol of samplers/protocol.hpp).
class AnySampler {
 public:
#define DDPM_X_TYPE(kind, type, name, aliases, help) , type
  using Variant = typename detail::drop_first_alternative<
      std::variant<std::monostate DDPM_SAMPLER_REGISTRY(DDPM_X_TYPE)>>::type;
#undef DDPM_X_TYPE

  /// From any registered sampler.
  template <class S, class = std::enable_if_t<std::is_constructible_v<Variant, std::decay_t<S>>>>
  AnySampler(S&& s) : impl_(std::forward<S>(s)) {}  // NOLINT(google-explicit-constructor)

  SamplerKind kind() const { return static_cast<SamplerKind>(impl_.index()); }
  /// The registry entry (names, diffusers class).
  const SamplerInfo& info() const { return sampler_info(kind()); }

  void set_timesteps(int64_t num_inference_steps) {
    std::visit([&](auto& s) { s.set_timesteps(num_inference_steps); }, impl_);
  }
  const std::vector<double>& timesteps() const {
    return std::visit([](const auto& s) -> const std::vector<double>& { return s.timesteps(); }, impl_);
  }
  torch::Tensor sigmas() const {
    return std::visit([](const auto& s) { return s.sigmas(); }, impl_);
  }
  int64_t num_inference_steps() const {
    return std::visit([](const auto& s) { return s.num_inference_steps(); }, impl_);
  }
  int64_t order() const {
    return std::visit([](const auto& s) { return s.order(); }, impl_);
  }
  double init_noise_sigma() const {
    return std::visit([](const auto& s) { return s.init_noise_sigma(); }, impl_);
  }
  torch::Tensor scale_model_input(const torch::Tensor& sample, double t) {
    return std::visit([&](auto& s) { return s.scale_model_input(sample, t); }, impl_);
  }
  SamplerStepOutput step(const torch::Tensor& model_output, double t, const torch::Tensor& sample,
                         c10::optional<torch::Generator> generator = c10::nullopt,
                         c10::optional<torch::Tensor> noise = c10::nullopt) {
    return std::visit([&](auto& s) { return s.step(model_output, t, sample, generator, noise); }, impl_);
  }
  const NoiseSchedule& schedule() const {
    return std::visit([](const auto& s) -> const NoiseSchedule& { return s.schedule(); }, impl_);
  }
  PredictionType prediction_type() const {
    return std::visit([](const auto& s) { return s.prediction_type(); }, impl_);
  }
  void reset() {
    std::visit([](auto& s) { s.reset(); }, impl_);
  }
  /// The options as scheduler_config keys (without "_class_name").
  nlohmann::json options_json() const {
    return std::visit([](const auto& s) { return nlohmann::json(s.options()); }, impl_);
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

namespace detail {
/// Union of every registered sampler's scheduler_config keys.
inline const std::vector<const char*>& all_scheduler_config_keys() {
  static const std::vector<const char*> keys = [] {
    std::vector<const char*> all;
#define DDPM_X_KEYS(kind, type, name, aliases, help) \
  for (const char* k : type::config_keys()) {        \
    if (std::none_of(all.begin(), all.end(), [&](const char* a) { return std::string(a) == k; })) all.push_back(k); \
  }
    DDPM_SAMPLER_REGISTRY(DDPM_X_KEYS)
#undef DDPM_X_KEYS
    return all;
  }();
  return keys;
}
/// Builds the sampler of `kind` from a scheduler_config object.
inline AnySampler build_sampler(SamplerKind kind, const nlohmann::json& j) {
  switch (kind) {
#define DDPM_X_BUILD(k, type, name, aliases, help) \
  case SamplerKind::k: return type(j.get<typename type::Options>());
    DDPM_SAMPLER_REGISTRY(DDPM_X_BUILD)
#undef DDPM_X_BUILD
  }
  throw Error("invalid sampler kind " + std::to_string(static_cast<int>(kind)));
}
}  // namespace detail

/// Builds a sampler from a diffusers scheduler_config object, like diffusers' from_config.
/// The kind defaults from "_class_name" (any registered class: DDPMScheduler, DDIMScheduler,
/// DPMSolverMultistepScheduler, EulerDiscreteScheduler, ...); passing `kind` overrides it (keys
/// meant for the other schedulers are then ignored, as diffusers does). Any key that belongs to
/// no registered scheduler is rejected, naming it.
inline AnySampler make_sampler(const nlohmann::json& scheduler_config,
                               c10::optional<SamplerKind> kind = c10::nullopt) {
  if (!scheduler_config.is_object()) {
    throw Error("scheduler config must be a JSON object, got " + detail::truncated_dump(scheduler_config));
  }
  SamplerKind k;
  if (kind.has_value()) {
    k = *kind;
  } else {
    auto it = scheduler_config.find("_class_name");
    if (it == scheduler_config.end() || !it->is_string()) {
      throw Error("scheduler config has no \"_class_name\"; pass the sampler kind explicitly (" +
                  std::string(sampler_names().empty() ? "" : "e.g. ddim") + ")");
    }
    const auto cls = it->get<std::string>();
    const SamplerInfo* found = nullptr;
    for (const auto& i : registered_samplers()) {
      if (i.class_name == cls) found = &i;
    }
    if (found == nullptr) {
      std::string list;
      for (const auto& i : registered_samplers()) list += (list.empty() ? "" : ", ") + i.class_name;
      throw Error("unsupported scheduler \"_class_name\": \"" + cls + "\"; supported are " + list +
                  " (or pass the sampler kind explicitly)");
    }
    k = found->kind;
  }
  detail::check_known_keys_list(scheduler_config, detail::all_scheduler_config_keys(),
                                sampler_info(k).class_name + " config");
  return detail::build_sampler(k, scheduler_config);
}

/// Builds the sampler a name selects (canonical, alias, class name or preset) from a
/// scheduler_config: the preset's overrides are applied on top of the config.
inline AnySampler make_sampler(const nlohmann::json& scheduler_config, const std::string& name) {
  const auto choice = resolve_sampler_name(name);
  nlohmann::json j = scheduler_config.is_object() ? scheduler_config : nlohmann::json::object();
  for (auto it = choice.overrides.begin(); it != choice.overrides.end(); ++it) j[it.key()] = it.value();
  return make_sampler(j, choice.kind);
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
  return detail::parse_json(detail::quote_nonfinite_literals(ss.str()), "invalid JSON in scheduler config '" + path + "'");
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
/// The schedule precision "dtype" (ddpm's own key) is written only when it is not float32.
inline nlohmann::json to_scheduler_config(const AnySampler& sampler) {
  nlohmann::json j = sampler.options_json();
  j["_class_name"] = sampler.info().class_name;
  j["_diffusers_version"] = "0.31.0";
  if (j.value("dtype", std::string("float32")) == "float32") j.erase("dtype");
  return j;
}

}  // namespace ddpm
