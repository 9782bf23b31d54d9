#pragma once
/// ddpm::Conv2d: torch::nn::Conv2d with an optional fast inference path that runs the
/// convolution on oneDNN with its weight pre-packed once into oneDNN's blocked layout, instead of
/// re-ordering the weight on every call (LibTorch's path) or sending small spatial sizes to
/// im2col + sgemm. Training, autograd and every non-CPU or non-float32 call keep LibTorch's exact
/// path.
#include <ATen/Context.h>
#include <ATen/ops/mkldnn_convolution.h>
#include <ATen/ops/mkldnn_reorder_conv2d_weight.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/pimpl.h>
#include <torch/types.h>
#include <torch/version.h>

#include <cstdint>
#include <variant>
#include <vector>

namespace ddpm {
namespace detail {

/// std::get_if on a LibTorch variant: LibTorch 2.x uses std::variant, 1.x its own c10::variant.
template <class T, class Variant>
auto* variant_get_if(Variant* v) {
#if TORCH_VERSION_MAJOR >= 2
  return std::get_if<T>(v);
#else
  return c10::get_if<T>(v);
#endif
}

/// What identifies the current values of a set of tensors: each one's data pointer and version
/// counter (bumped by every in-place write: optimizer steps, load_state_dict's copy_). A cache
/// built from the tensors is stale when this changes. Inference tensors have no version counter
/// (-1): for them only the pointer counts.
struct TensorStamp {
  std::vector<const void*> ptrs;
  std::vector<int64_t> versions;
  bool operator==(const TensorStamp& o) const { return ptrs == o.ptrs && versions == o.versions; }
  bool operator!=(const TensorStamp& o) const { return !(*this == o); }
};

inline TensorStamp stamp_of(std::initializer_list<torch::Tensor> ts) {
  TensorStamp s;
  for (const auto& t : ts) {
    s.ptrs.push_back(t.defined() ? t.data_ptr() : nullptr);
    s.versions.push_back(!t.defined() || t.is_inference() ? -1 : static_cast<int64_t>(t._version()));
  }
  return s;
}

/// Whether a call may take a fast inference path: no autograd (InferenceMode or NoGradGuard) and
/// the module in eval mode.
inline bool fast_inference_call(const torch::nn::Module& m) {
  return !m.is_training() && !torch::GradMode::is_enabled();
}

/// Whether oneDNN can run a float32 convolution of x [B, Cin, H, W] (NCHW-contiguous, CPU) with
/// weight w: this LibTorch has oneDNN and it is not switched off.
inline bool onednn_conv_ok(const torch::Tensor& x, const torch::Tensor& w) {
  return at::hasMKLDNN() && at::globalContext().userEnabledMkldnn() && x.device().is_cpu() &&
         w.device().is_cpu() && x.scalar_type() == torch::kFloat32 &&
         w.scalar_type() == torch::kFloat32 && x.dim() == 4 && x.is_contiguous() &&
         !x.is_mkldnn() && !w.is_mkldnn();
}

/// A convolution weight [Cout, Cin/groups, kh, kw] pre-packed for oneDNN, rebuilt when its
/// source tensors change (TensorStamp).
class PackedConvWeight {
 public:
  /// The packed weight for `stamp`; `make` gives the dense weight when it must be (re)packed.
  template <typename MakeWeight>
  const torch::Tensor& get(const TensorStamp& stamp, MakeWeight make, torch::IntArrayRef padding,
                           torch::IntArrayRef stride, torch::IntArrayRef dilation, int64_t groups) {
    if (!packed_.defined() || stamp != stamp_) {
      const torch::Tensor dense = make().contiguous();
      packed_ = at::mkldnn_reorder_conv2d_weight(dense.to_mkldnn(), padding, stride, dilation, groups);
      stamp_ = stamp;
    }
    return packed_;
  }
  void clear() {
    packed_ = torch::Tensor();
    stamp_ = TensorStamp();
  }
  bool defined() const { return packed_.defined(); }

 private:
  torch::Tensor packed_;
  TensorStamp stamp_;
};

}  // namespace detail

/// torch::nn::Conv2d (same options, parameters "weight" [Cout, Cin/groups, kh, kw] and "bias"
/// [Cout], same initialisation and forward) with a fast inference path, off by default:
/// set_fast_inference(true) makes no-grad calls in eval mode on float32 NCHW CPU input run
///   y = oneDNN conv(x, packed W) + b
/// with W packed into oneDNN's blocked layout at the first such call and again only after the
/// weight changes (an optimizer step or a load: its version counter). Numbers differ from the
/// exact path by float rounding only (another summation order; ~1e-7 relative for one layer).
/// Any other call (training, autograd, CUDA, bf16, channels-last input, explicit zero-free
/// padding modes) takes LibTorch's exact path, bit for bit.
/// A clone() of this module alone is a plain torch::nn::Conv2dImpl (Cloneable<Conv2dImpl>); a
/// cloned UNet rebuilds ddpm::Conv2d layers, with the fast path off.
class Conv2dImpl : public torch::nn::Conv2dImpl {
 public:
  using torch::nn::Conv2dImpl::Conv2dImpl;

  /// x [B, Cin, H, W] -> [B, Cout, H', W'].
  torch::Tensor forward(const torch::Tensor& x) {
    if (fast_ && detail::fast_inference_call(*this) && detail::onednn_conv_ok(x, weight)) {
      const auto* pad = detail::variant_get_if<torch::ExpandingArray<2>>(&options.padding());
      if (pad != nullptr && detail::variant_get_if<torch::enumtype::kZeros>(&options.padding_mode()) != nullptr) {
        const torch::Tensor& w = packed_.get(
            detail::stamp_of({weight}), [&] { return weight; }, **pad, *options.stride(),
            *options.dilation(), options.groups());
        return at::mkldnn_convolution(x, w, bias.defined() ? c10::optional<torch::Tensor>(bias) : c10::nullopt,
                                      **pad, *options.stride(), *options.dilation(), options.groups());
      }
    }
    return torch::nn::Conv2dImpl::forward(x);
  }

  /// Switches the fast inference path on or off; off drops the packed weight.
  void set_fast_inference(bool on) {
    fast_ = on;
    if (!on) packed_.clear();
  }
  bool fast_inference() const { return fast_; }
  /// Whether a packed weight is held (the fast path has run since the last switch).
  bool has_packed_weight() const { return packed_.defined(); }

 private:
  bool fast_ = false;
  detail::PackedConvWeight packed_;
};
TORCH_MODULE(Conv2d);

}  // namespace ddpm
