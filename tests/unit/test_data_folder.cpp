// The folder dataset (data/folder.hpp) on temporary folders of PNG, JPEG and BMP files written
// with stb_image_write: listing order, labels and class names, decoding, the antialiased
// short-side resize and crop (against LibTorch's interpolate and hand computations), luma,
// bad files (fail / skip, named), the streaming BatchLoader and a short training run.
#include <ddpm/train/trainer.hpp>

#include <ddpm/data/folder.hpp>
#include <ddpm/data/loader.hpp>
#include <ddpm/data/registry.hpp>
#include <ddpm/data/transforms.hpp>
#include <ddpm/io/png.hpp>

#include <torch/nn/functional/upsampling.h>

#include <array>
#include <cctype>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <set>
#include <string>
#include <vector>

#include "test_util.hpp"
#include "train_test_util.hpp"

namespace {

namespace fs = std::filesystem;

// Pixel of the synthetic images: smooth enough for JPEG, different per channel and image.
uint8_t synth(int seed, int y, int x, int ch) { return static_cast<uint8_t>((seed * 37 + y * 11 + x * 5 + ch * 70) % 256); }

std::vector<uint8_t> synth_pixels(int seed, int h, int w, int comp) {
  std::vector<uint8_t> px(static_cast<size_t>(h * w * comp));
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x)
      for (int c = 0; c < comp; ++c) px[static_cast<size_t>((y * w + x) * comp + c)] = synth(seed, y, x, c);
  return px;
}

using ddpm_test::write_bytes;

// Writes pixels [h, w, comp] as PNG, JPEG (quality 95) or BMP, by the extension (any case).
void write_image(const std::string& path, const std::vector<uint8_t>& px, int h, int w, int comp) {
  std::string ext = fs::path(path).extension().string();
  for (auto& ch : ext) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
  std::vector<uint8_t> out;
  int ok = 0;
  if (ext == ".png") {
    ok = stbi_write_png_to_func(&ddpm::detail::png_append, &out, w, h, comp, px.data(), w * comp);
  } else if (ext == ".jpg" || ext == ".jpeg") {
    ok = stbi_write_jpg_to_func(&ddpm::detail::png_append, &out, w, h, comp, px.data(), 95);
  } else if (ext == ".bmp") {
    ok = stbi_write_bmp_to_func(&ddpm::detail::png_append, &out, w, h, comp, px.data());
  }
  REQUIRE(ok != 0);
  write_bytes(path, out);
}

// Image [C, H, W] float from pixels [h, w, comp].
torch::Tensor chw(const std::vector<uint8_t>& px, int h, int w, int comp) {
  return torch::from_blob(const_cast<uint8_t*>(px.data()), {h, w, comp}, torch::kUInt8)
      .permute({2, 0, 1})
      .to(torch::kFloat32)
      .contiguous();
}

// LibTorch's antialiased bilinear resize of [C, H, W] to [C, oh, ow] (the independent reference).
torch::Tensor torch_resize(const torch::Tensor& img, int64_t oh, int64_t ow) {
  namespace F = torch::nn::functional;
  return F::interpolate(img.to(torch::kFloat32).unsqueeze(0), F::InterpolateFuncOptions()
                                                                  .size(std::vector<int64_t>{oh, ow})
                                                                  .mode(torch::kBilinear)
                                                                  .align_corners(false)
                                                                  .antialias(true))
      .squeeze(0);
}

// The folder of the listing tests: two classes, PNG / JPEG / BMP, RGB and grayscale, sizes
// differ, extensions in mixed case, a nested subfolder, a non-image and a hidden folder.
struct ClassFolder {
  ddpm_test::TempDir dir{"folder"};
  ClassFolder() {
    write_image(dir.file("cats/b.PNG"), synth_pixels(1, 20, 40, 3), 20, 40, 3);  // wide RGB PNG
    write_image(dir.file("cats/a.png"), synth_pixels(2, 16, 16, 1), 16, 16, 1);  // grayscale PNG
    write_image(dir.file("cats/sub/c.jpg"), synth_pixels(3, 32, 24, 3), 32, 24, 3);  // tall RGB JPEG
    write_image(dir.file("dogs/x.jpeg"), synth_pixels(4, 20, 20, 1), 20, 20, 1);  // gray pixels, 3-channel JPEG
    write_image(dir.file("dogs/y.BMP"), synth_pixels(5, 24, 16, 3), 24, 16, 3);  // RGB BMP
    write_bytes(dir.file("dogs/notes.txt"), {'h', 'i'});
    write_image(dir.file(".hidden/z.png"), synth_pixels(6, 8, 8, 3), 8, 8, 3);
  }
};

}  // namespace

