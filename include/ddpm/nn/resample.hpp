#pragma once
/// Resolution changes between UNet levels (diffusers `Downsample2D` / `Upsample2D` with
/// use_conv=True).
#include <ddpm/nn/conv.hpp>

#include <torch/arg.h>
#include <torch/nn/cloneable.h>
#include <torch/nn/functional/padding.h>
#include <torch/nn/functional/upsampling.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/pimpl.h>
#include <torch/types.h>

#include <vector>

namespace ddpm {

/// Options of Downsample.
struct DownsampleOptions {
  explicit DownsampleOptions(int64_t channels) : channels_(channels) {}
  TORCH_ARG(int64_t, channels);
  /// Conv padding (diffusers `downsample_padding`). 0 pads right and bottom by one first.
  TORCH_ARG(int64_t, padding) = 1;
};

/// x [B, C, H, W] -> [B, C, ceil(H/2), ceil(W/2)] by a 3x3 convolution with stride 2.
/// Parameter names: conv.{weight,bias}.
class DownsampleImpl : public torch::nn::Cloneable<DownsampleImpl> {
 public:
  explicit DownsampleImpl(DownsampleOptions opts) : options(std::move(opts)) { reset(); }
  void reset() override {
    TORCH_CHECK(options.padding() >= 0, "Downsample: padding must be >= 0, got ", options.padding());
    conv = register_module(
        "conv", ddpm::Conv2d(torch::nn::Conv2dOptions(options.channels(), options.channels(), 3)
                                      .stride(2)
                                      .padding(options.padding())));
  }
  torch::Tensor forward(const torch::Tensor& x) {
    TORCH_CHECK(x.dim() == 4 && x.size(1) == options.channels(), "Downsample: expected [B, ",
                options.channels(), ", H, W] input, got ", x.sizes());
    if (options.padding() == 0) {
      namespace F = torch::nn::functional;
      return conv(F::pad(x, F::PadFuncOptions({0, 1, 0, 1}).mode(torch::kConstant).value(0)));
    }
    return conv(x);
  }
  DownsampleOptions options;
  Conv2d conv{nullptr};
};
TORCH_MODULE(Downsample);

/// Options of Upsample.
struct UpsampleOptions {
  explicit UpsampleOptions(int64_t channels) : channels_(channels) {}
  TORCH_ARG(int64_t, channels);
};

/// x [B, C, H, W] -> [B, C, 2H, 2W]: nearest-neighbour x2, then a 3x3 convolution.
/// Parameter names: conv.{weight,bias}.
class UpsampleImpl : public torch::nn::Cloneable<UpsampleImpl> {
 public:
  explicit UpsampleImpl(UpsampleOptions opts) : options(std::move(opts)) { reset(); }
  void reset() override {
    conv = register_module(
        "conv", ddpm::Conv2d(
                    torch::nn::Conv2dOptions(options.channels(), options.channels(), 3).padding(1)));
  }
  torch::Tensor forward(const torch::Tensor& x) {
    TORCH_CHECK(x.dim() == 4 && x.size(1) == options.channels(), "Upsample: expected [B, ",
                options.channels(), ", H, W] input, got ", x.sizes());
    namespace F = torch::nn::functional;
    const torch::Tensor up = F::interpolate(
        x, F::InterpolateFuncOptions().scale_factor(std::vector<double>{2.0, 2.0}).mode(torch::kNearest));
    return conv(up);
  }
  UpsampleOptions options;
  Conv2d conv{nullptr};
};
TORCH_MODULE(Upsample);

}  // namespace ddpm
