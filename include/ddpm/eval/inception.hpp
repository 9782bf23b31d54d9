#pragma once
/// The FID variant of Inception-v3 exactly as pytorch-fid 0.3.0 builds it
/// (pytorch_fid/inception.py: fid_inception_v3 + InceptionV3(output_blocks=[3])), returning the
/// 2048-d final average-pool features used for FID:
///
///   x [B, 3, H, W] in [-1, 1]   (pytorch-fid takes [0, 1] and maps it by 2x - 1 after the
///                                resize; bilinear resizing commutes with that affine map)
///   bilinear resize to 299x299 (align_corners = false)
///   Conv2d_1a_3x3 (3->32, s2)  Conv2d_2a_3x3 (32->32)  Conv2d_2b_3x3 (32->64, p1)  maxpool 3/2
///   Conv2d_3b_1x1 (64->80)     Conv2d_4a_3x3 (80->192)                             maxpool 3/2
///   Mixed_5b/5c/5d  FIDInceptionA (pool features 32, 64, 64; avg pool count_include_pad=false)
///   Mixed_6a        InceptionB
///   Mixed_6b..6e    FIDInceptionC (c7 = 128, 160, 160, 192; avg pool count_include_pad=false)
///   Mixed_7a        InceptionD
///   Mixed_7b        FIDInceptionE_1 (avg pool count_include_pad=false)
///   Mixed_7c        FIDInceptionE_2 (max pool 3/1/1 in the pool branch)
///   adaptive avg pool 1x1 -> [B, 2048]
///
/// Every BasicConv2d is conv (no bias) + BatchNorm (eps 1e-3, inference statistics) + ReLU.
/// Module names equal the keys of pytorch-fid's weight file (pt_inception-2015-12-05-6726825d.pth),
/// e.g. "Mixed_6b.branch7x7dbl_3.conv.weight", "Conv2d_1a_3x3.bn.running_var"; its classifier
/// ("fc.*", 1008 classes) is not used. tools/convert_fid_inception.py turns that .pth into the
/// safetensors file load_fid_inception() reads. 1-channel images are repeated to 3 channels.
#include <ddpm/error.hpp>
#include <ddpm/eval/module_state.hpp>
#include <ddpm/io/safetensors.hpp>

#include <torch/nn/cloneable.h>
#include <torch/nn/functional/batchnorm.h>
#include <torch/nn/functional/pooling.h>
#include <torch/nn/functional/upsampling.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/pimpl.h>
#include <torch/types.h>

#include <map>
#include <string>
#include <vector>

namespace ddpm {

namespace detail {

/// Inference-only BatchNorm2d holding exactly the four tensors of the weight file.
class FidBatchNormImpl : public torch::nn::Cloneable<FidBatchNormImpl> {
 public:
  explicit FidBatchNormImpl(int64_t channels) : channels(channels) { reset(); }
  void reset() override {
    weight = register_parameter("weight", torch::ones({channels}));
    bias = register_parameter("bias", torch::zeros({channels}));
    running_mean = register_buffer("running_mean", torch::zeros({channels}));
    running_var = register_buffer("running_var", torch::ones({channels}));
  }
  torch::Tensor forward(const torch::Tensor& x) {
    return torch::batch_norm(x, weight, bias, running_mean, running_var, /*training=*/false, 0.0, 1e-3,
                             /*cudnn_enabled=*/true);
  }
  int64_t channels;
  torch::Tensor weight, bias, running_mean, running_var;
};
TORCH_MODULE(FidBatchNorm);

/// conv (no bias) + BN(eps 1e-3) + ReLU, torchvision's BasicConv2d.
class BasicConv2dImpl : public torch::nn::Cloneable<BasicConv2dImpl> {
 public:
  BasicConv2dImpl(int64_t in, int64_t out, std::vector<int64_t> kernel, std::vector<int64_t> stride = {1, 1},
                  std::vector<int64_t> padding = {0, 0})
      : in(in), out(out), kernel(std::move(kernel)), stride(std::move(stride)), padding(std::move(padding)) {
    reset();
  }
  void reset() override {
    conv = register_module("conv", torch::nn::Conv2d(torch::nn::Conv2dOptions(in, out, torch::ExpandingArray<2>(kernel))
                                                         .stride(torch::ExpandingArray<2>(stride))
                                                         .padding(torch::ExpandingArray<2>(padding))
                                                         .bias(false)));
    bn = register_module("bn", FidBatchNorm(out));
  }
  torch::Tensor forward(const torch::Tensor& x) { return torch::relu(bn->forward(conv->forward(x))); }
  int64_t in, out;
  std::vector<int64_t> kernel, stride, padding;
  torch::nn::Conv2d conv{nullptr};
  FidBatchNorm bn{nullptr};
};
TORCH_MODULE(BasicConv2d);

inline torch::Tensor fid_avg_pool(const torch::Tensor& x) {
  namespace F = torch::nn::functional;
  return F::avg_pool2d(x, F::AvgPool2dFuncOptions(3).stride(1).padding(1).count_include_pad(false));
}
inline torch::Tensor max_pool_3s2(const torch::Tensor& x) {
  namespace F = torch::nn::functional;
  return F::max_pool2d(x, F::MaxPool2dFuncOptions(3).stride(2));
}

/// Base for the Mixed blocks: named BasicConv2d children.
class InceptionBlockImpl : public torch::nn::Cloneable<InceptionBlockImpl> {
 public:
  enum Kind { A, B, C, D, E1, E2 };
  InceptionBlockImpl(Kind kind, int64_t in, int64_t param = 0) : kind(kind), in(in), param(param) { reset(); }

