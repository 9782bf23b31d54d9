#pragma once
/// Deterministic, sharded, prefetching batch loader for image data held in memory or
/// streamed (decoded on demand from an ImageStream, e.g. the folder dataset).
///
/// Batch `step` is a pure function of (seed, step, rank, world_size): epoch
/// e = step / steps_per_epoch uses the permutation randperm(N) drawn from a
/// generator seeded with seed + e; the epoch's global batch b holds
/// world_size x batch_size consecutive indices of that permutation and rank r
/// takes its r-th slice of batch_size (disjoint shards, the incomplete tail of an
/// epoch is dropped). The flips of batch `step` on rank r come from a generator
/// seeded from (seed, step, r); a streamed image's random crop from (seed, step, r,
/// its position in the batch). A resumed run therefore sees exactly the batches
/// an uninterrupted one would.
///
/// Background workers prepare the next batches while the model trains: one thread for
/// in-memory data, `threads` threads for a stream (each builds whole batches, decoding
/// their images). At most max(prefetch, workers) batches are prepared ahead, so memory stays
/// bounded; next() hands them out in step order, so thread timing never changes the
/// sequence (an error in preparing batch s surfaces when batch s is asked for).
#include <ddpm/data/dataset.hpp>
#include <ddpm/data/transforms.hpp>

#include <ATen/CPUGeneratorImpl.h>
#include <torch/types.h>

#include <algorithm>
#include <condition_variable>
#include <cstdint>
#include <cstring>
#include <exception>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace ddpm {

/// Options of BatchLoader.
struct BatchLoaderOptions {
  /// Images per batch on this rank.
  int64_t batch_size = 64;
  /// Seeds the epoch permutations and the flips.
  uint64_t seed = 0;
  /// This process's rank and the number of processes (data-parallel shards).
  int rank = 0;
  int world_size = 1;
  /// Random horizontal flip with probability 0.5.
  bool random_flip = true;
  /// Batches prepared ahead by the background workers (0 = no worker: load in the caller).
  int prefetch = 2;
  /// Worker threads for a streamed dataset (decoding); in-memory data uses one.
  int threads = 4;
};

/// One training batch: the images and, for labelled data, their class labels (what class
/// conditioning consumes; the unconditional loss ignores them).
struct Batch {
  /// float32 [B, C, H, W] in [-1, 1].
  torch::Tensor images;
  /// int64 [B] (nullopt for unlabelled data).
  c10::optional<torch::Tensor> labels;
};

/// Produces Batches (float32 images [B, C, H, W] in [-1, 1], int64 labels [B]) from uint8
/// images [N, C, H, W] in memory, or from an ImageStream, and optional int64 labels [N].
class BatchLoader {
 public:
  /// `images`: uint8 [N, C, H, W], already padded to the training size; `labels`: int64 [N]
  /// or undefined.
  BatchLoader(torch::Tensor images, BatchLoaderOptions opts, torch::Tensor labels = {})
      : images_(std::move(images)), labels_(std::move(labels)), opts_(opts) {
    TORCH_CHECK(images_.dim() == 4 && images_.scalar_type() == torch::kUInt8,
                "BatchLoader: expected uint8 images [N, C, H, W], got ", images_.sizes(), " ",
                images_.scalar_type());
    TORCH_CHECK(opts_.batch_size > 0, "BatchLoader: batch_size must be positive, got ", opts_.batch_size);
    TORCH_CHECK(opts_.world_size >= 1 && opts_.rank >= 0 && opts_.rank < opts_.world_size,
                "BatchLoader: bad rank ", opts_.rank, " for world_size ", opts_.world_size);
    TORCH_CHECK(images_.size(0) >= opts_.batch_size * opts_.world_size, "BatchLoader: ",
                images_.size(0), " images cannot fill one global batch of ", opts_.world_size, " x ",
                opts_.batch_size);
    images_ = images_.contiguous();
    if (labels_.defined()) {
      TORCH_CHECK(labels_.dim() == 1 && labels_.size(0) == images_.size(0), "BatchLoader: expected labels [",
                  images_.size(0), "], got ", labels_.sizes());
      labels_ = labels_.to(torch::kInt64).contiguous();
    }
  }
  /// Streams from `stream` (images decoded on demand, already of the training size);
  /// `labels`: int64 [N] or undefined.
  BatchLoader(std::shared_ptr<ImageStream> stream, BatchLoaderOptions opts, torch::Tensor labels = {})
      : labels_(std::move(labels)), opts_(opts), stream_(std::move(stream)) {
    TORCH_CHECK(stream_ != nullptr, "BatchLoader: null image stream");
    TORCH_CHECK(opts_.batch_size > 0, "BatchLoader: batch_size must be positive, got ", opts_.batch_size);
    TORCH_CHECK(opts_.world_size >= 1 && opts_.rank >= 0 && opts_.rank < opts_.world_size,
                "BatchLoader: bad rank ", opts_.rank, " for world_size ", opts_.world_size);
    TORCH_CHECK(stream_->size() >= opts_.batch_size * opts_.world_size, "BatchLoader: ", stream_->size(),
                " images cannot fill one global batch of ", opts_.world_size, " x ", opts_.batch_size);
    if (labels_.defined()) {
      TORCH_CHECK(labels_.dim() == 1 && labels_.size(0) == stream_->size(), "BatchLoader: expected labels [",
                  stream_->size(), "], got ", labels_.sizes());
      labels_ = labels_.to(torch::kInt64).contiguous();
    }
  }
  BatchLoader(const BatchLoader&) = delete;
  BatchLoader& operator=(const BatchLoader&) = delete;
  ~BatchLoader() { stop(); }

