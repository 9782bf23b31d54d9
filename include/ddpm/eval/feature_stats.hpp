#pragma once
/// Streaming feature statistics for the Fréchet distance: the count n, the sum Σx and the sum of
/// outer products Σxxᵀ of D-dimensional feature vectors, accumulated in float64 over any number of
/// batches. Two accumulators merge by adding their sums, so data-parallel ranks combine theirs
/// with ONE allreduce (sum) of the packed vector [n, Σx, Σxxᵀ] (pack() / unpack()).
///
///   mean μ = Σx / n
///   covariance Σ = (Σxxᵀ − n μμᵀ) / (n − 1)      (unbiased, = numpy.cov(x, rowvar=False))
///
/// Precision: the raw-moment form loses about log10(‖μ‖² / λ_min(Σ)) of float64's 16 digits
/// to cancellation; for network features (|μ| and the spread of the same order) the covariance
/// keeps ~14 significant digits, far below the FD's own sampling noise. Stats files
/// (save_feature_stats / load_feature_stats) hold μ ("mu", F64 [D]) and Σ ("sigma", F64 [D, D]),
/// the names of pytorch-fid's .npz files, plus n and the feature network's name as metadata, and
/// optionally up to a few thousand raw feature rows ("features", [M, D]) for KID.
#include <ddpm/error.hpp>
#include <ddpm/io/safetensors.hpp>

#include <torch/types.h>

#include <cstdint>
#include <map>
#include <string>

namespace ddpm {

/// Running float64 moments of feature vectors; see the header comment.
class FeatureStats {
 public:
  FeatureStats() = default;
  /// An empty accumulator for `dim`-dimensional features.
  explicit FeatureStats(int64_t dim) { reset(dim); }

  /// Clears the accumulator (dim > 0).
  void reset(int64_t dim) {
    TORCH_CHECK(dim > 0, "FeatureStats: feature dimension must be > 0, got ", dim);
    dim_ = dim;
    n_ = 0;
    sum_ = torch::zeros({dim}, torch::kFloat64);
    sum_outer_ = torch::zeros({dim, dim}, torch::kFloat64);
  }

  /// Adds a batch of features [B, D] (any floating dtype, any device; B may be 0). An
  /// accumulator built with the default constructor takes D from its first batch.
  void update(const torch::Tensor& features) {
    TORCH_CHECK(features.defined() && features.dim() == 2,
                "FeatureStats::update: expected features [B, D], got ",
                features.defined() ? features.sizes() : c10::IntArrayRef{});
    if (dim_ == 0) reset(features.size(1));
    TORCH_CHECK(features.size(1) == dim_, "FeatureStats::update: feature dimension ", features.size(1),
                " does not match the accumulator's ", dim_);
    const torch::Tensor x = features.detach().to(torch::kCPU, torch::kFloat64);
    TORCH_CHECK(torch::isfinite(x).all().item<bool>(), "FeatureStats::update: non-finite features");
    n_ += x.size(0);
    sum_.add_(x.sum(0));
    sum_outer_.addmm_(x.t(), x);
  }

  /// Adds another accumulator's moments (same D): the result equals one accumulator that saw
  /// both streams of batches.
  void merge(const FeatureStats& other) {
    if (other.dim_ == 0) return;
    if (dim_ == 0) reset(other.dim_);
    TORCH_CHECK(other.dim_ == dim_, "FeatureStats::merge: dimensions differ (", dim_, " vs ", other.dim_, ")");
    n_ += other.n_;
    sum_.add_(other.sum_);
    sum_outer_.add_(other.sum_outer_);
  }

  /// float64 [1 + D + D*D] = [n, Σx, Σxxᵀ (row-major)]: allreduce(sum) this over ranks, then
  /// unpack() gives the global statistics.
  torch::Tensor pack() const {
    TORCH_CHECK(dim_ > 0, "FeatureStats::pack: empty accumulator (no dimension yet)");
    return torch::cat({torch::full({1}, static_cast<double>(n_), torch::kFloat64), sum_,
                       sum_outer_.reshape({-1})});
  }

  /// Inverse of pack() (after any summation over ranks).
  static FeatureStats unpack(const torch::Tensor& packed, int64_t dim) {
    TORCH_CHECK(dim > 0 && packed.dim() == 1 && packed.numel() == 1 + dim + dim * dim,
                "FeatureStats::unpack: expected [1 + D + D*D] = [", 1 + dim + dim * dim, "] for D = ", dim,
                ", got ", packed.sizes());
    const torch::Tensor p = packed.to(torch::kCPU, torch::kFloat64);
    FeatureStats s(dim);
    const double n = p[0].item<double>();
    TORCH_CHECK(n >= 0 && n == static_cast<double>(static_cast<int64_t>(n)),
                "FeatureStats::unpack: count ", n, " is not a non-negative integer");
    s.n_ = static_cast<int64_t>(n);
    s.sum_.copy_(p.slice(0, 1, 1 + dim));
    s.sum_outer_.copy_(p.slice(0, 1 + dim).reshape({dim, dim}));
    return s;
  }

  int64_t count() const { return n_; }
  int64_t dim() const { return dim_; }

