#pragma once
/// The UNet's per-resolution blocks: DownBlock (diffusers DownBlock2D / AttnDownBlock2D),
/// UpBlock (UpBlock2D / AttnUpBlock2D) and MidBlock (UNetMidBlock2D).
#include <ddpm/nn/attention.hpp>
#include <ddpm/nn/resample.hpp>
#include <ddpm/nn/resnet.hpp>

#include <torch/arg.h>
#include <torch/nn/cloneable.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/pimpl.h>
#include <torch/types.h>

#include <c10/util/Optional.h>

#include <string>
#include <vector>

namespace ddpm {

namespace detail {
/// Options of a Down/Up/Mid block's ResnetBlock, `cin` -> `cout` channels, with the block's
/// time-embedding width, norm groups, eps, dropout and activation.
template <typename BlockOptions>
ResnetBlockOptions block_resnet_options(int64_t cin, int64_t cout, const BlockOptions& o) {
  return ResnetBlockOptions(cin, cout, o.temb_channels())
      .groups(o.groups())
      .eps(o.eps())
      .dropout(o.dropout())
      .act_fn(o.act_fn());
}
/// The AttentionBlock of a Down/Up/Mid block over `channels`.
template <typename BlockOptions>
AttentionBlock block_attention(int64_t channels, const BlockOptions& o) {
  return AttentionBlock(
      AttentionBlockOptions(channels).head_dim(o.attention_head_dim()).groups(o.groups()).eps(o.eps()));
}
}  // namespace detail

/// Options of DownBlock.
struct DownBlockOptions {
  DownBlockOptions(int64_t in_channels, int64_t out_channels, int64_t temb_channels)
      : in_channels_(in_channels), out_channels_(out_channels), temb_channels_(temb_channels) {}
  TORCH_ARG(int64_t, in_channels);
  TORCH_ARG(int64_t, out_channels);
  TORCH_ARG(int64_t, temb_channels);
  /// Number of resnets (diffusers `layers_per_block`).
  TORCH_ARG(int64_t, num_layers) = 2;
  /// true: AttnDownBlock2D (an attention after every resnet); false: DownBlock2D.
  TORCH_ARG(bool, attention) = false;
  TORCH_ARG(c10::optional<int64_t>, attention_head_dim) = c10::nullopt;
  TORCH_ARG(bool, add_downsample) = true;
  TORCH_ARG(int64_t, downsample_padding) = 1;
  TORCH_ARG(int64_t, groups) = 32;
  TORCH_ARG(double, eps) = 1e-5;
  TORCH_ARG(double, dropout) = 0.0;
  TORCH_ARG(std::string, act_fn) = "silu";
};

/// What a DownBlock returns: the hidden state passed on, and the skips for the up path.
struct DownBlockOutput {
  /// [B, out_channels, H', W'] (H' = ceil(H/2) when the block downsamples).
  torch::Tensor hidden;
  /// One [B, out_channels, ., .] tensor per resnet (after its attention), then the downsampled one.
  std::vector<torch::Tensor> skips;
};

/// x [B, Cin, H, W], temb [B, T] -> DownBlockOutput. Names: resnets.i, attentions.i,
/// downsamplers.0.conv (diffusers layout).
class DownBlockImpl : public torch::nn::Cloneable<DownBlockImpl> {
 public:
  explicit DownBlockImpl(DownBlockOptions opts) : options(std::move(opts)) { reset(); }

  void reset() override {
    const auto& o = options;
    TORCH_CHECK(o.num_layers() >= 1, "DownBlock: num_layers must be >= 1, got ", o.num_layers());
    if (o.attention()) attentions = register_module("attentions", torch::nn::ModuleList());
    else attentions = nullptr;
    resnets = register_module("resnets", torch::nn::ModuleList());
    for (int64_t i = 0; i < o.num_layers(); ++i) {
      const int64_t cin = i == 0 ? o.in_channels() : o.out_channels();
      resnets->push_back(ResnetBlock(detail::block_resnet_options(cin, o.out_channels(), o)));
      if (o.attention()) attentions->push_back(detail::block_attention(o.out_channels(), o));
    }
    downsamplers = nullptr;
    if (o.add_downsample()) {
      downsamplers = register_module("downsamplers", torch::nn::ModuleList());
      downsamplers->push_back(
          Downsample(DownsampleOptions(o.out_channels()).padding(o.downsample_padding())));
    }
  }

