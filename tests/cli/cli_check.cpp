// Helper for the CLI tests (tests/cli/CMakeLists.txt):
//   cli_check compare ACTUAL.safetensors NAME EXPECTED.safetensors NAME REL_TOL
//       max |actual - expected| <= REL_TOL * max |expected| (shapes must match)
//   cli_check png FILE WIDTH HEIGHT     a valid PNG (signature, IHDR + CRC) of that size
//   cli_check make-idx DIR N [TRUNCATE] tiny gzip'd MNIST-style dataset of N 28x28 images
//                                       (TRUNCATE: cut the images file by that many bytes)
//   cli_check make-folder DIR N SIZE [BAD]
//       a folder dataset of N images in two class subfolders, circles/ and squares/: a bright
//       disc or square on a dark background, every 4th a JPEG, every 3rd grayscale; SIZE x SIZE
//       pixels, or (SIZE 0) sizes that vary from 20x28 to 44x44. BAD 1 adds squares/zz_truncated.png,
//       a PNG cut in half (its header is fine, its pixel data is not).
// Exit status 0 when the check passes, 1 with a message otherwise.
#include <ddpm/io/png.hpp>
#include <ddpm/io/safetensors.hpp>

#include <zlib.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

namespace {

int fail(const std::string& m) {
  std::fprintf(stderr, "cli_check: FAIL: %s\n", m.c_str());
  return 1;
}

int compare(const std::string& a_path, const std::string& a_name, const std::string& e_path,
            const std::string& e_name, double tol) {
  const auto a_all = ddpm::load_safetensors(a_path);
  const auto e_all = ddpm::load_safetensors(e_path);
  auto a = a_all.find(a_name);
  auto e = e_all.find(e_name);
  if (a == a_all.end()) return fail(a_path + " has no tensor " + a_name);
  if (e == e_all.end()) return fail(e_path + " has no tensor " + e_name);
  if (a->second.sizes() != e->second.sizes()) {
    return fail("shape " + c10::str(a->second.sizes()) + " != expected " + c10::str(e->second.sizes()));
  }
  const auto av = a->second.to(torch::kFloat64), ev = e->second.to(torch::kFloat64);
  const double max_abs = ev.abs().max().item<double>();
  const double diff = (av - ev).abs().max().item<double>();
  std::printf("max |expected| = %.6g, max |diff| = %.6g, tolerance = %.6g\n", max_abs, diff, tol * max_abs);
  if (!(diff <= tol * max_abs)) return fail("difference exceeds the tolerance");
  return 0;
}

uint32_t be32(const std::vector<unsigned char>& b, size_t o) {
  return (uint32_t(b[o]) << 24) | (uint32_t(b[o + 1]) << 16) | (uint32_t(b[o + 2]) << 8) | b[o + 3];
}

int png(const std::string& path, uint32_t w, uint32_t h) {
  std::ifstream f(path, std::ios::binary);
  if (!f) return fail("cannot open " + path);
  std::vector<unsigned char> b((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  const unsigned char sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
  if (b.size() < 45 || !std::equal(sig, sig + 8, b.begin())) return fail(path + " is not a PNG");
  if (be32(b, 8) != 13 || std::string(b.begin() + 12, b.begin() + 16) != "IHDR") return fail("no IHDR chunk");
  if (be32(b, 29) != static_cast<uint32_t>(crc32(0, b.data() + 12, 17))) return fail("IHDR CRC mismatch");
  if (std::string(b.end() - 8, b.end() - 4) != "IEND") return fail("no IEND chunk");
  std::printf("%s: %ux%u\n", path.c_str(), be32(b, 16), be32(b, 20));
  if (be32(b, 16) != w || be32(b, 20) != h) {
    return fail("size " + std::to_string(be32(b, 16)) + "x" + std::to_string(be32(b, 20)) + " != expected " +
                std::to_string(w) + "x" + std::to_string(h));
  }
  return 0;
}

void put_be32(std::vector<unsigned char>& b, uint32_t v) {
  for (int s = 24; s >= 0; s -= 8) b.push_back(static_cast<unsigned char>(v >> s));
}

int write_gz(const std::string& path, const std::vector<unsigned char>& b) {
  gzFile g = gzopen(path.c_str(), "wb");
  if (!g) return fail("cannot write " + path);
  gzwrite(g, b.data(), static_cast<unsigned>(b.size()));
  gzclose(g);
  return 0;
}

int make_idx(const std::string& dir, int n, int truncate) {
  // Image i: a bright square whose position depends on i % 4 on a black background.
  std::vector<unsigned char> img = {0, 0, 8, 3}, lab = {0, 0, 8, 1};
  put_be32(img, n);
  put_be32(img, 28);
  put_be32(img, 28);
  put_be32(lab, n);
  for (int i = 0; i < n; ++i) {
    const int oy = 4 + 10 * ((i % 4) / 2), ox = 4 + 10 * (i % 2);
    for (int r = 0; r < 28; ++r)
      for (int c = 0; c < 28; ++c) img.push_back((r >= oy && r < oy + 10 && c >= ox && c < ox + 10) ? 230 : 0);
    lab.push_back(static_cast<unsigned char>(i % 4));
  }
  if (truncate > 0) img.resize(img.size() - static_cast<size_t>(truncate));
  if (write_gz(dir + "/train-images-idx3-ubyte.gz", img) || write_gz(dir + "/train-labels-idx1-ubyte.gz", lab)) return 1;
  return 0;
}

int make_folder(const std::string& dir, int n, int size, int bad) {
  namespace fs = std::filesystem;
  fs::create_directories(dir + "/circles");
  fs::create_directories(dir + "/squares");
  std::vector<uint8_t> bytes;
  for (int i = 0; i < n; ++i) {
    const bool square = i % 2 == 1;
    const int h = size > 0 ? size : 20 + 8 * (i % 4), w = size > 0 ? size : 28 + 8 * (i % 3);
    const int comp = i % 3 == 0 ? 1 : 3;
    const double cy = h * (0.3 + 0.4 * ((i * 7) % 10) / 10.0), cx = w * (0.3 + 0.4 * ((i * 3) % 10) / 10.0);
    const double r = std::min(h, w) * 0.25;
    std::vector<uint8_t> px(static_cast<size_t>(h * w * comp));
    for (int y = 0; y < h; ++y) {
      for (int x = 0; x < w; ++x) {
        const double dy = y + 0.5 - cy, dx = x + 0.5 - cx;
        const bool in = square ? (std::abs(dy) < r && std::abs(dx) < r) : (dy * dy + dx * dx < r * r);
        for (int c = 0; c < comp; ++c) {
          px[static_cast<size_t>((y * w + x) * comp + c)] =
              static_cast<uint8_t>(in ? 200 + 20 * c - (i % 5) * 7 : 20 + c * 10 + (x + y) % 8);
        }
      }
    }
    bytes.clear();
    const bool jpeg = i % 4 == 3;
    const int ok = jpeg ? stbi_write_jpg_to_func(&ddpm::detail::png_append, &bytes, w, h, comp, px.data(), 90)
                        : stbi_write_png_to_func(&ddpm::detail::png_append, &bytes, w, h, comp, px.data(), w * comp);
    if (!ok) return fail("cannot encode image " + std::to_string(i));
    char name[64];
    std::snprintf(name, sizeof name, "/%s/img-%06d.%s", square ? "squares" : "circles", i, jpeg ? "jpg" : "png");
    std::ofstream f(dir + name, std::ios::binary);
    f.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
    if (!f) return fail(std::string("cannot write ") + dir + name);
  }
  if (bad) {
    std::vector<uint8_t> noisy(48 * 48 * 3);
    for (size_t k = 0; k < noisy.size(); ++k) noisy[k] = static_cast<uint8_t>((k * 2654435761u) >> 13);
    bytes.clear();
    stbi_write_png_to_func(&ddpm::detail::png_append, &bytes, 48, 48, 3, noisy.data(), 48 * 3);
    bytes.resize(bytes.size() / 2);
    std::ofstream f(dir + "/squares/zz_truncated.png", std::ios::binary);
    f.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  }
  std::printf("wrote %d images to %s\n", n, dir.c_str());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    const std::string cmd = argc > 1 ? argv[1] : "";
    if (cmd == "compare" && argc == 7) return compare(argv[2], argv[3], argv[4], argv[5], std::atof(argv[6]));
    if (cmd == "png" && argc == 5) return png(argv[2], std::atoi(argv[3]), std::atoi(argv[4]));
    if (cmd == "make-idx" && (argc == 4 || argc == 5)) return make_idx(argv[2], std::atoi(argv[3]), argc == 5 ? std::atoi(argv[4]) : 0);
    if (cmd == "make-folder" && (argc == 5 || argc == 6)) {
      return make_folder(argv[2], std::atoi(argv[3]), std::atoi(argv[4]), argc == 6 ? std::atoi(argv[5]) : 0);
    }
  } catch (const std::exception& e) {
    return fail(e.what());
  }
  std::fprintf(stderr, "usage: cli_check compare A NAME E NAME TOL | png FILE W H | make-idx DIR N [TRUNCATE] | "
                       "make-folder DIR N SIZE [BAD]\n");
  return 2;
}
