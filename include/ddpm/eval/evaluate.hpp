#pragma once
/// Scoring image samples against reference statistics: feature networks behind one interface,
/// feature extraction in batches, and evaluate_samples() -> EvalResult {n, metric, features, FD,
/// KID, class histogram, mean confidence, class accuracy}, the call the trainer and the evaluate
/// CLI make.
///
/// Feature networks:
///  - "fmnist-classifier" (metric "FD-fmnist"): ddpm's own CNN (eval/classifier.hpp) trained on
///    Fashion-MNIST, committed with the test split's statistics under share/ddpm/eval/; works
///    offline, 1-channel 28x28 / 32x32 images only. NOT comparable to FID.
///  - "inception-v3-fid" (metric "FID"): pytorch-fid's Inception (eval/inception.hpp), weights
///    supplied by the user.
/// Data files are found in, in order: $DDPM_DATA_DIR, the directory compiled in as
/// DDPM_DATA_DIR (the source tree's share/ddpm for a build tree, <prefix>/share/ddpm once
/// installed), and ../share/ddpm next to the running executable.
#include <ddpm/error.hpp>
#include <ddpm/eval/class_accuracy.hpp>
#include <ddpm/eval/classifier.hpp>
#include <ddpm/eval/feature_stats.hpp>
#include <ddpm/eval/frechet.hpp>
#include <ddpm/eval/inception.hpp>
#include <ddpm/eval/kid.hpp>

#include <torch/types.h>

#include <nlohmann/json.hpp>

#include <chrono>
#include <cmath>
#include <cstdlib>
#include <limits>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include <unistd.h>

namespace ddpm {

/// Features (and class probabilities, for a classifier) of one batch.
struct FeatureBatch {
  torch::Tensor features;  ///< float32 [B, D]
  torch::Tensor probs;     ///< float32 [B, K] softmax, or undefined when the network has no classes
};

/// A network that maps images [B, C, H, W] in [-1, 1] to feature vectors.
class FeatureNetwork {
 public:
  virtual ~FeatureNetwork() = default;
  /// Name of the network, stored in stats files ("fmnist-classifier", "inception-v3-fid").
  virtual std::string name() const = 0;
  /// Name of the distance computed with it ("FD-fmnist", "FID").
  virtual std::string metric() const = 0;
  virtual int64_t dim() const = 0;
  /// Throws c10::Error with a clear message when images of this shape cannot be scored.
  virtual void check_images(const torch::Tensor& images) const = 0;
  /// Features of one batch (no gradients, eval mode).
  virtual FeatureBatch compute(const torch::Tensor& images) = 0;
  /// Class names when the network is a classifier (empty otherwise).
  virtual std::vector<std::string> class_names() const { return {}; }
  /// Moves the network (images are moved to it in compute).
  virtual void to(torch::Device device) = 0;
  /// Whether KID divides both feature sets by the reference's RMS spread s = sqrt(tr Σ_ref / D)
  /// first. The cubic kernel is not scale invariant: Inception's pool features (norm²/D ~ 0.2)
  /// give the usual KID scale, while unnormalised classifier logits-layer features (norm²/D ~ 11)
  /// would make kernel values ~400 and KID's subset noise ~1.
  virtual bool normalize_kid() const { return false; }
};

/// The ddpm classifier as a feature network (penultimate-layer features + softmax).
class ClassifierFeatures : public FeatureNetwork {
 public:
  explicit ClassifierFeatures(ClassifierFile file) : file_(std::move(file)) {
    file_.model->eval();
    auto it = file_.metadata.find("feature_name");
    name_ = it != file_.metadata.end() ? it->second : "fmnist-classifier";
    it = file_.metadata.find("metric");
    metric_ = it != file_.metadata.end() ? it->second : "FD-fmnist";
    it = file_.metadata.find("class_names");
    if (it != file_.metadata.end()) {
      std::stringstream ss(it->second);
      for (std::string item; std::getline(ss, item, ',');) names_.push_back(item);
    }
  }
  std::string name() const override { return name_; }
  std::string metric() const override { return metric_; }
  int64_t dim() const override { return file_.model->options.feature_dim(); }
  void check_images(const torch::Tensor& images) const override {
    TORCH_CHECK(images.dim() == 4, "the ", name_, " features need images [N, 1, 28|32, 28|32], got ", images.sizes());
    TORCH_CHECK(images.size(1) == 1, "the ", name_, " features take 1-channel (grayscale) images, got ",
                images.size(1), " channels (use --features inception for RGB images)");
    file_.model->prepare(images.slice(0, 0, 1));
  }
  FeatureBatch compute(const torch::Tensor& images) override {
    torch::NoGradGuard no_grad;
    const auto p = *file_.model->parameters().begin();
    auto out = file_.model->forward(images.to(p.device()));
    return {out.features.to(torch::kCPU), torch::softmax(out.logits, 1).to(torch::kCPU)};
  }
  std::vector<std::string> class_names() const override { return names_; }
  void to(torch::Device device) override { file_.model->to(device); }
  bool normalize_kid() const override { return true; }
  const ClassifierFile& file() const { return file_; }

