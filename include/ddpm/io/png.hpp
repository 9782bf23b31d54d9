#pragma once
/// PNG output (optional header: needs Debian's libstb-dev, not part of ddpm.hpp):
/// image grids of [B, C, H, W] tensors and a loss-curve plot drawn with plain
/// pixel code. stb_image_write and stb_easy_font are compiled into this header
/// with static linkage, so it stays header-only and every translation unit that
/// includes it gets private copies (no link-time clash).
#include <ddpm/error.hpp>

#include <torch/types.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include <assert.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#if defined(INCLUDE_STB_IMAGE_WRITE_H) && !defined(DDPM_PNG_STB_INCLUDED)
#error "ddpm/io/png.hpp must be included before any other inclusion of stb_image_write.h"
#endif
#define DDPM_PNG_STB_INCLUDED 1

#if defined(__GNUC__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-function"
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"
#pragma GCC diagnostic ignored "-Wsign-compare"
#pragma GCC diagnostic ignored "-Wunused-parameter"
#endif
#if !__has_include(<stb/stb_image_write.h>) || !__has_include(<stb/stb_easy_font.h>)
#error "<ddpm/io/png.hpp> (included by <ddpm/ddpm.hpp> and <ddpm/train/trainer.hpp>) needs stb's <stb/stb_image_write.h> and <stb/stb_easy_font.h>: install libstb-dev (Debian/Ubuntu), or set CMake's DDPM_STB_INCLUDE_DIR to the directory that holds stb/"
#endif
#define STB_IMAGE_WRITE_STATIC
#define STB_IMAGE_WRITE_IMPLEMENTATION
#define STBI_WRITE_NO_STDIO
#include <stb/stb_image_write.h>
#undef STB_IMAGE_WRITE_IMPLEMENTATION
#include <stb/stb_easy_font.h>
#if defined(__GNUC__)
#pragma GCC diagnostic pop
#endif

