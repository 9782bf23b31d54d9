#pragma once
/// Loading and saving a UNet as a diffusers `UNet2DModel` folder: config.json +
/// diffusion_pytorch_model.safetensors (the layout `UNet2DModel.from_pretrained` reads).
#include <ddpm/detail/json_util.hpp>
#include <ddpm/error.hpp>
#include <ddpm/io/safetensors.hpp>
#include <ddpm/nn/unet.hpp>

#include <nlohmann/json.hpp>
#include <torch/types.h>
#include <torch/utils.h>

#include <filesystem>
#include <map>
#include <string>
#include <vector>

namespace ddpm {

namespace detail {

/// diffusers' pre-0.14 attention names -> current ones (ModelMixin's
/// _convert_deprecated_attention_blocks): .query. -> .to_q., .key. -> .to_k.,
/// .value. -> .to_v., .proj_attn. -> .to_out.0.  Other names are returned unchanged.
inline std::string convert_deprecated_attention_name(const std::string& name) {
  static const std::vector<std::pair<std::string, std::string>> renames = {
      {".query.", ".to_q."}, {".key.", ".to_k."}, {".value.", ".to_v."}, {".proj_attn.", ".to_out.0."}};
  if (name.find(".attentions.") == std::string::npos) return name;
  for (const auto& [from, to] : renames) {
    const auto pos = name.rfind(from);
    if (pos != std::string::npos) return name.substr(0, pos) + to + name.substr(pos + from.size());
  }
  return name;
}

inline std::string shape_string(torch::IntArrayRef s) {
  std::string out = "[";
  for (size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + "]";
}

}  // namespace detail

/// Copies `state` (diffusers state_dict names; deprecated attention names are accepted) into
/// the UNet's parameters and buffers, converting dtype/device to the model's. Every model
/// tensor must be present with the right shape and no extra tensor may remain; otherwise
/// ddpm::Error names `source`, the key(s) and the shapes.
inline void load_unet_state(UNet& unet, const std::map<std::string, torch::Tensor>& state,
                            const std::string& source) {
  std::map<std::string, torch::Tensor> renamed;
  for (const auto& [name, t] : state) {
    const std::string n = detail::convert_deprecated_attention_name(name);
    if (!renamed.emplace(n, t).second) {
      throw Error(source + ": tensor \"" + name + "\" and another tensor both map to \"" + n + "\"");
    }
  }
  std::vector<std::pair<std::string, torch::Tensor>> targets;
  for (const auto& item : unet->named_parameters(/*recurse=*/true)) targets.emplace_back(item.key(), item.value());
  for (const auto& item : unet->named_buffers(/*recurse=*/true)) targets.emplace_back(item.key(), item.value());

  std::vector<std::string> missing;
  for (const auto& [name, target] : targets) {
    auto it = renamed.find(name);
    if (it == renamed.end()) {
      missing.push_back(name);
      continue;
    }
    if (it->second.sizes() != target.sizes()) {
      throw Error(source + ": tensor \"" + name + "\" has shape " +
                  detail::shape_string(it->second.sizes()) + " but the model expects " +
                  detail::shape_string(target.sizes()));
    }
    if (!it->second.is_floating_point()) {
      throw Error(source + ": tensor \"" + name + "\" has non-floating dtype " +
                  std::string(c10::toString(it->second.scalar_type())));
    }
  }
  if (!missing.empty()) {
    std::string list;
    for (size_t i = 0; i < missing.size() && i < 10; ++i) list += (i ? ", \"" : "\"") + missing[i] + "\"";
    if (missing.size() > 10) list += ", ... (" + std::to_string(missing.size()) + " in all)";
    throw Error(source + ": missing tensor(s) " + list + " required by the model");
  }
  if (renamed.size() != targets.size()) {
    std::map<std::string, bool> known;
    for (const auto& [name, t] : targets) known[name] = true;
    std::string list;
    size_t count = 0;
    for (const auto& [name, t] : renamed) {
      if (known.count(name)) continue;
      if (count < 10) list += (count ? ", \"" : "\"") + name + "\" " + detail::shape_string(t.sizes());
      ++count;
    }
    if (count > 10) list += ", ... (" + std::to_string(count) + " in all)";
    throw Error(source + ": unexpected tensor(s) not in the model: " + list);
  }
  torch::NoGradGuard no_grad;
  for (auto& [name, target] : targets) {
    target.copy_(renamed.at(name).to(target.device(), target.scalar_type()));
  }
}

/// Reads a diffusers UNet2DModel config.json (alias of load_unet_config in nn/unet.hpp).
inline UNetOptions load_diffusers_unet_config(const std::string& dir) {
  return load_unet_config((std::filesystem::path(dir) / "config.json").string());
}

/// Loads a UNet from a diffusers folder: dir/config.json plus dir/diffusion_pytorch_model.safetensors
/// (or dir/model.safetensors). Throws ddpm::Error naming the file and key at fault.
inline UNet load_diffusers_unet(const std::string& dir) {
  namespace fs = std::filesystem;
  const fs::path root(dir);
  if (!fs::is_directory(root)) throw Error("diffusers UNet folder '" + dir + "' does not exist");
  const UNetOptions options = load_diffusers_unet_config(dir);
  fs::path weights = root / "diffusion_pytorch_model.safetensors";
  if (!fs::exists(weights)) weights = root / "model.safetensors";
  if (!fs::exists(weights)) {
    std::string hint;
    if (fs::exists(root / "diffusion_pytorch_model.bin")) {
      hint = " (diffusion_pytorch_model.bin is a pickle; convert it to safetensors first)";
    }
    throw Error("diffusers UNet folder '" + dir +
                "' has no diffusion_pytorch_model.safetensors or model.safetensors" + hint);
  }
  UNet unet(options);
  load_unet_state(unet, load_safetensors(weights.string()), "'" + weights.string() + "'");
  return unet;
}

/// Writes dir/config.json and dir/diffusion_pytorch_model.safetensors (float tensors as held,
/// metadata {"format": "pt"}), loadable by UNet2DModel.from_pretrained(dir). Creates dir.
inline void save_diffusers_unet(const UNet& unet, const std::string& dir) {
  namespace fs = std::filesystem;
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec || !fs::is_directory(dir)) {
    throw IoError("cannot create diffusers UNet folder '" + dir + "': " + ec.message());
  }
  std::map<std::string, torch::Tensor> state;
  for (const auto& item : unet->named_parameters(/*recurse=*/true)) state[item.key()] = item.value().detach();
  for (const auto& item : unet->named_buffers(/*recurse=*/true)) state[item.key()] = item.value().detach();
  save_safetensors((fs::path(dir) / "diffusion_pytorch_model.safetensors").string(), state,
                   {{"format", "pt"}});
  nlohmann::json config = unet->options;
  detail::write_json_file((fs::path(dir) / "config.json").string(), config);
}

/// Where a diffusers folder keeps its UNet and its scheduler config.
struct DiffusersFolder {
  std::string unet_dir;          ///< holds config.json + diffusion_pytorch_model.safetensors
  std::string scheduler_config;  ///< path of scheduler_config.json
};

/// Resolves a diffusers pipeline folder (model_index.json, unet/, scheduler/) or a flat
/// folder (config.json, the weights and scheduler_config.json side by side); throws
/// ddpm::Error naming the folder and what is missing.
inline DiffusersFolder locate_diffusers_folder(const std::string& dir) {
  namespace fs = std::filesystem;
  if (!fs::is_directory(dir)) throw Error("diffusers folder '" + dir + "' is not a folder");
  DiffusersFolder f;
  if (fs::exists(fs::path(dir) / "model_index.json") || fs::is_directory(fs::path(dir) / "unet")) {
    f.unet_dir = (fs::path(dir) / "unet").string();
    f.scheduler_config = (fs::path(dir) / "scheduler" / "scheduler_config.json").string();
    if (!fs::is_directory(f.unet_dir)) {
      throw Error("diffusers pipeline folder '" + dir + "' has no unet/ subfolder");
    }
  } else {
    f.unet_dir = dir;
    f.scheduler_config = (fs::path(dir) / "scheduler_config.json").string();
    if (!fs::exists(fs::path(dir) / "config.json")) {
      throw Error("'" + dir +
                  "' is neither a diffusers pipeline folder (model_index.json, unet/, scheduler/) nor a "
                  "flat folder (config.json, diffusion_pytorch_model.safetensors, scheduler_config.json)");
    }
  }
  if (!fs::exists(f.scheduler_config)) {
    throw Error("diffusers folder '" + dir + "': scheduler config '" + f.scheduler_config + "' is missing");
  }
  return f;
}

}  // namespace ddpm