  DownBlockOutput forward(const torch::Tensor& x, const torch::Tensor& temb) {
    DownBlockOutput out;
    torch::Tensor h = x;
    for (size_t i = 0; i < resnets->size(); ++i) {
      h = resnets->at<ResnetBlockImpl>(i).forward(h, temb);
      if (!attentions.is_empty()) h = attentions->at<AttentionBlockImpl>(i).forward(h);
      out.skips.push_back(h);
    }
    if (!downsamplers.is_empty()) {
      h = downsamplers->at<DownsampleImpl>(0).forward(h);
      out.skips.push_back(h);
    }
    out.hidden = h;
    return out;
  }

  DownBlockOptions options;
  torch::nn::ModuleList attentions{nullptr};
  torch::nn::ModuleList resnets{nullptr};
  torch::nn::ModuleList downsamplers{nullptr};
};
TORCH_MODULE(DownBlock);

/// Options of UpBlock. Channel bookkeeping follows diffusers' get_up_block: resnet i takes
/// (i == 0 ? prev_output_channels : out_channels) + (i == last ? in_channels : out_channels).
struct UpBlockOptions {
  UpBlockOptions(int64_t in_channels, int64_t prev_output_channels, int64_t out_channels,
                 int64_t temb_channels)
      : in_channels_(in_channels),
        prev_output_channels_(prev_output_channels),
        out_channels_(out_channels),
        temb_channels_(temb_channels) {}
  TORCH_ARG(int64_t, in_channels);
  TORCH_ARG(int64_t, prev_output_channels);
  TORCH_ARG(int64_t, out_channels);
  TORCH_ARG(int64_t, temb_channels);
  /// Number of resnets (diffusers passes layers_per_block + 1).
  TORCH_ARG(int64_t, num_layers) = 3;
  /// true: AttnUpBlock2D; false: UpBlock2D.
  TORCH_ARG(bool, attention) = false;
  TORCH_ARG(c10::optional<int64_t>, attention_head_dim) = c10::nullopt;
  TORCH_ARG(bool, add_upsample) = true;
  TORCH_ARG(int64_t, groups) = 32;
  TORCH_ARG(double, eps) = 1e-5;
  TORCH_ARG(double, dropout) = 0.0;
  TORCH_ARG(std::string, act_fn) = "silu";
};

/// x [B, prev_output_channels, H, W], skips (num_layers tensors, consumed from the back),
/// temb [B, T] -> [B, out_channels, 2H, 2W] (H, W without upsampler). For each resnet:
/// h = attn(resnet(cat([h, skips.back()], 1), temb)). Names: attentions.i, resnets.i,
/// upsamplers.0.conv.
class UpBlockImpl : public torch::nn::Cloneable<UpBlockImpl> {
 public:
  explicit UpBlockImpl(UpBlockOptions opts) : options(std::move(opts)) { reset(); }

  void reset() override {
    const auto& o = options;
    TORCH_CHECK(o.num_layers() >= 1, "UpBlock: num_layers must be >= 1, got ", o.num_layers());
    if (o.attention()) attentions = register_module("attentions", torch::nn::ModuleList());
    else attentions = nullptr;
    resnets = register_module("resnets", torch::nn::ModuleList());
    for (int64_t i = 0; i < o.num_layers(); ++i) {
      const int64_t skip_ch = i == o.num_layers() - 1 ? o.in_channels() : o.out_channels();
      const int64_t in_ch = i == 0 ? o.prev_output_channels() : o.out_channels();
      resnets->push_back(ResnetBlock(detail::block_resnet_options(in_ch + skip_ch, o.out_channels(), o)));
      if (o.attention()) attentions->push_back(detail::block_attention(o.out_channels(), o));
    }
    upsamplers = nullptr;
    if (o.add_upsample()) {
      upsamplers = register_module("upsamplers", torch::nn::ModuleList());
      upsamplers->push_back(Upsample(UpsampleOptions(o.out_channels())));
    }
  }

