#pragma once
/// Crash-safe training checkpoints: one file per checkpoint holding a LibTorch
/// serialize archive (model, EMA, optimizer, step, RNG states, config — what the
/// trainer puts in it) behind an integrity header, written to a temporary file
/// and renamed, with the last K kept.
///
/// File layout (little-endian):
///   [0, 8)   magic "DDPMCKPT"
///   [8, 12)  u32 format version (1)
///   [12, 20) u64 payload size in bytes
///   [20, 24) u32 CRC-32 (zlib) of the payload
///   [24, 24 + size) payload: the archive as written by OutputArchive::save_to
/// A truncated file (size mismatch) or a corrupt one (CRC mismatch, bad magic)
/// is rejected with a ddpm::Error naming the file and what is wrong.
///
/// The trainer's archive (format version 1) holds: "model", "ema" (with "weights"),
/// "optimizer" (sub-archives), "step", "train_seconds", "loss_scale", "good_steps"
/// (scalars), "rng_train", "rng_global_cpu" (generator states) and the JSON strings
/// "config" (the effective TrainConfig), "unet_config" (diffusers UNet2DModel form) and
/// "scheduler_config" (diffusers scheduler form), plus "class_names" (a JSON list, by label)
/// when the training data has class names. load_training_checkpoint reads what sampling needs
/// from it.
///
/// The other files of a run directory (TrainConfig::out_dir): train/run_dir.hpp.
#include <ddpm/detail/json_util.hpp>
#include <ddpm/detail/zip_archive.hpp>
#include <ddpm/error.hpp>
#include <ddpm/nn/unet.hpp>
#include <ddpm/train/ema.hpp>

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/core/Generator.h>
#include <torch/optim/optimizer.h>
#include <torch/serialize/archive.h>
#include <torch/types.h>

#include <nlohmann/json.hpp>

#include <zlib.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <cerrno>
#include <dirent.h>
#include <fcntl.h>
#include <unistd.h>
#include <fstream>
#include <functional>
#include <string>
#include <sys/stat.h>
#include <vector>