TEST_CASE("resize_antialiased: matches LibTorch's antialiased bilinear, hand weights, constants and ramps",
          "[data][folder][transforms]") {
  torch::manual_seed(5);
  // Against LibTorch's interpolate(bilinear, antialias = true): down, odd factors, up, mixed.
  for (const auto& s : std::vector<std::array<int64_t, 4>>{
           {20, 40, 10, 20}, {31, 17, 9, 5}, {8, 8, 13, 11}, {100, 60, 7, 30}, {12, 12, 12, 12}}) {
    const auto img = torch::rand({3, s[0], s[1]}) * 255;
    const auto mine = ddpm::resize_antialiased(img, s[2], s[3]);
    const auto ref = torch_resize(img, s[2], s[3]);
    INFO(s[0] << "x" << s[1] << " -> " << s[2] << "x" << s[3]);
    REQUIRE(mine.sizes() == ref.sizes());
    CHECK((mine - ref).abs().max().item<double>() < 2e-3);
  }
  // A window computes exactly that part of the full result.
  const auto img = torch::rand({2, 30, 50}) * 255;
  const auto full = ddpm::resize_antialiased(img, 12, 20);
  const auto win = ddpm::resize_antialiased(img, 12, 20, 3, 5, 6, 9);
  CHECK(torch::allclose(win, full.slice(1, 3, 9).slice(2, 5, 14), 0, 1e-4));
  // Constant images stay constant, up and down.
  for (const auto& s : std::vector<std::array<int64_t, 2>>{{5, 4}, {17, 23}}) {
    const auto c = ddpm::resize_antialiased(torch::full({1, 7, 13}, 77.25), s[0], s[1]);
    CHECK(c.min().item<double>() == Approx(77.25).margin(1e-4));
    CHECK(c.max().item<double>() == Approx(77.25).margin(1e-4));
  }
  // 2x down: the triangle spans 4 input pixels with weights 1, 3, 3, 1 (/ 8) in the interior.
  const auto row = torch::arange(0, 16, torch::kFloat64).pow(2).view({1, 1, 16});
  const auto half = ddpm::resize_antialiased(row, 1, 8);
  for (int j = 1; j < 7; ++j) {
    const double a = (2 * j - 1) * (2 * j - 1), b = (2 * j) * (2 * j), c = (2 * j + 1) * (2 * j + 1),
                 d = (2 * j + 2) * (2 * j + 2);
    CHECK(half[0][0][j].item<double>() == Approx((a + 3 * b + 3 * c + d) / 8).epsilon(1e-6));
  }
  // Edge: only the taps inside the image, renormalised: (0.75 x0 + 0.75 x1 + 0.25 x2) / 1.75.
  CHECK(half[0][0][0].item<double>() == Approx((0.75 * 0 + 0.75 * 1 + 0.25 * 4) / 1.75).epsilon(1e-6));
  // A linear ramp stays linear away from the borders: pixel j of a 4x reduction sits at
  // input coordinate (j + 0.5) * 4 - 0.5.
  const auto ramp = torch::arange(0, 64, torch::kFloat64).view({1, 1, 64});
  const auto q = ddpm::resize_antialiased(ramp, 1, 16);
  for (int j = 1; j < 15; ++j) CHECK(q[0][0][j].item<double>() == Approx((j + 0.5) * 4 - 0.5).epsilon(1e-6));
}

TEST_CASE("resize_crop_geometry: short side to the size, centre and seeded random crops", "[data][folder][transforms]") {
  auto g = ddpm::resize_crop_geometry(20, 40, 10, ddpm::CropMode::Center);
  CHECK(g.out_h == 10);
  CHECK(g.out_w == 20);
  CHECK(g.top == 0);
  CHECK(g.left == 5);
  g = ddpm::resize_crop_geometry(33, 20, 10, ddpm::CropMode::Center);  // 33 * 10 / 20 = 16.5 -> 16
  CHECK(g.out_w == 10);
  CHECK(g.out_h == 16);
  CHECK(g.top == 3);
  CHECK(g.left == 0);
  g = ddpm::resize_crop_geometry(7, 7, 10, ddpm::CropMode::Random, 3);  // square: nothing to crop
  CHECK(g.out_h == 10);
  CHECK(g.top == 0);
  CHECK(g.left == 0);
  std::set<int64_t> offsets;
  for (uint64_t seed = 0; seed < 200; ++seed) {
    const auto r = ddpm::resize_crop_geometry(20, 40, 10, ddpm::CropMode::Random, seed);
    REQUIRE(r.top == 0);
    REQUIRE(r.left >= 0);
    REQUIRE(r.left <= 10);
    CHECK(ddpm::resize_crop_geometry(20, 40, 10, ddpm::CropMode::Random, seed).left == r.left);
    offsets.insert(r.left);
  }
  CHECK(offsets.size() == 11);  // every offset 0..10 is drawn
}

