#pragma once
/// The folder dataset: every PNG, JPEG and BMP file under a folder (recursively; extensions
/// in any case; hidden files and folders, whose names start with '.', are left out), in
/// sorted path order so that runs are deterministic. Classes are the immediate subfolders in
/// sorted order (torchvision's ImageFolder convention) or none (FolderLabels).
///
/// Nothing is decoded up front: load_image_folder() lists the files and reads each one's
/// header (size, channels), and returns an ImageData whose `stream` (FolderImages) decodes
/// image i when the loader asks for it (data/loader.hpp runs that on its prefetch worker
/// threads). Each image is decoded with stb_image (Debian's libstb-dev), converted to RGB or
/// grayscale (ITU-R 601 luma, PIL's "L"), resized with antialiasing so that its short side
/// equals the training size (the triangle filter of PIL's bilinear resize) and cut square at
/// the centre or at a seeded random offset (DatasetOptions::crop). Memory does not grow with
/// the number of files: only the file list, one label per file and the loader's few batches
/// in flight are held.
///
/// A file that cannot be decoded (corrupt, truncated, unreadable, not an image) is reported
/// by its path with stb's reason: a ddpm::Error (BadImagePolicy::Fail) or one warning and the
/// file left out (BadImagePolicy::Skip). Files whose header is bad are found while listing;
/// a file that breaks later in decoding (e.g. truncated pixel data) is found when it is first
/// read, and with Skip its place is taken by the next readable file in list order, so the
/// batches stay a pure function of the step.
///
/// stb_image is compiled in with static linkage by <ddpm/detail/stb_image.hpp> (like
/// stb_image_write in <ddpm/io/png.hpp>); without stb the header still compiles, the folder
/// dataset is still registered and detected, and loading it says what to install.
#include <ddpm/data/dataset.hpp>
#include <ddpm/data/transforms.hpp>
#include <ddpm/detail/stb_image.hpp>
#include <ddpm/error.hpp>

#include <torch/types.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <deque>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <memory>
#include <mutex>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

