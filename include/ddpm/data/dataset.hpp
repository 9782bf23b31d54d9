#pragma once
/// In-memory image datasets shared by the CIFAR-10 and IDX (MNIST / Fashion-MNIST)
/// readers: the `ImageData` container, a byte-exact file reader (plain or gzip,
/// via zlib) and a `torch::data` dataset view.
#include <ddpm/error.hpp>

#include <torch/data/datasets/base.h>
#include <torch/data/example.h>
#include <torch/types.h>

#include <zlib.h>

#include <cstdint>
#include <fstream>
#include <string>
#include <vector>

namespace ddpm {

/// A whole labelled image dataset held in memory.
struct ImageData {
  /// uint8 [N, C, H, W], pixel values 0..255.
  torch::Tensor images;
  /// int64 [N], class labels in [0, class_names.size()) (undefined for unlabelled data).
  torch::Tensor labels;
  /// "cifar10", "fashion-mnist", "mnist" or a user-given name.
  std::string name;
  /// Name of each class, indexed by label (empty when unknown).
  std::vector<std::string> class_names;

  int64_t size() const { return images.defined() ? images.size(0) : 0; }
  int64_t channels() const { return images.size(1); }
  int64_t num_classes() const { return static_cast<int64_t>(class_names.size()); }
};

/// `torch::data` view of an ImageData: example i is (uint8 [C, H, W], int64 label).
/// Usable with torch::data::make_data_loader for users who want the stock
/// loaders; the trainer uses the faster `BatchLoader` (data/loader.hpp).
class ImageDataset : public torch::data::datasets::Dataset<ImageDataset> {
 public:
  explicit ImageDataset(ImageData data) : data_(std::move(data)) {}
  torch::data::Example<> get(size_t index) override {
    return {data_.images[static_cast<int64_t>(index)], data_.labels[static_cast<int64_t>(index)]};
  }
  c10::optional<size_t> size() const override { return static_cast<size_t>(data_.size()); }
  const ImageData& data() const { return data_; }

 private:
  ImageData data_;
};

namespace detail {

/// True when `path` can be opened for reading.
inline bool file_exists(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return static_cast<bool>(f);
}

/// Reads the whole file at `path` into memory. Files starting with the gzip
/// magic (1f 8b) are decompressed (zlib reads other files unchanged). Throws
/// ddpm::Error naming the file when it is missing, unreadable or a corrupt /
/// truncated gzip stream (with the decompressed offset reached).
inline std::vector<uint8_t> read_file_bytes(const std::string& path) {
  gzFile f = gzopen(path.c_str(), "rb");
  if (f == nullptr) throw Error("cannot open '" + path + "'");
  std::vector<uint8_t> out;
  std::vector<uint8_t> buf(1 << 20);
  for (;;) {
    const int n = gzread(f, buf.data(), static_cast<unsigned>(buf.size()));
    if (n < 0) {
      int errnum = 0;
      const char* msg = gzerror(f, &errnum);
      std::string what = msg ? msg : "read error";
      gzclose(f);
      throw Error("'" + path + "' is corrupt or truncated (" + what + ") at byte offset " +
                  std::to_string(out.size()) + " of its decompressed data");
    }
    if (n == 0) break;
    out.insert(out.end(), buf.begin(), buf.begin() + n);
  }
  // gzread stops quietly at a truncated gzip stream; gzerror tells.
  int errnum = 0;
  const char* msg = gzerror(f, &errnum);
  if (errnum != Z_OK && errnum != Z_STREAM_END) {
    std::string what = msg ? msg : "read error";
    gzclose(f);
    throw Error("'" + path + "' is corrupt or truncated (" + what + ") at byte offset " +
                std::to_string(out.size()) + " of its decompressed data");
  }
  gzclose(f);
  return out;
}

/// Big-endian u32 at `offset` of `bytes` (caller checks bounds).
inline uint32_t read_be32(const std::vector<uint8_t>& bytes, size_t offset) {
  return (uint32_t(bytes[offset]) << 24) | (uint32_t(bytes[offset + 1]) << 16) |
         (uint32_t(bytes[offset + 2]) << 8) | uint32_t(bytes[offset + 3]);
}

}  // namespace detail
}  // namespace ddpm