TEST_CASE("Color conversion: ITU-R 601 luma as PIL's L, and gray to RGB", "[data][folder][transforms]") {
  auto x = torch::tensor({255, 0, 0, 0, 255, 0, 0, 0, 255, 10, 200, 30}, torch::kUInt8).view({4, 3, 1, 1});
  const auto l = ddpm::convert_color(x, ddpm::ColorMode::Grayscale);
  REQUIRE(l.sizes() == torch::IntArrayRef({4, 1, 1, 1}));
  // (19595 R + 38470 G + 7471 B + 32768) >> 16, and within 0.5 of 0.299 R + 0.587 G + 0.114 B.
  CHECK(l[0].item<int>() == 76);
  CHECK(l[1].item<int>() == 150);
  CHECK(l[2].item<int>() == 29);
  CHECK(l[3].item<int>() == (19595 * 10 + 38470 * 200 + 7471 * 30 + 32768) / 65536);
  CHECK(std::abs(l[3].item<int>() - (0.299 * 10 + 0.587 * 200 + 0.114 * 30)) <= 0.5);
  CHECK(ddpm::detail::luma601(10, 200, 30) == l[3].item<int>());
  const auto rgb = ddpm::convert_color(l, ddpm::ColorMode::Rgb);
  CHECK(rgb.sizes() == torch::IntArrayRef({4, 3, 1, 1}));
  CHECK(torch::equal(rgb.select(1, 2), l.select(1, 0)));
  CHECK(torch::equal(ddpm::convert_color(x, ddpm::ColorMode::Auto), x));
}

TEST_CASE("Folder dataset: sorted listing, subfolder classes, shapes, values, detection", "[data][folder]") {
  ClassFolder f;
  const std::string root = f.dir.str();
  const auto listing = ddpm::list_image_folder(root, ddpm::FolderLabels::Auto);
  const std::vector<std::string> expect_files = {root + "/cats/a.png", root + "/cats/b.PNG", root + "/cats/sub/c.jpg",
                                                 root + "/dogs/x.jpeg", root + "/dogs/y.BMP"};
  CHECK(listing.files == expect_files);
  CHECK(listing.labels == std::vector<int64_t>{0, 0, 0, 1, 1});
  CHECK(listing.class_names == std::vector<std::string>{"cats", "dogs"});
  const auto unlabelled = ddpm::list_image_folder(root, ddpm::FolderLabels::None);
  CHECK(unlabelled.files == expect_files);
  CHECK(unlabelled.labels.empty());
  CHECK(unlabelled.class_names.empty());

  // Detection picks the folder dataset; the registry passes the options through.
  CHECK(ddpm::dataset_registry().detect(root).name == "folder");
  CHECK(ddpm::folder_has_images(root));
  CHECK_FALSE(ddpm::folder_has_images(root + "/dogs/notes.txt"));
  ddpm::DatasetOptions o;
  o.image_size = 12;
  const ddpm::ImageData d = ddpm::dataset_registry().load("auto", root, true, o);
  CHECK(d.name == "folder");
  CHECK_FALSE(d.images.defined());
  REQUIRE(d.stream);
  CHECK(d.size() == 5);
  CHECK(d.channels() == 3);  // mixed RGB and grayscale files: RGB
  CHECK(d.class_names == std::vector<std::string>{"cats", "dogs"});
  CHECK(torch::equal(d.labels, torch::tensor({0, 0, 0, 1, 1}, torch::kInt64)));
  auto* stream = dynamic_cast<ddpm::FolderImages*>(d.stream.get());
  REQUIRE(stream != nullptr);

  // Every image: decoded with stb, resized (short side 12) and centre-cropped, compared with
  // LibTorch's antialiased resize of the decoded pixels. PNG and BMP decode losslessly.
  const std::vector<std::array<int, 3>> hwc = {{16, 16, 1}, {20, 40, 3}, {32, 24, 3}, {20, 20, 1}, {24, 16, 3}};
  const std::vector<int> seeds = {2, 1, 3, 4, 5};
  for (int i = 0; i < 5; ++i) {
    INFO("image " << expect_files[static_cast<size_t>(i)]);
    const auto [h, w, comp] = hwc[static_cast<size_t>(i)];
    const auto dec = ddpm::detail::decode_image_file(expect_files[static_cast<size_t>(i)]);
    REQUIRE(dec.error.empty());
    REQUIRE(dec.h == h);
    REQUIRE(dec.w == w);
    const bool lossless = i != 2 && i != 3;
    if (lossless) {  // the written pixels, gray replicated to RGB
      const auto px = synth_pixels(seeds[static_cast<size_t>(i)], h, w, comp);
      auto want = chw(px, h, w, comp).expand({3, h, w});
      CHECK(torch::equal(chw(dec.rgb, h, w, 3), want));
    }
    const auto [img, used] = stream->get(i);
    CHECK(used == i);
    REQUIRE(img.sizes() == torch::IntArrayRef({3, 12, 12}));
    const int64_t oh = h <= w ? 12 : 12 * h / w, ow = h <= w ? 12 * w / h : 12;
    const int64_t top = (oh - 12) / 2, left = (ow - 12) / 2;
    const auto ref = torch_resize(chw(dec.rgb, h, w, 3), oh, ow).slice(1, top, top + 12).slice(2, left, left + 12);
    CHECK((img.to(torch::kFloat32) - ref).abs().max().item<double>() <= 0.5 + 2e-3);
  }
  // The 40x20 PNG at 12: resized to 24x12, columns 6..17; a 16x16 image at 16 is unchanged.
  o.image_size = 16;
  o.labels = ddpm::FolderLabels::None;
  const auto d16 = ddpm::load_image_folder(root, true, o);
  CHECK_FALSE(d16.labels.defined());
  CHECK(d16.class_names.empty());
  auto* s16 = dynamic_cast<ddpm::FolderImages*>(d16.stream.get());
  const auto a16 = s16->get(0).first;
  const auto px_a = synth_pixels(2, 16, 16, 1);
  CHECK(torch::equal(a16, chw(px_a, 16, 16, 1).to(torch::kUInt8).expand({3, 16, 16})));

  // Grayscale: one channel, the luma of the RGB pixels (PIL's L); all-gray folders are gray by default.
  o.color = ddpm::ColorMode::Grayscale;
  const auto g = ddpm::load_image_folder(root, true, o);
  CHECK(g.channels() == 1);
  auto* gs = dynamic_cast<ddpm::FolderImages*>(g.stream.get());
  const auto dec_y = ddpm::detail::decode_image_file(expect_files[4]);  // 24x16 BMP -> 24x16 at 16, rows 4..19
  const auto yimg = gs->get(4).first;
  REQUIRE(yimg.sizes() == torch::IntArrayRef({1, 16, 16}));
  for (int y = 0; y < 16; ++y) {
    for (int x = 0; x < 16; ++x) {
      const size_t p = static_cast<size_t>(((y + 4) * 16 + x) * 3);
      const double want = 0.299 * dec_y.rgb[p] + 0.587 * dec_y.rgb[p + 1] + 0.114 * dec_y.rgb[p + 2];
      REQUIRE(std::abs(yimg[0][y][x].item<int>() - want) <= 0.5 + 1e-3);
      REQUIRE(yimg[0][y][x].item<int>() == ddpm::detail::luma601(dec_y.rgb[p], dec_y.rgb[p + 1], dec_y.rgb[p + 2]));
    }
  }
  ddpm_test::TempDir gray("folder_gray");
  write_image(gray.file("a.png"), synth_pixels(7, 8, 8, 1), 8, 8, 1);
  write_image(gray.file("sub/b.PNG"), synth_pixels(8, 9, 8, 1), 9, 8, 1);
  // (stb_image_write's JPEG and BMP writers always store 3 channels: such files count as RGB.)
  ddpm::DatasetOptions go;
  go.image_size = 8;
  CHECK(ddpm::load_image_folder(gray.str(), true, go).channels() == 1);
  go.color = ddpm::ColorMode::Rgb;
  CHECK(ddpm::load_image_folder(gray.str(), true, go).channels() == 3);
}