  /// Global batches per epoch: floor(N / (world_size x batch_size)).
  int64_t steps_per_epoch() const { return num_images() / (opts_.batch_size * opts_.world_size); }

  /// The dataset indices of batch `step` on this rank: int64 [batch_size].
  torch::Tensor indices(int64_t step) {
    const int64_t epoch = step / steps_per_epoch();
    const int64_t b = step % steps_per_epoch();
    torch::Tensor perm;
    {
      std::lock_guard<std::mutex> lock(perm_mutex_);
      if (epoch != perm_epoch_) {
        auto gen = at::detail::createCPUGenerator(opts_.seed + static_cast<uint64_t>(epoch));
        perm_ = torch::randperm(num_images(), gen, torch::TensorOptions().dtype(torch::kInt64));
        perm_epoch_ = epoch;
      }
      perm = perm_;
    }
    const int64_t start = (b * opts_.world_size + opts_.rank) * opts_.batch_size;
    return perm.slice(0, start, start + opts_.batch_size);
  }

  /// Seed of the random flips of batch `step` on this rank (in-memory and streamed alike).
  uint64_t flip_seed(int64_t step) const {
    return opts_.seed * 0x9E3779B97F4A7C15ull + static_cast<uint64_t>(step) * 1315423911ull +
           static_cast<uint64_t>(opts_.rank) * 2654435761ull + 1;
  }

  /// Batch `step` on this rank. Pure function of step.
  Batch batch(int64_t step) {
    if (stream_) return stream_batch(step);
    const auto idx = indices(step);
    auto x = images_.index_select(0, idx);
    if (opts_.random_flip) x = random_hflip(x, at::detail::createCPUGenerator(flip_seed(step)));
    Batch b;
    b.images = to_model_range(x);
    if (labels_.defined()) b.labels = labels_.index_select(0, idx);
    return b;
  }

  /// Starts (or restarts) sequential loading at `first_step`; next() then returns
  /// batch(first_step), batch(first_step + 1), ...
  void start(int64_t first_step) {
    stop();
    next_step_ = first_step;
    produce_step_ = first_step;
    if (opts_.prefetch <= 0) return;
    stopping_ = false;
    for (int i = 0; i < num_workers(); ++i) workers_.emplace_back([this] { run(); });
  }