namespace ddpm {

namespace detail {
inline constexpr char kCheckpointMagic[8] = {'D', 'D', 'P', 'M', 'C', 'K', 'P', 'T'};
inline constexpr uint32_t kCheckpointVersion = 1;
inline constexpr size_t kCheckpointHeader = 24;

inline void put_le(std::vector<uint8_t>& out, uint64_t v, int bytes) {
  for (int i = 0; i < bytes; ++i) out.push_back(static_cast<uint8_t>(v >> (8 * i)));
}
inline uint64_t get_le(const uint8_t* p, int bytes) {
  uint64_t v = 0;
  for (int i = bytes - 1; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}
inline uint32_t crc32_of(const uint8_t* data, size_t size) {
  uLong crc = crc32(0L, Z_NULL, 0);
  while (size > 0) {
    const uInt chunk = static_cast<uInt>(std::min<size_t>(size, 1u << 30));
    crc = crc32(crc, data, chunk);
    data += chunk;
    size -= chunk;
  }
  return static_cast<uint32_t>(crc);
}
}  // namespace detail

/// Stores a string (e.g. a JSON config) in an archive as a uint8 tensor.
inline void archive_write_string(torch::serialize::OutputArchive& archive, const std::string& key,
                                 const std::string& value) {
  auto t = torch::empty({static_cast<int64_t>(value.size())}, torch::kUInt8);
  if (!value.empty()) std::memcpy(t.data_ptr<uint8_t>(), value.data(), value.size());
  archive.write(key, t, /*is_buffer=*/true);
}

/// Reads a string stored by archive_write_string.
inline std::string archive_read_string(torch::serialize::InputArchive& archive, const std::string& key) {
  torch::Tensor t;
  archive.read(key, t, /*is_buffer=*/true);
  t = t.to(torch::kCPU).contiguous();
  return std::string(reinterpret_cast<const char*>(t.data_ptr<uint8_t>()), static_cast<size_t>(t.numel()));
}

/// Stores a generator's state (CPU or CUDA) in an archive.
inline void archive_write_generator(torch::serialize::OutputArchive& archive, const std::string& key,
                                    const at::Generator& gen) {
  archive.write(key, gen.get_state(), /*is_buffer=*/true);
}

/// Restores a generator's state stored by archive_write_generator.
inline void archive_read_generator(torch::serialize::InputArchive& archive, const std::string& key,
                                   at::Generator& gen) {
  torch::Tensor state;
  archive.read(key, state, /*is_buffer=*/true);
  gen.set_state(state.to(torch::kCPU));
}

namespace detail {

/// Writes all of `data` to `fd`; false on any error (errno set).
inline bool write_all(int fd, const uint8_t* data, size_t size) {
  while (size > 0) {
    const ssize_t n = ::write(fd, data, std::min<size_t>(size, size_t{1} << 30));
    if (n < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    data += n;
    size -= static_cast<size_t>(n);
  }
  return true;
}

/// fsync of the directory holding `path`, so a rename into it survives a power cut (best
/// effort: some file systems refuse to sync directories).
inline void sync_parent_dir(const std::string& path) {
  const auto slash = path.find_last_of('/');
  const std::string dir = slash == std::string::npos ? "." : (slash == 0 ? "/" : path.substr(0, slash));
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY);
  if (fd < 0) return;
  (void)::fsync(fd);
  ::close(fd);
}

/// The verified payload of the checkpoint at `path`: a regular file of at most
/// kMaxCheckpointBytes whose header (magic, version, size) and CRC-32 check out. Throws
/// ddpm::Error naming the file otherwise.
inline std::vector<uint8_t> read_verified_checkpoint_payload(const std::string& path);

}  // namespace detail

/// Largest checkpoint file read (a checkpoint holds the model twice plus Adam's two moments).
constexpr uint64_t kMaxCheckpointBytes = uint64_t{64} << 30;

/// Serializes `archive` and writes it to `path` with the integrity header, through `path.tmp`,
/// fsync and a rename (then an fsync of the directory): an interrupted write or a power cut
/// never replaces a good file. Throws ddpm::Error naming the file on I/O failure (disk full:
/// the temporary is removed, earlier checkpoints are untouched).
inline void write_checkpoint_file(const std::string& path, torch::serialize::OutputArchive& archive) {
  std::vector<uint8_t> payload;
  archive.save_to([&](const void* data, size_t n) -> size_t {
    const auto* p = static_cast<const uint8_t*>(data);
    payload.insert(payload.end(), p, p + n);
    return n;
  });
  std::vector<uint8_t> header(detail::kCheckpointMagic, detail::kCheckpointMagic + 8);
  detail::put_le(header, detail::kCheckpointVersion, 4);
  detail::put_le(header, payload.size(), 8);
  detail::put_le(header, detail::crc32_of(payload.data(), payload.size()), 4);
  const std::string tmp = path + ".tmp";
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) throw IoError("cannot write checkpoint '" + tmp + "': " + std::strerror(errno));
  const bool ok = detail::write_all(fd, header.data(), header.size()) &&
                  detail::write_all(fd, payload.data(), payload.size()) && ::fsync(fd) == 0;
  const int err = errno;
  if (::close(fd) != 0 || !ok) {
    std::remove(tmp.c_str());
    throw IoError("cannot write checkpoint '" + tmp + "': " + std::strerror(ok ? errno : err) +
                (err == ENOSPC ? " (disk full)" : ""));
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    std::remove(tmp.c_str());
    throw IoError("cannot rename checkpoint '" + tmp + "' to '" + path + "'");
  }
  detail::sync_parent_dir(path);
}

namespace detail {

inline std::vector<uint8_t> read_verified_checkpoint_payload(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) throw Error("cannot open checkpoint '" + path + "'");
  if (!S_ISREG(st.st_mode)) throw Error("checkpoint '" + path + "' is not a regular file");
  const auto file_size = static_cast<uint64_t>(st.st_size);
  if (file_size < kCheckpointHeader) {
    throw Error("checkpoint '" + path + "' is truncated: " + std::to_string(file_size) +
                " bytes, smaller than the 24-byte header");
  }
  if (file_size > kMaxCheckpointBytes) {
    throw Error("checkpoint '" + path + "' is " + std::to_string(file_size) + " bytes, above the limit of " +
                std::to_string(kMaxCheckpointBytes >> 30) + " GiB");
  }
  std::ifstream f(path, std::ios::binary);
  if (!f) throw Error("cannot open checkpoint '" + path + "'");
  uint8_t head[kCheckpointHeader];
  f.read(reinterpret_cast<char*>(head), kCheckpointHeader);
  if (!f) throw Error("cannot read checkpoint '" + path + "'");
  if (std::memcmp(head, kCheckpointMagic, 8) != 0) {
    throw Error("'" + path + "' is not a ddpm checkpoint (bad magic at byte offset 0)");
  }
  const uint32_t version = static_cast<uint32_t>(get_le(head + 8, 4));
  if (version != kCheckpointVersion) {
    throw Error("checkpoint '" + path + "' has format version " + std::to_string(version) +
                ", this build reads version " + std::to_string(kCheckpointVersion));
  }
  const uint64_t size = get_le(head + 12, 8);
  const uint32_t crc = static_cast<uint32_t>(get_le(head + 20, 4));
  if (file_size - kCheckpointHeader != size) {  // checked before allocating `size` bytes
    throw Error("checkpoint '" + path + "' is truncated or has extra bytes: the header announces " +
                std::to_string(size) + " payload bytes, the file holds " + std::to_string(file_size - kCheckpointHeader));
  }
  std::vector<uint8_t> payload(static_cast<size_t>(size));
  f.read(reinterpret_cast<char*>(payload.data()), static_cast<std::streamsize>(size));
  if (!f) throw Error("cannot read checkpoint '" + path + "'");
  if (crc32_of(payload.data(), payload.size()) != crc) {
    throw Error("checkpoint '" + path + "' is corrupt: CRC-32 mismatch over its " + std::to_string(size) +
                " payload bytes");
  }
  return payload;
}

/// The keys of a training config (config.json, a checkpoint's "config" record) that define the
/// model a checkpoint holds: its network, noise schedule, objective and classes.
inline const std::vector<std::string>& model_defining_keys() {
  static const std::vector<std::string> keys = {"model", "schedule", "objective", "num_classes"};
  return keys;
}

/// Throws ddpm::Error when the training config `stored` (checkpoint `path`'s "config" record)
/// and `expected` (from `expected_what`) differ on a model-defining key both hold; `advice` ends
/// the message.
inline void check_same_model(const nlohmann::json& stored, const nlohmann::json& expected, const std::string& path,
                             const std::string& expected_what, const std::string& advice) {
  if (!stored.is_object() || !expected.is_object()) return;
  for (const auto& key : model_defining_keys()) {
    if (!stored.contains(key) || !expected.contains(key) || stored[key] == expected[key]) continue;
    throw Error("checkpoint '" + path + "' holds another model than " + expected_what + ": its \"" + key + "\" is " +
                truncated_dump(stored[key], 160) + ", not " + truncated_dump(expected[key], 160) + ". " + advice);
  }
}

}  // namespace detail

