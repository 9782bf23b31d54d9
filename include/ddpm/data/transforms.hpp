#pragma once
/// Image transforms for training: pad to a square size with the background
/// value, random horizontal flip driven by an explicit generator, the mapping
/// between pixel bytes [0, 255] and the model's range [-1, 1], and, for images of
/// any size (the folder dataset), an antialiased resize with a crop window, the
/// short-side resize + centre/random crop geometry and ITU-R 601 luma.
#include <ddpm/data/dataset.hpp>
#include <ddpm/error.hpp>

#include <torch/types.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

namespace ddpm {

/// Pads images [N, C, H, W] (any dtype) to [N, C, size, size], centred (the
/// extra pixel of an odd margin goes right/bottom), filling with `value` (in the
/// images' own units, e.g. 0 for the black background of MNIST). Images already
/// of that size are returned unchanged; larger ones are rejected.
inline torch::Tensor pad_to_size(const torch::Tensor& images, int64_t size, double value = 0.0) {
  TORCH_CHECK(images.dim() == 4, "pad_to_size: expected images [N, C, H, W], got ", images.sizes());
  const int64_t h = images.size(2), w = images.size(3);
  TORCH_CHECK(h <= size && w <= size, "pad_to_size: images of ", h, "x", w,
              " are larger than the target size ", size);
  if (h == size && w == size) return images;
  const int64_t top = (size - h) / 2, left = (size - w) / 2;
  return at::constant_pad_nd(images, {left, size - w - left, top, size - h - top}, value);
}

/// The background value of uint8 images [N, C, H, W]: the most frequent value of
/// the outermost pixel ring over (up to) the first 1000 images (0 for MNIST and
/// Fashion-MNIST). Used to pad grayscale 28x28 images to 32x32 invisibly.
inline double background_value(const torch::Tensor& images) {
  TORCH_CHECK(images.dim() == 4 && images.scalar_type() == torch::kUInt8,
              "background_value: expected uint8 images [N, C, H, W], got ", images.sizes(), " ",
              images.scalar_type());
  const auto x = images.slice(0, 0, std::min<int64_t>(images.size(0), 1000));
  const int64_t h = x.size(2), w = x.size(3);
  const auto ring = torch::cat({x.select(2, 0).reshape(-1), x.select(2, h - 1).reshape(-1),
                                x.select(3, 0).reshape(-1), x.select(3, w - 1).reshape(-1)});
  const auto counts = torch::bincount(ring.to(torch::kInt64), {}, 256);
  return static_cast<double>(counts.argmax().item<int64_t>());
}

/// Flips each image of x [N, C, H, W] left-right with probability p, drawing one
/// uniform number per image from `gen` (so the result is reproducible).
inline torch::Tensor random_hflip(const torch::Tensor& x, torch::Generator gen, double p = 0.5) {
  TORCH_CHECK(x.dim() == 4, "random_hflip: expected [N, C, H, W], got ", x.sizes());
  const auto u = torch::rand({x.size(0)}, gen, torch::TensorOptions().dtype(torch::kFloat32));
  const auto flip = (u < p).to(x.device()).view({-1, 1, 1, 1});
  return torch::where(flip, x.flip({3}), x);
}

/// uint8 pixels [0, 255] -> float32 in [-1, 1] (x / 127.5 - 1), the range DDPM trains in.
inline torch::Tensor to_model_range(const torch::Tensor& pixels) {
  return pixels.to(torch::kFloat32).div(127.5).sub(1.0);
}

/// Model-space images in [-1, 1] -> float32 in [0, 1] ((x + 1) / 2, clamped).
inline torch::Tensor to_unit_range(const torch::Tensor& x) {
  return x.to(torch::kFloat32).add(1.0).div(2.0).clamp(0.0, 1.0);
}

/// Training images uint8 [N, C, h, w] fitted to size x size: padded (centred) with their
/// background value (see background_value) when smaller; throws ddpm::Error when larger.
inline torch::Tensor fit_to_size(const torch::Tensor& images, int64_t size) {
  TORCH_CHECK(images.defined() && images.dim() == 4 && images.scalar_type() == torch::kUInt8,
              "fit_to_size: training images must be uint8 [N, C, H, W]");
  if (images.size(2) > size || images.size(3) > size) {
    throw Error("images of " + std::to_string(images.size(2)) + "x" + std::to_string(images.size(3)) +
                " do not fit image_size " + std::to_string(size));
  }
  if (images.size(2) == size && images.size(3) == size) return images;
  return pad_to_size(images, size, background_value(images));
}

namespace detail {

/// Resampling weights of one axis: for output pixel j (of those computed), the input pixels
/// [start[j], start[j] + count[j]) with weights w[j * max_count + k] (summing to 1).
struct ResampleAxis {
  std::vector<int64_t> start, count;
  std::vector<double> w;
  int64_t max_count = 0;
};

/// The triangle ("bilinear") filter widened by the scale factor when shrinking: PIL's
/// ImagingResample with Image.BILINEAR and LibTorch's interpolate(bilinear, antialias=true,
/// align_corners=false). Output pixel j's centre maps to (j + 0.5) * in / out in input
/// coordinates; the filter reaches max(in / out, 1) input pixels to either side. Computes
/// output pixels [first, first + n) of `out`.
inline ResampleAxis triangle_axis(int64_t in, int64_t out, int64_t first, int64_t n) {
  ResampleAxis a;
  const double scale = static_cast<double>(in) / static_cast<double>(out);
  const double fscale = std::max(scale, 1.0);
  const double support = fscale;  // the triangle's support is 1, widened by fscale
  a.max_count = static_cast<int64_t>(std::ceil(support)) * 2 + 1;
  a.start.resize(static_cast<size_t>(n));
  a.count.resize(static_cast<size_t>(n));
  a.w.assign(static_cast<size_t>(n * a.max_count), 0.0);
  for (int64_t jj = 0; jj < n; ++jj) {
    const double center = (static_cast<double>(first + jj) + 0.5) * scale;
    const int64_t lo = std::max<int64_t>(static_cast<int64_t>(std::floor(center - support + 0.5)), 0);
    const int64_t hi = std::min<int64_t>(static_cast<int64_t>(std::floor(center + support + 0.5)), in);
    const int64_t cnt = std::min(hi - lo, a.max_count);
    double total = 0;
    double* w = a.w.data() + jj * a.max_count;
    for (int64_t k = 0; k < cnt; ++k) {
      const double x = std::abs((static_cast<double>(lo + k) - center + 0.5) / fscale);
      w[k] = x < 1.0 ? 1.0 - x : 0.0;
      total += w[k];
    }
    for (int64_t k = 0; k < cnt; ++k) w[k] = total > 0 ? w[k] / total : 0.0;
    a.start[static_cast<size_t>(jj)] = lo;
    a.count[static_cast<size_t>(jj)] = cnt;
  }
  return a;
}

/// Resizes the interleaved image src [h][w][c] to out_h x out_w with the triangle filter
/// (triangle_axis) and writes the window rows [top, top + crop_h), columns
/// [left, left + crop_w) of the result, planar, to dst [c][crop_h][crop_w] (float, not
/// rounded). Only the pixels of the window are computed.
template <typename T>
void resize_window_hwc(const T* src, int64_t h, int64_t w, int64_t c, int64_t out_h, int64_t out_w, int64_t top,
                       int64_t left, int64_t crop_h, int64_t crop_w, float* dst) {
  const ResampleAxis ax = triangle_axis(w, out_w, left, crop_w);
  const ResampleAxis ay = triangle_axis(h, out_h, top, crop_h);
  // Input rows the vertical pass reads.
  int64_t row0 = h, row1 = 0;
  for (int64_t i = 0; i < crop_h; ++i) {
    if (ay.count[static_cast<size_t>(i)] == 0) continue;
    row0 = std::min(row0, ay.start[static_cast<size_t>(i)]);
    row1 = std::max(row1, ay.start[static_cast<size_t>(i)] + ay.count[static_cast<size_t>(i)]);
  }
  if (row1 < row0) row1 = row0;
  // Horizontal pass over those rows: tmp [row1 - row0][crop_w][c].
  std::vector<double> tmp(static_cast<size_t>((row1 - row0) * crop_w * c), 0.0);
  for (int64_t y = row0; y < row1; ++y) {
    const T* in_row = src + y * w * c;
    double* t_row = tmp.data() + (y - row0) * crop_w * c;
    for (int64_t j = 0; j < crop_w; ++j) {
      const double* wt = ax.w.data() + j * ax.max_count;
      const T* px = in_row + ax.start[static_cast<size_t>(j)] * c;
      for (int64_t ch = 0; ch < c; ++ch) {
        double acc = 0;
        for (int64_t k = 0; k < ax.count[static_cast<size_t>(j)]; ++k) acc += wt[k] * static_cast<double>(px[k * c + ch]);
        t_row[j * c + ch] = acc;
      }
    }
  }
  // Vertical pass into the planar output.
  for (int64_t i = 0; i < crop_h; ++i) {
    const double* wt = ay.w.data() + i * ay.max_count;
    const int64_t y0 = ay.start[static_cast<size_t>(i)] - row0;
    for (int64_t j = 0; j < crop_w; ++j) {
      for (int64_t ch = 0; ch < c; ++ch) {
        double acc = 0;
        for (int64_t k = 0; k < ay.count[static_cast<size_t>(i)]; ++k) {
          acc += wt[k] * tmp[static_cast<size_t>(((y0 + k) * crop_w + j) * c + ch)];
        }
        dst[(ch * crop_h + i) * crop_w + j] = static_cast<float>(acc);
      }
    }
  }
}

/// float -> uint8 as PIL stores resampled pixels: clamped to [0, 255], rounded half up.
inline uint8_t round_to_byte(float v) {
  if (!(v > 0.0f)) return 0;
  if (v >= 255.0f) return 255;
  return static_cast<uint8_t>(std::floor(v + 0.5f));
}

/// ITU-R 601 luma of 8-bit RGB, exactly as PIL's convert("L"): (19595 R + 38470 G + 7471 B + 2^15) >> 16.
inline uint8_t luma601(uint8_t r, uint8_t g, uint8_t b) {
  return static_cast<uint8_t>((19595u * r + 38470u * g + 7471u * b + 0x8000u) >> 16);
}

}  // namespace detail

/// The geometry of "resize the short side to `size` (antialiased), then cut a size x size
/// square" for an h x w image: the resized size and the square's offset.
struct ResizeCrop {
  int64_t out_h = 0, out_w = 0;
  int64_t top = 0, left = 0;
};

/// Short side -> size, the long side scaled in proportion and truncated (torchvision's
/// Resize(size)), never below size. The square is centred (CropMode::Center: offset
/// (long - size) / 2, rounded down) or at an offset drawn uniformly from [0, long - size]
/// by `seed` (CropMode::Random; same seed, same offset).
inline ResizeCrop resize_crop_geometry(int64_t h, int64_t w, int64_t size, CropMode crop, uint64_t seed = 0) {
  TORCH_CHECK(h > 0 && w > 0 && size > 0, "resize_crop_geometry: bad sizes ", h, "x", w, " -> ", size);
  ResizeCrop g;
  if (h <= w) {
    g.out_h = size;
    g.out_w = std::max<int64_t>(size, static_cast<int64_t>(static_cast<double>(size) * w / h));
  } else {
    g.out_w = size;
    g.out_h = std::max<int64_t>(size, static_cast<int64_t>(static_cast<double>(size) * h / w));
  }
  const int64_t slack = std::max(g.out_h, g.out_w) - size;
  int64_t off = slack / 2;
  if (crop == CropMode::Random) {
    // splitmix64 of the seed: uniform enough for an offset, and independent of any library.
    uint64_t z = seed + 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    off = static_cast<int64_t>(z % static_cast<uint64_t>(slack + 1));
  }
  (g.out_h > size ? g.top : g.left) = off;
  return g;
}

/// Antialiased resize of image [C, H, W] (any real dtype) to [C, out_h, out_w] with the
/// triangle filter (PIL's bilinear resize; LibTorch's interpolate(bilinear, antialias =
/// true)), as float32 without rounding. With a window (crop_h, crop_w > 0), only rows
/// [top, top + crop_h) and columns [left, left + crop_w) of the result are computed and
/// returned.
inline torch::Tensor resize_antialiased(const torch::Tensor& image, int64_t out_h, int64_t out_w, int64_t top = 0,
                                        int64_t left = 0, int64_t crop_h = -1, int64_t crop_w = -1) {
  TORCH_CHECK(image.dim() == 3, "resize_antialiased: expected an image [C, H, W], got ", image.sizes());
  TORCH_CHECK(out_h > 0 && out_w > 0, "resize_antialiased: bad output size ", out_h, "x", out_w);
  if (crop_h < 0) crop_h = out_h;
  if (crop_w < 0) crop_w = out_w;
  TORCH_CHECK(top >= 0 && left >= 0 && top + crop_h <= out_h && left + crop_w <= out_w,
              "resize_antialiased: window outside the ", out_h, "x", out_w, " result");
  const auto hwc = image.to(torch::kFloat64).permute({1, 2, 0}).contiguous();
  auto out = torch::empty({image.size(0), crop_h, crop_w}, torch::kFloat32);
  detail::resize_window_hwc(hwc.data_ptr<double>(), image.size(1), image.size(2), image.size(0), out_h, out_w, top,
                            left, crop_h, crop_w, out.data_ptr<float>());
  return out;
}

/// uint8 images [N, C, H, W] in the channels `mode` asks for: Auto leaves them, Rgb
/// replicates one channel to three, Grayscale takes the ITU-R 601 luma of three channels
/// (detail::luma601, PIL's "L"). Throws ddpm::Error for other channel counts.
inline torch::Tensor convert_color(const torch::Tensor& images, ColorMode mode) {
  TORCH_CHECK(images.dim() == 4 && images.scalar_type() == torch::kUInt8,
              "convert_color: expected uint8 images [N, C, H, W], got ", images.sizes(), " ", images.scalar_type());
  const int64_t c = images.size(1);
  if (mode == ColorMode::Auto) return images;
  if (mode == ColorMode::Rgb) {
    if (c == 3) return images;
    if (c == 1) return images.expand({-1, 3, -1, -1}).contiguous();
  } else {
    if (c == 1) return images;
    if (c == 3) {
      const auto x = images.to(torch::kInt64);
      const auto sum = x.select(1, 0) * 19595 + x.select(1, 1) * 38470 + x.select(1, 2) * 7471 + 0x8000;
      return torch::div(sum, 65536, "floor").unsqueeze(1).to(torch::kUInt8);  // >> 16
    }
  }
  throw Error("color_mode \"" + std::string(mode == ColorMode::Rgb ? "rgb" : "grayscale") + "\" needs 1- or 3-channel images, got " +
              std::to_string(c) + " channels");
}

}  // namespace ddpm
