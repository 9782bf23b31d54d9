#pragma once
/// Spatial self-attention block (diffusers `Attention` as built by AttnDownBlock2D /
/// AttnUpBlock2D / UNetMidBlock2D, with `AttnProcessor`): GroupNorm, multi-head scaled
/// dot-product attention over the H*W positions (Vaswani et al. 2017), residual.
#include <torch/arg.h>
#include <torch/nn/cloneable.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/modules/normalization.h>
#include <torch/nn/pimpl.h>
#include <torch/types.h>

#include <c10/util/Optional.h>

#include <cmath>

namespace ddpm {

/// Options of AttentionBlock.
struct AttentionBlockOptions {
  explicit AttentionBlockOptions(int64_t channels) : channels_(channels) {}
  TORCH_ARG(int64_t, channels);
  /// Channels per head; heads = channels / head_dim. nullopt = one head of all channels.
  TORCH_ARG(c10::optional<int64_t>, head_dim) = c10::nullopt;
  TORCH_ARG(int64_t, groups) = 32;
  TORCH_ARG(double, eps) = 1e-5;
  /// The output (attention + residual) is divided by this.
  TORCH_ARG(double, rescale_output_factor) = 1.0;
};

/// x [B, C, H, W] -> [B, C, H, W]:
///   h = group_norm(x) viewed as [B, HW, C];  q, k, v = to_q(h), to_k(h), to_v(h)
///   per head: softmax(q k^T * dim_head^-0.5) v   (scores and softmax in float32)
///   out = (to_out.0(concat heads) + x) / rescale_output_factor.
/// Parameter names match diffusers: group_norm, to_q, to_k, to_v, to_out.0.
class AttentionBlockImpl : public torch::nn::Cloneable<AttentionBlockImpl> {
 public:
  explicit AttentionBlockImpl(AttentionBlockOptions opts) : options(std::move(opts)) {
    reset();
  }

  void reset() override {
    const int64_t c = options.channels();
    TORCH_CHECK(c > 0 && options.groups() > 0 && c % options.groups() == 0,
                "AttentionBlock: channels ", c, " must be divisible by groups ", options.groups());
    dim_head = options.head_dim().has_value() ? *options.head_dim() : c;
    TORCH_CHECK(dim_head > 0 && c % dim_head == 0, "AttentionBlock: channels ", c,
                " must be divisible by head_dim ", dim_head);
    heads = c / dim_head;
    group_norm = register_module(
        "group_norm",
        torch::nn::GroupNorm(torch::nn::GroupNormOptions(options.groups(), c).eps(options.eps())));
    to_q = register_module("to_q", torch::nn::Linear(c, c));
    to_k = register_module("to_k", torch::nn::Linear(c, c));
    to_v = register_module("to_v", torch::nn::Linear(c, c));
    to_out = register_module("to_out", torch::nn::ModuleList());
    to_out->push_back(torch::nn::Linear(c, c));
  }

  torch::Tensor forward(const torch::Tensor& x) {
    const int64_t c = options.channels();
    TORCH_CHECK(x.dim() == 4 && x.size(1) == c, "AttentionBlock: expected [B, ", c,
                ", H, W] input, got ", x.sizes());
    const int64_t b = x.size(0), hgt = x.size(2), wid = x.size(3), n = hgt * wid;
    // Made contiguous once here rather than by each of to_q/to_k/to_v.
    const torch::Tensor h = group_norm(x).reshape({b, c, n}).transpose(1, 2).contiguous();  // [B, N, C]
    auto split = [&](const torch::Tensor& t) {  // [B, N, C] -> [B*heads, N, dim_head]
      return t.reshape({b, n, heads, dim_head}).permute({0, 2, 1, 3}).reshape({b * heads, n, dim_head});
    };
    const torch::Tensor q = split(to_q(h));
    const torch::Tensor k = split(to_k(h));
    const torch::Tensor v = split(to_v(h));
    const double scale = 1.0 / std::sqrt(static_cast<double>(dim_head));
    const torch::Tensor scores =
        torch::baddbmm(torch::empty({b * heads, n, n}, q.options()), q, k.transpose(1, 2),
                       /*beta=*/0, /*alpha=*/scale);
    const torch::Tensor probs = scores.to(torch::kFloat32).softmax(-1).to(q.scalar_type());
    torch::Tensor o = torch::bmm(probs, v);                                     // [B*heads, N, dh]
    o = o.reshape({b, heads, n, dim_head}).permute({0, 2, 1, 3}).reshape({b, n, c});
    o = to_out->at<torch::nn::LinearImpl>(0).forward(o);                    // [B, N, C]
    // The transposed view has channels-last strides. An NCHW input gets an NCHW output: the
    // residual add would otherwise pass those strides on, and every later convolution would copy
    // its weight to channels-last on each call. A channels-last input (UNet::set_channels_last)
    // keeps them, without a copy.
    o = o.transpose(1, 2).view({b, c, hgt, wid}).contiguous(x.suggest_memory_format());
    return (o + x) / options.rescale_output_factor();
  }

  AttentionBlockOptions options;
  int64_t heads = 1;
  int64_t dim_head = 0;
  torch::nn::GroupNorm group_norm{nullptr};
  torch::nn::Linear to_q{nullptr};
  torch::nn::Linear to_k{nullptr};
  torch::nn::Linear to_v{nullptr};
  /// Holds one Linear at index 0 (diffusers' to_out[1] is a parameter-free dropout).
  torch::nn::ModuleList to_out{nullptr};
};
TORCH_MODULE(AttentionBlock);

}  // namespace ddpm