namespace ddpm {

/// Where to get what the folder dataset needs, and what it reads (for "not found" errors).
inline std::string image_folder_hint() {
  return "a folder of PNG, JPEG or BMP images (searched recursively); class subfolders give labels";
}

namespace detail {

/// True for a .png, .jpg, .jpeg or .bmp file name (any case).
inline bool is_image_file_name(const std::filesystem::path& p) {
  std::string ext = p.extension().string();
  for (auto& ch : ext) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
  return ext == ".png" || ext == ".jpg" || ext == ".jpeg" || ext == ".bmp";
}

/// `path` without trailing '/' (so that paths built on it and relative to it are clean).
inline std::string strip_trailing_slashes(std::string path) {
  while (path.size() > 1 && path.back() == '/') path.pop_back();
  return path;
}

inline bool is_hidden_name(const std::filesystem::path& p) {
  const std::string n = p.filename().string();
  return !n.empty() && n[0] == '.';
}

/// Files under `dir` (recursively, hidden entries left out): the image files as paths
/// relative to `dir`, sorted element by element (so a folder's files stay together), and
/// how many other files there are (with one example). Stops at the first image when
/// `first_only`. Throws ddpm::Error when the folder cannot be read.
struct FolderFiles {
  std::vector<std::filesystem::path> images;
  int64_t other_files = 0;
  std::string other_example;
};

inline FolderFiles scan_folder_files(const std::string& folder, bool first_only = false) {
  namespace fs = std::filesystem;
  const fs::path dir = strip_trailing_slashes(folder);
  FolderFiles out;
  std::error_code ec;
  fs::recursive_directory_iterator it(dir, fs::directory_options::skip_permission_denied, ec), end;
  if (ec) throw Error("cannot list folder '" + dir.string() + "': " + ec.message());
  for (; it != end; it.increment(ec)) {
    if (ec) throw Error("cannot list folder '" + dir.string() + "': " + ec.message());
    const fs::path& p = it->path();
    if (is_hidden_name(p)) {
      if (it->is_directory(ec)) it.disable_recursion_pending();
      continue;
    }
    if (!it->is_regular_file(ec)) continue;
    if (is_image_file_name(p)) {
      out.images.push_back(p.lexically_relative(dir));
      if (first_only) return out;
    } else {
      if (out.other_files++ == 0) out.other_example = p.string();
    }
  }
  if (ec) throw Error("cannot list folder '" + dir.string() + "': " + ec.message());
  std::sort(out.images.begin(), out.images.end());
  return out;
}

}  // namespace detail

/// True when `path` is a folder holding at least one PNG, JPEG or BMP file (recursively):
/// the folder dataset's detection.
inline bool folder_has_images(const std::string& path) {
  std::error_code ec;
  if (!std::filesystem::is_directory(path, ec)) return false;
  try {
    return !detail::scan_folder_files(path, true).images.empty();
  } catch (const Error&) {
    return false;
  }
}

/// The files of a folder dataset: absolute-ish paths (root / relative) in sorted order, a
/// label per file (empty when unlabelled) and the class names.
struct FolderListing {
  std::vector<std::string> files;
  std::vector<int64_t> labels;
  std::vector<std::string> class_names;
};

/// Lists the images under `root` with their labels (see FolderLabels). Throws ddpm::Error
/// for a missing folder, a folder without images, images outside the class subfolders
/// (FolderLabels::Subfolders) and a class subfolder without images.
inline FolderListing list_image_folder(const std::string& folder, FolderLabels mode) {
  namespace fs = std::filesystem;
  const std::string root = detail::strip_trailing_slashes(folder);
  std::error_code ec;
  if (!fs::exists(root, ec)) throw Error("image folder '" + root + "' does not exist");
  if (!fs::is_directory(root, ec)) throw Error("image folder '" + root + "' is not a directory");
  const detail::FolderFiles found = detail::scan_folder_files(root);
  if (found.images.empty()) {
    if (found.other_files == 0 && fs::is_empty(root, ec)) throw Error("image folder '" + root + "' is empty");
    throw Error("image folder '" + root + "' holds no PNG, JPEG or BMP images (.png, .jpg, .jpeg, .bmp, searched "
                "recursively)" +
                (found.other_files > 0 ? "; it has " + std::to_string(found.other_files) + " other file(s), e.g. '" +
                                             found.other_example + "'"
                                       : std::string()));
  }
  // Immediate subfolders (the candidate classes) and the images directly in root.
  std::vector<std::string> subdirs;
  for (fs::directory_iterator it(root, ec), end; !ec && it != end; it.increment(ec)) {
    if (it->is_directory(ec) && !detail::is_hidden_name(it->path())) subdirs.push_back(it->path().filename().string());
  }
  std::sort(subdirs.begin(), subdirs.end());
  std::vector<int64_t> per_dir(subdirs.size(), 0);
  int64_t top_level = 0;
  std::string top_example;
  for (const auto& rel : found.images) {
    const std::string first = rel.begin()->string();
    if (std::next(rel.begin()) == rel.end()) {
      if (top_level++ == 0) top_example = (fs::path(root) / rel).string();
      continue;
    }
    const auto at = std::lower_bound(subdirs.begin(), subdirs.end(), first);
    if (at != subdirs.end() && *at == first) ++per_dir[static_cast<size_t>(at - subdirs.begin())];
  }
  const int64_t dirs_with_images = std::count_if(per_dir.begin(), per_dir.end(), [](int64_t n) { return n > 0; });
  bool labelled = mode == FolderLabels::Subfolders;
  if (mode == FolderLabels::Auto) labelled = top_level == 0 && dirs_with_images >= 2;

  FolderListing out;
  out.files.reserve(found.images.size());
  for (const auto& rel : found.images) out.files.push_back((fs::path(root) / rel).string());
  if (!labelled) return out;
  if (top_level > 0) {
    throw Error("folder_labels = \"subfolders\": image folder '" + root + "' holds " + std::to_string(top_level) +
                " image(s) outside the class subfolders, e.g. '" + top_example +
                "'; move them into a class subfolder or use folder_labels \"none\"");
  }
  for (size_t k = 0; k < subdirs.size(); ++k) {
    if (per_dir[k] == 0) {
      throw Error("class folder '" + (fs::path(root) / subdirs[k]).string() +
                  "' holds no PNG, JPEG or BMP images; every immediate subfolder of '" + root +
                  "' is a class (folder_labels \"subfolders\"): add images, remove it, or use folder_labels \"none\"");
    }
  }
  out.class_names = subdirs;
  out.labels.reserve(found.images.size());
  for (const auto& rel : found.images) {
    const auto at = std::lower_bound(subdirs.begin(), subdirs.end(), rel.begin()->string());
    out.labels.push_back(static_cast<int64_t>(at - subdirs.begin()));
  }
  return out;
}

namespace detail {

/// An image decoded to 8-bit RGB (interleaved, h x w x 3), or the reason it could not be.
struct DecodedImage {
  std::vector<uint8_t> rgb;
  int64_t h = 0, w = 0;
  std::string error;  // empty on success
};

/// Decodes the PNG, JPEG or BMP in `bytes[0, size)` to 8-bit RGB (the reason in `error` when it
/// cannot: not an image, corrupt, or what image_bytes_error refuses).
inline DecodedImage decode_image_bytes(const uint8_t* bytes, size_t size) {
  DecodedImage d;
#if DDPM_HAS_STB_IMAGE
  StbPixels px = stb_decode(bytes, size, 3);
  d.error = std::move(px.error);
  if (!d.error.empty()) return d;
  d.h = px.h;
  d.w = px.w;
  d.rgb = std::move(px.data);
#else
  (void)bytes;
  (void)size;
  d.error = "this build has no stb_image.h: install libstb-dev (Debian/Ubuntu) or set DDPM_STB_INCLUDE_DIR";
#endif
  return d;
}

/// The bytes of the file at `path` (at most 2 GiB), or the reason in `error`.
inline std::vector<unsigned char> read_image_file(const std::string& path, std::string& error) {
  std::vector<unsigned char> bytes;
  std::ifstream f(path, std::ios::binary | std::ios::ate);
  if (!f) {
    error = std::string("cannot open it: ") + std::strerror(errno);
    return bytes;
  }
  const std::streamoff size = f.tellg();
  if (size < 0) {
    error = "cannot read its size";
  } else if (static_cast<uint64_t>(size) > static_cast<uint64_t>(INT32_MAX)) {
    error = "the file is larger than 2 GiB";
  } else {
    bytes.resize(static_cast<size_t>(size));
    f.seekg(0);
    if (size > 0 && !f.read(reinterpret_cast<char*>(bytes.data()), size)) {
      error = std::string("read error: ") + std::strerror(errno);
    }
  }
  return bytes;
}

/// Reads and decodes the file at `path` (PNG, JPEG or BMP) to 8-bit RGB (decode_image_bytes).
inline DecodedImage decode_image_file(const std::string& path) {
  DecodedImage d;
  const std::vector<unsigned char> bytes = read_image_file(path, d.error);
  return d.error.empty() ? decode_image_bytes(bytes.data(), bytes.size()) : d;
}

/// Reads only the header of the image at `path`: its channel count in `comp` (1 gray, 2 gray
/// + alpha, 3 RGB, 4 RGBA). Returns the reason when it is not a readable PNG/JPEG/BMP ("" when it is).
inline std::string probe_image_file(const std::string& path, int* comp) {
#if DDPM_HAS_STB_IMAGE
  std::string error;
  const std::vector<unsigned char> bytes = read_image_file(path, error);
  int w = 0, h = 0;
  return error.empty() ? image_bytes_error(bytes.data(), bytes.size(), &w, &h, comp, /*header_only=*/true) : error;
#else
  (void)path;
  (void)comp;
  return "this build has no stb_image.h: install libstb-dev (Debian/Ubuntu) or set DDPM_STB_INCLUDE_DIR";
#endif
}

}  // namespace detail

/// The ImageStream of a folder dataset: decodes, converts, resizes and crops image i on
/// demand (see the header comment). Thread-safe.
class FolderImages : public ImageStream {
 public:
  /// `files`: the readable images (list_image_folder, after the header check); `channels`: 1 or 3.
  FolderImages(std::vector<std::string> files, int64_t channels, DatasetOptions options)
      : files_(std::move(files)), channels_(channels), opts_(options), bad_(files_.size(), 0) {
    TORCH_CHECK(channels_ == 1 || channels_ == 3, "FolderImages: channels must be 1 or 3, got ", channels_);
    TORCH_CHECK(opts_.image_size > 0, "FolderImages: image_size must be positive");
  }

