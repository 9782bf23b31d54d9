#pragma once
/// Class conditioning and classifier-free guidance (Ho & Salimans 2022), as diffusers' pipelines
/// do it:
///
///   training:  a label is replaced by the null class with probability p_uncond (drop_labels);
///   sampling:  out = u + s (c - u), c = model(x, t, labels), u = model(x, t, null), evaluated in
///              ONE batched call on cat([x, x]) with labels cat([labels, null]); optionally
///              diffusers' rescale_noise_cfg (guidance_rescale, Lin et al. 2023 section 3.4).
///
/// The null class is the last row of the class-embedding table, num_class_embeds - 1 (a UNet for
/// K classes has K + 1 rows; see UNetOptions::null_class_label). Guidance wraps the model call, so
/// it works with every sampler (Heun's two calls per step, the ancestral / SDE samplers' noise).
///
/// Guidance interval (Kynkäänniemi et al. 2024, "Applying Guidance in a Limited Interval Improves
/// Sample and Distribution Quality in Diffusion Models"): guidance only at model calls whose
/// timestep t lies in [t_min, t_max]; elsewhere the conditional output alone (one call of batch B).
/// At high noise guidance pulls every sample of a class towards one prototype (it costs diversity);
/// at low noise it changes little. Not in diffusers, whose pipelines guide every step.
#include <ddpm/error.hpp>
#include <ddpm/nn/unet.hpp>

#include <ATen/core/Generator.h>
#include <c10/util/Optional.h>
#include <torch/types.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <utility>
#include <vector>

namespace ddpm {

/// diffusers' rescale_noise_cfg: rescales the guided output to the per-sample standard deviation
/// of the conditional one and mixes: phi * cfg * std(cond) / std(cfg) + (1 - phi) * cfg. Stds are
/// over every dim but the batch (unbiased, as torch.std). phi = 0 returns `noise_cfg` itself.
inline torch::Tensor rescale_noise_cfg(const torch::Tensor& noise_cfg, const torch::Tensor& noise_pred_cond,
                                       double guidance_rescale) {
  if (guidance_rescale == 0.0) return noise_cfg;
  TORCH_CHECK(noise_cfg.dim() >= 2 && noise_cfg.sizes() == noise_pred_cond.sizes(),
              "rescale_noise_cfg: expected two [B, ...] tensors of the same shape, got ", noise_cfg.sizes(), " and ",
              noise_pred_cond.sizes());
  std::vector<int64_t> dims;
  for (int64_t d = 1; d < noise_cfg.dim(); ++d) dims.push_back(d);
  const auto std_cond = noise_pred_cond.std(dims, /*unbiased=*/true, /*keepdim=*/true);
  const auto std_cfg = noise_cfg.std(dims, /*unbiased=*/true, /*keepdim=*/true);
  const auto rescaled = noise_cfg * (std_cond / std_cfg);
  return guidance_rescale * rescaled + (1 - guidance_rescale) * noise_cfg;
}

/// The guided mix u + s (c - u) (diffusers' operation order), then rescale_noise_cfg when
/// guidance_rescale > 0.
inline torch::Tensor mix_guidance(const torch::Tensor& cond, const torch::Tensor& uncond, double guidance_scale,
                                  double guidance_rescale = 0.0) {
  torch::Tensor out = uncond + guidance_scale * (cond - uncond);
  if (guidance_rescale > 0.0) out = rescale_noise_cfg(out, cond, guidance_rescale);
  return out;
}

/// Checks guidance settings; throws ddpm::Error naming the value.
inline void check_guidance(double guidance_scale, double guidance_rescale, const std::string& context) {
  if (!std::isfinite(guidance_scale)) {
    throw Error(context + ": guidance_scale must be a finite number, got " + detail::format_number(guidance_scale));
  }
  if (!(guidance_rescale >= 0.0 && guidance_rescale <= 1.0)) {
    throw Error(context + ": guidance_rescale must be in [0, 1], got " + detail::format_number(guidance_rescale));
  }
}

/// Checks a guidance interval given as fractions of num_train_timesteps: 0 <= lo <= hi <= 1;
/// throws ddpm::Error naming the values.
inline void check_guidance_interval(double lo, double hi, const std::string& context) {
  if (!(lo >= 0.0 && lo <= 1.0) || !(hi >= 0.0 && hi <= 1.0) || lo > hi) {
    throw Error(context + ": the guidance interval [" + detail::format_number(lo) + ", " + detail::format_number(hi) +
                "] must lie in [0, 1] (fractions of num_train_timesteps) with min <= max");
  }
}

/// A model call with class labels and optional classifier-free guidance: a callable
/// (x [B, ...], t [B]) -> output [B, ...] for sample_from / the samplers.
///   guidance_scale == 1: unet(x, t, labels), one call of batch B;
///   otherwise:           one call on cat([x, x]), cat([t, t]), cat([labels, null]) (batch 2B),
///                        split into c, u and mixed by mix_guidance;
///   a guidance interval:     the mix only where t_min <= t <= t_max (per sample), c elsewhere; a
///                            call with every t outside is the plain conditional call of batch B.
/// `labels` int64 [B] on any device (moved to x's device once per call); t [B] or a scalar.
struct GuidedModel {
  UNet unet;
  torch::Tensor labels;
  int64_t null_label = 0;
  double guidance_scale = 1.0;
  double guidance_rescale = 0.0;
  /// The guidance interval in timesteps (as the UNet receives them); the default guides everywhere.
  double t_min = 0.0;
  double t_max = std::numeric_limits<double>::infinity();

