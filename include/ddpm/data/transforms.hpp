#pragma once
/// Image transforms for training: pad to a square size with the background
/// value, random horizontal flip driven by an explicit generator, and the
/// mapping between pixel bytes [0, 255] and the model's range [-1, 1].
#include <ddpm/error.hpp>

#include <torch/types.h>

#include <algorithm>
#include <cstdint>
#include <string>

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

}  // namespace ddpm