TEST_CASE("Folder dataset: clear errors for missing, empty and imageless folders and class layouts",
          "[data][folder]") {
  ddpm_test::TempDir dir("folder_err");
  const std::string root = dir.str();
  ddpm_test::require_error([&] { ddpm::load_image_folder(root + "/nope"); }, {"nope", "does not exist"});
  ddpm_test::require_error([&] { ddpm::load_image_folder(root); }, {root, "is empty"});
  write_bytes(dir.file("readme.txt"), {'x'});
  ddpm_test::require_error([&] { ddpm::load_image_folder(root); },
                           {root, "holds no PNG, JPEG or BMP images", "readme.txt"});
  ddpm_test::require_error([&] { ddpm::dataset_registry().load("folder", root); }, {"no PNG, JPEG or BMP"});
  // subfolders: images outside a class folder, and a class folder without images.
  write_image(dir.file("top.png"), synth_pixels(1, 8, 8, 3), 8, 8, 3);
  write_image(dir.file("a/1.png"), synth_pixels(2, 8, 8, 3), 8, 8, 3);
  ddpm::DatasetOptions o;
  o.image_size = 8;
  o.labels = ddpm::FolderLabels::Subfolders;
  ddpm_test::require_error([&] { ddpm::load_image_folder(root, true, o); }, {"outside the class subfolders", "top.png"});
  fs::remove(dir.file("top.png"));
  fs::create_directories(dir.file("b"));
  write_bytes(dir.file("b/x.txt"), {'x'});
  ddpm_test::require_error([&] { ddpm::load_image_folder(root, true, o); }, {"class folder", "/b'", "no PNG"});
  // auto with one class folder: unlabelled.
  o.labels = ddpm::FolderLabels::Auto;
  const auto d = ddpm::load_image_folder(root, true, o);
  CHECK(d.size() == 1);
  CHECK(d.class_names.empty());
}

