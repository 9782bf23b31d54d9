#pragma once
/// Residual block with timestep conditioning (diffusers `ResnetBlock2D`, "default" time
/// embedding norm), as in Ho et al. 2020 (after Wide ResNet / PixelCNN++).
#include <ddpm/error.hpp>
#include <ddpm/nn/conv.hpp>

#include <torch/arg.h>
#include <torch/nn/cloneable.h>
#include <torch/nn/functional/activation.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/dropout.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/modules/normalization.h>
#include <torch/nn/pimpl.h>
#include <torch/types.h>

#include <string>
#include <vector>

namespace ddpm {

namespace detail {

/// The activation names diffusers' `get_activation` accepts (used for `act_fn`).
inline const std::vector<std::string>& activation_names() {
  static const std::vector<std::string> names = {"silu", "swish", "mish", "gelu", "relu"};
  return names;
}

/// Throws ddpm::Error if `name` is not a known activation, listing the valid ones.
inline void check_activation(const std::string& name, const std::string& context) {
  for (const auto& n : activation_names()) {
    if (n == name) return;
  }
  std::string list;
  for (const auto& n : activation_names()) list += (list.empty() ? "\"" : ", \"") + n + "\"";
  throw Error(context + ": unknown act_fn \"" + name + "\"; valid values are " + list);
}

/// Applies the activation `name` (silu == swish: x*sigmoid(x); mish; exact gelu; relu).
inline torch::Tensor activation(const torch::Tensor& x, const std::string& name) {
  if (name == "silu" || name == "swish") return torch::silu(x);
  if (name == "mish") return torch::mish(x);
  if (name == "gelu") return torch::gelu(x);
  if (name == "relu") return torch::relu(x);
  TORCH_CHECK(false, "unknown activation \"", name, "\"");
}

}  // namespace detail

/// Options of ResnetBlock.
struct ResnetBlockOptions {
  ResnetBlockOptions(int64_t in_channels, int64_t out_channels, int64_t temb_channels)
      : in_channels_(in_channels), out_channels_(out_channels), temb_channels_(temb_channels) {}
  TORCH_ARG(int64_t, in_channels);
  TORCH_ARG(int64_t, out_channels);
  /// Width of the time embedding; <= 0 means no time conditioning (no time_emb_proj).
  TORCH_ARG(int64_t, temb_channels);
  TORCH_ARG(int64_t, groups) = 32;
  TORCH_ARG(double, eps) = 1e-5;
  TORCH_ARG(double, dropout) = 0.0;
  /// The output is divided by this (diffusers `output_scale_factor`).
  TORCH_ARG(double, output_scale_factor) = 1.0;
  TORCH_ARG(std::string, act_fn) = "silu";
};

/// x [B, Cin, H, W], temb [B, T] -> [B, Cout, H, W]:
///   h = conv1(act(norm1(x))) + time_emb_proj(act(temb))[:, :, None, None]
///   h = conv2(dropout(act(norm2(h))))
///   out = (shortcut(x) + h) / output_scale_factor,  shortcut = 1x1 conv_shortcut iff Cin != Cout.
class ResnetBlockImpl : public torch::nn::Cloneable<ResnetBlockImpl> {
 public:
  explicit ResnetBlockImpl(ResnetBlockOptions opts) : options(std::move(opts)) { reset(); }

  void reset() override {
    const auto& o = options;
    TORCH_CHECK(o.in_channels() > 0 && o.out_channels() > 0 && o.groups() > 0,
                "ResnetBlock: bad sizes in=", o.in_channels(), " out=", o.out_channels(),
                " groups=", o.groups());
    TORCH_CHECK(o.in_channels() % o.groups() == 0 && o.out_channels() % o.groups() == 0,
                "ResnetBlock: channels (", o.in_channels(), ", ", o.out_channels(),
                ") must be divisible by groups ", o.groups());
    detail::check_activation(o.act_fn(), "ResnetBlock");
    norm1 = register_module(
        "norm1", torch::nn::GroupNorm(
                     torch::nn::GroupNormOptions(o.groups(), o.in_channels()).eps(o.eps())));
    conv1 = register_module(
        "conv1", ddpm::Conv2d(
                     torch::nn::Conv2dOptions(o.in_channels(), o.out_channels(), 3).padding(1)));
    time_emb_proj = nullptr;
    if (o.temb_channels() > 0) {
      time_emb_proj = register_module(
          "time_emb_proj", torch::nn::Linear(o.temb_channels(), o.out_channels()));
    }
    norm2 = register_module(
        "norm2", torch::nn::GroupNorm(
                     torch::nn::GroupNormOptions(o.groups(), o.out_channels()).eps(o.eps())));
    dropout = register_module("dropout", torch::nn::Dropout(o.dropout()));
    conv2 = register_module(
        "conv2", ddpm::Conv2d(
                     torch::nn::Conv2dOptions(o.out_channels(), o.out_channels(), 3).padding(1)));
    conv_shortcut = nullptr;
    if (o.in_channels() != o.out_channels()) {
      conv_shortcut = register_module(
          "conv_shortcut",
          ddpm::Conv2d(torch::nn::Conv2dOptions(o.in_channels(), o.out_channels(), 1)));
    }
  }

  /// x [B, in_channels, H, W], temb [B, temb_channels] (undefined if temb_channels <= 0).
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& temb) {
    TORCH_CHECK(x.dim() == 4 && x.size(1) == options.in_channels(), "ResnetBlock: expected [B, ",
                options.in_channels(), ", H, W] input, got ", x.sizes());
    const std::string& act = options.act_fn();
    torch::Tensor h = conv1(detail::activation(norm1(x), act));
    if (!time_emb_proj.is_empty()) {
      TORCH_CHECK(temb.defined() && temb.dim() == 2 && temb.size(0) == x.size(0) &&
                      temb.size(1) == options.temb_channels(),
                  "ResnetBlock: expected temb [", x.size(0), ", ", options.temb_channels(),
                  "], got ", temb.defined() ? temb.sizes() : torch::IntArrayRef{});
      h = h + time_emb_proj(detail::activation(temb, act)).unsqueeze(-1).unsqueeze(-1);
    }
    h = conv2(dropout(detail::activation(norm2(h), act)));
    const torch::Tensor shortcut = conv_shortcut.is_empty() ? x : conv_shortcut(x);
    return (shortcut + h) / options.output_scale_factor();
  }

  ResnetBlockOptions options;
  torch::nn::GroupNorm norm1{nullptr};
  Conv2d conv1{nullptr};
  torch::nn::Linear time_emb_proj{nullptr};
  torch::nn::GroupNorm norm2{nullptr};
  torch::nn::Dropout dropout{nullptr};
  Conv2d conv2{nullptr};
  Conv2d conv_shortcut{nullptr};
};
TORCH_MODULE(ResnetBlock);

}  // namespace ddpm