/// Reads and verifies the checkpoint at `path` and loads its archive into
/// `archive` (tensors mapped to `device` when given). Throws ddpm::Error naming
/// the file when it is missing, not a regular file, not a ddpm checkpoint, truncated,
/// corrupt, holds an archive whose record table is malformed (detail::check_zip_archive, before
/// LibTorch parses anything) or one LibTorch cannot decode (whatever LibTorch throws).
inline void read_checkpoint_file(const std::string& path, torch::serialize::InputArchive& archive,
                                 c10::optional<torch::Device> device = c10::nullopt) {
  const std::vector<uint8_t> payload = detail::read_verified_checkpoint_payload(path);
  (void)detail::check_zip_archive(payload.data(), payload.size(), "checkpoint '" + path + "'");
  try {
    archive.load_from(reinterpret_cast<const char*>(payload.data()), payload.size(), device);
  } catch (const c10::Error& e) {
    throw Error("checkpoint '" + path + "' could not be decoded: " + e.what_without_backtrace());
  } catch (const std::exception& e) {
    throw Error("checkpoint '" + path + "' could not be decoded: " + e.what());
  } catch (...) {
    throw Error("checkpoint '" + path + "' could not be decoded (LibTorch threw a non-standard exception)");
  }
}

/// Names, lists and prunes the checkpoints `dir/ckpt-<step, 9 digits>.pt`.
class CheckpointManager {
 public:
  /// `keep_last`: how many checkpoints to keep (>= 1).
  CheckpointManager(std::string dir, int keep_last = 3) : dir_(std::move(dir)), keep_last_(keep_last) {
    if (keep_last_ < 1) throw Error("keep_last must be >= 1, got " + std::to_string(keep_last_));
  }