TEST_CASE("Folder dataset: corrupt and truncated files are named; fail stops, skip warns and leaves them out",
          "[data][folder]") {
  ddpm_test::TempDir dir("folder_bad");
  const std::string root = dir.str();
  for (int i = 0; i < 4; ++i) {
    write_image(dir.file("img" + std::to_string(i) + ".png"), synth_pixels(i, 10, 10, 3), 10, 10, 3);
  }
  // A file that is no image at all (found while listing) ...
  write_bytes(dir.file("garbage.png"), {'n', 'o', 't', ' ', 'a', 'n', ' ', 'i', 'm', 'a', 'g', 'e'});
  // ... and a PNG whose header is fine but whose pixel data is cut (found when decoded).
  std::vector<uint8_t> noisy(32 * 32 * 3);
  for (size_t k = 0; k < noisy.size(); ++k) noisy[k] = static_cast<uint8_t>((k * 2654435761u) >> 13);
  std::vector<uint8_t> png;
  REQUIRE(stbi_write_png_to_func(&ddpm::detail::png_append, &png, 32, 32, 3, noisy.data(), 32 * 3));
  png.resize(png.size() / 2);
  write_bytes(dir.file("img1_truncated.png"), png);  // sorts between img1.png and img2.png
  const std::string garbage = dir.file("garbage.png"), truncated = dir.file("img1_truncated.png");

  ddpm::DatasetOptions o;
  o.image_size = 8;
  ddpm_test::require_error([&] { ddpm::load_image_folder(root, true, o); },
                           {"cannot decode image '" + garbage + "'", "stb_image:", "on_bad_image"});
  o.on_bad_image = ddpm::BadImagePolicy::Skip;
  const auto d = ddpm::load_image_folder(root, true, o);
  CHECK(d.size() == 5);  // img0, img1, img1_truncated, img2, img3
  auto warnings = d.stream->take_warnings();
  REQUIRE(warnings.size() == 1);
  CHECK(warnings[0].find("skipping image '" + garbage + "'") != std::string::npos);
  CHECK(d.stream->take_warnings().empty());
  // The truncated file (index 2) is replaced by the next readable one, with one warning.
  std::vector<uint8_t> buf(3 * 8 * 8), next(3 * 8 * 8);
  CHECK(d.stream->read(2, 0, buf.data()) == 3);
  CHECK(d.stream->read(3, 0, next.data()) == 3);
  CHECK(buf == next);
  warnings = d.stream->take_warnings();
  REQUIRE(warnings.size() == 1);
  // Found by ddpm's PNG chunk check before stb_image decodes (detail::png_chunks_error).
  CHECK(warnings[0].find("skipping image '" + truncated + "': its PNG chunk at byte offset") != std::string::npos);
  CHECK(d.stream->read(2, 0, buf.data()) == 3);
  CHECK(d.stream->take_warnings().empty());  // once per file

  // fail: reading the truncated file is a ddpm::Error naming it, also through the loader's workers.
  fs::remove(garbage);
  o.on_bad_image = ddpm::BadImagePolicy::Fail;
  const auto df = ddpm::load_image_folder(root, true, o);
  REQUIRE(df.size() == 5);
  ddpm_test::require_error([&] { df.stream->read(2, 0, buf.data()); }, {"cannot decode image '" + truncated + "'"});
  ddpm::BatchLoaderOptions lo;
  lo.batch_size = 5;  // every batch holds every image
  lo.threads = 3;
  ddpm::BatchLoader loader(df.stream, lo);
  loader.start(0);
  ddpm_test::require_error([&] { loader.next(); }, {truncated});
  loader.stop();

  // Nothing readable at all.
  ddpm_test::TempDir all_bad("folder_allbad");
  write_bytes(all_bad.file("x.jpg"), {1, 2, 3});
  o.on_bad_image = ddpm::BadImagePolicy::Skip;
  ddpm_test::require_error([&] { ddpm::load_image_folder(all_bad.str(), true, o); }, {"none of the 1 image files", "x.jpg"});
}

