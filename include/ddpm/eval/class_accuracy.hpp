#pragma once
/// Class accuracy of generated images: for a class-conditional model, the share of the images
/// generated for class k that a classifier assigns to k, per class and averaged over classes
/// (the measure of guidance in Ho & Salimans 2022's spirit; here with ddpm's Fashion-MNIST
/// classifier, eval/classifier.hpp). Counts, not ratios, so shares merge by summing (ranks).
#include <ddpm/error.hpp>

#include <torch/types.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

namespace ddpm {

/// Per-class hits and totals of a classifier's predictions against the intended classes.
struct ClassAccuracy {
  std::vector<int64_t> hits;    ///< [K] images intended as class k that the classifier assigns to k
  std::vector<int64_t> totals;  ///< [K] images intended as class k

  bool empty() const { return totals.empty(); }

  /// hits[k] / totals[k]; NaN for a class with no images.
  std::vector<double> per_class() const {
    std::vector<double> out(totals.size(), std::numeric_limits<double>::quiet_NaN());
    for (size_t k = 0; k < totals.size(); ++k) {
      if (totals[k] > 0) out[k] = static_cast<double>(hits[k]) / static_cast<double>(totals[k]);
    }
    return out;
  }

  /// Mean of per_class() over the classes that have images (every class weighs the same,
  /// however many images it has); NaN when no class has any.
  double mean() const {
    double sum = 0;
    int64_t classes = 0;
    for (const double a : per_class()) {
      if (std::isfinite(a)) {
        sum += a;
        ++classes;
      }
    }
    return classes > 0 ? sum / static_cast<double>(classes) : std::numeric_limits<double>::quiet_NaN();
  }
};

/// Compares `predicted` (integer [N], the classifier's argmax per image) with `intended` (N class
/// indices in [0, num_classes), the labels the images were generated for).
inline ClassAccuracy class_accuracy(const torch::Tensor& predicted, const std::vector<int64_t>& intended,
                                    int64_t num_classes) {
  TORCH_CHECK(predicted.defined() && predicted.dim() == 1 && !predicted.is_floating_point(),
              "class_accuracy: expected integer predictions [N], got ",
              predicted.defined() ? predicted.sizes() : c10::IntArrayRef{});
  TORCH_CHECK(predicted.size(0) == static_cast<int64_t>(intended.size()), "class_accuracy: ", predicted.size(0),
              " predictions but ", intended.size(), " intended labels");
  TORCH_CHECK(num_classes > 0, "class_accuracy: num_classes must be > 0, got ", num_classes);
  ClassAccuracy out;
  out.hits.assign(static_cast<size_t>(num_classes), 0);
  out.totals.assign(static_cast<size_t>(num_classes), 0);
  const torch::Tensor p = predicted.to(torch::kCPU, torch::kInt64).contiguous();
  const int64_t* pp = p.data_ptr<int64_t>();
  for (size_t i = 0; i < intended.size(); ++i) {
    const int64_t k = intended[i];
    TORCH_CHECK(k >= 0 && k < num_classes, "class_accuracy: intended label ", k, " of image ", i,
                " is outside [0, ", num_classes, ")");
    ++out.totals[static_cast<size_t>(k)];
    if (pp[i] == k) ++out.hits[static_cast<size_t>(k)];
  }
  return out;
}

}  // namespace ddpm