  torch::Tensor forward(const torch::Tensor& x, const std::vector<torch::Tensor>& skips,
                        const torch::Tensor& temb) {
    TORCH_CHECK(skips.size() == resnets->size(), "UpBlock: expected ", resnets->size(),
                " skip tensors, got ", skips.size());
    torch::Tensor h = x;
    for (size_t i = 0; i < resnets->size(); ++i) {
      const torch::Tensor& skip = skips[skips.size() - 1 - i];
      TORCH_CHECK(skip.dim() == 4 && skip.size(0) == h.size(0) && skip.size(2) == h.size(2) &&
                      skip.size(3) == h.size(3),
                  "UpBlock: skip ", skip.sizes(), " does not match hidden state ", h.sizes());
      h = resnets->at<ResnetBlockImpl>(i).forward(torch::cat({h, skip}, 1), temb);
      if (!attentions.is_empty()) h = attentions->at<AttentionBlockImpl>(i).forward(h);
    }
    if (!upsamplers.is_empty()) h = upsamplers->at<UpsampleImpl>(0).forward(h);
    return h;
  }

  UpBlockOptions options;
  torch::nn::ModuleList attentions{nullptr};
  torch::nn::ModuleList resnets{nullptr};
  torch::nn::ModuleList upsamplers{nullptr};
};
TORCH_MODULE(UpBlock);

/// Options of MidBlock.
struct MidBlockOptions {
  MidBlockOptions(int64_t channels, int64_t temb_channels)
      : channels_(channels), temb_channels_(temb_channels) {}
  TORCH_ARG(int64_t, channels);
  TORCH_ARG(int64_t, temb_channels);
  TORCH_ARG(bool, add_attention) = true;
  TORCH_ARG(c10::optional<int64_t>, attention_head_dim) = c10::nullopt;
  TORCH_ARG(int64_t, groups) = 32;
  /// GroupNorm groups of the attention (diffusers attn_norm_num_groups); nullopt = groups.
  TORCH_ARG(c10::optional<int64_t>, attn_groups) = c10::nullopt;
  TORCH_ARG(double, eps) = 1e-5;
  TORCH_ARG(double, dropout) = 0.0;
  TORCH_ARG(std::string, act_fn) = "silu";
  /// diffusers mid_block_scale_factor: divides the resnets' and the attention's outputs.
  TORCH_ARG(double, output_scale_factor) = 1.0;
};

/// x [B, C, H, W], temb [B, T] -> [B, C, H, W]: resnets.0 -> attentions.0 -> resnets.1
/// (no attention when add_attention is false).
class MidBlockImpl : public torch::nn::Cloneable<MidBlockImpl> {
 public:
  explicit MidBlockImpl(MidBlockOptions opts) : options(std::move(opts)) { reset(); }

  void reset() override {
    const auto& o = options;
    attentions = nullptr;
    if (o.add_attention()) {
      attentions = register_module("attentions", torch::nn::ModuleList());
      attentions->push_back(AttentionBlock(AttentionBlockOptions(o.channels())
                                               .head_dim(o.attention_head_dim())
                                               .groups(o.attn_groups().value_or(o.groups()))
                                               .eps(o.eps())
                                               .rescale_output_factor(o.output_scale_factor())));
    }
    resnets = register_module("resnets", torch::nn::ModuleList());
    for (int i = 0; i < 2; ++i) {
      resnets->push_back(ResnetBlock(detail::block_resnet_options(o.channels(), o.channels(), o)
                                         .output_scale_factor(o.output_scale_factor())));
    }
  }

  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& temb) {
    torch::Tensor h = resnets->at<ResnetBlockImpl>(0).forward(x, temb);
    if (!attentions.is_empty()) h = attentions->at<AttentionBlockImpl>(0).forward(h);
    return resnets->at<ResnetBlockImpl>(1).forward(h, temb);
  }

  MidBlockOptions options;
  torch::nn::ModuleList attentions{nullptr};
  torch::nn::ModuleList resnets{nullptr};
};
TORCH_MODULE(MidBlock);

}  // namespace ddpm
