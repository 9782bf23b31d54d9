#pragma once
/// The datasets the trainer can read, by name. A dataset is a reader (data/cifar10.hpp,
/// data/idx.hpp, data/folder.hpp, ...) plus one registration line in builtin_datasets() below
/// (or a call to dataset_registry().add(...) from user code): its name, aliases, a predicate
/// that recognises its files in a folder, and a loader returning images (in memory, or a
/// stream decoded on demand), labels and class names.
#include <ddpm/data/cifar10.hpp>
#include <ddpm/data/dataset.hpp>
#include <ddpm/data/folder.hpp>
#include <ddpm/data/idx.hpp>
#include <ddpm/detail/fields.hpp>
#include <ddpm/error.hpp>

#include <algorithm>
#include <cctype>
#include <functional>
#include <string>
#include <vector>

namespace ddpm {

/// Default data folder: Debian's dataset-fashion-mnist package.
inline constexpr const char* kDefaultDataDir = "/usr/share/datasets/fashion-mnist";

/// One registered dataset.
struct DatasetInfo {
  /// Canonical name (what ImageData::name and the config's "dataset" say).
  std::string name;
  /// Other accepted spellings.
  std::vector<std::string> aliases;
  /// True when the folder (or file) holds this dataset's files; used for "auto".
  std::function<bool(const std::string& path)> detect;
  /// Loads the training split (train = true) or the test split from the folder.
  std::function<ImageData(const std::string& path, bool train)> load;
  /// Where to get it (appended to "not found" errors).
  std::string hint;
  /// Optional: a loader that takes the DatasetOptions (training size, crop, colour, labels,
  /// bad files); used instead of `load` when set.
  std::function<ImageData(const std::string& path, bool train, const DatasetOptions& options)> load_with_options;
};

namespace detail {
inline bool path_mentions(const std::string& path, const std::string& word) {
  std::string lower = path;
  for (auto& ch : lower) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
  return lower.find(word) != std::string::npos;
}
}  // namespace detail

/// Name -> dataset. Detection tries the datasets in registration order.
class DatasetRegistry {
 public:
  /// Registers `info`; throws ddpm::Error when its name or an alias is taken.
  DatasetRegistry& add(DatasetInfo info) {
    std::vector<std::string> names = info.aliases;
    names.push_back(info.name);
    for (const auto& n : names) {
      if (n == "auto" || find(n) != nullptr) throw Error("dataset name \"" + n + "\" is already registered");
    }
    datasets_.push_back(std::move(info));
    return *this;
  }

  /// The dataset called `name` (or an alias of it); nullptr when none.
  const DatasetInfo* find(const std::string& name) const {
    for (const auto& d : datasets_) {
      if (d.name == name || std::find(d.aliases.begin(), d.aliases.end(), name) != d.aliases.end()) return &d;
    }
    return nullptr;
  }

  /// The dataset called `name`; throws ddpm::Error listing the registered names.
  const DatasetInfo& get(const std::string& name) const {
    if (const auto* d = find(name)) return *d;
    throw Error("unknown dataset \"" + name + "\"; registered datasets: " + detail::quoted_join(names()) +
                " (or \"auto\" to detect it from the files)");
  }

  /// Canonical names, in registration order.
  std::vector<std::string> names() const {
    std::vector<std::string> out;
    for (const auto& d : datasets_) out.push_back(d.name);
    return out;
  }

  /// The first dataset whose files are in `path`; throws ddpm::Error saying what was looked
  /// for (each dataset's hint) when none matches.
  const DatasetInfo& detect(const std::string& path) const {
    for (const auto& d : datasets_) {
      if (d.detect && d.detect(path)) return d;
    }
    std::string msg = "no dataset found in '" + path + "' (looked for " + detail::quoted_join(names()) + ")";
    for (const auto& d : datasets_) {
      if (!d.hint.empty()) msg += ". " + d.name + ": " + d.hint;
    }
    throw Error(msg);
  }

  /// Loads the training (or test) split of dataset `name` ("auto": detected) from `path`;
  /// `options` reach the datasets that take them (load_with_options).
  ImageData load(const std::string& name, const std::string& path, bool train = true,
                 const DatasetOptions& options = {}) const {
    const DatasetInfo& d = name == "auto" ? detect(path) : get(name);
    ImageData data = d.load_with_options ? d.load_with_options(path, train, options) : d.load(path, train);
    data.name = d.name;
    return data;
  }

 private:
  std::vector<DatasetInfo> datasets_;
};

/// The built-in datasets, one line each. Fashion-MNIST and MNIST share a file layout:
/// a folder whose path mentions "fashion" is Fashion-MNIST, any other is MNIST. "folder"
/// comes last, so detection prefers the formats above and picks it for any other folder
/// that holds PNG, JPEG or BMP files.
inline DatasetRegistry builtin_datasets() {
  const std::string idx_hint =
      "train-images-idx3-ubyte[.gz] and train-labels-idx1-ubyte[.gz]; Fashion-MNIST comes with Debian's "
      "dataset-fashion-mnist package (" + std::string(kDefaultDataDir) + ")";
  DatasetRegistry r;
  r.add({"cifar10", {"cifar-10"}, [](const std::string& p) { return !find_cifar10(p).empty(); },
         [](const std::string& p, bool train) { return load_cifar10(p, train); },
         cifar10_download_hint(), {}});
  r.add({"fashion-mnist", {"fashion_mnist", "fashionmnist"},
         [](const std::string& p) { return has_idx_dataset(p) && detail::path_mentions(p, "fashion"); },
         [](const std::string& p, bool train) { return load_mnist_dir(p, train, "fashion-mnist"); }, idx_hint, {}});
  r.add({"mnist", {}, [](const std::string& p) { return has_idx_dataset(p); },
         [](const std::string& p, bool train) { return load_mnist_dir(p, train, "mnist"); }, "", {}});
  r.add({"folder", {"image-folder", "imagefolder"}, folder_has_images,
         [](const std::string& p, bool train) { return load_image_folder(p, train); }, image_folder_hint(),
         load_image_folder});
  return r;
}

/// The process-wide registry (the built-ins, plus whatever the program adds).
inline DatasetRegistry& dataset_registry() {
  static DatasetRegistry r = builtin_datasets();
  return r;
}

/// "auto" followed by every registered dataset name and alias: the valid values of the
/// training config's "dataset" (and of --dataset).
inline std::vector<std::string> dataset_choices() {
  std::vector<std::string> out{"auto"};
  for (const auto& n : dataset_registry().names()) {
    out.push_back(n);
    for (const auto& a : dataset_registry().get(n).aliases) out.push_back(a);
  }
  return out;
}

}  // namespace ddpm
