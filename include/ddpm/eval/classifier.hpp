#pragma once
/// A compact CNN classifier for 1-channel 28x28 images (Fashion-MNIST / MNIST) whose
/// penultimate layer serves as the feature network of the "FD-fmnist" distance: the real
/// Inception weights cannot ship with ddpm, this one is trained by examples/train_classifier.cpp
/// in a few CPU minutes and committed (share/ddpm/eval/, ~0.5 MB).
///
///   x [B, 1, 28, 28] in [-1, 1]   (32x32 inputs, the DDPM training size, lose their 2-pixel
///                                  background border: the trainer pads 28 -> 32)
///   conv3x3(1 -> w)   BN ReLU                    28x28
///   conv3x3(w -> 2w)  BN ReLU maxpool2           14x14
///   conv3x3(2w -> 4w) BN ReLU maxpool2            7x7
///   conv3x3(4w -> 4w) BN ReLU maxpool2            3x3
///   fc(36w -> F)                    = features [B, F]   (pre-activation)
///   ReLU dropout fc(F -> K)         = logits [B, K]
///
/// Defaults w = 16, F = 128, K = 10: 134k parameters, 9 MFLOP-MACs per image.
#include <ddpm/error.hpp>
#include <ddpm/eval/module_state.hpp>
#include <ddpm/io/safetensors.hpp>

#include <torch/arg.h>
#include <torch/nn/cloneable.h>
#include <torch/nn/functional/activation.h>
#include <torch/nn/functional/dropout.h>
#include <torch/nn/functional/loss.h>
#include <torch/nn/functional/pooling.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/batchnorm.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/pimpl.h>
#include <torch/optim/optimizer.h>
#include <torch/types.h>

#include <map>
#include <string>
#include <vector>

namespace ddpm {

/// Shape of the classifier.
struct ClassifierOptions {
  /// Base channel width w.
  TORCH_ARG(int64_t, width) = 16;
  /// Feature dimension F (the penultimate layer).
  TORCH_ARG(int64_t, feature_dim) = 128;
  /// Number of classes K.
  TORCH_ARG(int64_t, num_classes) = 10;
  /// Dropout before the last layer (training only).
  TORCH_ARG(double, dropout) = 0.3;
};

/// Features and logits of one batch.
struct ClassifierOutput {
  torch::Tensor features;  ///< [B, F]
  torch::Tensor logits;    ///< [B, K]
};

/// The network; see the header comment.
class ClassifierImpl : public torch::nn::Cloneable<ClassifierImpl> {
 public:
  explicit ClassifierImpl(ClassifierOptions options = {}) : options(options) { reset(); }

  void reset() override {
    const int64_t w = options.width();
    TORCH_CHECK(w > 0 && options.feature_dim() > 0 && options.num_classes() > 1,
                "Classifier: width, feature_dim must be > 0 and num_classes > 1");
    const int64_t ch[5] = {1, w, 2 * w, 4 * w, 4 * w};
    convs.clear();
    bns.clear();
    for (int i = 0; i < 4; ++i) {
      convs.push_back(register_module("conv" + std::to_string(i + 1),
                                      torch::nn::Conv2d(torch::nn::Conv2dOptions(ch[i], ch[i + 1], 3).padding(1).bias(false))));
      bns.push_back(register_module("bn" + std::to_string(i + 1), torch::nn::BatchNorm2d(ch[i + 1])));
    }
    fc1 = register_module("fc1", torch::nn::Linear(ch[4] * 9, options.feature_dim()));
    fc2 = register_module("fc2", torch::nn::Linear(options.feature_dim(), options.num_classes()));
  }

  /// Accepts [B, 1, 28, 28] or [B, 1, 32, 32] (centre-cropped to 28) in [-1, 1].
  torch::Tensor prepare(const torch::Tensor& x) const {
    TORCH_CHECK(x.dim() == 4 && x.size(1) == 1,
                "Classifier: expected 1-channel images [B, 1, 28|32, 28|32], got ", x.sizes());
    TORCH_CHECK((x.size(2) == 28 && x.size(3) == 28) || (x.size(2) == 32 && x.size(3) == 32),
                "Classifier: expected 28x28 or 32x32 images (Fashion-MNIST / MNIST size), got ", x.size(2), "x",
                x.size(3));
    torch::Tensor y = x.to(torch::kFloat32);
    if (y.size(2) == 32) y = y.slice(2, 2, 30).slice(3, 2, 30);
    return y;
  }