  void reset() override {
    convs.clear();
    auto add = [&](const std::string& name, int64_t i, int64_t o, std::vector<int64_t> k, std::vector<int64_t> s,
                   std::vector<int64_t> p) { convs.insert_or_assign(name, register_module(name, BasicConv2d(i, o, k, s, p))); };
    const std::vector<int64_t> s1{1, 1}, s2{2, 2}, p0{0, 0}, p1{1, 1};
    switch (kind) {
      case A:  // param = pool_features
        add("branch1x1", in, 64, {1, 1}, s1, p0);
        add("branch5x5_1", in, 48, {1, 1}, s1, p0);
        add("branch5x5_2", 48, 64, {5, 5}, s1, {2, 2});
        add("branch3x3dbl_1", in, 64, {1, 1}, s1, p0);
        add("branch3x3dbl_2", 64, 96, {3, 3}, s1, p1);
        add("branch3x3dbl_3", 96, 96, {3, 3}, s1, p1);
        add("branch_pool", in, param, {1, 1}, s1, p0);
        break;
      case B:
        add("branch3x3", in, 384, {3, 3}, s2, p0);
        add("branch3x3dbl_1", in, 64, {1, 1}, s1, p0);
        add("branch3x3dbl_2", 64, 96, {3, 3}, s1, p1);
        add("branch3x3dbl_3", 96, 96, {3, 3}, s2, p0);
        break;
      case C: {  // param = channels_7x7
        const int64_t c7 = param;
        add("branch1x1", in, 192, {1, 1}, s1, p0);
        add("branch7x7_1", in, c7, {1, 1}, s1, p0);
        add("branch7x7_2", c7, c7, {1, 7}, s1, {0, 3});
        add("branch7x7_3", c7, 192, {7, 1}, s1, {3, 0});
        add("branch7x7dbl_1", in, c7, {1, 1}, s1, p0);
        add("branch7x7dbl_2", c7, c7, {7, 1}, s1, {3, 0});
        add("branch7x7dbl_3", c7, c7, {1, 7}, s1, {0, 3});
        add("branch7x7dbl_4", c7, c7, {7, 1}, s1, {3, 0});
        add("branch7x7dbl_5", c7, 192, {1, 7}, s1, {0, 3});
        add("branch_pool", in, 192, {1, 1}, s1, p0);
        break;
      }
      case D:
        add("branch3x3_1", in, 192, {1, 1}, s1, p0);
        add("branch3x3_2", 192, 320, {3, 3}, s2, p0);
        add("branch7x7x3_1", in, 192, {1, 1}, s1, p0);
        add("branch7x7x3_2", 192, 192, {1, 7}, s1, {0, 3});
        add("branch7x7x3_3", 192, 192, {7, 1}, s1, {3, 0});
        add("branch7x7x3_4", 192, 192, {3, 3}, s2, p0);
        break;
      case E1:
      case E2:
        add("branch1x1", in, 320, {1, 1}, s1, p0);
        add("branch3x3_1", in, 384, {1, 1}, s1, p0);
        add("branch3x3_2a", 384, 384, {1, 3}, s1, {0, 1});
        add("branch3x3_2b", 384, 384, {3, 1}, s1, {1, 0});
        add("branch3x3dbl_1", in, 448, {1, 1}, s1, p0);
        add("branch3x3dbl_2", 448, 384, {3, 3}, s1, p1);
        add("branch3x3dbl_3a", 384, 384, {1, 3}, s1, {0, 1});
        add("branch3x3dbl_3b", 384, 384, {3, 1}, s1, {1, 0});
        add("branch_pool", in, 192, {1, 1}, s1, p0);
        break;
    }
  }

