#pragma once
/// Floating-point operation counts of a UNet forward pass, computed by walking the model's
/// layers (their weights' shapes and conv options) while propagating the spatial size.
/// Used by the benchmark (tests/bench) to turn times into GFLOP/s. (In nn/, beside the UNet it
/// walks: detail/ sits below nn/ and includes nothing from it.)
///
/// Convention: a multiply-add is 2 FLOPs. Counted: every Conv2d (2 Cout Cin/g kh kw Hout Wout),
/// every Linear (2 in out per row) and the two attention matmuls (QK^T and PV, 2 N^2 C each,
/// summed over heads). Not counted in the matmul total: GroupNorm, activations, additions,
/// softmax, upsampling copies (memory-bound work, reported separately as element counts).
#include <ddpm/nn/conv.hpp>
#include <ddpm/nn/unet.hpp>

#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/linear.h>

#include <cstdint>

namespace ddpm {

/// FLOPs of one UNet forward pass for ONE image (multiply-add = 2 FLOPs).
struct UNetFlops {
  double conv = 0;       ///< all Conv2d layers (conv_in/out, resnets, shortcuts, resamplers)
  double linear = 0;     ///< time MLP, time_emb_proj, attention q/k/v/out projections
  double attention = 0;  ///< QK^T and softmax(.)V matmuls
  /// Elements read by GroupNorm layers (memory-bound work; informative, not in matmul()).
  double norm_elements = 0;
  /// conv + linear + attention.
  double matmul() const { return conv + linear + attention; }
};

namespace detail {

/// Adds a Conv2d's FLOPs for an [., Cin, h, w] input (after `extra_pad` zero rows/cols on the
/// right/bottom) and replaces h, w with the output size.
inline void count_conv(const torch::nn::Conv2dImpl& conv, int64_t& h, int64_t& w, UNetFlops& f,
                       int64_t extra_pad = 0) {
  const auto& o = conv.options;
  const auto& wt = conv.weight;  // [Cout, Cin/groups, kh, kw]
  const int64_t kh = wt.size(2), kw = wt.size(3);
  const int64_t sh = (*o.stride())[0], sw = (*o.stride())[1];
  const int64_t dh = (*o.dilation())[0], dw = (*o.dilation())[1];
  int64_t ph = 0, pw = 0;
  if (const auto* pad = variant_get_if<torch::ExpandingArray<2>>(&o.padding())) {
    ph = (**pad)[0];
    pw = (**pad)[1];
  } else if (variant_get_if<torch::enumtype::kSame>(&o.padding())) {
    ph = dh * (kh - 1) / 2;
    pw = dw * (kw - 1) / 2;
  }
  const int64_t hin = h + extra_pad, win = w + extra_pad;
  const int64_t hout = (hin + 2 * ph - dh * (kh - 1) - 1) / sh + 1;
  const int64_t wout = (win + 2 * pw - dw * (kw - 1) - 1) / sw + 1;
  f.conv += 2.0 * static_cast<double>(wt.size(0)) * static_cast<double>(wt.size(1) * kh * kw) *
            static_cast<double>(hout * wout);
  h = hout;
  w = wout;
}

/// A Linear applied to `rows` rows.
inline void count_linear(const torch::nn::LinearImpl& lin, double rows, UNetFlops& f) {
  f.linear += 2.0 * rows * static_cast<double>(lin.weight.size(0) * lin.weight.size(1));
}

inline void count_resnet(const ResnetBlockImpl& r, int64_t& h, int64_t& w, UNetFlops& f) {
  const double hw = static_cast<double>(h * w);
  f.norm_elements += hw * static_cast<double>(r.options.in_channels() + r.options.out_channels());
  int64_t h1 = h, w1 = w;
  count_conv(*r.conv1, h1, w1, f);
  if (!r.time_emb_proj.is_empty()) count_linear(*r.time_emb_proj, 1, f);
  int64_t h2 = h1, w2 = w1;
  count_conv(*r.conv2, h2, w2, f);
  if (!r.conv_shortcut.is_empty()) {
    int64_t hs = h, ws = w;
    count_conv(*r.conv_shortcut, hs, ws, f);
  }
  h = h2;
  w = w2;
}

inline void count_attention(const AttentionBlockImpl& a, int64_t h, int64_t w, UNetFlops& f) {
  const double n = static_cast<double>(h * w);
  const double c = static_cast<double>(a.options.channels());
  f.norm_elements += n * c;
  count_linear(*a.to_q, n, f);
  count_linear(*a.to_k, n, f);
  count_linear(*a.to_v, n, f);
  count_linear(a.to_out->at<torch::nn::LinearImpl>(0), n, f);
  f.attention += 2.0 * (2.0 * n * n * c);  // QK^T and PV over all heads
}

}  // namespace detail

/// FLOPs of unet.forward on ONE [in_channels, height, width] image (see UNetFlops).
/// A training step (forward + backward) costs about 3x this: the backward pass computes both
/// the input gradient and the weight gradient of every matmul, each as costly as the forward.
inline UNetFlops unet_forward_flops(const UNetImpl& unet, int64_t height, int64_t width) {
  UNetFlops f;
  int64_t h = height, w = width;
  detail::count_linear(*unet.time_embedding->linear_1, 1, f);
  detail::count_linear(*unet.time_embedding->linear_2, 1, f);
  if (unet.class_timestep_embedding) {  // class_embed_type "timestep": a second time MLP
    detail::count_linear(*unet.class_timestep_embedding->linear_1, 1, f);
    detail::count_linear(*unet.class_timestep_embedding->linear_2, 1, f);
  }
  detail::count_conv(*unet.conv_in, h, w, f);
  // Spatial size of every skip, to size the up path exactly like the forward pass does.
  for (size_t i = 0; i < unet.down_blocks->size(); ++i) {
    const auto& block = unet.down_blocks->at<DownBlockImpl>(i);
    for (size_t j = 0; j < block.resnets->size(); ++j) {
      detail::count_resnet(block.resnets->at<ResnetBlockImpl>(j), h, w, f);
      if (!block.attentions.is_empty()) {
        detail::count_attention(block.attentions->at<AttentionBlockImpl>(j), h, w, f);
      }
    }
    if (!block.downsamplers.is_empty()) {
      const auto& down = block.downsamplers->at<DownsampleImpl>(0);
      detail::count_conv(*down.conv, h, w, f, down.options.padding() == 0 ? 1 : 0);
    }
  }
  const auto& mid = *unet.mid_block;
  detail::count_resnet(mid.resnets->at<ResnetBlockImpl>(0), h, w, f);
  if (!mid.attentions.is_empty()) {
    detail::count_attention(mid.attentions->at<AttentionBlockImpl>(0), h, w, f);
  }
  detail::count_resnet(mid.resnets->at<ResnetBlockImpl>(1), h, w, f);
  for (size_t i = 0; i < unet.up_blocks->size(); ++i) {
    const auto& block = unet.up_blocks->at<UpBlockImpl>(i);
    for (size_t j = 0; j < block.resnets->size(); ++j) {
      detail::count_resnet(block.resnets->at<ResnetBlockImpl>(j), h, w, f);
      if (!block.attentions.is_empty()) {
        detail::count_attention(block.attentions->at<AttentionBlockImpl>(j), h, w, f);
      }
    }
    if (!block.upsamplers.is_empty()) {
      h *= 2;
      w *= 2;
      detail::count_conv(*block.upsamplers->at<UpsampleImpl>(0).conv, h, w, f);
    }
  }
  f.norm_elements += static_cast<double>(h * w * unet.conv_norm_out->options.num_channels());
  detail::count_conv(*unet.conv_out, h, w, f);
  return f;
}

}  // namespace ddpm