  int64_t size() const override { return static_cast<int64_t>(files_.size()); }
  int64_t channels() const override { return channels_; }
  int64_t image_size() const override { return opts_.image_size; }
  const std::vector<std::string>& files() const { return files_; }

  int64_t read(int64_t i, uint64_t seed, uint8_t* out) override {
    const int64_t n = size();
    TORCH_CHECK(i >= 0 && i < n, "FolderImages::read: index ", i, " out of range [0, ", n, ")");
    for (int64_t k = 0; k < n; ++k) {
      const int64_t j = (i + k) % n;
      {
        std::lock_guard<std::mutex> lock(mutex_);
        if (bad_[static_cast<size_t>(j)]) continue;
      }
      const std::string why = decode_into(j, seed, out);
      if (why.empty()) return j;
      const std::string& path = files_[static_cast<size_t>(j)];
      if (opts_.on_bad_image == BadImagePolicy::Fail) {
        throw Error("cannot decode image '" + path + "': " + why + " (on_bad_image \"skip\" leaves such files out)");
      }
      std::lock_guard<std::mutex> lock(mutex_);
      if (!bad_[static_cast<size_t>(j)]) {
        bad_[static_cast<size_t>(j)] = 1;
        warnings_.push_back("skipping image '" + path + "': " + why);
      }
    }
    throw Error("none of the " + std::to_string(n) + " images of the folder can be decoded");
  }

