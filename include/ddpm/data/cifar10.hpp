#pragma once
/// Reader for the CIFAR-10 binary format (https://www.cs.toronto.edu/~kriz/cifar.html,
/// archive `cifar-10-binary.tar.gz`).
///
/// Each of `data_batch_1.bin` .. `data_batch_5.bin` (training, 50000 images) and
/// `test_batch.bin` (10000) is a sequence of 3073-byte records: one label byte
/// (0..9) then 3072 pixel bytes, the 1024 red, 1024 green and 1024 blue values of a
/// 32x32 image in row-major order. The reader accepts the extracted folder
/// (`cifar-10-batches-bin/` or the folder above it) or the `.tar.gz` itself.
#include <ddpm/data/dataset.hpp>
#include <ddpm/error.hpp>

#include <torch/types.h>

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

namespace ddpm {

/// Size of one CIFAR-10 record: 1 label byte + 3 x 32 x 32 pixel bytes.
inline constexpr int64_t kCifar10RecordBytes = 3073;

/// The class names, index = label.
inline const std::vector<std::string>& cifar10_classes() {
  static const std::vector<std::string> names = {"airplane", "automobile", "bird", "cat", "deer",
                                                 "dog", "frog", "horse", "ship", "truck"};
  return names;
}

/// Parses CIFAR-10 records already in memory; `path` names the file in errors.
/// Returns images uint8 [N, 3, 32, 32], labels int64 [N]. Throws ddpm::Error
/// naming the file and byte offset for an empty file, a size that is not a
/// multiple of 3073 (truncated / wrong size) or a label byte > 9.
inline ImageData parse_cifar10(const uint8_t* bytes, size_t size, const std::string& path) {
  if (size == 0) throw Error("CIFAR-10 file '" + path + "' is empty (byte offset 0)");
  if (size % kCifar10RecordBytes != 0) {
    const size_t full = size / kCifar10RecordBytes;
    throw Error("CIFAR-10 file '" + path + "' is truncated or has the wrong size: " +
                std::to_string(size) + " bytes is not a multiple of the 3073-byte record; record " +
                std::to_string(full) + " starting at byte offset " +
                std::to_string(full * kCifar10RecordBytes) + " is incomplete");
  }
  const int64_t n = static_cast<int64_t>(size / kCifar10RecordBytes);
  ImageData out;
  out.images = torch::empty({n, 3, 32, 32}, torch::kUInt8);
  out.labels = torch::empty({n}, torch::kInt64);
  uint8_t* img = out.images.data_ptr<uint8_t>();
  int64_t* lab = out.labels.data_ptr<int64_t>();
  for (int64_t i = 0; i < n; ++i) {
    const uint8_t* rec = bytes + i * kCifar10RecordBytes;
    if (rec[0] > 9) {
      throw Error("CIFAR-10 file '" + path + "': label " + std::to_string(int(rec[0])) +
                  " out of range 0..9 at byte offset " + std::to_string(i * kCifar10RecordBytes) +
                  " (record " + std::to_string(i) + "; is this really a CIFAR-10 .bin file?)");
    }
    lab[i] = rec[0];
    std::memcpy(img + i * 3072, rec + 1, 3072);
  }
  out.name = "cifar10";
  return out;
}

/// Reads one CIFAR-10 batch file (plain or gzip).
inline ImageData read_cifar10_file(const std::string& path) {
  const std::vector<uint8_t> bytes = detail::read_file_bytes(path);
  return parse_cifar10(bytes.data(), bytes.size(), path);
}

/// The text printed when CIFAR-10 is not found: where to get it and how to use it.
inline std::string cifar10_download_hint() {
  return "CIFAR-10 is not bundled: download the binary version, cifar-10-binary.tar.gz "
         "(https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz, 162 MB), then either "
         "extract it (tar xzf cifar-10-binary.tar.gz) and pass --data <dir>/cifar-10-batches-bin, "
         "or pass the archive itself: --data <dir>/cifar-10-binary.tar.gz";
}

namespace detail {

/// Files of a (decompressed) POSIX/ustar tar archive: name -> [offset, size).
struct TarEntry {
  std::string name;
  size_t offset;
  size_t size;
};

inline std::vector<TarEntry> list_tar(const std::vector<uint8_t>& tar, const std::string& path) {
  std::vector<TarEntry> out;
  size_t pos = 0;
  while (pos + 512 <= tar.size()) {
    const uint8_t* h = tar.data() + pos;
    bool zero = true;
    for (int i = 0; i < 512 && zero; ++i) zero = h[i] == 0;
    if (zero) break;
    std::string name(reinterpret_cast<const char*>(h), strnlen(reinterpret_cast<const char*>(h), 100));
    const std::string prefix(reinterpret_cast<const char*>(h + 345),
                             strnlen(reinterpret_cast<const char*>(h + 345), 155));
    if (!prefix.empty() && std::memcmp(h + 257, "ustar", 5) == 0) name = prefix + "/" + name;
    size_t size = 0;
    for (int i = 124; i < 136 && h[i] >= '0' && h[i] <= '7'; ++i) size = size * 8 + (h[i] - '0');
    const char type = static_cast<char>(h[156]);
    if (pos + 512 + size > tar.size()) {
      throw Error("tar archive '" + path + "' is truncated: entry '" + name + "' at byte offset " +
                  std::to_string(pos) + " needs " + std::to_string(size) + " bytes");
    }
    if (type == '0' || type == '\0') out.push_back({name, pos + 512, size});
    pos += 512 + (size + 511) / 512 * 512;
  }
  return out;
}

inline bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

inline ImageData concat_image_data(std::vector<ImageData> parts, const std::string& name) {
  std::vector<torch::Tensor> images, labels;
  for (auto& p : parts) {
    images.push_back(p.images);
    labels.push_back(p.labels);
  }
  ImageData out;
  out.images = torch::cat(images, 0);
  out.labels = torch::cat(labels, 0);
  out.name = name;
  return out;
}

}  // namespace detail

/// CIFAR-10's class names, by label (batches.meta.txt).
inline std::vector<std::string> cifar10_class_names() {
  return {"airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"};
}

/// Where CIFAR-10's batch files are, given a user path: the folder itself, its
/// `cifar-10-batches-bin/` subfolder, or a `.tar.gz` / `.tgz` / `.tar` archive
/// (returned as is). Empty string when nothing CIFAR-10-like is there.
inline std::string find_cifar10(const std::string& path) {
  if (detail::ends_with(path, ".tar.gz") || detail::ends_with(path, ".tgz") ||
      detail::ends_with(path, ".tar")) {
    return detail::file_exists(path) ? path : "";
  }
  for (const std::string& dir : {path, path + "/cifar-10-batches-bin"}) {
    if (detail::file_exists(dir + "/data_batch_1.bin") || detail::file_exists(dir + "/test_batch.bin")) return dir;
  }
  if (detail::file_exists(path + "/cifar-10-binary.tar.gz")) return path + "/cifar-10-binary.tar.gz";
  return "";
}

/// Loads CIFAR-10 from `path` (see find_cifar10): the 50000 training images of
/// data_batch_1..5.bin, or the 10000 of test_batch.bin when `train` is false.
/// Images uint8 [N, 3, 32, 32], labels int64 [N]. When nothing is found the error
/// says where to download it and how to point the trainer at it.
inline ImageData load_cifar10(const std::string& path, bool train = true) {
  const std::string where = find_cifar10(path);
  if (where.empty()) throw Error("CIFAR-10 not found at '" + path + "'. " + cifar10_download_hint());
  std::vector<std::string> names;
  if (train) {
    for (int i = 1; i <= 5; ++i) names.push_back("data_batch_" + std::to_string(i) + ".bin");
  } else {
    names.push_back("test_batch.bin");
  }
  std::vector<ImageData> parts;
  const bool archive = detail::ends_with(where, ".tar.gz") || detail::ends_with(where, ".tgz") ||
                       detail::ends_with(where, ".tar");
  if (!archive) {
    for (const auto& n : names) {
      const std::string file = where + "/" + n;
      if (!detail::file_exists(file)) {
        throw Error("CIFAR-10 file '" + file + "' is missing. " + cifar10_download_hint());
      }
      parts.push_back(read_cifar10_file(file));
    }
  } else {
    const std::vector<uint8_t> tar = detail::read_file_bytes(where);
    const auto entries = detail::list_tar(tar, where);
    for (const auto& n : names) {
      const detail::TarEntry* found = nullptr;
      for (const auto& e : entries) {
        if (detail::ends_with(e.name, "/" + n) || e.name == n) found = &e;
      }
      if (!found) throw Error("archive '" + where + "' has no '" + n + "'. " + cifar10_download_hint());
      parts.push_back(parse_cifar10(tar.data() + found->offset, found->size, where + ":" + found->name));
    }
  }
  ImageData out = detail::concat_image_data(std::move(parts), "cifar10");
  out.class_names = cifar10_class_names();
  return out;
}

}  // namespace ddpm
