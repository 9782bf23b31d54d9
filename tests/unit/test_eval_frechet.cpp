// Feature statistics, Fréchet distance and KID against numpy / scipy / pytorch-fid values recorded
// by tools/fixtures/eval_frechet.py, closed forms for Gaussians and the metric's invariants.
#include <ddpm/eval/feature_stats.hpp>
#include <ddpm/eval/frechet.hpp>
#include <ddpm/eval/kid.hpp>
#include <ddpm/io/safetensors.hpp>

#include "test_util.hpp"

#include <catch2/catch.hpp>
#include <torch/torch.h>

#include <cmath>

namespace {

const std::map<std::string, torch::Tensor>& frechet_fixture() {
  static const auto t = ddpm::load_safetensors(std::string(DDPM_TEST_DATA_DIR) + "/eval/frechet.safetensors");
  return t;
}
torch::Tensor fx(const std::string& name) { return frechet_fixture().at(name).to(torch::kFloat64); }
double fx_scalar(const std::string& name) { return fx(name).item<double>(); }

double max_rel(const torch::Tensor& a, const torch::Tensor& b) {
  return ((a - b).abs().max() / b.abs().max()).item<double>();
}

ddpm::GaussianStats stats_of(const torch::Tensor& x) {
  ddpm::FeatureStats s;
  s.update(x);
  return ddpm::GaussianStats::from(s, "test");
}

}  // namespace

TEST_CASE("eval: FeatureStats over uneven batches matches numpy mean and cov", "[eval][frechet]") {
  for (const std::string c : {"small", "relu"}) {
    const torch::Tensor x = fx(c + ".x");
    ddpm::FeatureStats s;
    int64_t at = 0;
    for (int64_t b : {1, 0, 7, 64, 1000}) {
      const int64_t end = std::min(at + b, x.size(0));
      s.update(x.slice(0, at, end).to(torch::kFloat32));  // float32 input is widened exactly
      at = end;
    }
    REQUIRE(s.count() == x.size(0));
    CHECK(max_rel(s.mean(), fx(c + ".mu_x")) < 1e-12);
    CHECK(max_rel(s.covariance(), fx(c + ".sigma_x")) < 1e-12);
  }
}

TEST_CASE("eval: FeatureStats merge and pack/unpack equal one accumulator", "[eval][frechet]") {
  const torch::Tensor x = fx("relu.x");
  ddpm::FeatureStats all, r0, r1, r2;
  all.update(x);
  r0.update(x.slice(0, 0, 130));
  r1.update(x.slice(0, 130, 131));
  r2.update(x.slice(0, 131));
  // "allreduce": the sum of the packed vectors of the three ranks.
  const torch::Tensor packed = r0.pack() + r1.pack() + r2.pack();
  const auto reduced = ddpm::FeatureStats::unpack(packed, x.size(1));
  CHECK(reduced.count() == 400);
  CHECK(max_rel(reduced.covariance(), all.covariance()) < 1e-13);
  r0.merge(r1);
  r0.merge(r2);
  CHECK(max_rel(r0.mean(), all.mean()) < 1e-14);
  CHECK(max_rel(r0.covariance(), fx("relu.sigma_x")) < 1e-12);
  CHECK_THROWS_WITH(ddpm::FeatureStats::unpack(packed, 31), Catch::Contains("[1 + D + D*D]"));
  ddpm::FeatureStats wrong(5);
  CHECK_THROWS_WITH(wrong.update(x), Catch::Contains("does not match"));
  CHECK_THROWS_WITH(ddpm::FeatureStats(3).covariance(), Catch::Contains("at least 2"));
}

TEST_CASE("eval: Frechet distance equals pytorch-fid's on recorded features", "[eval][frechet]") {
  for (const std::string c : {"small", "relu"}) {
    const auto a = stats_of(fx(c + ".x"));
    const auto b = stats_of(fx(c + ".y"));
    const auto r = ddpm::frechet_distance(a.mu, a.sigma, b.mu, b.sigma);
    INFO(c << ": fd " << r.distance << " vs pytorch-fid " << fx_scalar(c + ".fd"));
    CHECK(std::abs(r.distance - fx_scalar(c + ".fd")) < 1e-9 * std::abs(fx_scalar(c + ".fd")));
    CHECK(std::abs(r.trace_sqrt - fx_scalar(c + ".fd_scipy_trace")) < 1e-10 * fx_scalar(c + ".fd_scipy_trace"));
    CHECK(std::abs(r.distance - (r.mean_term + r.trace_term)) < 1e-12 * r.distance);
    // Symmetric in its arguments, zero against itself.
    const auto rev = ddpm::frechet_distance(b.mu, b.sigma, a.mu, a.sigma);
    CHECK(std::abs(rev.distance - r.distance) < 1e-10 * r.distance);
    const auto self = ddpm::frechet_distance(a.mu, a.sigma, a.mu, a.sigma);
    CHECK(std::abs(self.distance) < 1e-10 * a.sigma.trace().item<double>());
  }
}