TEST_CASE("Streaming BatchLoader: batches are the stream's images, the same with 0, 1 or 3 workers",
          "[data][folder][loader]") {
  ddpm_test::TempDir dir("folder_stream");
  for (int i = 0; i < 12; ++i) {
    const int h = 10 + (i % 3) * 4, w = 10 + (i % 2) * 6;
    write_image(dir.file((i % 2 ? "b/" : "a/") + std::to_string(i) + ".png"), synth_pixels(i, h, w, 3), h, w, 3);
  }
  ddpm::DatasetOptions o;
  o.image_size = 8;
  o.crop = ddpm::CropMode::Random;
  const auto d = ddpm::load_image_folder(dir.str(), true, o);
  REQUIRE(d.size() == 12);
  auto make = [&](int prefetch, int threads) {
    ddpm::BatchLoaderOptions lo;
    lo.batch_size = 4;
    lo.seed = 9;
    lo.prefetch = prefetch;
    lo.threads = threads;
    return std::make_unique<ddpm::BatchLoader>(d.stream, lo, d.labels);
  };
  auto direct = make(0, 1);
  std::vector<ddpm::Batch> want;
  for (int s = 0; s < 7; ++s) want.push_back(direct->batch(s));
  for (const auto& [prefetch, threads] : std::vector<std::pair<int, int>>{{0, 1}, {2, 1}, {2, 3}}) {
    auto l = make(prefetch, threads);
    l->start(0);
    for (int s = 0; s < 7; ++s) {
      const auto b = l->next();
      INFO("prefetch " << prefetch << ", threads " << threads << ", step " << s);
      CHECK(torch::equal(b.images, want[static_cast<size_t>(s)].images));
      CHECK(torch::equal(*b.labels, *want[static_cast<size_t>(s)].labels));
    }
    l->start(4);  // a resume mid-sequence sees the same batches
    CHECK(torch::equal(l->next().images, want[4].images));
    CHECK(torch::equal(l->next().images, want[5].images));
  }
  // Batch 0 holds the images of indices(0), in [-1, 1], with the labels of their folders.
  const auto b0 = want[0];
  REQUIRE(b0.images.sizes() == torch::IntArrayRef({4, 3, 8, 8}));
  CHECK(b0.images.min().item<float>() >= -1.0f);
  CHECK(b0.images.max().item<float>() <= 1.0f);
  const auto idx = direct->indices(0);
  CHECK(torch::equal(*b0.labels, d.labels.index_select(0, idx)));
  // Sorted order: a/0, a/10, a/2, a/4, a/6, a/8 (class 0), then b/1, b/11, b/3, ... (class 1).
  CHECK(torch::equal(*b0.labels, (idx >= 6).to(torch::kInt64)));
  // Random crops differ between steps of the same image; the flips are off here.
  ddpm::BatchLoaderOptions lo;
  lo.batch_size = 12;
  lo.random_flip = false;
  lo.prefetch = 0;
  ddpm::BatchLoader all(d.stream, lo, d.labels);
  const auto e0 = all.batch(0), e1 = all.batch(1);
  const auto i0 = all.indices(0), i1 = all.indices(1);
  // An image with room to crop (14 x 10 -> 11 x 8 or 10 x 16 -> 8 x 12) at two steps.
  bool any_differs = false;
  for (int64_t k = 0; k < 12; ++k) {
    const int64_t img = i0[k].item<int64_t>();
    const int64_t pos1 = (i1 == img).nonzero().item<int64_t>();
    if (!torch::equal(e0.images[k], e1.images[pos1])) any_differs = true;
  }
  CHECK(any_differs);
}

TEST_CASE("Trainer: a few steps from a folder of PNG and JPEG files, by name and by detection",
          "[train][folder]") {
  ClassFolder f;
  // More images so that two batches of 4 fill an epoch.
  write_image(f.dir.file("dogs/z1.png"), synth_pixels(11, 9, 14, 3), 9, 14, 3);
  write_image(f.dir.file("cats/z2.jpg"), synth_pixels(12, 30, 18, 3), 30, 18, 3);
  const ddpm_test::TempDir out("folder_run");
  ddpm::TrainConfig c = ddpm_test::tiny_train_config(out.str(), 8);
  c.dataset = "folder";
  c.data_dir = f.dir.str();
  c.batch_size = 4;
  c.steps = 3;
  c.warmup_steps = 1;
  c.num_threads = 2;
  c.loader_threads = 2;
  c.folder_crop = ddpm::CropMode::Random;
  c.sample_count = 2;
  c.sample_steps = 1;
  std::vector<std::string> logs;
  {
    ddpm::Trainer t(c, {}, [&](const std::string& s) { logs.push_back(s); });
    t.set_show_progress(false);
    CHECK(t.dataset_name() == "folder");
    CHECK(t.class_names() == std::vector<std::string>{"cats", "dogs"});
    CHECK(t.loader().streaming());
    CHECK(t.loader().num_images() == 7);
    CHECK(t.unet_options().in_channels() == 3);
    const auto b = t.loader().batch(0);
    CHECK(b.images.sizes() == torch::IntArrayRef({4, 3, 8, 8}));
    REQUIRE(b.labels.has_value());
    CHECK(((*b.labels == 0) | (*b.labels == 1)).all().item<bool>());
    const auto res = t.run();
    CHECK(res.status == ddpm::RunStatus::Completed);
    CHECK(t.step() == 3);
  }
  const auto saved = ddpm::detail::read_json_file(out.str() + "/config.json");
  CHECK(saved.at("folder_crop") == "random");
  CHECK(saved.at("dataset") == "folder");
  // Detection ("auto") finds the same data; grayscale makes a 1-channel model.
  const ddpm_test::TempDir out2("folder_run");
  c.dataset = "auto";
  c.color_mode = ddpm::ColorMode::Grayscale;
  c.steps = 1;
  c.out_dir = out2.str();
  ddpm::Trainer t2(c, {}, [](const std::string&) {});
  t2.set_show_progress(false);
  CHECK(t2.dataset_name() == "folder");
  CHECK(t2.unet_options().in_channels() == 1);
  CHECK(t2.run().status == ddpm::RunStatus::Completed);

  // A truncated file with on_bad_image = fail stops run() with a ddpm::Error naming it; skip
  // warns once through the trainer's log and trains on.
  std::vector<uint8_t> png;
  std::vector<uint8_t> noisy(40 * 40 * 3);
  for (size_t k = 0; k < noisy.size(); ++k) noisy[k] = static_cast<uint8_t>((k * 2654435761u) >> 11);
  REQUIRE(stbi_write_png_to_func(&ddpm::detail::png_append, &png, 40, 40, 3, noisy.data(), 40 * 3));
  png.resize(png.size() / 3);
  write_bytes(f.dir.file("cats/broken.png"), png);
  c.batch_size = 8;  // one batch = every image, so step 1 reads the broken file
  c.steps = 2;
  c.color_mode = ddpm::ColorMode::Auto;
  const ddpm_test::TempDir out3("folder_run");
  c.out_dir = out3.str();
  {
    ddpm::Trainer t3(c, {}, [](const std::string&) {});
    t3.set_show_progress(false);
    ddpm_test::require_error([&] { t3.run(); }, {"cannot decode image '" + f.dir.file("cats/broken.png") + "'"});
  }
  const ddpm_test::TempDir out4("folder_run");
  c.out_dir = out4.str();
  c.on_bad_image = ddpm::BadImagePolicy::Skip;
  logs.clear();
  ddpm::Trainer t4(c, {}, [&](const std::string& s) { logs.push_back(s); });
  t4.set_show_progress(false);
  CHECK(t4.run().status == ddpm::RunStatus::Completed);
  int warned = 0;
  for (const auto& s : logs) warned += s.find("warning: skipping image '" + f.dir.file("cats/broken.png")) == 0;
  CHECK(warned == 1);
}

