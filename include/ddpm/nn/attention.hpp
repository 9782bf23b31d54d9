#pragma once
/// Spatial self-attention block (diffusers `Attention` as built by AttnDownBlock2D /
/// AttnUpBlock2D / UNetMidBlock2D, with `AttnProcessor`): GroupNorm, multi-head scaled
/// dot-product attention over the H*W positions (Vaswani et al. 2017), residual.
#include <ddpm/nn/conv.hpp>

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
    if (fast_ && detail::fast_inference_call(*this) && detail::onednn_conv_ok(x, to_q->weight)) {
      return forward_fast(x);
    }
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

  /// Switches the fast inference path on or off (see forward_fast); off drops its packed weights.
  void set_fast_inference(bool on) {
    fast_ = on;
    if (!on) {
      qkv_.clear();
      out_.clear();
      qkv_bias_ = torch::Tensor();
    }
  }
  bool fast_inference() const { return fast_; }

  AttentionBlockOptions options;
  int64_t heads = 1;
  int64_t dim_head = 0;
  torch::nn::GroupNorm group_norm{nullptr};
  torch::nn::Linear to_q{nullptr};
  torch::nn::Linear to_k{nullptr};
  torch::nn::Linear to_v{nullptr};
  /// Holds one Linear at index 0 (diffusers' to_out[1] is a parameter-free dropout).
  torch::nn::ModuleList to_out{nullptr};

 private:
  bool fast_ = false;
  detail::PackedConvWeight qkv_;  ///< [3C, C, 1, 1], rows ordered (head, q|k|v, dim_head)
  detail::PackedConvWeight out_;  ///< to_out.0 as [C, C, 1, 1]
  torch::Tensor qkv_bias_;        ///< [3C], same row order
  detail::TensorStamp qkv_bias_stamp_;

  /// The same attention in the channel-major layout, with no transposed copies:
  ///   h = group_norm(x) [B, C, N];  [q; k; v] = W_qkv h + b_qkv as one 1x1 oneDNN convolution
  ///   (the three projections' weights fused and pre-packed), giving per head q, k, v [dh, N];
  ///   scores = scale q^T k [N, N] and o = v softmax(scores)^T [dh, N] (BLAS reads the transposes
  ///   through strides); out = (W_out o + b_out + x) / rescale_output_factor, W_out again a
  ///   pre-packed 1x1 convolution. o [B, heads, dh, N] is already [B, C, H, W].
  torch::Tensor forward_fast(const torch::Tensor& x) {
    const int64_t c = options.channels();
    const int64_t b = x.size(0), hgt = x.size(2), wid = x.size(3), n = hgt * wid;
    const auto& q_lin = *to_q;
    const auto& k_lin = *to_k;
    const auto& v_lin = *to_v;
    auto& o_lin = to_out->at<torch::nn::LinearImpl>(0);
    const detail::TensorStamp s =
        detail::stamp_of({q_lin.weight, k_lin.weight, v_lin.weight, q_lin.bias, k_lin.bias, v_lin.bias});
    // Rows (head, q|k|v, dim_head): a head's q, k and v are adjacent, so [B, 3C, N] views as
    // [B * heads, 3, dh, N] and q, k, v are strided slices of it.
    auto interleave = [&](const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v) {
      return torch::stack({q.reshape({heads, dim_head, -1}), k.reshape({heads, dim_head, -1}),
                           v.reshape({heads, dim_head, -1})},
                          1);  // [heads, 3, dh, ...]
    };
    const torch::Tensor& w_qkv = qkv_.get(
        s, [&] { return interleave(q_lin.weight, k_lin.weight, v_lin.weight).reshape({3 * c, c, 1, 1}); },
        {0, 0}, {1, 1}, {1, 1}, 1);
    if (!qkv_bias_.defined() || qkv_bias_stamp_ != s) {
      qkv_bias_ = interleave(q_lin.bias, k_lin.bias, v_lin.bias).reshape({3 * c}).contiguous();
      qkv_bias_stamp_ = s;
    }
    const torch::Tensor h = group_norm(x).contiguous();  // [B, C, H, W]
    const torch::Tensor qkv =
        at::mkldnn_convolution(h, w_qkv, qkv_bias_, {0, 0}, {1, 1}, {1, 1}, 1).view({b * heads, 3, dim_head, n});
    const torch::Tensor q = qkv.select(1, 0);  // [B*heads, dh, N]
    const torch::Tensor k = qkv.select(1, 1);
    const torch::Tensor v = qkv.select(1, 2);
    const double scale = 1.0 / std::sqrt(static_cast<double>(dim_head));
    const torch::Tensor scores = torch::baddbmm(torch::empty({b * heads, n, n}, x.options()),
                                                q.transpose(1, 2), k, /*beta=*/0, /*alpha=*/scale);
    const torch::Tensor probs = scores.softmax(-1);                              // [B*heads, N, N]
    const torch::Tensor o = torch::bmm(v, probs.transpose(1, 2)).view({b, c, hgt, wid});
    const torch::Tensor& w_out = out_.get(
        detail::stamp_of({o_lin.weight}), [&] { return o_lin.weight.reshape({c, c, 1, 1}); }, {0, 0}, {1, 1},
        {1, 1}, 1);
    torch::Tensor out = at::mkldnn_convolution(o, w_out, o_lin.bias, {0, 0}, {1, 1}, {1, 1}, 1);
    out.add_(x);
    if (options.rescale_output_factor() != 1.0) out.div_(options.rescale_output_factor());
    return out;
  }
};
TORCH_MODULE(AttentionBlock);

}  // namespace ddpm
