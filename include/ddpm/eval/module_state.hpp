#pragma once
/// Loading a name -> tensor map (a safetensors file's tensors) into any torch::nn::Module's
/// parameters and buffers, strictly: every module tensor must be present with its shape, and
/// extra tensors are an error unless their names start with one of `ignore_prefixes` or end
/// with one of `ignore_suffixes` (e.g. a classifier head the feature extractor does not use).
#include <ddpm/error.hpp>

#include <torch/nn/module.h>
#include <torch/types.h>

#include <fstream>
#include <map>
#include <set>
#include <string>
#include <utility>
#include <vector>

namespace ddpm {
namespace detail {

/// Whether `path` can be opened for reading.
inline bool file_readable(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return static_cast<bool>(f);
}

inline std::string sizes_string(torch::IntArrayRef s) { return c10::str(s); }

inline bool has_prefix(const std::string& s, const std::string& p) { return s.compare(0, p.size(), p) == 0; }
inline bool has_suffix(const std::string& s, const std::string& p) {
  return s.size() >= p.size() && s.compare(s.size() - p.size(), p.size(), p) == 0;
}

/// The module's parameters and buffers by their dotted names.
inline std::vector<std::pair<std::string, torch::Tensor>> module_tensors(const torch::nn::Module& m) {
  std::vector<std::pair<std::string, torch::Tensor>> out;
  for (const auto& item : m.named_parameters(true)) out.emplace_back(item.key(), item.value());
  for (const auto& item : m.named_buffers(true)) out.emplace_back(item.key(), item.value());
  return out;
}

/// Copies `state` into `m` (see the header comment). Errors (ddpm::Error) name `source`, the
/// tensor and the shapes.
inline void load_module_state(torch::nn::Module& m, const std::map<std::string, torch::Tensor>& state,
                              const std::string& source, const std::vector<std::string>& ignore_prefixes = {},
                              const std::vector<std::string>& ignore_suffixes = {}) {
  auto targets = module_tensors(m);
  std::set<std::string> known;
  std::vector<std::string> missing;
  for (const auto& [name, target] : targets) {
    known.insert(name);
    auto it = state.find(name);
    if (it == state.end()) {
      missing.push_back(name);
      continue;
    }
    if (it->second.sizes() != target.sizes()) {
      throw Error(source + ": tensor '" + name + "' has shape " + sizes_string(it->second.sizes()) +
                  " but the model expects " + sizes_string(target.sizes()));
    }
  }
  if (!missing.empty()) {
    std::string list;
    for (size_t i = 0; i < missing.size() && i < 8; ++i) list += (i ? ", '" : "'") + missing[i] + "'";
    if (missing.size() > 8) list += ", ... (" + std::to_string(missing.size()) + " in all)";
    throw Error(source + ": missing tensor(s) " + list + " required by the model");
  }
  for (const auto& [name, t] : state) {
    if (known.count(name)) continue;
    bool ignored = false;
    for (const auto& p : ignore_prefixes) ignored = ignored || has_prefix(name, p);
    for (const auto& s : ignore_suffixes) ignored = ignored || has_suffix(name, s);
    if (!ignored) {
      throw Error(source + ": unexpected tensor '" + name + "' " + sizes_string(t.sizes()) +
                  " (not part of the model)");
    }
  }
  torch::NoGradGuard no_grad;
  for (auto& [name, target] : targets) target.copy_(state.at(name).to(target.device(), target.scalar_type()));
}

/// The module's parameters and buffers as a CPU name -> tensor map (for save_safetensors).
inline std::map<std::string, torch::Tensor> module_state(const torch::nn::Module& m) {
  std::map<std::string, torch::Tensor> out;
  for (auto& [name, t] : module_tensors(m)) out[name] = t.detach().to(torch::kCPU).contiguous();
  return out;
}

}  // namespace detail
}  // namespace ddpm