  torch::Tensor forward(const torch::Tensor& x) {
    namespace F = torch::nn::functional;
    auto c = [&](const char* name, const torch::Tensor& t) { return convs.at(name)->forward(t); };
    switch (kind) {
      case A: {
        auto b1 = c("branch1x1", x);
        auto b5 = c("branch5x5_2", c("branch5x5_1", x));
        auto b3 = c("branch3x3dbl_3", c("branch3x3dbl_2", c("branch3x3dbl_1", x)));
        auto bp = c("branch_pool", fid_avg_pool(x));
        return torch::cat({b1, b5, b3, bp}, 1);
      }
      case B: {
        auto b3 = c("branch3x3", x);
        auto bd = c("branch3x3dbl_3", c("branch3x3dbl_2", c("branch3x3dbl_1", x)));
        return torch::cat({b3, bd, max_pool_3s2(x)}, 1);
      }
      case C: {
        auto b1 = c("branch1x1", x);
        auto b7 = c("branch7x7_3", c("branch7x7_2", c("branch7x7_1", x)));
        auto bd = c("branch7x7dbl_5",
                    c("branch7x7dbl_4", c("branch7x7dbl_3", c("branch7x7dbl_2", c("branch7x7dbl_1", x)))));
        auto bp = c("branch_pool", fid_avg_pool(x));
        return torch::cat({b1, b7, bd, bp}, 1);
      }
      case D: {
        auto b3 = c("branch3x3_2", c("branch3x3_1", x));
        auto b7 = c("branch7x7x3_4", c("branch7x7x3_3", c("branch7x7x3_2", c("branch7x7x3_1", x))));
        return torch::cat({b3, b7, max_pool_3s2(x)}, 1);
      }
      case E1:
      case E2: {
        auto b1 = c("branch1x1", x);
        auto t = c("branch3x3_1", x);
        auto b3 = torch::cat({c("branch3x3_2a", t), c("branch3x3_2b", t)}, 1);
        auto u = c("branch3x3dbl_2", c("branch3x3dbl_1", x));
        auto bd = torch::cat({c("branch3x3dbl_3a", u), c("branch3x3dbl_3b", u)}, 1);
        auto pooled = kind == E1 ? fid_avg_pool(x)
                                 : F::max_pool2d(x, F::MaxPool2dFuncOptions(3).stride(1).padding(1));
        return torch::cat({b1, b3, bd, c("branch_pool", pooled)}, 1);
      }
    }
    return x;
  }

  Kind kind;
  int64_t in, param;
  std::map<std::string, BasicConv2d> convs;
};
TORCH_MODULE(InceptionBlock);

}  // namespace detail

/// The FID Inception-v3 feature extractor; see the header comment.
class FidInceptionImpl : public torch::nn::Cloneable<FidInceptionImpl> {
 public:
  /// Feature dimension of the final average pool.
  static constexpr int64_t kFeatureDim = 2048;

  FidInceptionImpl() { reset(); }