  std::vector<std::string> take_warnings() override {
    std::lock_guard<std::mutex> lock(mutex_);
    std::vector<std::string> out(warnings_.begin(), warnings_.end());
    warnings_.clear();
    return out;
  }

  /// Adds a warning (used by load_image_folder for files left out while listing).
  void warn(std::string w) {
    std::lock_guard<std::mutex> lock(mutex_);
    warnings_.push_back(std::move(w));
  }

  /// Image i as uint8 [C, S, S] (what read() writes), and the index actually read.
  std::pair<torch::Tensor, int64_t> get(int64_t i, uint64_t seed = 0) {
    auto t = torch::empty({channels_, opts_.image_size, opts_.image_size}, torch::kUInt8);
    const int64_t j = read(i, seed, t.data_ptr<uint8_t>());
    return {t, j};
  }

 private:
  // Decodes file j into out; returns "" or why it failed.
  std::string decode_into(int64_t j, uint64_t seed, uint8_t* out) const {
    const detail::DecodedImage d = detail::decode_image_file(files_[static_cast<size_t>(j)]);
    if (!d.error.empty()) return d.error;
    const int64_t c = channels_, s = opts_.image_size, h = d.h, w = d.w;
    const uint8_t* src = d.rgb.data();
    std::vector<uint8_t> gray;
    if (c == 1) {
      gray.resize(static_cast<size_t>(h * w));
      for (int64_t p = 0; p < h * w; ++p) gray[static_cast<size_t>(p)] = detail::luma601(src[3 * p], src[3 * p + 1], src[3 * p + 2]);
      src = gray.data();
    }
    const ResizeCrop g = resize_crop_geometry(h, w, s, opts_.crop, seed);
    if (g.out_h == h && g.out_w == w) {  // already short side = s: only the crop
      for (int64_t ch = 0; ch < c; ++ch)
        for (int64_t y = 0; y < s; ++y)
          for (int64_t x = 0; x < s; ++x) out[(ch * s + y) * s + x] = src[((g.top + y) * w + g.left + x) * c + ch];
      return "";
    }
    std::vector<float> f(static_cast<size_t>(c * s * s));
    detail::resize_window_hwc(src, h, w, c, g.out_h, g.out_w, g.top, g.left, s, s, f.data());
    for (size_t k = 0; k < f.size(); ++k) out[k] = detail::round_to_byte(f[k]);
    return "";
  }