  /// The next batch of the sequence begun by start().
  Batch next() {
    if (opts_.prefetch <= 0) return batch(next_step_++);
    std::unique_lock<std::mutex> lock(mutex_);
    cv_.wait(lock, [this] { return ready_.count(next_step_) > 0 || errors_.count(next_step_) > 0; });
    const auto err = errors_.find(next_step_);
    if (err != errors_.end()) {
      const std::exception_ptr e = err->second;
      errors_.erase(err);
      std::rethrow_exception(e);
    }
    auto it = ready_.find(next_step_);
    Batch x = std::move(it->second);
    ready_.erase(it);
    ++next_step_;
    cv_.notify_all();
    return x;
  }

  /// Stops the background workers (called by the destructor).
  void stop() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stopping_ = true;
    }
    cv_.notify_all();
    for (auto& w : workers_) {
      if (w.joinable()) w.join();
    }
    workers_.clear();
    ready_.clear();
    errors_.clear();
  }

  /// Warnings of the stream since the last call (files skipped), to log from the caller's thread.
  std::vector<std::string> take_warnings() { return stream_ ? stream_->take_warnings() : std::vector<std::string>{}; }

  const BatchLoaderOptions& options() const { return opts_; }
  int64_t num_images() const { return stream_ ? stream_->size() : images_.size(0); }
  /// True when the images are decoded on demand.
  bool streaming() const { return stream_ != nullptr; }
  /// Background workers start() runs (0 without prefetch).
  int num_workers() const {
    if (opts_.prefetch <= 0) return 0;
    return stream_ ? std::max(1, opts_.threads) : 1;
  }

 private:
  // Batch `step` of a stream: each image decoded (with its crop seed), then the same flips.
  Batch stream_batch(int64_t step) {
    const auto idx = indices(step).contiguous();
    const int64_t b = idx.size(0), s = stream_->image_size(), c = stream_->channels();
    auto x = torch::empty({b, c, s, s}, torch::kUInt8);
    auto used = torch::empty({b}, torch::kInt64);
    const int64_t* ip = idx.data_ptr<int64_t>();
    uint8_t* xp = x.data_ptr<uint8_t>();
    int64_t* up = used.data_ptr<int64_t>();
    for (int64_t k = 0; k < b; ++k) {
      const uint64_t crop_seed = (opts_.seed + 0x243F6A8885A308D3ull) * 0x9E3779B97F4A7C15ull +
                                 static_cast<uint64_t>(step) * 0xC2B2AE3D27D4EB4Full +
                                 static_cast<uint64_t>(opts_.rank) * 0x165667B19E3779F9ull +
                                 static_cast<uint64_t>(k) * 0x27D4EB2F165667C5ull;
      up[k] = stream_->read(ip[k], crop_seed, xp + k * c * s * s);
    }
    if (opts_.random_flip) x = random_hflip(x, at::detail::createCPUGenerator(flip_seed(step)));
    Batch out;
    out.images = to_model_range(x);
    if (labels_.defined()) out.labels = labels_.index_select(0, used);
    return out;
  }

  void run() {
    const int64_t capacity = std::max<int64_t>(opts_.prefetch, num_workers());
    for (;;) {
      int64_t step;
      {
        std::unique_lock<std::mutex> lock(mutex_);
        cv_.wait(lock, [&] { return stopping_ || produce_step_ - next_step_ < capacity; });
        if (stopping_) return;
        step = produce_step_++;
      }
      try {
        Batch x = batch(step);
        std::lock_guard<std::mutex> lock(mutex_);
        ready_.emplace(step, std::move(x));
      } catch (...) {
        std::lock_guard<std::mutex> lock(mutex_);
        errors_.emplace(step, std::current_exception());
      }
      cv_.notify_all();
    }
  }

  torch::Tensor images_;
  torch::Tensor labels_;
  BatchLoaderOptions opts_;
  std::shared_ptr<ImageStream> stream_;
  std::mutex perm_mutex_;
  torch::Tensor perm_;
  int64_t perm_epoch_ = -1;
  std::mutex mutex_;
  std::condition_variable cv_;
  std::map<int64_t, Batch> ready_;
  std::map<int64_t, std::exception_ptr> errors_;
  std::vector<std::thread> workers_;
  bool stopping_ = false;
  int64_t next_step_ = 0;
  int64_t produce_step_ = 0;
};

}  // namespace ddpm
