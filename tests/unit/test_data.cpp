// Dataset readers (CIFAR-10 binary, IDX plain/gz), transforms and the sharded
// loader, on tiny synthetic files written in a temp dir.
#include <ddpm/data/cifar10.hpp>
#include <ddpm/data/idx.hpp>
#include <ddpm/data/loader.hpp>
#include <ddpm/data/registry.hpp>
#include <ddpm/data/transforms.hpp>

#include <zlib.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <set>
#include <string>
#include <unistd.h>
#include <vector>

#include "test_util.hpp"

namespace {

using ddpm_test::write_bytes;

void write_gz(const std::string& path, const std::vector<uint8_t>& bytes) {
  gzFile f = gzopen(path.c_str(), "wb");
  REQUIRE(f != nullptr);
  REQUIRE(gzwrite(f, bytes.data(), static_cast<unsigned>(bytes.size())) == static_cast<int>(bytes.size()));
  gzclose(f);
}

void be32(std::vector<uint8_t>& out, uint32_t v) {
  out.push_back(uint8_t(v >> 24));
  out.push_back(uint8_t(v >> 16));
  out.push_back(uint8_t(v >> 8));
  out.push_back(uint8_t(v));
}

// Images: pixel (i, r, c) = (7 i + 3 r + c) mod 256; labels: (i * 3) mod 10.
uint8_t idx_pixel(int i, int r, int c) { return uint8_t((7 * i + 3 * r + c) % 256); }

std::vector<uint8_t> idx_images(int n, int h, int w) {
  std::vector<uint8_t> b = {0, 0, 8, 3};
  be32(b, n);
  be32(b, h);
  be32(b, w);
  for (int i = 0; i < n; ++i)
    for (int r = 0; r < h; ++r)
      for (int c = 0; c < w; ++c) b.push_back(idx_pixel(i, r, c));
  return b;
}

std::vector<uint8_t> idx_labels(int n) {
  std::vector<uint8_t> b = {0, 0, 8, 1};
  be32(b, n);
  for (int i = 0; i < n; ++i) b.push_back(uint8_t((i * 3) % 10));
  return b;
}

using ddpm_test::error_of;

}  // namespace

TEST_CASE("IDX reader: plain and gzip files give the written values and labels", "[data][idx]") {
  const ddpm_test::TempDir dir_tmp("data");
  const std::string dir = dir_tmp.str();
  write_bytes(dir + "/train-images-idx3-ubyte", idx_images(5, 28, 28));
  write_bytes(dir + "/train-labels-idx1-ubyte", idx_labels(5));
  const ddpm_test::TempDir gzdir_tmp("data");
  const std::string gzdir = gzdir_tmp.str();
  write_gz(gzdir + "/train-images-idx3-ubyte.gz", idx_images(5, 28, 28));
  write_gz(gzdir + "/train-labels-idx1-ubyte.gz", idx_labels(5));

  for (const auto& d : {dir, gzdir}) {
    REQUIRE(ddpm::has_idx_dataset(d));
    const auto data = ddpm::load_mnist_dir(d, true, "mnist");
    REQUIRE(data.images.sizes() == torch::IntArrayRef({5, 1, 28, 28}));
    REQUIRE(data.images.scalar_type() == torch::kUInt8);
    REQUIRE(data.labels.scalar_type() == torch::kInt64);
    for (int i = 0; i < 5; ++i) {
      CHECK(data.labels[i].item<int64_t>() == (i * 3) % 10);
      for (int r : {0, 13, 27})
        for (int c : {0, 5, 27}) CHECK(data.images[i][0][r][c].item<int64_t>() == idx_pixel(i, r, c));
    }
  }
}