  std::vector<std::string> files_;
  int64_t channels_;
  DatasetOptions opts_;
  std::mutex mutex_;
  std::vector<uint8_t> bad_;
  std::deque<std::string> warnings_;
};

/// Opens the folder dataset at `path` (see the header comment): lists the images, reads
/// their headers (a bad one is a ddpm::Error naming the file, or a warning and the file left
/// out, as options.on_bad_image says), settles the channels (ColorMode::Auto: 1 when every
/// file is grayscale, else 3) and returns an ImageData whose `stream` decodes on demand, with
/// `labels` and `class_names` when labelled. A folder has one split: `train` is ignored.
inline ImageData load_image_folder(const std::string& path, bool train = true, const DatasetOptions& options = {}) {
  (void)train;
#if !DDPM_HAS_STB_IMAGE
  throw Error("the folder dataset ('" + path + "') decodes images with stb_image.h, which this build lacks: install "
              "libstb-dev (Debian/Ubuntu) or set CMake's DDPM_STB_INCLUDE_DIR to the directory that holds stb/");
#endif
  FolderListing listing = list_image_folder(path, options.labels);
  std::vector<std::string> files, warnings;
  std::vector<int64_t> labels;
  bool all_gray = true;
  std::string first_bad;
  for (size_t k = 0; k < listing.files.size(); ++k) {
    int comp = 0;
    const std::string why = detail::probe_image_file(listing.files[k], &comp);
    if (!why.empty()) {
      if (options.on_bad_image == BadImagePolicy::Fail) {
        throw Error("cannot decode image '" + listing.files[k] + "': " + why +
                    " (on_bad_image \"skip\" leaves such files out)");
      }
      warnings.push_back("skipping image '" + listing.files[k] + "': " + why);
      if (first_bad.empty()) first_bad = "'" + listing.files[k] + "': " + why;
      continue;
    }
    all_gray = all_gray && comp <= 2;
    files.push_back(listing.files[k]);
    if (!listing.labels.empty()) labels.push_back(listing.labels[k]);
  }
  if (files.empty()) {
    throw Error("none of the " + std::to_string(listing.files.size()) + " image files in '" + path +
                "' can be decoded (first: " + first_bad + ")");
  }
  const int64_t channels = options.color == ColorMode::Grayscale ? 1
                           : options.color == ColorMode::Rgb     ? 3
                           : all_gray                            ? 1
                                                                 : 3;
  auto stream = std::make_shared<FolderImages>(std::move(files), channels, options);
  for (auto& w : warnings) stream->warn(std::move(w));
  ImageData out;
  out.name = "folder";
  out.stream = stream;
  out.class_names = listing.class_names;
  if (!labels.empty()) out.labels = torch::tensor(labels, torch::kInt64);
  return out;
}

}  // namespace ddpm