TEST_CASE("eval: Frechet distance closed forms for Gaussians", "[eval][frechet]") {
  auto T = [](std::vector<double> v, std::vector<int64_t> shape) {
    return torch::tensor(v, torch::kFloat64).reshape(shape);
  };
  SECTION("diagonal: |m1-m2|^2 + sum (sqrt s1 - sqrt s2)^2") {
    const auto r = ddpm::frechet_distance(T({0, 1, 2}, {3}), torch::diag(T({1, 4, 9}, {3})),
                                          T({1, 1, 0}, {3}), torch::diag(T({4, 1, 0.25}, {3})));
    const double want = (1 + 0 + 4) + (1 + 1 + 6.25);
    CHECK(r.distance == Approx(want).epsilon(1e-13));
  }
  SECTION("2x2 non-commuting: tr sqrt(S1 S2) = sqrt(tr(S1 S2) + 2 sqrt(det S1 det S2))") {
    const torch::Tensor s1 = T({2, 0.7, 0.7, 1}, {2, 2});
    const torch::Tensor s2 = T({0.5, -0.3, -0.3, 3}, {2, 2});
    const double det1 = 2 * 1 - 0.49, det2 = 0.5 * 3 - 0.09;
    const double tr12 = 2 * 0.5 + 0.7 * -0.3 + 0.7 * -0.3 + 1 * 3;
    const double trsqrt = std::sqrt(tr12 + 2 * std::sqrt(det1 * det2));
    const auto r = ddpm::frechet_distance(T({0, 0}, {2}), s1, T({3, -4}, {2}), s2);
    CHECK(r.trace_sqrt == Approx(trsqrt).epsilon(1e-13));
    CHECK(r.distance == Approx(25 + 3 + 3.5 - 2 * trsqrt).epsilon(1e-13));
  }
  SECTION("isotropic in D dims: D (s1 - s2)^2 with s = std") {
    const int64_t d = 50;
    const auto eye = torch::eye(d, torch::kFloat64);
    const auto r = ddpm::frechet_distance(torch::zeros({d}, torch::kFloat64), eye * 0.25,
                                          torch::zeros({d}, torch::kFloat64), eye * 4.0);
    CHECK(r.distance == Approx(d * 1.5 * 1.5).epsilon(1e-12));
  }
  SECTION("singular covariances (n < D) stay finite, exact to ~sqrt(float64 eps)") {
    // Zero eigenvalues come out as +-1e-16 * scale; their square roots (1e-8) bound the accuracy.
    auto gen = at::detail::createCPUGenerator(3);
    const torch::Tensor x = torch::randn({5, 12}, gen, torch::kFloat64);
    const auto a = stats_of(x);
    const auto self = ddpm::frechet_distance(a.mu, a.sigma, a.mu, a.sigma);
    CHECK(std::isfinite(self.distance));
    CHECK(std::abs(self.distance) < 1e-7 * a.sigma.trace().item<double>());
    // Scaling the centred data by c scales the covariance by c^2: FD = tr S (1 - c)^2.
    const auto b = stats_of((x - x.mean(0)) * 3.0 + x.mean(0));
    const auto r = ddpm::frechet_distance(a.mu, a.sigma, b.mu, b.sigma);
    CHECK(r.distance == Approx(a.sigma.trace().item<double>() * 4.0).epsilon(1e-7));
  }
  CHECK_THROWS_WITH(ddpm::frechet_distance(torch::zeros({2}), torch::eye(2), torch::zeros({3}), torch::eye(3)),
                    Catch::Contains("same D"));
  CHECK_THROWS_WITH(ddpm::frechet_distance(torch::zeros({2}), torch::eye(3), torch::zeros({2}), torch::eye(2)),
                    Catch::Contains("[2, 2]"));
}

