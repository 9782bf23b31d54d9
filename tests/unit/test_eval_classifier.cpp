// The committed Fashion-MNIST feature classifier and reference statistics (share/ddpm/eval/),
// evaluate_samples on real data, its errors, and reading samples from PNGs / grids / tensors.
#include <ddpm/data/idx.hpp>
#include <ddpm/data/transforms.hpp>
#include <ddpm/eval/evaluate.hpp>
#include <ddpm/eval/sample_io.hpp>
#include <ddpm/io/png.hpp>

#include "test_util.hpp"

#include <catch2/catch.hpp>
#include <torch/torch.h>

#include <numeric>

namespace {

const char* kFmnistDir = "/usr/share/datasets/fashion-mnist";

bool have_fmnist() { return ddpm::has_idx_dataset(kFmnistDir); }

torch::Tensor fmnist_test_images() {
  static const torch::Tensor x = ddpm::to_model_range(ddpm::load_mnist_dir(kFmnistDir, false).images);
  return x;
}

ddpm::ClassifierFeatures& committed_net() {
  static ddpm::ClassifierFeatures net(ddpm::load_classifier(ddpm::find_eval_data(ddpm::kFmnistClassifierFile)));
  return net;
}

}  // namespace

TEST_CASE("eval: committed classifier reproduces its recorded test accuracy", "[eval][classifier]") {
  auto& net = committed_net();
  const auto& meta = net.file().metadata;
  REQUIRE(meta.count("test_accuracy"));
  const double recorded = std::stod(meta.at("test_accuracy"));
  CHECK(recorded >= 0.90);
  CHECK(net.name() == "fmnist-classifier");
  CHECK(net.metric() == "FD-fmnist");
  CHECK(net.class_names().size() == 10);
  if (!have_fmnist()) {
    WARN("Fashion-MNIST not installed at " << kFmnistDir << ": accuracy not re-measured");
    return;
  }
  const auto test = ddpm::load_mnist_dir(kFmnistDir, false);
  auto model = net.file().model;
  const double acc = ddpm::classifier_accuracy(model, ddpm::to_model_range(test.images), test.labels);
  CHECK(acc == Approx(recorded).margin(1e-4));
}

TEST_CASE("eval: evaluate_samples of the test split against its own committed stats", "[eval][classifier]") {
  if (!have_fmnist()) {
    WARN("Fashion-MNIST not installed: skipped");
    return;
  }
  const auto ref = ddpm::load_feature_stats(ddpm::find_eval_data(ddpm::kFmnistTestStatsFile));
  CHECK(ref.n == 10000);
  CHECK(ref.features == "fmnist-classifier");
  REQUIRE(ref.samples.defined());
  const torch::Tensor x = fmnist_test_images();
  // The same images padded to 32x32 (as the trainer sees them) give the same features.
  const torch::Tensor x32 = ddpm::pad_to_size(x, 32, -1.0);
  const auto r = ddpm::evaluate_samples(x32, ref, committed_net(),
                                        ddpm::EvalOptions().batch_size(1000).kid(ddpm::KidOptions().num_subsets(5)));
  CHECK(r.n == 10000);
  CHECK(r.metric == "FD-fmnist");
  CHECK(std::abs(r.fd) < 1e-3);  // identical images: only float rounding of the features differs
  INFO("test vs its stats: fd " << r.fd << " kid " << r.kid << " +- " << r.kid_std);
  CHECK(std::abs(r.kid) < 3 * r.kid_std);  // same distribution: zero within the subset noise
  REQUIRE(r.class_histogram.size() == 10);
  CHECK(std::accumulate(r.class_histogram.begin(), r.class_histogram.end(), int64_t{0}) == 10000);
  for (int64_t c : r.class_histogram) CHECK(std::abs(c - 1000) < 200);  // 1000 per class, ~90% accuracy
  CHECK(r.mean_confidence > 0.8);
  const auto j = r.to_json();
  for (const char* key : {"n", "metric", "features", "fd", "kid", "class_histogram", "mean_confidence", "wall_seconds"}) {
    CHECK(j.contains(key));
  }
  // Half the test set against the whole: small but clearly non-zero; noise: far away.
  const auto half = ddpm::evaluate_samples(x.slice(0, 0, 5000), ref, committed_net());
  const auto noise = ddpm::evaluate_samples(torch::rand({1000, 1, 28, 28}) * 2 - 1, ref, committed_net());
  INFO("half: fd " << half.fd << " kid " << half.kid << " +- " << half.kid_std << "; noise: fd " << noise.fd
                   << " kid " << noise.kid);
  CHECK(half.fd > r.fd);
  CHECK(noise.fd > 100 * half.fd);
  CHECK(noise.kid > 100 * (std::abs(half.kid) + half.kid_std));
}