  /// μ, float64 [D] (needs n >= 1).
  torch::Tensor mean() const {
    TORCH_CHECK(n_ >= 1, "FeatureStats::mean: no features accumulated");
    return sum_ / static_cast<double>(n_);
  }

  /// Unbiased covariance Σ, float64 [D, D], exactly symmetric (needs n >= 2).
  torch::Tensor covariance() const {
    TORCH_CHECK(n_ >= 2, "FeatureStats::covariance: needs at least 2 features, have ", n_);
    const torch::Tensor mu = mean();
    torch::Tensor c = (sum_outer_ - static_cast<double>(n_) * torch::outer(mu, mu)) / static_cast<double>(n_ - 1);
    return (c + c.t()) * 0.5;
  }

 private:
  int64_t dim_ = 0;
  int64_t n_ = 0;
  torch::Tensor sum_;        // float64 [D]
  torch::Tensor sum_outer_;  // float64 [D, D]
};

/// Mean and covariance of a feature distribution, as stored in a stats file.
struct GaussianStats {
  torch::Tensor mu;     ///< float64 [D]
  torch::Tensor sigma;  ///< float64 [D, D]
  int64_t n = 0;        ///< number of feature vectors they came from
  /// Feature network that produced them ("fmnist-classifier", "inception-v3-fid", ...).
  std::string features;
  /// Optional raw feature rows [M, D] (float32) kept for KID; undefined when absent.
  torch::Tensor samples;

  int64_t dim() const { return mu.defined() ? mu.size(0) : 0; }

  static GaussianStats from(const FeatureStats& s, std::string features_name) {
    GaussianStats g;
    g.mu = s.mean();
    g.sigma = s.covariance();
    g.n = s.count();
    g.features = std::move(features_name);
    return g;
  }
};

/// Writes stats as safetensors: "mu" F64 [D], "sigma" F64 [D, D], optional "features" F32
/// [M, D]; metadata {"format": "ddpm-feature-stats", "n", "features"} plus `extra`.
inline void save_feature_stats(const std::string& path, const GaussianStats& g,
                               const std::map<std::string, std::string>& extra = {}) {
  TORCH_CHECK(g.mu.defined() && g.sigma.defined() && g.mu.dim() == 1 &&
                  g.sigma.sizes() == torch::IntArrayRef({g.dim(), g.dim()}),
              "save_feature_stats: expected mu [D] and sigma [D, D]");
  std::map<std::string, torch::Tensor> t{{"mu", g.mu.to(torch::kCPU, torch::kFloat64)},
                                         {"sigma", g.sigma.to(torch::kCPU, torch::kFloat64)}};
  if (g.samples.defined()) {
    TORCH_CHECK(g.samples.dim() == 2 && g.samples.size(1) == g.dim(),
                "save_feature_stats: samples must be [M, D] with D = ", g.dim());
    t["features"] = g.samples.to(torch::kCPU, torch::kFloat32);
  }
  std::map<std::string, std::string> meta = extra;
  meta["format"] = "ddpm-feature-stats";
  meta["n"] = std::to_string(g.n);
  meta["features"] = g.features;
  save_safetensors(path, t, meta);
}

/// Reads a stats file written by save_feature_stats (or any safetensors file with "mu" and
/// "sigma"). Throws ddpm::Error naming the file and the tensor when one is missing or misshapen.
inline GaussianStats load_feature_stats(const std::string& path) {
  SafetensorsFile f = load_safetensors_file(path);
  auto get = [&](const char* name) -> torch::Tensor {
    auto it = f.tensors.find(name);
    if (it == f.tensors.end()) {
      throw Error("feature stats file '" + path + "': no tensor '" + name +
                  "' (expected 'mu' [D] and 'sigma' [D, D])");
    }
    return it->second;
  };
  GaussianStats g;
  g.mu = get("mu").to(torch::kFloat64);
  g.sigma = get("sigma").to(torch::kFloat64);
  if (g.mu.dim() != 1 || g.sigma.dim() != 2 || g.sigma.size(0) != g.mu.size(0) ||
      g.sigma.size(1) != g.mu.size(0)) {
    throw Error("feature stats file '" + path + "': 'mu' must be [D] and 'sigma' [D, D], got mu " +
                c10::str(g.mu.sizes()) + " and sigma " + c10::str(g.sigma.sizes()));
  }
  auto fit = f.tensors.find("features");
  if (fit != f.tensors.end()) {
    if (fit->second.dim() != 2 || fit->second.size(1) != g.mu.size(0)) {
      throw Error("feature stats file '" + path + "': 'features' must be [M, " +
                  std::to_string(g.mu.size(0)) + "], got " + c10::str(fit->second.sizes()));
    }
    g.samples = fit->second.to(torch::kFloat32);
  }
  auto m = f.metadata.find("n");
  if (m != f.metadata.end()) {
    try {
      g.n = std::stoll(m->second);
    } catch (const std::exception&) {
      throw Error("feature stats file '" + path + "': metadata 'n' = '" + m->second + "' is not an integer");
    }
  }
  auto fe = f.metadata.find("features");
  if (fe != f.metadata.end()) g.features = fe->second;
  return g;
}

}  // namespace ddpm