  /// Features [B, F] and logits [B, K].
  ClassifierOutput forward(const torch::Tensor& x) {
    namespace F = torch::nn::functional;
    torch::Tensor h = prepare(x);
    for (size_t i = 0; i < convs.size(); ++i) {
      h = torch::relu(bns[i]->forward(convs[i]->forward(h)));
      if (i > 0) h = F::max_pool2d(h, F::MaxPool2dFuncOptions(2));
    }
    ClassifierOutput out;
    out.features = fc1->forward(h.flatten(1));
    out.logits = fc2->forward(
        F::dropout(torch::relu(out.features), F::DropoutFuncOptions().p(options.dropout()).training(is_training())));
    return out;
  }

  ClassifierOptions options;
  std::vector<torch::nn::Conv2d> convs;
  std::vector<torch::nn::BatchNorm2d> bns;
  torch::nn::Linear fc1{nullptr}, fc2{nullptr};
};
TORCH_MODULE(Classifier);

/// One optimizer step of cross-entropy training on images [B, 1, H, W] in [-1, 1] and labels
/// int64 [B]; returns the batch loss.
inline double classifier_train_step(Classifier& model, torch::optim::Optimizer& optimizer, const torch::Tensor& images,
                                    const torch::Tensor& labels) {
  model->train();
  optimizer.zero_grad();
  const torch::Tensor loss = torch::nn::functional::cross_entropy(model->forward(images).logits, labels);
  loss.backward();
  optimizer.step();
  return loss.item<double>();
}

/// Top-1 accuracy of `model` (eval mode) on images [N, 1, H, W] in [-1, 1] and labels [N].
inline double classifier_accuracy(Classifier& model, const torch::Tensor& images, const torch::Tensor& labels,
                                  int64_t batch_size = 500) {
  TORCH_CHECK(images.size(0) == labels.size(0) && images.size(0) > 0, "classifier_accuracy: bad sizes");
  model->eval();
  torch::NoGradGuard no_grad;
  int64_t correct = 0;
  for (int64_t i = 0; i < images.size(0); i += batch_size) {
    const torch::Tensor x = images.slice(0, i, i + batch_size);
    const torch::Tensor pred = model->forward(x).logits.argmax(1);
    correct += pred.eq(labels.slice(0, i, i + batch_size).to(pred.device())).sum().item<int64_t>();
  }
  return static_cast<double>(correct) / static_cast<double>(images.size(0));
}

/// A classifier with its metadata, as read from / written to a safetensors file: the tensors
/// under their module names, metadata {"format": "ddpm-classifier", "width", "feature_dim",
/// "num_classes", "dataset", "test_accuracy", "class_names" (comma separated), ...}.
struct ClassifierFile {
  Classifier model{nullptr};
  std::map<std::string, std::string> metadata;
};

inline void save_classifier(const std::string& path, const Classifier& model,
                            std::map<std::string, std::string> metadata = {}) {
  metadata["format"] = "ddpm-classifier";
  metadata["width"] = std::to_string(model->options.width());
  metadata["feature_dim"] = std::to_string(model->options.feature_dim());
  metadata["num_classes"] = std::to_string(model->options.num_classes());
  save_safetensors(path, detail::module_state(*model), metadata);
}

/// Reads a classifier file (eval mode, CPU). Throws ddpm::Error naming the file when it is
/// missing, is not a classifier file, or its tensors do not fit.
inline ClassifierFile load_classifier(const std::string& path) {
  SafetensorsFile f = load_safetensors_file(path);
  auto meta_int = [&](const char* key) -> int64_t {
    auto it = f.metadata.find(key);
    if (it == f.metadata.end()) throw Error("classifier file '" + path + "': metadata has no '" + key + "'");
    try {
      return std::stoll(it->second);
    } catch (const std::exception&) {
      throw Error("classifier file '" + path + "': metadata '" + key + "' = '" + it->second + "' is not an integer");
    }
  };
  auto fmt = f.metadata.find("format");
  if (fmt == f.metadata.end() || fmt->second != "ddpm-classifier") {
    throw Error("classifier file '" + path + "': not a ddpm classifier (metadata 'format' must be 'ddpm-classifier')");
  }
  ClassifierFile out;
  out.model = Classifier(ClassifierOptions().width(meta_int("width")).feature_dim(meta_int("feature_dim"))
                             .num_classes(meta_int("num_classes")));
  detail::load_module_state(*out.model, f.tensors, "classifier file '" + path + "'");
  out.model->eval();
  out.metadata = std::move(f.metadata);
  return out;
}

}  // namespace ddpm
