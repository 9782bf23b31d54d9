#pragma once
/// Reading image samples to score (optional header: needs Debian's libstb-dev for stb_image,
/// compiled in with static linkage by <ddpm/detail/stb_image.hpp>; not part of ddpm.hpp):
///  - a folder of PNGs (sorted by file name; all of one size and channel count),
///  - a PNG grid written by save_image_grid (tiles of a given size separated by `padding` pixels),
///  - a safetensors tensor [N, C, H, W] in [-1, 1] (e.g. sample --output-tensor).
/// All return float32 [N, C, H, W] in [-1, 1]; PNG alpha channels are dropped.
#include <ddpm/error.hpp>
#include <ddpm/io/safetensors.hpp>

#include <torch/types.h>

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include <ddpm/detail/stb_image.hpp>
#if !DDPM_HAS_STB_IMAGE
#error "<ddpm/eval/sample_io.hpp> needs stb's <stb/stb_image.h>: install libstb-dev (Debian/Ubuntu), or set CMake's DDPM_STB_INCLUDE_DIR to the directory that holds stb/"
#endif

namespace ddpm {

/// One PNG as uint8 [C, H, W] (C = 1 gray or 3 RGB; alpha dropped). Throws ddpm::Error naming
/// the file when it cannot be read or decoded.
inline torch::Tensor read_png(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw Error("cannot open PNG '" + path + "'");
  const std::string bytes((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  const auto* p = reinterpret_cast<const uint8_t*>(bytes.data());
  detail::StbPixels px = detail::stb_decode(p, bytes.size(), 0);
  if (!px.error.empty()) throw Error("cannot read PNG '" + path + "': " + px.error);
  const int c = px.channels;
  torch::Tensor hwc = torch::from_blob(px.data.data(), {px.h, px.w, c}, torch::kUInt8).clone();
  if (c == 2) hwc = hwc.slice(2, 0, 1);
  if (c == 4) hwc = hwc.slice(2, 0, 3);
  return hwc.permute({2, 0, 1}).contiguous();
}

namespace detail {
inline torch::Tensor pixels_to_model_range(const torch::Tensor& u8) { return u8.to(torch::kFloat32).div(127.5).sub(1.0); }
}  // namespace detail

/// All *.png files of `dir` (sorted by name) as float32 [N, C, H, W] in [-1, 1].
inline torch::Tensor read_png_folder(const std::string& dir) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) throw Error("'" + dir + "' is not a directory");
  std::vector<std::string> files;
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    std::string ext = e.path().extension().string();
    std::transform(ext.begin(), ext.end(), ext.begin(), ::tolower);
    if (e.is_regular_file() && ext == ".png") files.push_back(e.path().string());
  }
  if (files.empty()) throw Error("no .png files in '" + dir + "'");
  std::sort(files.begin(), files.end());
  std::vector<torch::Tensor> images;
  images.reserve(files.size());
  for (const auto& f : files) {
    torch::Tensor im = read_png(f);
    if (!images.empty() && im.sizes() != images.front().sizes()) {
      throw Error("PNG '" + f + "' is " + c10::str(im.sizes()) + " [C, H, W] but '" + files.front() + "' is " +
                  c10::str(images.front().sizes()) + ": all images must have one size and channel count");
    }
    images.push_back(im);
  }
  return detail::pixels_to_model_range(torch::stack(images));
}

/// Tiles of a PNG grid written by save_image_grid: `tile` x `tile` images separated (and
/// surrounded) by `padding` pixels. Trailing tiles that are entirely the padding colour (the
/// unused cells of the last row) are dropped; `count` > 0 keeps exactly the first `count`.
inline torch::Tensor read_png_grid(const std::string& path, int64_t tile, int64_t padding = 2, int64_t count = 0) {
  TORCH_CHECK(tile > 0 && padding >= 0, "read_png_grid: tile must be > 0 and padding >= 0");
  const torch::Tensor g = read_png(path);
  const int64_t h = g.size(1), w = g.size(2), step = tile + padding;
  if ((h - padding) % step != 0 || (w - padding) % step != 0 || h < step + padding || w < step + padding) {
    throw Error("PNG grid '" + path + "' is " + std::to_string(w) + "x" + std::to_string(h) + ", not a grid of " +
                std::to_string(tile) + "x" + std::to_string(tile) + " tiles with " + std::to_string(padding) +
                "-pixel padding (width and height must be k*" + std::to_string(step) + "+" + std::to_string(padding) +
                "); pass the right --image-size / --grid-padding");
  }
  const int64_t rows = (h - padding) / step, cols = (w - padding) / step;
  const int64_t pad_value = g[0][0][0].item<int64_t>();
  std::vector<torch::Tensor> tiles;
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < cols; ++c) {
      tiles.push_back(g.slice(1, padding + r * step, padding + r * step + tile)
                          .slice(2, padding + c * step, padding + c * step + tile));
    }
  }
  if (count > 0) {
    if (count > static_cast<int64_t>(tiles.size())) {
      throw Error("PNG grid '" + path + "' has " + std::to_string(tiles.size()) + " tiles, fewer than the " +
                  std::to_string(count) + " requested");
    }
    tiles.resize(static_cast<size_t>(count));
  } else {
    while (tiles.size() > 1 && tiles.back().eq(pad_value).all().item<bool>()) tiles.pop_back();
  }
  return detail::pixels_to_model_range(torch::stack(tiles));
}

/// A [N, C, H, W] float tensor in [-1, 1] from a safetensors file: the tensor `key`, or the
/// file's only tensor when `key` is empty. Values outside [-1, 1] by more than 1e-3 are an error
/// (samples in [0, 1] or [0, 255] would otherwise be scored wrongly); they are clamped.
inline torch::Tensor read_samples_tensor(const std::string& path, const std::string& key = "") {
  auto tensors = load_safetensors(path);
  torch::Tensor t;
  if (key.empty()) {
    if (tensors.size() != 1) {
      std::string names;
      for (const auto& [n, v] : tensors) names += (names.empty() ? "" : ", ") + n;
      throw Error("safetensors file '" + path + "' holds " + std::to_string(tensors.size()) +
                  " tensors (" + names + "); name the samples with --tensor");
    }
    t = tensors.begin()->second;
  } else {
    auto it = tensors.find(key);
    if (it == tensors.end()) throw Error("safetensors file '" + path + "': no tensor '" + key + "'");
    t = it->second;
  }
  if (t.dim() != 4 || !t.is_floating_point()) {
    throw Error("safetensors file '" + path + "': samples must be a float tensor [N, C, H, W] in [-1, 1], got " +
                std::string(c10::toString(t.scalar_type())) + " " + c10::str(t.sizes()));
  }
  t = t.to(torch::kFloat32);
  const double lo = t.min().item<double>(), hi = t.max().item<double>();
  if (lo < -1.001 || hi > 1.001) {
    throw Error("safetensors file '" + path + "': samples range over [" + std::to_string(lo) + ", " +
                std::to_string(hi) + "], expected [-1, 1]");
  }
  return t.clamp(-1.0, 1.0);
}

}  // namespace ddpm
