#pragma once
/// The training data as the trainer consumes it: checks an ImageData against the training config
/// (enough images for one global batch, labels for class conditioning, a streamed dataset of the
/// training size) and builds this rank's BatchLoader over it — from images held in memory (colour
/// mode and size fitted once) or from a stream decoded on demand by the loader's workers.
#include <ddpm/data/loader.hpp>
#include <ddpm/data/registry.hpp>
#include <ddpm/data/transforms.hpp>
#include <ddpm/error.hpp>
#include <ddpm/train/config.hpp>

#include <torch/types.h>

#include <cstdint>
#include <memory>
#include <string>

namespace ddpm {

/// num_classes > 0: the data must carry labels of exactly that many classes. Throws ddpm::Error
/// naming the key, the value and what the data has.
inline void check_training_labels(const TrainConfig& cfg, const ImageData& data) {
  if (cfg.num_classes <= 0) return;
  const std::string key = "training config: \"num_classes\" = " + std::to_string(cfg.num_classes);
  const std::string what = "dataset \"" + data.name + "\"";
  if (!data.labels.defined()) {
    throw Error(key + " needs class labels, but " + what + " has none; set num_classes to 0 to train unconditionally");
  }
  if (!data.class_names.empty() && data.num_classes() != cfg.num_classes) {
    throw Error(key + ", but " + what + " has " + std::to_string(data.num_classes()) + " classes; set num_classes to " +
                std::to_string(data.num_classes()));
  }
  if (data.labels.numel() > 0) {
    const int64_t lo = data.labels.min().item<int64_t>(), hi = data.labels.max().item<int64_t>();
    if (lo < 0 || hi >= cfg.num_classes) {
      throw Error(key + ", but " + what + " has labels in [" + std::to_string(lo) + ", " + std::to_string(hi) +
                  "]; set num_classes to " + std::to_string(hi + 1));
    }
  }
}

/// What make_training_loader built.
struct TrainingLoader {
  std::unique_ptr<BatchLoader> loader;
  /// Channels of the images the loader yields (the UNet's in/out channels).
  int64_t channels = 0;
};

/// This rank's loader over `data` (rank `rank` of `world_size`), after the checks above.
inline TrainingLoader make_training_loader(const TrainConfig& cfg, const ImageData& data, int rank, int world_size) {
  check_training_labels(cfg, data);
  const int64_t global_batch = cfg.batch_size * world_size;
  if (data.size() < global_batch) {
    throw Error("the " + std::to_string(data.size()) + " images of " + (data.name.empty() ? "the data" : data.name) +
                " (" + cfg.data_dir + ") cannot fill one global batch of " + std::to_string(global_batch) +
                "; lower batch_size (--batch-size)");
  }
  const BatchLoaderOptions lo = loader_options_of(cfg, rank, world_size);
  TrainingLoader out;
  if (data.stream) {
    if (data.stream->image_size() != cfg.image_size) {
      throw Error("the streamed dataset " + data.name + " yields " + std::to_string(data.stream->image_size()) +
                  "-pixel images, but image_size is " + std::to_string(cfg.image_size));
    }
    out.channels = data.stream->channels();
    out.loader = std::make_unique<BatchLoader>(data.stream, lo, data.labels);
    return out;
  }
  const torch::Tensor images = fit_to_size(convert_color(data.images, cfg.color_mode), cfg.image_size);
  out.channels = images.size(1);
  out.loader = std::make_unique<BatchLoader>(images, lo, data.labels);
  return out;
}

}  // namespace ddpm