  /// Path of the checkpoint for `step`.
  std::string path_for(int64_t step) const {
    char buf[32];
    std::snprintf(buf, sizeof buf, "ckpt-%09lld.pt", static_cast<long long>(step));
    return dir_ + "/" + buf;
  }

  /// Existing checkpoints as (step, path), oldest first.
  std::vector<std::pair<int64_t, std::string>> list() const {
    std::vector<std::pair<int64_t, std::string>> out;
    DIR* d = opendir(dir_.c_str());
    if (d == nullptr) return out;
    while (dirent* e = readdir(d)) {
      const std::string name = e->d_name;
      long long step = 0;
      char tail[8] = {0};
      struct stat st {};
      if (name.size() == 17 && std::sscanf(name.c_str(), "ckpt-%9lld.%2s", &step, tail) == 2 &&
          std::string(tail) == "pt" && ::stat((dir_ + "/" + name).c_str(), &st) == 0 && S_ISREG(st.st_mode)) {
        out.emplace_back(step, dir_ + "/" + name);
      }
    }
    closedir(d);
    std::sort(out.begin(), out.end());
    return out;
  }

  /// Writes the checkpoint of `step` and verifies it (read back: header and CRC-32), then
  /// deletes the older ones beyond the newest keep_last (this one included). Checkpoints of
  /// LATER steps are never deleted (a run that restarted below corrupt ones keeps them until
  /// it overwrites them), nor is anything deleted when the new file does not verify.
  std::string save(int64_t step, torch::serialize::OutputArchive& archive) const {
    const std::string path = path_for(step);
    write_checkpoint_file(path, archive);
    (void)detail::read_verified_checkpoint_payload(path);
    std::vector<std::string> older;
    for (const auto& [s, p] : list()) {
      if (s < step) older.push_back(p);
    }
    const size_t keep_older = static_cast<size_t>(keep_last_ - 1);
    for (size_t i = 0; i + keep_older < older.size(); ++i) std::remove(older[i].c_str());
    return path;
  }

  /// Removes the temporaries `ckpt-<step>.pt.tmp` a killed writer left behind; returns them.
  std::vector<std::string> remove_stale_temporaries() const {
    std::vector<std::string> removed;
    DIR* d = opendir(dir_.c_str());
    if (d == nullptr) return removed;
    while (dirent* e = readdir(d)) {
      const std::string name = e->d_name;
      if (name.size() == 21 && name.rfind("ckpt-", 0) == 0 && name.compare(14, 7, ".pt.tmp") == 0) {
        removed.push_back(dir_ + "/" + name);
      }
    }
    closedir(d);
    for (const auto& p : removed) std::remove(p.c_str());
    return removed;
  }

  /// Loads the newest checkpoint that passes the integrity check into `archive`
  /// and returns its path ("" when there is none). Each rejected newer file is
  /// reported through `on_reject(path, error message)` and skipped.
  std::string load_latest(torch::serialize::InputArchive& archive,
                          const std::function<void(const std::string&, const std::string&)>& on_reject = {},
                          c10::optional<torch::Device> device = c10::nullopt) const {
    auto all = list();
    for (auto it = all.rbegin(); it != all.rend(); ++it) {
      try {
        torch::serialize::InputArchive a;
        read_checkpoint_file(it->second, a, device);
        archive = std::move(a);
        return it->second;
      } catch (const Error& e) {
        if (on_reject) on_reject(it->second, e.what());
      }
    }
    return "";
  }

  const std::string& dir() const { return dir_; }
  int keep_last() const { return keep_last_; }

 private:
  std::string dir_;
  int keep_last_;
};

/// The parts of a training run a checkpoint holds besides its JSON configs (references
/// into the trainer). The process-wide CPU generator is saved and restored too.
struct TrainingStateRef {
  torch::nn::Module& model;
  EMA<UNet>& ema;
  torch::optim::Optimizer& optimizer;
  int64_t& step;
  double& train_seconds;
  double& loss_scale;
  int64_t& good_steps;
  at::Generator& rng;
};

