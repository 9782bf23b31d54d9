// PNG writer: valid signature and IHDR of the requested size, grid layout, loss curve.
#include <ddpm/io/png.hpp>

#include <zlib.h>

#include <fstream>
#include <string>
#include <unistd.h>
#include <vector>

#include "test_util.hpp"

namespace {
std::vector<uint8_t> read_all(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::vector<uint8_t>((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
}
uint32_t be32_at(const std::vector<uint8_t>& b, size_t o) {
  return (uint32_t(b[o]) << 24) | (uint32_t(b[o + 1]) << 16) | (uint32_t(b[o + 2]) << 8) | b[o + 3];
}
struct Ihdr {
  uint32_t width, height;
  int bit_depth, color_type;
};
// Checks the PNG signature and the IHDR chunk (length, type, CRC) and returns its fields.
Ihdr check_png(const std::vector<uint8_t>& b) {
  REQUIRE(b.size() > 33);
  const uint8_t sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
  REQUIRE(std::equal(sig, sig + 8, b.begin()));
  REQUIRE(be32_at(b, 8) == 13);
  REQUIRE(std::string(b.begin() + 12, b.begin() + 16) == "IHDR");
  const uint32_t crc = static_cast<uint32_t>(crc32(0, b.data() + 12, 17));
  REQUIRE(be32_at(b, 29) == crc);
  // Ends with an IEND chunk.
  REQUIRE(std::string(b.end() - 8, b.end() - 4) == "IEND");
  return {be32_at(b, 16), be32_at(b, 20), b[24], b[25]};
}
}  // namespace

TEST_CASE("PNG grid of [B, C, H, W] has the expected size, channels and pixels", "[png]") {
  const ddpm_test::TempDir dir_tmp("png");
  const std::string dir = dir_tmp.str();
  // 5 RGB images 6x4 -> 3 per row (ceil(sqrt 5)), 2 rows, padding 2:
  // width 3*(4+2)+2 = 20, height 2*(6+2)+2 = 18.
  auto imgs = torch::zeros({5, 3, 6, 4});
  imgs[1].fill_(-1.0);
  imgs[1][0].fill_(1.0);  // pure red in [-1, 1]
  ddpm::save_image_grid(dir + "/grid.png", imgs, ddpm::ImageRange::MinusOneToOne);
  const auto hdr = check_png(read_all(dir + "/grid.png"));
  CHECK(hdr.width == 20);
  CHECK(hdr.height == 18);
  CHECK(hdr.bit_depth == 8);
  CHECK(hdr.color_type == 2);  // RGB

  // Pixel values of the grid itself (before encoding).
  const auto g = ddpm::make_image_grid(imgs, 0, 2, 1.0);
  REQUIRE(g.sizes() == torch::IntArrayRef({3, 18, 20}));
  CHECK(g[0][2][8].item<float>() == 1.0f);   // image 1, red channel
  CHECK(g[1][2][8].item<float>() == -1.0f);  // image 1, green channel
  CHECK(g[1][0][0].item<float>() == 1.0f);   // padding
  const auto px = ddpm::to_pixels_hwc(g, ddpm::ImageRange::MinusOneToOne);
  CHECK(px[2][8][0].item<int64_t>() == 255);
  CHECK(px[2][8][1].item<int64_t>() == 0);
  CHECK(px[2][2][1].item<int64_t>() == 128);  // 0 -> round(127.5) = 128

  // Grayscale, 2 per row.
  ddpm::save_image_grid(dir + "/gray.png", torch::rand({4, 1, 32, 32}), ddpm::ImageRange::ZeroToOne, 2, 0);
  const auto h2 = check_png(read_all(dir + "/gray.png"));
  CHECK(h2.width == 64);
  CHECK(h2.height == 64);
  CHECK(h2.color_type == 0);  // grayscale
}

TEST_CASE("Loss curve PNG has the requested size; bad input is rejected", "[png]") {
  const ddpm_test::TempDir dir_tmp("png");
  const std::string dir = dir_tmp.str();
  std::vector<double> steps, losses;
  for (int i = 0; i < 300; ++i) {
    steps.push_back(i);
    losses.push_back(1.0 / (1 + i) + 0.03);
  }
  losses[10] = std::nan("");
  ddpm::save_loss_curve(dir + "/loss.png", steps, losses, 640, 360);
  const auto b = read_all(dir + "/loss.png");
  const auto hdr = check_png(b);
  CHECK(hdr.width == 640);
  CHECK(hdr.height == 360);
  ddpm::save_loss_curve(dir + "/empty.png", {}, {}, 200, 100);
  CHECK(check_png(read_all(dir + "/empty.png")).width == 200);
  CHECK_THROWS_WITH(ddpm::save_loss_curve(dir + "/x.png", {1, 2}, {1}), Catch::Contains("2 steps but 1 losses"));
  CHECK_THROWS_AS(ddpm::save_image_grid("/nonexistent-dir/x.png", torch::zeros({1, 1, 2, 2})), ddpm::Error);
}
