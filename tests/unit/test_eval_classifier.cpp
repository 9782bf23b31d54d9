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

TEST_CASE("eval: class_accuracy counts, per class and on average, what the classifier assigns to the intended class",
          "[eval]") {
  // Intended 0,1,2,2,2,0; predicted 0,1,1,2,2,2: class 0 one of two, class 1 one of one,
  // class 2 two of three; class 3 has no images.
  const torch::Tensor predicted = torch::tensor({0, 1, 1, 2, 2, 2}, torch::kLong);
  const auto a = ddpm::class_accuracy(predicted, {0, 1, 2, 2, 2, 0}, 4);
  CHECK(a.hits == std::vector<int64_t>{1, 1, 2, 0});
  CHECK(a.totals == std::vector<int64_t>{2, 1, 3, 0});
  const auto per = a.per_class();
  CHECK(per[0] == 0.5);
  CHECK(per[1] == 1.0);
  CHECK(per[2] == Approx(2.0 / 3.0).epsilon(1e-15));
  CHECK(std::isnan(per[3]));
  CHECK(a.mean() == Approx((0.5 + 1.0 + 2.0 / 3.0) / 3.0).epsilon(1e-15));  // over the classes with images
  CHECK(std::isnan(ddpm::ClassAccuracy{}.mean()));
  CHECK_THROWS_WITH(ddpm::class_accuracy(predicted, {0, 1}, 4), Catch::Contains("6 predictions but 2 intended"));
  CHECK_THROWS_WITH(ddpm::class_accuracy(predicted, {0, 1, 2, 2, 4, 0}, 4),
                    Catch::Contains("intended label 4 of image 4") && Catch::Contains("[0, 4)"));
  CHECK_THROWS_WITH(ddpm::class_accuracy(predicted.to(torch::kFloat32), {0, 1, 2, 2, 2, 0}, 4),
                    Catch::Contains("integer predictions"));
}

TEST_CASE("eval: the class accuracy of the test split with its true labels is the classifier's test accuracy",
          "[eval][classifier]") {
  if (!have_fmnist()) {
    WARN("Fashion-MNIST not installed: skipped");
    return;
  }
  const auto test = ddpm::load_mnist_dir(kFmnistDir, false);
  const auto labels_t = test.labels.to(torch::kLong).contiguous();
  const std::vector<int64_t> labels(labels_t.data_ptr<int64_t>(), labels_t.data_ptr<int64_t>() + labels_t.numel());
  const auto ref = ddpm::load_feature_stats(ddpm::find_eval_data(ddpm::kFmnistTestStatsFile));
  const auto r = ddpm::evaluate_samples(fmnist_test_images(), ref, committed_net(),
                                        ddpm::EvalOptions().kid(ddpm::KidOptions().num_subsets(2)).intended_classes(labels));
  REQUIRE(r.class_accuracy.totals == std::vector<int64_t>(10, 1000));  // 1000 test images per class
  int64_t hits = 0;
  for (const int64_t h : r.class_accuracy.hits) hits += h;
  // The recorded test accuracy (train_classifier's own count, 3 decimals); with equal class sizes
  // the mean of the per-class shares is the overall share.
  const double recorded = std::stod(committed_net().file().metadata.at("test_accuracy"));
  CHECK(static_cast<double>(hits) / 10000.0 == Approx(recorded).margin(5e-4));
  CHECK(r.class_accuracy.mean() == Approx(static_cast<double>(hits) / 10000.0).epsilon(1e-12));
  // Shirts are the hardest Fashion-MNIST class for any classifier, trousers among the easiest.
  const auto per = r.class_accuracy.per_class();
  CHECK(per[6] < per[1]);
  const auto j = r.to_json();
  CHECK(j.at("class_accuracy").size() == 10);
  CHECK(j.at("mean_class_accuracy").get<double>() == Approx(r.class_accuracy.mean()).epsilon(1e-12));
  // Without intended classes, no class accuracy.
  CHECK_FALSE(ddpm::evaluate_samples(fmnist_test_images().slice(0, 0, 300), ref, committed_net())
                  .to_json()
                  .contains("class_accuracy"));
}

TEST_CASE("eval: features without classes cannot score a class accuracy", "[eval]") {
  // Two features per image (its mean and its first pixel), no class probabilities.
  struct TwoFeatures : ddpm::FeatureNetwork {
    std::string name() const override { return "two"; }
    std::string metric() const override { return "FD-two"; }
    int64_t dim() const override { return 2; }
    void check_images(const torch::Tensor&) const override {}
    ddpm::FeatureBatch compute(const torch::Tensor& x) override {
      return {torch::stack({x.flatten(1).mean(1), x.flatten(1).select(1, 0)}, 1).to(torch::kFloat32), {}};
    }
    void to(torch::Device) override {}
  } net;
  ddpm::GaussianStats ref;
  ref.mu = torch::zeros({2}, torch::kFloat64);
  ref.sigma = torch::eye(2, torch::kFloat64);
  ref.features = "two";
  const torch::Tensor x = torch::rand({10, 1, 4, 4}) * 2 - 1;
  CHECK(ddpm::evaluate_samples(x, ref, net).class_accuracy.empty());
  CHECK_THROWS_WITH(ddpm::evaluate_samples(x, ref, net, ddpm::EvalOptions().intended_classes(std::vector<int64_t>(10, 0))),
                    Catch::Contains("class accuracy needs a classifier") && Catch::Contains("'two'"));
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