/// Writes `s` and the three JSON configs into `a` (the layout above).
inline void write_training_state(torch::serialize::OutputArchive& a, const TrainingStateRef& s,
                                 const nlohmann::json& config, const nlohmann::json& unet_config,
                                 const nlohmann::json& scheduler_config,
                                 const std::vector<std::string>& class_names = {}) {
  torch::serialize::OutputArchive m, e, o;
  s.model.save(m);
  s.ema.save(e);
  s.optimizer.save(o);
  a.write("model", m);
  a.write("ema", e);
  a.write("optimizer", o);
  a.write("step", torch::tensor(s.step, torch::kInt64), true);
  a.write("train_seconds", torch::tensor(s.train_seconds, torch::kFloat64), true);
  a.write("loss_scale", torch::tensor(s.loss_scale, torch::kFloat64), true);
  a.write("good_steps", torch::tensor(s.good_steps, torch::kInt64), true);
  archive_write_generator(a, "rng_train", s.rng);
  archive_write_generator(a, "rng_global_cpu", at::detail::getDefaultCPUGenerator());
  archive_write_string(a, "config", config.dump());
  archive_write_string(a, "unet_config", unet_config.dump());
  archive_write_string(a, "scheduler_config", scheduler_config.dump());
  if (!class_names.empty()) archive_write_string(a, "class_names", nlohmann::json(class_names).dump());
}

/// Restores what write_training_state stored into `s` (c10::Error when a key is missing or
/// a shape does not match the modules).
inline void read_training_state(torch::serialize::InputArchive& a, const TrainingStateRef& s) {
  torch::serialize::InputArchive m, e, o;
  a.read("model", m);
  s.model.load(m);
  a.read("ema", e);
  s.ema.load(e);
  a.read("optimizer", o);
  s.optimizer.load(o);
  torch::Tensor t;
  a.read("step", t, true);
  s.step = t.item<int64_t>();
  a.read("train_seconds", t, true);
  s.train_seconds = t.item<double>();
  a.read("loss_scale", t, true);
  s.loss_scale = t.item<double>();
  a.read("good_steps", t, true);
  s.good_steps = t.item<int64_t>();
  archive_read_generator(a, "rng_train", s.rng);
  at::Generator global = at::detail::getDefaultCPUGenerator();
  archive_read_generator(a, "rng_global_cpu", global);
}

/// Restores the newest checkpoint of `manager` that passes the integrity check into `s`
/// (tensors mapped to `device`) and returns its path, "" when there is none (each rejected
/// newer file goes to `on_reject`). Throws ddpm::Error when it does not match the modules, or,
/// with `expected_config` (the run's effective TrainConfig JSON), when its stored config differs
/// from it on a model-defining key (detail::check_same_model): another run's checkpoint.
inline std::string resume_training_state(
    const CheckpointManager& manager, const TrainingStateRef& s, c10::optional<torch::Device> device = c10::nullopt,
    const std::function<void(const std::string&, const std::string&)>& on_reject = {},
    const nlohmann::json& expected_config = nlohmann::json()) {
  torch::serialize::InputArchive a;
  const std::string path = manager.load_latest(a, on_reject, device);
  if (path.empty()) return path;
  if (!expected_config.is_null()) {
    nlohmann::json stored;
    try {
      stored = detail::parse_json(archive_read_string(a, "config"), "checkpoint '" + path + "' config record");
    } catch (const c10::Error& err) {
      throw Error("cannot resume from '" + path + "': it has no training config (" + err.what_without_backtrace() + ")");
    }
    detail::check_same_model(stored, expected_config, path, "this run's configuration",
                             "Use a new --out folder, or the settings that checkpoint was trained with.");
  }
  try {
    read_training_state(a, s);
  } catch (const c10::Error& err) {
    throw Error("cannot resume from '" + path + "': it does not match this configuration (" +
                err.what_without_backtrace() +
                "). Use a new --out folder or the model settings the checkpoint was trained with.");
  }
  return path;
}

