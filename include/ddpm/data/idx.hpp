#pragma once
/// Reader for the IDX format of MNIST and Fashion-MNIST
/// (http://yann.lecun.com/exdb/mnist/), plain or gzip-compressed (`*.gz`).
///
/// Layout: bytes 0-1 are zero, byte 2 the element type (0x08 = unsigned byte,
/// the only one used by these datasets), byte 3 the number of dimensions d; then
/// d big-endian u32 sizes; then the row-major data. Images are idx3 [N, H, W],
/// labels idx1 [N].
#include <ddpm/data/dataset.hpp>
#include <ddpm/error.hpp>

#include <torch/types.h>

#include <cstdint>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

namespace ddpm {

/// One IDX file's content.
struct IdxArray {
  /// The sizes from the header, e.g. {60000, 28, 28}.
  std::vector<int64_t> dims;
  /// uint8 tensor shaped `dims`.
  torch::Tensor data;
};

namespace detail {

/// Most data an IDX file may announce (the largest MNIST-family file holds 47 MB).
constexpr uint64_t kMaxIdxDataBytes = uint64_t{1} << 32;

/// What an IDX header announces.
struct IdxLayout {
  size_t header = 0;           ///< header bytes: 4 + 4 * ndim
  std::vector<int64_t> dims;   ///< sizes from the header
  uint64_t count = 0;          ///< data bytes: the product of dims (checked, <= kMaxIdxDataBytes)
};

/// Reads and checks the header at the start of `bytes` (which may hold only the header).
inline IdxLayout idx_layout(const std::vector<uint8_t>& bytes, const std::string& path) {
  auto fail = [&](const std::string& what, size_t offset) -> void {
    throw Error("IDX file '" + path + "': " + what + " at byte offset " + std::to_string(offset));
  };
  if (bytes.size() < 4) fail("truncated header (" + std::to_string(bytes.size()) + " bytes)", bytes.size());
  if (bytes[0] != 0 || bytes[1] != 0) {
    fail("wrong magic number (expected 00 00 08 0d, the first two bytes must be zero)", 0);
  }
  if (bytes[2] != 0x08) {
    fail("unsupported element type " + std::to_string(int(bytes[2])) + " (only 8 = uint8 is supported)", 2);
  }
  const size_t ndim = bytes[3];
  if (ndim == 0 || ndim > 4) fail("bad number of dimensions " + std::to_string(ndim), 3);
  IdxLayout out;
  out.header = 4 + 4 * ndim;
  if (bytes.size() < out.header) {
    fail("truncated header (file has " + std::to_string(bytes.size()) + " bytes)", bytes.size());
  }
  out.count = 1;
  for (size_t d = 0; d < ndim; ++d) {
    const uint32_t s = read_be32(bytes, 4 + 4 * d);
    if (s == 0 || s > (1u << 28)) fail("implausible dimension size " + std::to_string(s), 4 + 4 * d);
    out.dims.push_back(static_cast<int64_t>(s));
    if (out.count > kMaxIdxDataBytes / s) {  // checked before multiplying: no overflow
      fail("the header announces more than " + std::to_string(kMaxIdxDataBytes >> 30) + " GiB of data", 4 + 4 * d);
    }
    out.count *= s;
  }
  return out;
}

}  // namespace detail

/// Parses IDX bytes already in memory; `path` only names the file in errors.
/// Throws ddpm::Error naming the file and the byte offset on a wrong magic,
/// an unsupported element type, a truncated header or data, a size beyond
/// detail::kMaxIdxDataBytes, or trailing bytes.
inline IdxArray parse_idx(const std::vector<uint8_t>& bytes, const std::string& path) {
  const detail::IdxLayout layout = detail::idx_layout(bytes, path);
  auto fail = [&](const std::string& what, size_t offset) -> void {
    throw Error("IDX file '" + path + "': " + what + " at byte offset " + std::to_string(offset));
  };
  const uint64_t expected = layout.header + layout.count;
  if (bytes.size() < expected) {
    fail("truncated: the header promises " + std::to_string(layout.count) + " data bytes (file size " +
             std::to_string(expected) + ") but the data ends early",
         bytes.size());
  }
  if (bytes.size() > expected) {
    fail("wrong size: " + std::to_string(bytes.size() - expected) + " unexpected trailing bytes after the data",
         static_cast<size_t>(expected));
  }
  IdxArray out;
  out.dims = layout.dims;
  out.data = torch::empty(out.dims, torch::kUInt8);
  std::memcpy(out.data.data_ptr<uint8_t>(), bytes.data() + layout.header, static_cast<size_t>(layout.count));
  return out;
}

/// Reads an IDX file (plain or .gz). See parse_idx for the errors. The header is read first and
/// then at most the size it announces (+1 byte, to notice trailing data): a small gzip file
/// that inflates to gigabytes is stopped there.
inline IdxArray read_idx(const std::string& path) {
  const detail::IdxLayout layout = detail::idx_layout(detail::read_file_bytes(path, 4 + 4 * 4), path);
  return parse_idx(detail::read_file_bytes(path, layout.header + layout.count + 1), path);
}

/// Loads an images file (idx3, [N, H, W]) and its labels file (idx1, [N]) into
/// ImageData with images uint8 [N, 1, H, W] and labels int64 [N].
inline ImageData load_idx_dataset(const std::string& images_path, const std::string& labels_path,
                                  const std::string& name = "mnist") {
  IdxArray images = read_idx(images_path);
  if (images.dims.size() != 3) {
    throw Error("IDX file '" + images_path + "': expected 3 dimensions [N, H, W] for images, got " +
                std::to_string(images.dims.size()) + " (byte offset 3)");
  }
  IdxArray labels = read_idx(labels_path);
  if (labels.dims.size() != 1) {
    throw Error("IDX file '" + labels_path + "': expected 1 dimension [N] for labels, got " +
                std::to_string(labels.dims.size()) + " (byte offset 3)");
  }
  if (labels.dims[0] != images.dims[0]) {
    throw Error("IDX files '" + images_path + "' and '" + labels_path + "' disagree: " +
                std::to_string(images.dims[0]) + " images but " + std::to_string(labels.dims[0]) +
                " labels (byte offset 4)");
  }
  ImageData out;
  out.images = images.data.unsqueeze(1);
  out.labels = labels.data.to(torch::kInt64);
  out.name = name;
  return out;
}

namespace detail {
/// `dir/base` or `dir/base.gz`, whichever exists; "" when neither.
inline std::string find_plain_or_gz(const std::string& dir, const std::string& base) {
  const std::string p = dir + "/" + base;
  if (file_exists(p)) return p;
  if (file_exists(p + ".gz")) return p + ".gz";
  return "";
}
}  // namespace detail

/// True when `dir` holds MNIST-layout files (`train-images-idx3-ubyte[.gz]`).
inline bool has_idx_dataset(const std::string& dir) {
  return !detail::find_plain_or_gz(dir, "train-images-idx3-ubyte").empty();
}

/// Fashion-MNIST's class names, by label (Xiao et al. 2017).
inline std::vector<std::string> fashion_mnist_class_names() {
  return {"T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"};
}

/// MNIST's class names: the digits "0" .. "9".
inline std::vector<std::string> mnist_class_names() {
  return {"0", "1", "2", "3", "4", "5", "6", "7", "8", "9"};
}

/// Loads MNIST or Fashion-MNIST (same file names) from `dir`: the training split
/// (`train-images-idx3-ubyte[.gz]`, `train-labels-idx1-ubyte[.gz]`, 60000 images)
/// or the test split (`t10k-*`, 10000 images). Images uint8 [N, 1, 28, 28].
inline ImageData load_mnist_dir(const std::string& dir, bool train = true,
                                const std::string& name = "fashion-mnist") {
  const std::string prefix = train ? "train" : "t10k";
  const std::string images = detail::find_plain_or_gz(dir, prefix + "-images-idx3-ubyte");
  const std::string labels = detail::find_plain_or_gz(dir, prefix + "-labels-idx1-ubyte");
  if (images.empty() || labels.empty()) {
    throw Error("no MNIST/Fashion-MNIST files in '" + dir + "': expected " + prefix +
                "-images-idx3-ubyte[.gz] and " + prefix +
                "-labels-idx1-ubyte[.gz] (Debian: apt install dataset-fashion-mnist, which puts "
                "them in /usr/share/datasets/fashion-mnist)");
  }
  ImageData out = load_idx_dataset(images, labels, name);
  if (name == "fashion-mnist") out.class_names = fashion_mnist_class_names();
  if (name == "mnist") out.class_names = mnist_class_names();
  return out;
}

}  // namespace ddpm