TEST_CASE("eval: FD of two samples of one distribution grows like 1/n", "[eval][frechet]") {
  // Documented n-dependence (docs/evaluation.md): for x, y ~ N(0, I_D) with n rows each,
  // E ||mu_x - mu_y||^2 = 2D/n exactly, and the FD's bias is O(D^2/n) on top of it.
  auto gen = at::detail::createCPUGenerator(11);
  const int64_t d = 8;
  double fd_small = 0, fd_large = 0, mean_small = 0;
  for (int rep = 0; rep < 20; ++rep) {
    const auto a = stats_of(torch::randn({100, d}, gen, torch::kFloat64));
    const auto b = stats_of(torch::randn({100, d}, gen, torch::kFloat64));
    const auto r = ddpm::frechet_distance(a.mu, a.sigma, b.mu, b.sigma);
    fd_small += r.distance / 20;
    mean_small += r.mean_term / 20;
    const auto c = stats_of(torch::randn({1600, d}, gen, torch::kFloat64));
    const auto e = stats_of(torch::randn({1600, d}, gen, torch::kFloat64));
    fd_large += ddpm::frechet_distance(c.mu, c.sigma, e.mu, e.sigma).distance / 20;
  }
  CHECK(mean_small == Approx(2.0 * d / 100).epsilon(0.3));
  CHECK(fd_small / fd_large == Approx(16.0).epsilon(0.35));
}

TEST_CASE("eval: KID equals the recorded unbiased MMD and is reproducible", "[eval][kid]") {
  for (const std::string c : {"small", "relu"}) {
    const torch::Tensor x = fx(c + ".x"), y = fx(c + ".y");
    const double want = fx_scalar(c + ".mmd2");
    CHECK(ddpm::polynomial_mmd2_unbiased(x, y) == Approx(want).epsilon(1e-10).margin(1e-13));
  }
  const torch::Tensor x = fx("relu.x"), y = fx("relu.y");
  // Subset size = both set sizes: one exact value (float64 kernels), float32 kernels close to it.
  const auto whole = ddpm::kernel_inception_distance(x.slice(0, 0, 300), y,
                                                     ddpm::KidOptions().subset_size(300).dtype(torch::kFloat64));
  CHECK(whole.num_subsets == 1);
  const double exact = ddpm::polynomial_mmd2_unbiased(x.slice(0, 0, 300), y);
  CHECK(whole.mean == Approx(exact).epsilon(1e-12));  // float64 sums of 90k kernel values, in another order
  const auto whole32 = ddpm::kernel_inception_distance(x.slice(0, 0, 300), y, ddpm::KidOptions().subset_size(300));
  CHECK(std::abs(whole32.mean - exact) < 1e-6);  // kernel values are O(1) here
  const torch::Tensor sx = fx("small.x"), sy = fx("small.y");
  CHECK(ddpm::polynomial_mmd2_unbiased(sx, sy, torch::kFloat32) == Approx(fx_scalar("small.mmd2")).epsilon(1e-5));
  // Subsets: reproducible with the seed, different with another, and unbiased (their mean is
  // close to the whole-set value on the scale of its spread).
  const auto opt = ddpm::KidOptions().subset_size(100).num_subsets(50).seed(7);
  const auto a = ddpm::kernel_inception_distance(x, y, opt);
  const auto b = ddpm::kernel_inception_distance(x, y, opt);
  const auto c = ddpm::kernel_inception_distance(x, y, ddpm::KidOptions(opt).seed(8));
  CHECK(a.mean == b.mean);
  CHECK(a.mean != c.mean);
  CHECK(a.subset_size == 100);
  CHECK(a.std > 0);
  CHECK(std::abs(a.mean - fx_scalar("relu.mmd2")) < 3 * a.std / std::sqrt(50.0) + 1e-3);
  // Default subset size is min(1000, n_x, n_y).
  CHECK(ddpm::kernel_inception_distance(x, y, ddpm::KidOptions().num_subsets(2)).subset_size == 300);
  CHECK_THROWS_WITH(ddpm::kernel_inception_distance(x.slice(0, 0, 1), y), Catch::Contains("at least 2"));
}

TEST_CASE("eval: stats files round-trip and name what is missing", "[eval][frechet]") {
  ddpm_test::TempDir dir("eval_stats");
  auto g = stats_of(fx("small.x"));
  g.samples = fx("small.x").slice(0, 0, 10);
  const std::string path = (dir.path / "s.safetensors").string();
  ddpm::save_feature_stats(path, g, {{"dataset", "test"}});
  const auto back = ddpm::load_feature_stats(path);
  CHECK(torch::equal(back.mu, g.mu));
  CHECK(torch::equal(back.sigma, g.sigma));
  CHECK(back.n == 300);
  CHECK(back.features == "test");
  CHECK(back.samples.sizes() == torch::IntArrayRef({10, 8}));
  const std::string bad = (dir.path / "bad.safetensors").string();
  ddpm::save_safetensors(bad, {{"mu", torch::zeros({3}, torch::kFloat64)}});
  CHECK_THROWS_WITH(ddpm::load_feature_stats(bad), Catch::Contains("bad.safetensors") && Catch::Contains("'sigma'"));
}