namespace {
std::vector<uint8_t> file_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  REQUIRE(in.good());
  return std::vector<uint8_t>((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}
}  // namespace

TEST_CASE("Folder images: hostile files are refused before stb_image decodes them", "[folder][limits]") {
  // The inputs tests/fuzz/fuzz_image found (kept in its regression corpus): Debian's stb_image
  // 2.27 writes past a JPEG Huffman table whose counts sum above 256 (also when they run past the
  // end of the file, or behind 0xFF fill bytes before the start marker), and allocates whatever
  // length a PNG IDAT chunk announces.
  const std::string regressions = std::string(DDPM_TEST_DATA_DIR) + "/../fuzz/regressions/image/";
  struct Case {
    const char* file;
    const char* message;
  } cases[] = {{"jpeg-huffman-257-codes", "JPEG Huffman table at byte offset 139 declares 1056 codes (at most 256)"},
               {"jpeg-huffman-counts-past-the-end", "declares 420 codes"},
               {"png-idat-announces-1-gib", "PNG chunk at byte offset"},
               {"jpeg-huffman-after-fill-bytes", "JPEG Huffman table at byte offset"},
               {"jpeg-8192x8192-in-633-bytes",
                "too short for the 8192 x 8192 pixels its JPEG header announces (633 bytes; at least 8192 needed"}};
  for (const auto& c : cases) {
    INFO(c.file);
    const auto bytes = file_bytes(regressions + c.file);
    const auto d = ddpm::detail::decode_image_bytes(bytes.data(), bytes.size());
    CHECK_THAT(d.error, Catch::Contains(c.message));
    CHECK(d.rgb.empty());
  }
  // A 45-byte PNG whose header announces 10000 x 10000 pixels (1e8 > 2^26): refused from the header.
  std::vector<uint8_t> png = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1A, '\n', 0, 0, 0, 13, 'I', 'H', 'D', 'R',
                              0, 0, 0x27, 0x10, 0, 0, 0x27, 0x10, 8, 2, 0, 0, 0, 0, 0, 0, 0};
  png.insert(png.end(), {0, 0, 0, 0, 'I', 'E', 'N', 'D', 0xAE, 0x42, 0x60, 0x82});
  const auto big = ddpm::detail::decode_image_bytes(png.data(), png.size());
  CHECK_THAT(big.error, Catch::Contains("announces 10000 x 10000 pixels (the limit is 67108864 pixels)"));
  // The same header at 100 x 100 passes the checks (and fails later, in stb_image, for want of data).
  png[18] = 0;
  png[19] = 100;
  png[22] = 0;
  png[23] = 100;
  const auto small = ddpm::detail::decode_image_bytes(png.data(), png.size());
  CHECK_THAT(small.error, Catch::StartsWith("stb_image: "));

  // A 339-byte JPEG whose scan data a marker ends early (fuzz_image, 2026-12-03): Debian's stb_image
  // 2.27 shifts by 32 while it reads past the marker (undefined behaviour on a zero byte,
  // suppressed in .ci/ubsan.supp) and decodes the 12549 x 4 gray image with zeros for the missing
  // data, as any truncated JPEG; later stb_image releases refuse it. Either way: no crash, no
  // exception, and a result that is one or the other.
  {
    const auto bytes = file_bytes(regressions + "jpeg-scan-ends-early-shift-32");
    const auto d = ddpm::detail::decode_image_bytes(bytes.data(), bytes.size());
    if (d.error.empty()) {
      CHECK(d.w == 12549);
      CHECK(d.h == 4);
      CHECK(d.rgb.size() == 12549u * 4u * 3u);
    } else {
      CHECK_THAT(d.error, Catch::StartsWith("stb_image: "));
      CHECK(d.rgb.empty());
    }
  }