TEST_CASE("IDX reader rejects wrong magic, truncation and wrong size naming file and offset", "[data][idx]") {
  const ddpm_test::TempDir dir_tmp("data");
  const std::string dir = dir_tmp.str();
  auto good = idx_images(3, 4, 4);

  auto bad_magic = good;
  bad_magic[0] = 0x1f;
  bad_magic[1] = 0x00;
  write_bytes(dir + "/magic", bad_magic);
  auto msg = error_of([&] { ddpm::read_idx(dir + "/magic"); });
  CHECK_THAT(msg, Catch::Contains(dir + "/magic") && Catch::Contains("magic") && Catch::Contains("offset 0"));

  auto bad_type = good;
  bad_type[2] = 0x0d;  // float32: not supported
  write_bytes(dir + "/type", bad_type);
  msg = error_of([&] { ddpm::read_idx(dir + "/type"); });
  CHECK_THAT(msg, Catch::Contains("element type") && Catch::Contains("offset 2"));

  auto truncated = good;
  truncated.resize(good.size() - 5);
  write_bytes(dir + "/trunc", truncated);
  msg = error_of([&] { ddpm::read_idx(dir + "/trunc"); });
  CHECK_THAT(msg, Catch::Contains(dir + "/trunc") && Catch::Contains("truncated") &&
                      Catch::Contains("offset " + std::to_string(truncated.size())));

  auto trailing = good;
  trailing.push_back(1);
  write_bytes(dir + "/long", trailing);
  msg = error_of([&] { ddpm::read_idx(dir + "/long"); });
  CHECK_THAT(msg, Catch::Contains("wrong size") && Catch::Contains("offset " + std::to_string(good.size())));

  auto short_header = std::vector<uint8_t>(good.begin(), good.begin() + 9);
  write_bytes(dir + "/hdr", short_header);
  msg = error_of([&] { ddpm::read_idx(dir + "/hdr"); });
  CHECK_THAT(msg, Catch::Contains("truncated header"));

  // A gzip stream cut in the middle.
  write_gz(dir + "/full.gz", idx_images(50, 28, 28));
  std::ifstream in(dir + "/full.gz", std::ios::binary);
  std::vector<uint8_t> gz((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  gz.resize(gz.size() / 2);
  write_bytes(dir + "/cut.gz", gz);
  msg = error_of([&] { ddpm::read_idx(dir + "/cut.gz"); });
  CHECK_THAT(msg, Catch::Contains(dir + "/cut.gz") && Catch::Contains("offset"));

  // Labels count disagreeing with images.
  write_bytes(dir + "/img", idx_images(3, 4, 4));
  write_bytes(dir + "/lab", idx_labels(4));
  msg = error_of([&] { ddpm::load_idx_dataset(dir + "/img", dir + "/lab"); });
  CHECK_THAT(msg, Catch::Contains("3 images but 4 labels"));

  msg = error_of([&] { ddpm::load_mnist_dir(dir + "/nonexistent"); });
  CHECK_THAT(msg, Catch::Contains("train-images-idx3-ubyte"));
}

namespace {
// CIFAR record i: label (i + 2) % 10, channel ch pixel p = (i * 11 + ch * 5 + p) % 256.
std::vector<uint8_t> cifar_records(int n, int first = 0) {
  std::vector<uint8_t> b;
  for (int i = first; i < first + n; ++i) {
    b.push_back(uint8_t((i + 2) % 10));
    for (int ch = 0; ch < 3; ++ch)
      for (int p = 0; p < 1024; ++p) b.push_back(uint8_t((i * 11 + ch * 5 + p) % 256));
  }
  return b;
}
}  // namespace

TEST_CASE("CIFAR-10 reader: values, labels, the five training batches and the test batch", "[data][cifar]") {
  const ddpm_test::TempDir dir_tmp("data");
  const std::string dir = dir_tmp.str();
  for (int k = 1; k <= 5; ++k) write_bytes(dir + "/data_batch_" + std::to_string(k) + ".bin", cifar_records(2, 2 * (k - 1)));
  write_bytes(dir + "/test_batch.bin", cifar_records(3, 100));
  const auto train = ddpm::load_cifar10(dir, true);
  REQUIRE(train.images.sizes() == torch::IntArrayRef({10, 3, 32, 32}));
  for (int i = 0; i < 10; ++i) {
    CHECK(train.labels[i].item<int64_t>() == (i + 2) % 10);
    for (int ch = 0; ch < 3; ++ch)
      for (int p : {0, 1, 31, 32, 555, 1023})
        CHECK(train.images[i][ch][p / 32][p % 32].item<int64_t>() == (i * 11 + ch * 5 + p) % 256);
  }
  const auto test = ddpm::load_cifar10(dir, false);
  REQUIRE(test.size() == 3);
  CHECK(test.labels[0].item<int64_t>() == (100 + 2) % 10);
  CHECK(test.images[2][1][0][7].item<int64_t>() == (102 * 11 + 5 + 7) % 256);
  // The cifar-10-batches-bin subfolder layout is found from its parent.
  CHECK(ddpm::find_cifar10(dir) == dir);
}

TEST_CASE("CIFAR-10 reader rejects truncated files and bad labels; missing data says where to get it",
          "[data][cifar]") {
  const ddpm_test::TempDir dir_tmp("data");
  const std::string dir = dir_tmp.str();
  auto recs = cifar_records(3);
  recs.resize(2 * 3073 + 100);
  write_bytes(dir + "/data_batch_1.bin", recs);
  auto msg = error_of([&] { ddpm::read_cifar10_file(dir + "/data_batch_1.bin"); });
  CHECK_THAT(msg, Catch::Contains(dir + "/data_batch_1.bin") && Catch::Contains("truncated") &&
                      Catch::Contains("offset 6146"));

  auto badlabel = cifar_records(3);
  badlabel[3073] = 200;
  write_bytes(dir + "/bad.bin", badlabel);
  msg = error_of([&] { ddpm::read_cifar10_file(dir + "/bad.bin"); });
  CHECK_THAT(msg, Catch::Contains("label 200") && Catch::Contains("offset 3073"));

  const ddpm_test::TempDir empty_tmp("data");
  const std::string empty = empty_tmp.str();
  msg = error_of([&] { ddpm::load_cifar10(empty); });
  CHECK_THAT(msg, Catch::Contains("cifar-10-binary.tar.gz") && Catch::Contains("--data"));
}

TEST_CASE("Transforms: padding with the background, flips from a generator, [-1, 1] scaling", "[data][transforms]") {
  auto img = torch::full({2, 1, 28, 28}, 9, torch::kUInt8);
  img.slice(2, 5, 20).fill_(200);
  CHECK(ddpm::background_value(img) == 9.0);
  const auto padded = ddpm::pad_to_size(img, 32, 9);
  REQUIRE(padded.sizes() == torch::IntArrayRef({2, 1, 32, 32}));
  CHECK(padded[0][0][0][0].item<int64_t>() == 9);
  CHECK(padded[1][0][31][31].item<int64_t>() == 9);
  CHECK(padded[0][0][2 + 5][2].item<int64_t>() == 200);  // row 5 of the original, shifted by 2
  CHECK(torch::equal(padded.slice(2, 2, 30).slice(3, 2, 30), img));

  const auto m = ddpm::to_model_range(torch::tensor({0, 255, 51}, torch::kUInt8));
  CHECK(m[0].item<float>() == Approx(-1.0));
  CHECK(m[1].item<float>() == Approx(1.0));
  CHECK(m[2].item<float>() == Approx(51.0 / 127.5 - 1.0));

  // Each image is flipped exactly when the generator's uniform draw is < 0.5.
  auto x = torch::arange(8 * 2 * 3 * 4, torch::kFloat32).view({8, 2, 3, 4});
  auto gen = at::detail::createCPUGenerator(123);
  const auto flipped = ddpm::random_hflip(x, gen);
  const auto u = torch::rand({8}, at::detail::createCPUGenerator(123));
  int n_flipped = 0;
  for (int i = 0; i < 8; ++i) {
    const bool f = u[i].item<float>() < 0.5f;
    n_flipped += f;
    for (int c = 0; c < 4; ++c) {
      CHECK(flipped[i][1][2][c].item<float>() == x[i][1][2][f ? 3 - c : c].item<float>());
    }
  }
  CHECK(n_flipped > 0);
  CHECK(n_flipped < 8);
}

TEST_CASE("BatchLoader: deterministic, disjoint shards per rank, prefetch equals direct", "[data][loader]") {
  const int64_t n = 40;
  auto images = torch::arange(n, torch::kInt64).to(torch::kUInt8).view({n, 1, 1, 1}).expand({n, 1, 2, 2}).contiguous();
  ddpm::BatchLoaderOptions o;
  o.batch_size = 4;
  o.seed = 7;
  o.world_size = 3;
  o.random_flip = false;
  std::vector<std::unique_ptr<ddpm::BatchLoader>> ranks;
  for (int r = 0; r < 3; ++r) {
    o.rank = r;
    ranks.push_back(std::make_unique<ddpm::BatchLoader>(images, o));
  }
  CHECK(ranks[0]->steps_per_epoch() == 3);  // floor(40 / 12)
  for (int64_t step = 0; step < 6; ++step) {
    std::set<int64_t> seen;
    for (auto& l : ranks) {
      const auto idx = l->indices(step);
      for (int64_t i = 0; i < 4; ++i) seen.insert(idx[i].item<int64_t>());
      // Batch values decode back to the indices.
      const auto b = l->batch(step).images;
      CHECK(torch::allclose(b.select(1, 0).select(1, 0).select(1, 0),
                            idx.to(torch::kFloat32).div(127.5).sub(1.0)));
    }
    CHECK(seen.size() == 12);  // disjoint
  }
  // Epoch 1 uses a different permutation than epoch 0.
  CHECK(!torch::equal(ranks[0]->indices(0), ranks[0]->indices(3)));

  // The prefetching thread yields the same sequence as batch(step).
  o.rank = 0;
  o.world_size = 1;
  o.random_flip = true;
  o.prefetch = 3;
  ddpm::BatchLoader loader(images, o);
  loader.start(5);
  for (int64_t s = 5; s < 15; ++s) CHECK(torch::equal(loader.next().images, loader.batch(s).images));
  loader.start(2);
  CHECK(torch::equal(loader.next().images, loader.batch(2).images));
}

TEST_CASE("Dataset registry: names, detection, labels and class names, errors listing the names", "[data][registry]") {
  const auto& reg = ddpm::dataset_registry();
  CHECK(reg.names() == std::vector<std::string>{"cifar10", "fashion-mnist", "mnist", "folder"});
  CHECK(&reg.get("cifar-10") == &reg.get("cifar10"));  // alias
  CHECK(ddpm::dataset_choices().front() == "auto");
  CHECK_THROWS_WITH(reg.get("imagenet"),
                    Catch::Contains("unknown dataset \"imagenet\"") && Catch::Contains("\"cifar10\", \"fashion-mnist\", \"mnist\""));

  // The same IDX files are Fashion-MNIST in a folder whose path says so, MNIST elsewhere.
  const ddpm_test::TempDir root("registry");
  for (const std::string sub : {"my-Fashion-data", "digits"}) {
    std::filesystem::create_directories(root.file(sub));
    write_bytes(root.file(sub) + "/train-images-idx3-ubyte", idx_images(6, 4, 4));
    write_bytes(root.file(sub) + "/train-labels-idx1-ubyte", idx_labels(6));
  }
  CHECK(reg.detect(root.file("my-Fashion-data")).name == "fashion-mnist");
  CHECK(reg.detect(root.file("digits")).name == "mnist");
  const auto fashion = reg.load("auto", root.file("my-Fashion-data"));
  CHECK(fashion.name == "fashion-mnist");
  REQUIRE(fashion.num_classes() == 10);
  CHECK(fashion.class_names[9] == "Ankle boot");
  REQUIRE(fashion.labels.sizes() == torch::IntArrayRef({6}));
  for (int i = 0; i < 6; ++i) CHECK(fashion.labels[i].item<int64_t>() == (i * 3) % 10);
  const auto digits = reg.load("mnist", root.file("digits"));
  CHECK(digits.class_names[3] == "3");
  CHECK(ddpm::cifar10_class_names()[0] == "airplane");
  CHECK(ddpm::cifar10_class_names().size() == 10);

  // Nothing there: the error names the folder and every registered dataset.
  std::filesystem::create_directories(root.file("empty"));
  CHECK_THROWS_WITH(reg.detect(root.file("empty")),
                    Catch::Contains("empty") && Catch::Contains("\"mnist\"") && Catch::Contains("cifar-10-binary.tar.gz"));

  // A user dataset is one add() call; names and aliases must be new.
  ddpm::DatasetRegistry mine = ddpm::builtin_datasets();
  mine.add({"toy", {"toys"}, [](const std::string& p) { return p == "TOY"; },
            [](const std::string&, bool) {
              ddpm::ImageData d;
              d.images = torch::zeros({2, 1, 4, 4}, torch::kUInt8);
              d.labels = torch::tensor({0, 1}, torch::kInt64);
              d.class_names = {"a", "b"};
              return d;
            },
            ""});
  CHECK(mine.load("auto", "TOY").name == "toy");
  CHECK(mine.load("toys", "x").class_names == std::vector<std::string>{"a", "b"});
  CHECK_THROWS_WITH(mine.add({"mnist", {}, {}, {}, ""}), Catch::Contains("\"mnist\" is already registered"));
}

TEST_CASE("BatchLoader carries the labels of the batch's images", "[data][loader]") {
  const int64_t n = 24;
  auto images = torch::zeros({n, 1, 2, 2}, torch::kUInt8);
  auto labels = torch::arange(n, torch::kInt64).mul(7).remainder(10);
  ddpm::BatchLoaderOptions o;
  o.batch_size = 5;
  o.seed = 11;
  o.prefetch = 2;
  ddpm::BatchLoader loader(images, o, labels);
  loader.start(0);
  for (int64_t s = 0; s < 7; ++s) {  // crosses the epoch boundary (4 batches per epoch)
    const auto b = loader.next();
    REQUIRE(b.labels.has_value());
    CHECK(torch::equal(*b.labels, loader.indices(s).mul(7).remainder(10)));
  }
  ddpm::BatchLoader unlabelled(images, o);
  CHECK_FALSE(unlabelled.batch(0).labels.has_value());
  CHECK_THROWS_WITH(ddpm::BatchLoader(images, o, torch::zeros({3}, torch::kInt64)), Catch::Contains("labels"));
}