  torch::Tensor operator()(const torch::Tensor& x, const torch::Tensor& t) {
    const auto labels_here = labels.to(x.device(), torch::kLong);
    if (guidance_scale == 1.0) return unet->forward(x, t, labels_here);
    const int64_t b = x.size(0);
    torch::Tensor inside;  // bool [B] or scalar; undefined = guide every sample
    if (t_min > 0.0 || t_max < std::numeric_limits<double>::infinity()) {
      const auto td = t.to(torch::kDouble);
      inside = td.ge(t_min).logical_and(td.le(t_max));
      if (!inside.any().item<bool>()) return unet->forward(x, t, labels_here);
      if (inside.all().item<bool>()) inside = torch::Tensor();
    }
    const auto null = torch::full_like(labels_here, null_label);
    const auto tt = t.dim() == 0 ? t.expand({b}) : t;
    const auto out = unet->forward(torch::cat({x, x}), torch::cat({tt, tt}), torch::cat({labels_here, null}));
    const auto cond = out.narrow(0, 0, b);
    auto mixed = mix_guidance(cond, out.narrow(0, b, b), guidance_scale, guidance_rescale);
    if (!inside.defined()) return mixed;
    std::vector<int64_t> shape(static_cast<size_t>(x.dim()), 1);
    shape[0] = b;  // inside is [B] here: a scalar t is all inside or all outside
    return torch::where(inside.to(x.device()).reshape(shape), mixed, cond);
  }
};

/// Labels for classifier-free-guidance training: each entry of `labels` (int64 [B]) is replaced
/// by `null_label` with probability p_uncond, independently, drawn from `gen` (CPU; one
/// torch::rand [B] draw, made only when p_uncond > 0, so p_uncond = 0 leaves the generator and
/// the labels untouched). Returns int64 [B] on labels' device.
inline torch::Tensor drop_labels(const torch::Tensor& labels, double p_uncond, int64_t null_label,
                                 torch::Generator gen) {
  TORCH_CHECK(labels.defined() && labels.dim() == 1, "drop_labels: labels must be [B]");
  TORCH_CHECK(p_uncond >= 0.0 && p_uncond <= 1.0, "drop_labels: p_uncond must be in [0, 1], got ", p_uncond);
  const auto l = labels.to(torch::kLong);
  if (p_uncond <= 0.0) return l;
  c10::optional<at::Generator> g;
  if (gen.defined()) g = gen;
  const auto u = torch::rand({labels.size(0)}, g, torch::TensorOptions().dtype(torch::kFloat32));
  const auto drop = (u < p_uncond).to(l.device());
  return torch::where(drop, torch::full_like(l, null_label), l);
}

/// Labels for a grid of `n` images with one class per row: image i gets class
/// (i / columns) % num_classes, where columns = `nrow` (images per row, as save_image_grid's
/// nrow), or 0 for save_image_grid's default square layout, ceil(sqrt(n)).
inline std::vector<int64_t> class_grid_labels(int64_t n, int64_t num_classes, int64_t nrow = 0) {
  TORCH_CHECK(num_classes > 0, "class_grid_labels: num_classes must be positive");
  const int64_t cols = nrow > 0 ? std::min(nrow, std::max<int64_t>(n, 1))
                                : static_cast<int64_t>(std::ceil(std::sqrt(static_cast<double>(n))));
  std::vector<int64_t> out(static_cast<size_t>(std::max<int64_t>(n, 0)));
  for (int64_t i = 0; i < n; ++i) out[static_cast<size_t>(i)] = (i / std::max<int64_t>(cols, 1)) % num_classes;
  return out;
}

/// Labels that draw every class equally often: image i gets class i % num_classes (how the
/// evaluation generates a class-conditional model's samples). Returns n labels.
inline std::vector<int64_t> cyclic_class_labels(int64_t n, int64_t num_classes) {
  TORCH_CHECK(num_classes > 0, "cyclic_class_labels: num_classes must be positive, got ", num_classes);
  std::vector<int64_t> out(static_cast<size_t>(std::max<int64_t>(n, 0)));
  for (int64_t i = 0; i < n; ++i) out[static_cast<size_t>(i)] = i % num_classes;
  return out;
}

/// How many classes a UNet offers for guidance: num_class_embeds - 1 (the last row is the null
/// class) for a class-embedding table, 0 for an unconditional model. Throws ddpm::Error for
/// "timestep" / "identity" class embeddings (no null class to guide with).
inline int64_t guidance_num_classes(const UNetOptions& o) {
  const std::string kind = o.class_conditioning();
  if (kind == "none") return 0;
  if (kind != "embedding") {
    throw Error("class labels with guidance need a class-embedding table (num_class_embeds); this UNet has "
                "class_embed_type \"" + kind + "\"");
  }
  return *o.num_class_embeds() - 1;
}

/// Parses a --class value: one label for every sample or a comma-separated list, each an index
/// or a class name from `names` (exact, else case-insensitive: "sneaker" is "Sneaker").
/// `num_classes` (> 0) bounds the indices (the null class num_classes is not a class). Throws
/// ddpm::Error naming the bad entry (and listing the names).
inline std::vector<int64_t> parse_class_labels(const std::string& spec, const std::vector<std::string>& names,
                                               int64_t num_classes) {
  if (num_classes <= 0) {
    throw Error("--class " + spec + ": the model is not class-conditional (no num_class_embeds)");
  }
  std::vector<int64_t> out;
  std::string item;
  size_t start = 0;
  auto list_names = [&] {
    if (names.empty()) return std::string(" (the model records no class names; use indices)");
    std::string s;
    for (size_t i = 0; i < names.size(); ++i) s += (i ? ", " : "") + std::to_string(i) + " " + names[i];
    return " (classes: " + s + ")";
  };
  while (start <= spec.size()) {
    const size_t comma = spec.find(',', start);
    item = spec.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
    start = comma == std::string::npos ? spec.size() + 1 : comma + 1;
    while (!item.empty() && item.front() == ' ') item.erase(item.begin());
    while (!item.empty() && item.back() == ' ') item.pop_back();
    if (item.empty()) throw Error("--class '" + spec + "': empty entry");
    const bool numeric = item.find_first_not_of("0123456789") == std::string::npos;
    if (item.size() > 1 && item[0] == '-' && item.find_first_not_of("0123456789", 1) == std::string::npos) {
      throw Error("--class " + item + ": class index out of range [0, " + std::to_string(num_classes) + ")");
    }
    int64_t label = -1;
    if (numeric) {
      if (item.size() > 18) throw Error("--class " + item + ": class index out of range");
      label = std::stoll(item);
      if (label >= num_classes) {
        throw Error("--class " + item + ": class index out of range [0, " + std::to_string(num_classes) +
                    ") (the model has " + std::to_string(num_classes) + " classes; " + std::to_string(num_classes) +
                    " is the null class)" + (names.empty() ? std::string() : list_names()));
      }
    } else {
      for (size_t i = 0; i < names.size() && label < 0; ++i) {
        if (names[i] == item) label = static_cast<int64_t>(i);
      }
      auto lower = [](std::string v) {
        for (auto& ch : v) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
        return v;
      };
      for (size_t i = 0; i < names.size() && label < 0; ++i) {  // "sneaker" finds "Sneaker"
        if (lower(names[i]) == lower(item)) label = static_cast<int64_t>(i);
      }
      if (label < 0) throw Error("--class " + item + ": unknown class name" + list_names());
      if (label >= num_classes) {
        throw Error("--class " + item + ": class " + std::to_string(label) + " is beyond the model's " +
                    std::to_string(num_classes) + " classes");
      }
    }
    out.push_back(label);
  }
  return out;
}

/// The labels the `sample` CLI generates n images with. `spec` (the --class value) is
/// parse_class_labels'; a list must have one label per image (or a single one for all). An empty
/// spec gives one class per grid row (class_grid_labels with `nrow`) for a class-conditional
/// model and no labels for an unconditional one. Throws ddpm::Error saying what is wrong.
inline std::vector<int64_t> sample_class_labels(const std::string& spec, const std::vector<std::string>& names,
                                                int64_t num_classes, int64_t n, int64_t nrow = 0) {
  if (spec.empty()) return num_classes > 0 ? class_grid_labels(n, num_classes, nrow) : std::vector<int64_t>{};
  auto labels = parse_class_labels(spec, names, num_classes);
  if (labels.size() != 1 && static_cast<int64_t>(labels.size()) != n) {
    throw Error("--class lists " + std::to_string(labels.size()) + " labels but " + std::to_string(n) +
                " images are drawn (--num-samples); give one label for all or exactly one per image");
  }
  return labels;
}

}  // namespace ddpm