TEST_CASE("eval: evaluate_samples rejects what it cannot score", "[eval][classifier]") {
  auto& net = committed_net();
  ddpm::GaussianStats ref;
  ref.mu = torch::zeros({net.dim()}, torch::kFloat64);
  ref.sigma = torch::eye(net.dim(), torch::kFloat64);
  ref.features = net.name();
  CHECK_THROWS_WITH(ddpm::evaluate_samples(torch::zeros({300, 3, 32, 32}), ref, net),
                    Catch::Contains("1-channel") && Catch::Contains("3 channels"));
  CHECK_THROWS_WITH(ddpm::evaluate_samples(torch::zeros({300, 1, 64, 64}), ref, net),
                    Catch::Contains("28x28 or 32x32") && Catch::Contains("64x64"));
  CHECK_THROWS_WITH(ddpm::evaluate_samples(torch::zeros({100, 1, 28, 28}), ref, net),
                    Catch::Contains("too few samples") && Catch::Contains("100") && Catch::Contains("129"));
  ddpm::GaussianStats other = ref;
  other.features = "inception-v3-fid";
  CHECK_THROWS_WITH(ddpm::evaluate_samples(torch::zeros({300, 1, 28, 28}), other, net),
                    Catch::Contains("inception-v3-fid"));
  CHECK_THROWS_WITH(ddpm::load_classifier("/nonexistent/c.safetensors"), Catch::Contains("/nonexistent/c.safetensors"));
}

TEST_CASE("eval: samples read from PNG folders, grids and tensors", "[eval][classifier]") {
  ddpm_test::TempDir dir("eval_io");
  auto gen = at::detail::createCPUGenerator(5);
  // Images that survive the uint8 round trip exactly: k / 127.5 - 1.
  const torch::Tensor u8 = torch::randint(0, 256, {7, 1, 12, 12}, gen, torch::kLong).to(torch::kUInt8);
  const torch::Tensor x = ddpm::to_model_range(u8);
  const auto folder = dir.path / "pngs";
  std::filesystem::create_directories(folder);
  for (int64_t i = 0; i < 7; ++i) ddpm::write_png((folder / ("s" + std::to_string(i) + ".png")).string(), x[i], ddpm::ImageRange::MinusOneToOne);
  CHECK(torch::allclose(ddpm::read_png_folder(folder.string()), x, 0, 1e-6));
  const std::string grid = (dir.path / "grid.png").string();
  ddpm::save_image_grid(grid, x, ddpm::ImageRange::MinusOneToOne, /*nrow=*/3);  // 3x3 cells, 2 empty
  const torch::Tensor tiles = ddpm::read_png_grid(grid, 12);
  REQUIRE(tiles.size(0) == 7);
  CHECK(torch::allclose(tiles, x, 0, 1e-6));
  CHECK(ddpm::read_png_grid(grid, 12, 2, 4).size(0) == 4);
  CHECK_THROWS_WITH(ddpm::read_png_grid(grid, 10), Catch::Contains("not a grid of 10x10"));
  const std::string st = (dir.path / "s.safetensors").string();
  ddpm::save_safetensors(st, {{"images", x}});
  CHECK(torch::equal(ddpm::read_samples_tensor(st), x));
  ddpm::save_safetensors(st, {{"images", (x + 1) * 127.5}});
  CHECK_THROWS_WITH(ddpm::read_samples_tensor(st), Catch::Contains("expected [-1, 1]"));
}
