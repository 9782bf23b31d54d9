#pragma once
/// Image datasets shared by the readers: the `ImageData` container (in memory, as the
/// CIFAR-10 and IDX readers return it, or streamed: decoded on demand from an ImageStream,
/// as the folder reader returns it), the options a reader may take (DatasetOptions), a
/// byte-exact file reader (plain or gzip, via zlib) and a `torch::data` dataset view.
#include <ddpm/detail/json_enum.hpp>
#include <ddpm/error.hpp>

#include <torch/data/datasets/base.h>
#include <torch/data/example.h>
#include <torch/types.h>

#include <zlib.h>

#include <algorithm>
#include <cstdint>
#include <fstream>
#include <limits>
#include <memory>
#include <string>
#include <vector>

namespace ddpm {

/// Images decoded on demand (the folder dataset, data/folder.hpp): what BatchLoader streams
/// from instead of an in-memory tensor, so a dataset larger than memory trains with bounded
/// memory. Every image comes out already fitted to the training size. Implementations are
/// thread-safe (the loader's prefetch workers call read() concurrently).
class ImageStream {
 public:
  virtual ~ImageStream() = default;
  /// Number of images.
  virtual int64_t size() const = 0;
  /// Channels (1 or 3) of every image read() writes.
  virtual int64_t channels() const = 0;
  /// Side of the (square) images read() writes.
  virtual int64_t image_size() const = 0;
  /// Writes image i as uint8 [channels, image_size, image_size] to `out`; `seed` draws any
  /// random crop (the same (i, seed) always gives the same pixels). Returns the index of the
  /// image written: i, or, when image i cannot be decoded and bad images are skipped, the
  /// next readable one (its label is the one to use). Throws ddpm::Error naming the file
  /// when bad images are fatal.
  virtual int64_t read(int64_t i, uint64_t seed, uint8_t* out) = 0;
  /// Warnings since the last call (e.g. files skipped), for the caller to log from its own
  /// thread.
  virtual std::vector<std::string> take_warnings() { return {}; }
};

/// A whole labelled image dataset: held in memory (`images`) or streamed (`stream`).
struct ImageData {
  /// uint8 [N, C, H, W], pixel values 0..255 (undefined for a streamed dataset).
  torch::Tensor images;
  /// int64 [N], class labels in [0, class_names.size()) (undefined for unlabelled data).
  torch::Tensor labels;
  /// "cifar10", "fashion-mnist", "mnist", "folder" or a user-given name.
  std::string name;
  /// Name of each class, indexed by label (empty when unknown).
  std::vector<std::string> class_names;
  /// Set instead of `images` by streaming readers (data/folder.hpp): images decoded on demand.
  std::shared_ptr<ImageStream> stream;

  int64_t size() const { return images.defined() ? images.size(0) : stream ? stream->size() : 0; }
  int64_t channels() const { return images.defined() ? images.size(1) : stream ? stream->channels() : 0; }
  int64_t num_classes() const { return static_cast<int64_t>(class_names.size()); }
};

/// Where a folder dataset's labels come from.
enum class FolderLabels {
  /// Subfolders when the folder holds no images itself and at least two subfolders do; else none.
  Auto,
  /// One class per immediate subfolder, in sorted order (torchvision's ImageFolder convention).
  Subfolders,
  /// Unlabelled.
  None,
};
/// How an image resized to the training size (short side) is cut square.
enum class CropMode { Center, Random };
/// Channels of the training images.
enum class ColorMode {
  /// As stored: CIFAR-10 RGB, MNIST grayscale; a folder is grayscale when every file is.
  Auto,
  /// Three channels (grayscale replicated).
  Rgb,
  /// One channel: ITU-R 601 luma, L = (19595 R + 38470 G + 7471 B + 2^15) >> 16 (PIL's "L").
  Grayscale,
};
/// What a file that cannot be decoded does.
enum class BadImagePolicy {
  /// Stop with a ddpm::Error naming the file and the decoder's reason.
  Fail,
  /// Skip it with one warning naming it.
  Skip,
};

namespace detail {
inline const EnumNames<FolderLabels>& folder_labels_names() {
  static const EnumNames<FolderLabels> n = {
      {FolderLabels::Auto, "auto"}, {FolderLabels::Subfolders, "subfolders"}, {FolderLabels::None, "none"}};
  return n;
}
inline const EnumNames<CropMode>& crop_mode_names() {
  static const EnumNames<CropMode> n = {{CropMode::Center, "center"}, {CropMode::Random, "random"}};
  return n;
}
inline const EnumNames<ColorMode>& color_mode_names() {
  static const EnumNames<ColorMode> n = {
      {ColorMode::Auto, "auto"}, {ColorMode::Rgb, "rgb"}, {ColorMode::Grayscale, "grayscale"}};
  return n;
}
inline const EnumNames<BadImagePolicy>& bad_image_policy_names() {
  static const EnumNames<BadImagePolicy> n = {{BadImagePolicy::Fail, "fail"}, {BadImagePolicy::Skip, "skip"}};
  return n;
}
}  // namespace detail

DDPM_JSON_ENUM(FolderLabels, detail::folder_labels_names, "folder_labels")
DDPM_JSON_ENUM(CropMode, detail::crop_mode_names, "folder_crop")
DDPM_JSON_ENUM(ColorMode, detail::color_mode_names, "color_mode")
DDPM_JSON_ENUM(BadImagePolicy, detail::bad_image_policy_names, "on_bad_image")

/// What a reader may be asked for beyond the path (the training config's data keys). The
/// in-memory readers ignore them (the trainer fits their images itself); the folder
/// reader resizes, crops and converts every image as they say.
struct DatasetOptions {
  /// Training resolution: images come out image_size x image_size.
  int64_t image_size = 32;
  FolderLabels labels = FolderLabels::Auto;
  CropMode crop = CropMode::Center;
  ColorMode color = ColorMode::Auto;
  BadImagePolicy on_bad_image = BadImagePolicy::Fail;
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
/// At most `max_bytes` (decompressed) bytes are read: a caller that knows the size to expect
/// passes it (+1 to notice trailing data), so a small gzip bomb stops there.
inline std::vector<uint8_t> read_file_bytes(const std::string& path,
                                            uint64_t max_bytes = std::numeric_limits<uint64_t>::max()) {
  gzFile f = gzopen(path.c_str(), "rb");
  if (f == nullptr) throw Error("cannot open '" + path + "'");
  std::vector<uint8_t> out;
  std::vector<uint8_t> buf(1 << 20);
  while (out.size() < max_bytes) {
    const uint64_t want = std::min<uint64_t>(buf.size(), max_bytes - out.size());
    const int n = gzread(f, buf.data(), static_cast<unsigned>(want));
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