/// What sampling needs from a training checkpoint: the EMA weights in a UNet built from the
/// stored config, plus the diffusers-style scheduler config.
struct LoadedCheckpoint {
  UNet ema_model{nullptr};
  UNetOptions unet_options;
  nlohmann::json scheduler_config;
  nlohmann::json train_config;
  int64_t step = 0;
  std::string path;  ///< the checkpoint file that was read
  /// The training data's class names by label (empty when the checkpoint records none).
  std::vector<std::string> class_names;
};

/// How a run guided its grids and evaluation, from its training config (LoadedCheckpoint::
/// train_config): a class-conditional run's guidance_scale and guidance interval; an
/// unconditional run (or a key an older run's config lacks) gets the default, no guidance.
struct RunGuidance {
  bool conditional = false;  ///< num_classes > 0
  double scale = 1.0;
  double interval_min = 0.0;  ///< fractions of num_train_timesteps (GenerateOptions)
  double interval_max = 1.0;
};

inline RunGuidance run_guidance_of(const nlohmann::json& train_config) {
  RunGuidance g;
  if (!train_config.is_object() || train_config.value("num_classes", int64_t{0}) <= 0) return g;
  g.conditional = true;
  g.scale = train_config.value("guidance_scale", 1.0);
  g.interval_min = train_config.value("guidance_interval_min", 0.0);
  g.interval_max = train_config.value("guidance_interval_max", 1.0);
  return g;
}

/// `path_or_dir` is a checkpoint file, or a run directory: then its newest checkpoint that
/// passes the integrity check (as the trainer resumes; each newer file it skips is reported
/// through `on_reject(path, why)`). Throws ddpm::Error naming the file.
inline LoadedCheckpoint load_training_checkpoint(
    const std::string& path_or_dir, torch::Device device = torch::Device(torch::kCPU),
    const std::function<void(const std::string&, const std::string&)>& on_reject = {}) {
  torch::serialize::InputArchive a;
  std::string path = path_or_dir;
  struct stat st {};
  if (::stat(path_or_dir.c_str(), &st) == 0 && S_ISDIR(st.st_mode)) {
    path = CheckpointManager(path_or_dir).load_latest(a, on_reject, device);
    if (path.empty()) {
      throw Error("no readable checkpoint (ckpt-<step>.pt) in directory '" + path_or_dir + "'");
    }
  } else {
    read_checkpoint_file(path, a, device);
  }
  LoadedCheckpoint out;
  out.path = path;
  try {
    auto record = [&](const char* name) {
      return detail::parse_json(archive_read_string(a, name), "checkpoint '" + path + "' holds invalid JSON in \"" +
                                                                  std::string(name) + "\"");
    };
    out.unet_options = unet_options_from_json(record("unet_config"), "checkpoint '" + path + "' unet_config");
    out.scheduler_config = record("scheduler_config");
    out.train_config = record("config");
    // A checkpoint inside a run directory must be that run's model (not one copied from another
    // run). A config.json that is not a readable training config (another tool's file) is no run's.
    const std::string run_dir = path.find('/') == std::string::npos ? "." : path.substr(0, path.rfind('/'));
    const std::string run_config = run_dir + "/config.json";
    struct stat cs {};
    if (::stat(run_config.c_str(), &cs) == 0 && S_ISREG(cs.st_mode)) {
      nlohmann::json expected;
      try {
        expected = detail::read_json_file(run_config);
      } catch (const Error&) {
      }
      detail::check_same_model(out.train_config, expected, path, "'" + run_config + "'",
                               "It was copied from another run: sample it from a folder of its own.");
    }
    torch::Tensor t;
    a.read("step", t, true);
    out.step = t.item<int64_t>();
    out.ema_model = UNet(out.unet_options);
    torch::serialize::InputArchive e, w;
    a.read("ema", e);
    e.read("weights", w);
    out.ema_model->load(w);
    try {
      out.class_names = record("class_names").get<std::vector<std::string>>();
    } catch (const c10::Error&) {
      // older checkpoints and unlabelled data: no class names
    }
  } catch (const c10::Error& err) {
    throw Error("checkpoint '" + path + "' is not a complete ddpm training checkpoint: " + err.what_without_backtrace());
  } catch (const nlohmann::json::exception& err) {
    throw Error("checkpoint '" + path + "' holds invalid JSON: " + err.what());
  }
  out.ema_model->to(device);
  out.ema_model->eval();
  return out;
}

}  // namespace ddpm