  void reset() override {
    using detail::BasicConv2d;
    using detail::InceptionBlock;
    using K = detail::InceptionBlockImpl::Kind;
    stem.clear();
    mixed.clear();
    auto conv = [&](const std::string& name, int64_t i, int64_t o, int64_t k, int64_t s, int64_t p) {
      stem.push_back(register_module(name, BasicConv2d(i, o, std::vector<int64_t>{k, k}, std::vector<int64_t>{s, s},
                                                       std::vector<int64_t>{p, p})));
    };
    conv("Conv2d_1a_3x3", 3, 32, 3, 2, 0);
    conv("Conv2d_2a_3x3", 32, 32, 3, 1, 0);
    conv("Conv2d_2b_3x3", 32, 64, 3, 1, 1);
    conv("Conv2d_3b_1x1", 64, 80, 1, 1, 0);
    conv("Conv2d_4a_3x3", 80, 192, 3, 1, 0);
    auto block = [&](const std::string& name, K kind, int64_t in, int64_t param) {
      mixed.push_back(register_module(name, InceptionBlock(kind, in, param)));
    };
    block("Mixed_5b", K::A, 192, 32);
    block("Mixed_5c", K::A, 256, 64);
    block("Mixed_5d", K::A, 288, 64);
    block("Mixed_6a", K::B, 288, 0);
    block("Mixed_6b", K::C, 768, 128);
    block("Mixed_6c", K::C, 768, 160);
    block("Mixed_6d", K::C, 768, 160);
    block("Mixed_6e", K::C, 768, 192);
    block("Mixed_7a", K::D, 768, 0);
    block("Mixed_7b", K::E1, 1280, 0);
    block("Mixed_7c", K::E2, 2048, 0);
  }

  /// images [B, 3 or 1, H, W] in [-1, 1] (any size; resized to 299x299) -> features [B, 2048].
  torch::Tensor forward(const torch::Tensor& images) {
    namespace F = torch::nn::functional;
    TORCH_CHECK(images.dim() == 4 && (images.size(1) == 3 || images.size(1) == 1),
                "FidInception: expected images [B, 3, H, W] (or [B, 1, H, W], repeated to 3 channels), got ",
                images.sizes());
    torch::Tensor x = images.to(torch::kFloat32);
    if (x.size(1) == 1) x = x.repeat({1, 3, 1, 1});
    // pytorch-fid: interpolate(x01, 299, bilinear) then 2 * x - 1. Here x = 2 * x01 - 1 already;
    // bilinear interpolation is affine-equivariant, so the order does not matter (to rounding).
    x = F::interpolate(x, F::InterpolateFuncOptions()
                              .size(std::vector<int64_t>{299, 299})
                              .mode(torch::kBilinear)
                              .align_corners(false));
    x = stem[0]->forward(x);
    x = stem[1]->forward(x);
    x = stem[2]->forward(x);
    x = detail::max_pool_3s2(x);
    x = stem[3]->forward(x);
    x = stem[4]->forward(x);
    x = detail::max_pool_3s2(x);
    for (auto& m : mixed) x = m->forward(x);
    return x.mean({2, 3});
  }

  std::vector<detail::BasicConv2d> stem;
  std::vector<detail::InceptionBlock> mixed;
};
TORCH_MODULE(FidInception);

/// Builds FidInception from a safetensors file of pytorch-fid's weights (made by
/// tools/convert_fid_inception.py), in eval mode on the CPU. A missing file raises ddpm::Error
/// saying where to get the weights.
inline FidInception load_fid_inception(const std::string& path) {
  if (!detail::file_readable(path)) {
    throw Error("FID Inception weights '" + path +
                "' not found. ddpm cannot download them: fetch pytorch-fid's "
                "pt_inception-2015-12-05-6726825d.pth yourself (https://github.com/mseitzer/pytorch-fid/releases/"
                "download/fid_weights/pt_inception-2015-12-05-6726825d.pth) and convert it with "
                "`python tools/convert_fid_inception.py pt_inception-2015-12-05-6726825d.pth " +
                path + "`");
  }
  FidInception net;
  detail::load_module_state(*net, load_safetensors(path), "FID Inception weights '" + path + "'", {"fc."},
                            {"num_batches_tracked"});
  net->eval();
  return net;
}

}  // namespace ddpm