namespace ddpm {

/// How pixel values of a float image tensor map to [0, 255].
enum class ImageRange {
  /// Model space: -1 -> 0, 1 -> 255.
  MinusOneToOne,
  /// 0 -> 0, 1 -> 255.
  ZeroToOne,
};

namespace detail {
inline void png_append(void* context, void* data, int size) {
  auto* out = static_cast<std::vector<uint8_t>*>(context);
  const auto* p = static_cast<const uint8_t*>(data);
  out->insert(out->end(), p, p + size);
}
}  // namespace detail

/// Encodes 8-bit pixels (row-major [h, w, comp], comp 1..4) as PNG bytes.
inline std::vector<uint8_t> encode_png(const uint8_t* pixels, int width, int height, int comp) {
  if (width <= 0 || height <= 0 || comp < 1 || comp > 4) {
    throw Error("encode_png: bad image size " + std::to_string(width) + "x" + std::to_string(height) +
                "x" + std::to_string(comp));
  }
  std::vector<uint8_t> out;
  if (!stbi_write_png_to_func(&detail::png_append, &out, width, height, comp, pixels, width * comp)) {
    throw Error("encode_png: stb_image_write failed");
  }
  return out;
}

/// Writes bytes to `path` (through `path.tmp` + rename); throws ddpm::Error naming the file.
inline void write_file_bytes(const std::string& path, const std::vector<uint8_t>& bytes) {
  const std::string tmp = path + ".tmp";
  {
    std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
    if (!f) throw IoError("cannot write '" + path + "' (cannot open '" + tmp + "')");
    f.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
    if (!f) throw IoError("cannot write '" + path + "'");
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) throw IoError("cannot rename '" + tmp + "' to '" + path + "'");
}

/// Converts an image [C, H, W] (C = 1, 3 or 4; float in `range`, or uint8) into
/// uint8 [H, W, C] pixels, rounding and clamping.
inline torch::Tensor to_pixels_hwc(const torch::Tensor& image, ImageRange range) {
  TORCH_CHECK(image.dim() == 3 && (image.size(0) == 1 || image.size(0) == 3 || image.size(0) == 4),
              "to_pixels_hwc: expected an image [C, H, W] with C in {1, 3, 4}, got ", image.sizes());
  torch::Tensor x = image.detach().to(torch::kCPU);
  if (x.scalar_type() != torch::kUInt8) {
    x = x.to(torch::kFloat32);
    if (range == ImageRange::MinusOneToOne) x = x.add(1.0).div(2.0);
    x = x.mul(255.0).round().clamp(0.0, 255.0).to(torch::kUInt8);
  }
  return x.permute({1, 2, 0}).contiguous();
}

/// Writes one image [C, H, W] as a PNG file.
inline void write_png(const std::string& path, const torch::Tensor& image,
                      ImageRange range = ImageRange::ZeroToOne) {
  const auto px = to_pixels_hwc(image, range);
  write_file_bytes(path, encode_png(px.data_ptr<uint8_t>(), static_cast<int>(px.size(1)),
                                    static_cast<int>(px.size(0)), static_cast<int>(px.size(2))));
}

/// Tiles images [B, C, H, W] into one image [C, rows*(H+pad)+pad, cols*(W+pad)+pad]
/// with `nrow` images per row (0: ceil(sqrt(B))), separated by `padding` pixels of
/// `pad_value` (in the images' own range), like torchvision's make_grid.
inline torch::Tensor make_image_grid(const torch::Tensor& images, int64_t nrow = 0, int64_t padding = 2,
                                     double pad_value = 0.0) {
  TORCH_CHECK(images.dim() == 4 && images.size(0) > 0, "make_image_grid: expected images [B, C, H, W], got ",
              images.sizes());
  const int64_t b = images.size(0), c = images.size(1), h = images.size(2), w = images.size(3);
  const int64_t cols = nrow > 0 ? std::min(nrow, b) : static_cast<int64_t>(std::ceil(std::sqrt(double(b))));
  const int64_t rows = (b + cols - 1) / cols;
  auto grid = torch::full({c, rows * (h + padding) + padding, cols * (w + padding) + padding}, pad_value,
                          images.options().device(torch::kCPU));
  const auto src = images.detach().to(torch::kCPU);
  for (int64_t i = 0; i < b; ++i) {
    const int64_t r = i / cols, q = i % cols;
    grid.slice(1, padding + r * (h + padding), padding + r * (h + padding) + h)
        .slice(2, padding + q * (w + padding), padding + q * (w + padding) + w)
        .copy_(src[i]);
  }
  return grid;
}

/// Writes images [B, C, H, W] (float in `range`, or uint8) as one PNG grid.
inline void save_image_grid(const std::string& path, const torch::Tensor& images,
                            ImageRange range = ImageRange::MinusOneToOne, int64_t nrow = 0,
                            int64_t padding = 2) {
  TORCH_CHECK(images.dim() == 4, "save_image_grid: expected images [B, C, H, W], got ", images.sizes());
  // White separators: 255 for bytes, 1.0 in both float ranges.
  const double pad = images.scalar_type() == torch::kUInt8 ? 255.0 : 1.0;
  write_png(path, make_image_grid(images, nrow, padding, pad), range);
}

namespace detail {

/// A small RGB canvas for plots.
struct Canvas {
  int width, height;
  std::vector<uint8_t> rgb;
  Canvas(int w, int h) : width(w), height(h), rgb(static_cast<size_t>(w) * h * 3, 255) {}
  void set(int x, int y, const uint8_t c[3]) {
    if (x < 0 || y < 0 || x >= width || y >= height) return;
    uint8_t* p = &rgb[(static_cast<size_t>(y) * width + x) * 3];
    p[0] = c[0];
    p[1] = c[1];
    p[2] = c[2];
  }
  void rect(int x0, int y0, int x1, int y1, const uint8_t c[3]) {
    for (int y = std::max(0, y0); y < std::min(height, y1); ++y)
      for (int x = std::max(0, x0); x < std::min(width, x1); ++x) set(x, y, c);
  }
  /// Bresenham line, `thick` pixels wide.
  void line(int x0, int y0, int x1, int y1, const uint8_t c[3], int thick = 1) {
    const int dx = std::abs(x1 - x0), sx = x0 < x1 ? 1 : -1;
    const int dy = -std::abs(y1 - y0), sy = y0 < y1 ? 1 : -1;
    int err = dx + dy;
    for (;;) {
      rect(x0 - thick / 2, y0 - thick / 2, x0 - thick / 2 + thick, y0 - thick / 2 + thick, c);
      if (x0 == x1 && y0 == y1) break;
      const int e2 = 2 * err;
      if (e2 >= dy) {
        err += dy;
        x0 += sx;
      }
      if (e2 <= dx) {
        err += dx;
        y0 += sy;
      }
    }
  }
  /// Text with stb_easy_font (its quads are axis-aligned rectangles).
  void text(int x, int y, const std::string& s, const uint8_t c[3]) {
    std::vector<char> buf(s.begin(), s.end());
    buf.push_back('\0');
    static thread_local std::vector<float> verts(4 * 4 * 2000);
    const int quads = stb_easy_font_print(static_cast<float>(x), static_cast<float>(y), buf.data(), nullptr,
                                          verts.data(), static_cast<int>(verts.size() * sizeof(float)));
    for (int q = 0; q < quads; ++q) {
      const float* v = &verts[static_cast<size_t>(q) * 16];  // 4 vertices x (x, y, z, color)
      const float xa = std::min(v[0], v[8]), xb = std::max(v[0], v[8]);
      const float ya = std::min(v[1], v[9]), yb = std::max(v[1], v[9]);
      rect(static_cast<int>(xa), static_cast<int>(ya), static_cast<int>(xb), static_cast<int>(yb), c);
    }
  }
  static int text_width(const std::string& s) {
    std::vector<char> buf(s.begin(), s.end());
    buf.push_back('\0');
    return stb_easy_font_width(buf.data());
  }
};

inline std::string short_number(double v) {
  char buf[32];
  if (v != 0 && (std::fabs(v) >= 1e5 || std::fabs(v) < 1e-3)) {
    std::snprintf(buf, sizeof buf, "%.0e", v);
  } else {
    std::snprintf(buf, sizeof buf, "%g", v);
  }
  return buf;
}

}  // namespace detail

/// Draws a training-loss curve as a PNG of `width` x `height`: the raw losses
/// (light) and a bias-corrected moving average of log(loss) (dark) against
/// the step, on a logarithmic loss axis with decade grid lines and labels.
/// Non-finite or non-positive losses are skipped; `title` is written above the plot (the
/// trainer also draws its evaluation distance with it). Throws ddpm::Error when
/// `steps` and `losses` differ in length.
inline void save_loss_curve(const std::string& path, const std::vector<double>& steps,
                            const std::vector<double>& losses, int width = 800, int height = 450,
                            const std::string& title = "training loss (log scale) vs step") {
  if (steps.size() != losses.size()) {
    throw Error("save_loss_curve: " + std::to_string(steps.size()) + " steps but " +
                std::to_string(losses.size()) + " losses");
  }
  if (width < 120 || height < 80) throw Error("save_loss_curve: image too small");
  detail::Canvas cv(width, height);
  const uint8_t black[3] = {0, 0, 0}, grid[3] = {225, 225, 225}, raw[3] = {150, 180, 230},
                smooth[3] = {20, 60, 170}, gray[3] = {90, 90, 90};
  const int left = 60, right = width - 15, top = 25, bottom = height - 35;
  std::vector<std::pair<double, double>> pts;
  for (size_t i = 0; i < steps.size(); ++i) {
    if (std::isfinite(losses[i]) && losses[i] > 0 && std::isfinite(steps[i])) pts.emplace_back(steps[i], losses[i]);
  }
  cv.text(left, 8, title, black);
  if (!pts.empty()) {
    double xmin = pts.front().first, xmax = pts.front().first, lmin = 1e300, lmax = -1e300;
    for (const auto& p : pts) {
      xmin = std::min(xmin, p.first);
      xmax = std::max(xmax, p.first);
      lmin = std::min(lmin, std::log10(p.second));
      lmax = std::max(lmax, std::log10(p.second));
    }
    if (xmax <= xmin) xmax = xmin + 1;
    lmin = std::floor(lmin * 4) / 4;
    lmax = std::ceil(lmax * 4) / 4;
    if (lmax <= lmin) lmax = lmin + 0.25;
    auto px = [&](double s) { return left + static_cast<int>((s - xmin) / (xmax - xmin) * (right - left)); };
    auto py = [&](double l) {
      return bottom - static_cast<int>((std::log10(l) - lmin) / (lmax - lmin) * (bottom - top));
    };
    // Grid: decades (and 2x, 5x when the range is small).
    for (int e = static_cast<int>(std::floor(lmin)); e <= static_cast<int>(std::ceil(lmax)); ++e) {
      for (double m : {1.0, 2.0, 5.0}) {
        const double v = m * std::pow(10.0, e);
        const double lv = std::log10(v);
        if (lv < lmin - 1e-9 || lv > lmax + 1e-9) continue;
        if (m != 1.0 && lmax - lmin > 2.5) continue;
        const int y = py(v);
        cv.line(left, y, right, y, grid);
        const std::string label = detail::short_number(v);
        cv.text(left - 6 - detail::Canvas::text_width(label), y - 3, label, gray);
      }
    }
    for (int k = 0; k <= 4; ++k) {
      const double s = xmin + (xmax - xmin) * k / 4.0;
      const int x = px(s);
      cv.line(x, top, x, bottom, grid);
      const std::string label = detail::short_number(std::round(s));
      cv.text(x - detail::Canvas::text_width(label) / 2, bottom + 6, label, gray);
    }
    cv.text((left + right) / 2 - 10, height - 14, "step", gray);
    // Raw points (2x2), then a bias-corrected exponential moving average of
    // log(loss) whose span is ~1/30 of the points shown.
    for (const auto& p : pts) cv.rect(px(p.first), py(p.second), px(p.first) + 2, py(p.second) + 2, raw);
    const double a = std::max(0.0, 1.0 - 30.0 / static_cast<double>(pts.size()));
    double acc = 0, weight = 0;
    int x_prev = 0, y_prev = 0;
    for (size_t i = 0; i < pts.size(); ++i) {
      acc = a * acc + (1 - a) * std::log10(pts[i].second);
      weight = a * weight + (1 - a);
      const double smoothed = std::pow(10.0, acc / weight);
      const int x = px(pts[i].first), y = py(smoothed);
      if (i > 0) cv.line(x_prev, y_prev, x, y, smooth, 2);
      x_prev = x;
      y_prev = y;
    }
  } else {
    cv.text(left + 10, (top + bottom) / 2, "no finite loss values yet", gray);
  }
  cv.line(left, top, left, bottom, black);
  cv.line(left, bottom, right, bottom, black);
  write_file_bytes(path, encode_png(cv.rgb.data(), width, height, 3));
}

}  // namespace ddpm
