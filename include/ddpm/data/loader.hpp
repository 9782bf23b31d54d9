#pragma once
/// Deterministic, sharded, prefetching batch loader for in-memory image data.
///
/// Batch `step` is a pure function of (seed, step, rank, world_size): epoch
/// e = step / steps_per_epoch uses the permutation randperm(N) drawn from a
/// generator seeded with seed + e; the epoch's global batch b holds
/// world_size x batch_size consecutive indices of that permutation and rank r
/// takes its r-th slice of batch_size (disjoint shards, the incomplete tail of an
/// epoch is dropped). The flips of batch `step` on rank r come from a generator
/// seeded from (seed, step, r). A resumed run therefore sees exactly the batches
/// an uninterrupted one would. A background thread prepares the next batches
/// while the model trains.
#include <ddpm/data/dataset.hpp>
#include <ddpm/data/transforms.hpp>

#include <ATen/CPUGeneratorImpl.h>
#include <torch/types.h>

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <exception>
#include <mutex>
#include <thread>

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
  /// Batches prepared ahead by the background thread (0 = no thread).
  int prefetch = 2;
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
/// images [N, C, H, W] and optional int64 labels [N].
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
  BatchLoader(const BatchLoader&) = delete;
  BatchLoader& operator=(const BatchLoader&) = delete;
  ~BatchLoader() { stop(); }

  /// Global batches per epoch: floor(N / (world_size x batch_size)).
  int64_t steps_per_epoch() const { return images_.size(0) / (opts_.batch_size * opts_.world_size); }

  /// The dataset indices of batch `step` on this rank: int64 [batch_size].
  torch::Tensor indices(int64_t step) {
    const int64_t epoch = step / steps_per_epoch();
    const int64_t b = step % steps_per_epoch();
    torch::Tensor perm;
    {
      std::lock_guard<std::mutex> lock(perm_mutex_);
      if (epoch != perm_epoch_) {
        auto gen = at::detail::createCPUGenerator(opts_.seed + static_cast<uint64_t>(epoch));
        perm_ = torch::randperm(images_.size(0), gen, torch::TensorOptions().dtype(torch::kInt64));
        perm_epoch_ = epoch;
      }
      perm = perm_;
    }
    const int64_t start = (b * opts_.world_size + opts_.rank) * opts_.batch_size;
    return perm.slice(0, start, start + opts_.batch_size);
  }

  /// Batch `step` on this rank. Pure function of step.
  Batch batch(int64_t step) {
    const auto idx = indices(step);
    auto x = images_.index_select(0, idx);
    if (opts_.random_flip) {
      const uint64_t s = opts_.seed * 0x9E3779B97F4A7C15ull + static_cast<uint64_t>(step) * 1315423911ull +
                         static_cast<uint64_t>(opts_.rank) * 2654435761ull + 1;
      x = random_hflip(x, at::detail::createCPUGenerator(s));
    }
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
    worker_ = std::thread([this] { run(); });
  }

  /// The next batch of the sequence begun by start().
  Batch next() {
    if (opts_.prefetch <= 0) return batch(next_step_++);
    std::unique_lock<std::mutex> lock(mutex_);
    cv_.wait(lock, [this] { return !queue_.empty() || error_; });
    if (error_) std::rethrow_exception(error_);
    auto x = queue_.front();
    queue_.pop_front();
    ++next_step_;
    cv_.notify_all();
    return x;
  }

  /// Stops the background thread (called by the destructor).
  void stop() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stopping_ = true;
    }
    cv_.notify_all();
    if (worker_.joinable()) worker_.join();
    queue_.clear();
    error_ = nullptr;
  }

  const BatchLoaderOptions& options() const { return opts_; }
  int64_t num_images() const { return images_.size(0); }

 private:
  void run() {
    try {
      for (;;) {
        int64_t step;
        {
          std::unique_lock<std::mutex> lock(mutex_);
          cv_.wait(lock, [this] { return stopping_ || static_cast<int>(queue_.size()) < opts_.prefetch; });
          if (stopping_) return;
          step = produce_step_++;
        }
        auto x = batch(step);
        {
          std::lock_guard<std::mutex> lock(mutex_);
          queue_.push_back(std::move(x));
        }
        cv_.notify_all();
      }
    } catch (...) {
      std::lock_guard<std::mutex> lock(mutex_);
      error_ = std::current_exception();
      cv_.notify_all();
    }
  }

  torch::Tensor images_;
  torch::Tensor labels_;
  BatchLoaderOptions opts_;
  std::mutex perm_mutex_;
  torch::Tensor perm_;
  int64_t perm_epoch_ = -1;
  std::mutex mutex_;
  std::condition_variable cv_;
  std::deque<Batch> queue_;
  std::thread worker_;
  bool stopping_ = false;
  std::exception_ptr error_;
  int64_t next_step_ = 0;
  int64_t produce_step_ = 0;
};

}  // namespace ddpm