 private:
  ClassifierFile file_;
  std::string name_, metric_;
  std::vector<std::string> names_;
};

/// pytorch-fid's Inception as a feature network.
class InceptionFeatures : public FeatureNetwork {
 public:
  explicit InceptionFeatures(FidInception net) : net_(std::move(net)) { net_->eval(); }
  std::string name() const override { return "inception-v3-fid"; }
  std::string metric() const override { return "FID"; }
  int64_t dim() const override { return FidInceptionImpl::kFeatureDim; }
  void check_images(const torch::Tensor& images) const override {
    TORCH_CHECK(images.dim() == 4 && (images.size(1) == 1 || images.size(1) == 3),
                "the Inception features need images [N, 3, H, W] or [N, 1, H, W] (grayscale, repeated), got ",
                images.sizes());
    TORCH_CHECK(images.size(2) >= 8 && images.size(3) >= 8, "the Inception features need images of at least 8x8, got ",
                images.size(2), "x", images.size(3));
  }
  FeatureBatch compute(const torch::Tensor& images) override {
    torch::NoGradGuard no_grad;
    const auto p = *net_->parameters().begin();
    return {net_->forward(images.to(p.device())).to(torch::kCPU), {}};
  }
  void to(torch::Device device) override { net_->to(device); }

 private:
  FidInception net_;
};

namespace detail {
inline bool eval_file_exists(const std::string& p) { return file_readable(p); }
}  // namespace detail

/// Directories searched for ddpm's data files (see the header comment), in order.
inline std::vector<std::string> eval_data_dirs() {
  std::vector<std::string> dirs;
  if (const char* env = std::getenv("DDPM_DATA_DIR")) {
    if (*env) dirs.emplace_back(env);
  }
#ifdef DDPM_DATA_DIR
  dirs.emplace_back(DDPM_DATA_DIR);
#endif
  char buf[4096];
  const ssize_t len = ::readlink("/proc/self/exe", buf, sizeof(buf) - 1);
  if (len > 0) {
    std::string p(buf, static_cast<size_t>(len));
    dirs.push_back(p.substr(0, p.find_last_of('/')) + "/../share/ddpm");
  }
  return dirs;
}

/// Path of `relative` (e.g. "eval/fmnist_classifier.safetensors") in the first data directory
/// holding it; throws ddpm::Error listing the directories searched when none does.
inline std::string find_eval_data(const std::string& relative) {
  std::string tried;
  for (const auto& d : eval_data_dirs()) {
    const std::string p = d + "/" + relative;
    if (detail::eval_file_exists(p)) return p;
    tried += (tried.empty() ? "" : ", ") + p;
  }
  throw Error("data file '" + relative + "' not found (looked at: " + (tried.empty() ? "nowhere" : tried) +
              "); set DDPM_DATA_DIR to the directory holding ddpm's share/ddpm files");
}

/// File names of the committed classifier and reference statistics.
inline const char* kFmnistClassifierFile = "eval/fmnist_classifier.safetensors";
inline const char* kFmnistTestStatsFile = "eval/fashion-mnist-test.fmnist-classifier.safetensors";

/// The committed Fashion-MNIST classifier as a feature network.
inline std::unique_ptr<FeatureNetwork> load_fmnist_classifier_features(const std::string& path = "") {
  return std::make_unique<ClassifierFeatures>(load_classifier(path.empty() ? find_eval_data(kFmnistClassifierFile) : path));
}

/// Everything collected from one pass of a feature network over a set of images.
struct ExtractedFeatures {
  FeatureStats stats;
  torch::Tensor features;        ///< float32 [N, D] (all rows, for KID)
  std::vector<int64_t> class_histogram;  ///< argmax counts per class (classifier only)
  torch::Tensor predictions;             ///< int64 [N] argmax class per image (classifier only)
  double mean_confidence = std::numeric_limits<double>::quiet_NaN();  ///< mean max softmax
};

/// Runs `net` over images [N, C, H, W] in [-1, 1] (any dtype convertible to float; uint8 images
/// are NOT accepted: convert with to_model_range) in batches of `batch_size`.
inline ExtractedFeatures extract_features(FeatureNetwork& net, const torch::Tensor& images, int64_t batch_size = 500) {
  TORCH_CHECK(images.defined() && images.dim() == 4, "extract_features: expected images [N, C, H, W], got ",
              images.defined() ? images.sizes() : c10::IntArrayRef{});
  TORCH_CHECK(images.is_floating_point(), "extract_features: expected float images in [-1, 1], got ",
              images.scalar_type(), " (uint8 pixels: convert with to_model_range)");
  TORCH_CHECK(batch_size > 0, "extract_features: batch_size must be > 0");
  net.check_images(images);
  ExtractedFeatures out;
  out.stats.reset(net.dim());
  std::vector<torch::Tensor> rows, predicted;
  torch::Tensor counts;
  double conf = 0;
  for (int64_t i = 0; i < images.size(0); i += batch_size) {
    FeatureBatch b = net.compute(images.slice(0, i, i + batch_size));
    out.stats.update(b.features);
    rows.push_back(b.features.to(torch::kFloat32));
    if (b.probs.defined()) {
      auto [maxp, arg] = b.probs.max(1);
      conf += maxp.to(torch::kFloat64).sum().item<double>();
      auto c = torch::bincount(arg, {}, b.probs.size(1));
      counts = counts.defined() ? counts + c : c;
      predicted.push_back(arg.to(torch::kCPU, torch::kInt64));
    }
  }
  out.features = rows.empty() ? torch::zeros({0, net.dim()}) : torch::cat(rows);
  if (counts.defined()) {
    for (int64_t k = 0; k < counts.size(0); ++k) out.class_histogram.push_back(counts[k].item<int64_t>());
    out.mean_confidence = conf / static_cast<double>(images.size(0));
    out.predictions = torch::cat(predicted);
  }
  return out;
}

/// Options of evaluate_samples.
struct EvalOptions {
  TORCH_ARG(int64_t, batch_size) = 500;
  /// KID protocol (subset size clamped to the available rows).
  TORCH_ARG(KidOptions, kid) = KidOptions();
  /// Accept n <= D (rank-deficient sample covariance; FD is then strongly biased).
  TORCH_ARG(bool, allow_few_samples) = false;
  /// The class each image was generated for (a class-conditional model), one per image, in
  /// the classifier's class indices: the result then has class_accuracy. Empty: none.
  TORCH_ARG(std::vector<int64_t>, intended_classes) = {};
};

/// The scores of one set of samples.
struct EvalResult {
  int64_t n = 0;
  std::string metric;    ///< "FD-fmnist", "FID"
  std::string features;  ///< feature network name
  double fd = std::numeric_limits<double>::quiet_NaN();
  double kid = std::numeric_limits<double>::quiet_NaN();      ///< NaN when the reference has no features
  double kid_std = std::numeric_limits<double>::quiet_NaN();
  int64_t reference_n = 0;
  std::vector<int64_t> class_histogram;  ///< empty unless the features come from a classifier
  std::vector<std::string> class_names;
  double mean_confidence = std::numeric_limits<double>::quiet_NaN();
  /// With EvalOptions::intended_classes: the classifier's agreement with them.
  ClassAccuracy class_accuracy;
  double wall_seconds = 0;