  // stb_image reads past the end of a JPEG or BMP as zeros: a valid 16 x 16 file whose header is
  // changed to announce far more pixels than its data can hold is refused before decoding; the
  // same file announcing a size its data can hold still decodes.
  const auto px = synth_pixels(3, 16, 16, 3);
  std::vector<uint8_t> jpg, bmp;
  REQUIRE(stbi_write_jpg_to_func(&ddpm::detail::png_append, &jpg, 16, 16, 3, px.data(), 95));
  REQUIRE(stbi_write_bmp_to_func(&ddpm::detail::png_append, &bmp, 16, 16, 3, px.data()));
  size_t sof = 0;
  while (sof + 9 < jpg.size() && !(jpg[sof] == 0xFF && jpg[sof + 1] == 0xC0)) ++sof;
  REQUIRE(sof + 9 < jpg.size());
  auto set_jpeg_size = [&](int side) {  // SOF0: FF C0, length (2), precision (1), height (2), width (2)
    jpg[sof + 5] = jpg[sof + 7] = static_cast<uint8_t>(side >> 8);
    jpg[sof + 6] = jpg[sof + 8] = static_cast<uint8_t>(side & 0xFF);
  };
  const size_t needed = (8000 / 32) * (8000 / 32) / 8;
  REQUIRE(jpg.size() < needed);
  set_jpeg_size(8000);
  const auto huge_jpeg = ddpm::detail::decode_image_bytes(jpg.data(), jpg.size());
  CHECK_THAT(huge_jpeg.error, Catch::Contains("too short for the 8000 x 8000 pixels its JPEG header announces (" +
                                              std::to_string(jpg.size()) + " bytes; at least " +
                                              std::to_string(needed) + " needed"));
  set_jpeg_size(64);
  const auto ok_jpeg = ddpm::detail::decode_image_bytes(jpg.data(), jpg.size());
  CHECK(ok_jpeg.error.empty());
  CHECK(ok_jpeg.w == 64);
  // BMP: width at byte 18, height at 22 (little-endian), 24 bits per pixel.
  const auto ok_bmp = ddpm::detail::decode_image_bytes(bmp.data(), bmp.size());
  CHECK(ok_bmp.error.empty());
  bmp[18] = bmp[22] = 0x00;
  bmp[19] = bmp[23] = 0x04;  // 1024 x 1024 x 3 bytes in a ~800-byte file
  const auto huge_bmp = ddpm::detail::decode_image_bytes(bmp.data(), bmp.size());
  CHECK_THAT(huge_bmp.error, Catch::Contains("too short for the 1024 x 1024 pixels its BMP header announces (" +
                                             std::to_string(bmp.size()) + " bytes; at least 3145728 needed"));
}

TEST_CASE("Folder images: a PNG with empty IDAT chunks decodes to the same pixels, without undefined behaviour",
          "[folder][limits]") {
  // stb_image 2.27 appends each IDAT chunk to a buffer that is still null when the first IDAT is
  // empty: memcpy(nullptr, src, 0), which UBSan reports (found by tests/fuzz/fuzz_image). ddpm drops
  // empty IDAT chunks before decoding (detail::png_without_empty_idat): no data, no pixel changes.
  const auto px = synth_pixels(9, 12, 10, 3);
  std::vector<uint8_t> png;
  REQUIRE(stbi_write_png_to_func(&ddpm::detail::png_append, &png, 10, 12, 3, px.data(), 10 * 3));
  const auto plain = ddpm::detail::decode_image_bytes(png.data(), png.size());
  REQUIRE(plain.error.empty());
  CHECK(plain.rgb == px);  // PNG is lossless
  CHECK(ddpm::detail::png_without_empty_idat(png.data(), png.size()).empty());  // nothing to drop

  // Chunks: signature (8), IHDR at 8 (4 + 4 + 13 + 4 = 25 bytes), then the first IDAT at 33.
  REQUIRE(std::string(png.begin() + 37, png.begin() + 41) == "IDAT");
  const std::vector<uint8_t> empty_idat = {0, 0, 0, 0, 'I', 'D', 'A', 'T', 0x35, 0xAF, 0x06, 0x1E};
  std::vector<uint8_t> odd(png.begin(), png.begin() + 33);
  odd.insert(odd.end(), empty_idat.begin(), empty_idat.end());  // before the data
  odd.insert(odd.end(), png.begin() + 33, png.end() - 12);
  odd.insert(odd.end(), empty_idat.begin(), empty_idat.end());  // after it, before IEND
  odd.insert(odd.end(), png.end() - 12, png.end());
  const auto cleaned = ddpm::detail::png_without_empty_idat(odd.data(), odd.size());
  CHECK(cleaned == png);  // exactly the original bytes back
  const auto d = ddpm::detail::decode_image_bytes(odd.data(), odd.size());
  REQUIRE(d.error.empty());
  CHECK(d.rgb == px);
  // Not a PNG, or a PNG whose last chunk runs past the end: nothing is dropped or read past the end.
  CHECK(ddpm::detail::png_without_empty_idat(px.data(), px.size()).empty());
  CHECK(ddpm::detail::png_without_empty_idat(odd.data(), 40).empty());
}