  /// {"n", "metric", "features", "fd", "kid", "kid_std", "reference_n", "class_histogram",
  ///  "class_names", "mean_confidence", ["class_accuracy", "mean_class_accuracy"], "wall_seconds"}
  ///  in this order; NaNs become null; the classifier-only keys are absent for other networks,
  ///  the class accuracy without intended classes.
  nlohmann::ordered_json to_json() const {
    auto num = [](double v) -> nlohmann::ordered_json {
      return std::isfinite(v) ? nlohmann::ordered_json(v) : nlohmann::ordered_json();
    };
    nlohmann::ordered_json j;
    j["n"] = n;
    j["metric"] = metric;
    j["features"] = features;
    j["fd"] = num(fd);
    j["kid"] = num(kid);
    j["kid_std"] = num(kid_std);
    j["reference_n"] = reference_n;
    if (!class_histogram.empty()) {
      j["class_histogram"] = class_histogram;
      if (!class_names.empty()) j["class_names"] = class_names;
      j["mean_confidence"] = num(mean_confidence);
    }
    if (!class_accuracy.empty()) {
      nlohmann::ordered_json per = nlohmann::ordered_json::array();
      for (const double a : class_accuracy.per_class()) per.push_back(num(a));
      j["class_accuracy"] = per;
      j["mean_class_accuracy"] = num(class_accuracy.mean());
    }
    j["wall_seconds"] = wall_seconds;
    return j;
  }
};

/// Scores `images` [N, C, H, W] in [-1, 1] against `reference` with `net`: FD between the
/// samples' feature Gaussian and the reference's, KID against the reference's stored feature
/// rows (when it has them; scaled by the reference's RMS spread when net.normalize_kid()), the
/// classifier's class histogram and mean confidence, and with options.intended_classes() the
/// class accuracy. Throws ddpm::Error when the reference was computed with another feature
/// network or dimension, when N <= D (the sample covariance would be singular) unless
/// options.allow_few_samples(), or when intended classes are given to a network without classes.
inline EvalResult evaluate_samples(const torch::Tensor& images, const GaussianStats& reference, FeatureNetwork& net,
                                   const EvalOptions& options = {}) {
  const auto t0 = std::chrono::steady_clock::now();
  TORCH_CHECK(images.defined() && images.dim() == 4, "evaluate_samples: expected images [N, C, H, W], got ",
              images.defined() ? images.sizes() : c10::IntArrayRef{});
  if (!reference.features.empty() && reference.features != net.name()) {
    throw Error("reference statistics were computed with the '" + reference.features + "' features, not '" +
                net.name() + "'");
  }
  if (reference.dim() != net.dim()) {
    throw Error("reference statistics have dimension " + std::to_string(reference.dim()) + " but the '" + net.name() +
                "' features have " + std::to_string(net.dim()));
  }
  net.check_images(images);
  const int64_t n = images.size(0);
  if (n < 2 || (n <= net.dim() && !options.allow_few_samples())) {
    throw Error("too few samples: " + std::to_string(n) + " images for " + std::to_string(net.dim()) +
                "-dimensional '" + net.name() + "' features; the FD needs more samples than feature dimensions (at least " +
                std::to_string(net.dim() + 1) + ", better 10x that)");
  }
  ExtractedFeatures ex = extract_features(net, images, options.batch_size());
  EvalResult r;
  r.n = n;
  r.metric = net.metric();
  r.features = net.name();
  r.reference_n = reference.n;
  r.fd = frechet_distance(ex.stats.mean(), ex.stats.covariance(), reference.mu, reference.sigma).distance;
  if (reference.samples.defined() && reference.samples.size(0) >= 2) {
    double scale = 1.0;
    if (net.normalize_kid()) scale = std::sqrt(reference.sigma.trace().item<double>() / static_cast<double>(net.dim()));
    TORCH_CHECK(scale > 0 && std::isfinite(scale), "evaluate_samples: reference covariance has zero trace");
    const KidResult k = kernel_inception_distance(ex.features / scale, reference.samples / scale, options.kid());
    r.kid = k.mean;
    r.kid_std = k.std;
  }
  r.class_histogram = ex.class_histogram;
  r.class_names = net.class_names();
  r.mean_confidence = ex.mean_confidence;
  if (!options.intended_classes().empty()) {
    if (!ex.predictions.defined()) {
      throw Error("class accuracy needs a classifier; the '" + net.name() + "' features have no classes");
    }
    r.class_accuracy = class_accuracy(ex.predictions, options.intended_classes(),
                                      static_cast<int64_t>(ex.class_histogram.size()));
  }
  r.wall_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return r;
}

/// Reference statistics (with up to `keep_rows` feature rows for KID) of real images
/// [N, C, H, W] in [-1, 1].
inline GaussianStats reference_stats(FeatureNetwork& net, const torch::Tensor& images, int64_t keep_rows = 2000,
                                     int64_t batch_size = 500) {
  ExtractedFeatures ex = extract_features(net, images, batch_size);
  GaussianStats g = GaussianStats::from(ex.stats, net.name());
  if (keep_rows > 0) g.samples = ex.features.slice(0, 0, keep_rows).clone();
  return g;
}

/// A feature network bound to its reference statistics: what a trainer holds to score its
/// samples every eval_every steps (evaluator(images) == evaluate_samples(images, reference, *net)).
struct Evaluator {
  std::shared_ptr<FeatureNetwork> net;
  GaussianStats reference;
  EvalOptions options;

  EvalResult operator()(const torch::Tensor& images) const {
    TORCH_CHECK(net, "Evaluator: no feature network");
    return evaluate_samples(images, reference, *net, options);
  }
};

/// The out-of-the-box evaluator: the committed Fashion-MNIST classifier ("FD-fmnist") against the
/// committed test-split statistics (1-channel 28x28 / 32x32 samples). Throws ddpm::Error when the
/// data files cannot be found (see find_eval_data).
inline Evaluator make_fmnist_evaluator(EvalOptions options = {}) {
  Evaluator e;
  e.net = load_fmnist_classifier_features();
  e.reference = load_feature_stats(find_eval_data(kFmnistTestStatsFile));
  e.options = options;
  return e;
}

}  // namespace ddpm
