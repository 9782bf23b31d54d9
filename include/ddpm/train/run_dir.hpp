#pragma once
/// A training run's directory (TrainConfig::out_dir) and the files the trainer writes there:
///   config.json             the effective TrainConfig (model resolved to a UNet config)
///   class_names.json        class-conditional runs: the data's class names, by label
///   metrics.jsonl, loss.png the metrics; eval.png with evaluation (train/metrics.hpp)
///   samples/step-<N>.png    sample grids from the EMA model (N: 9 digits)
///   ckpt-<N>.pt             the last keep_checkpoints checkpoints (train/checkpoint.hpp)
///   best.pt, best.json      with evaluation (train/evaluation.hpp): a full checkpoint of the
///                           step whose EMA samples scored the lowest distance so far, outside
///                           the ckpt-<N>.pt rotation, and its record {checkpoint, fd, kid,
///                           metric, n, step}
/// RunDir names these files and writes the ones that are not checkpoints or metrics.
#include <ddpm/detail/json_util.hpp>
#include <ddpm/io/png.hpp>
#include <ddpm/train/checkpoint.hpp>

#include <c10/util/Optional.h>
#include <torch/serialize/archive.h>
#include <torch/types.h>

#include <nlohmann/json.hpp>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <limits>
#include <string>
#include <vector>

namespace ddpm {

/// The record in out_dir/best.json: the evaluation that best.pt belongs to.
struct BestEvalRecord {
  int64_t step = -1;
  std::string metric;
  /// +inf when best.json holds no number (never the case for a file the trainer wrote).
  double fd = std::numeric_limits<double>::infinity();
  double kid = std::numeric_limits<double>::quiet_NaN();  ///< written as null when not finite
  int64_t n = 0;
};

/// The files of one run directory.
class RunDir {
 public:
  explicit RunDir(std::string dir) : dir_(std::move(dir)) {}

  const std::string& path() const { return dir_; }
  std::string config_path() const { return dir_ + "/config.json"; }
  std::string best_checkpoint_path() const { return dir_ + "/best.pt"; }
  std::string best_record_path() const { return dir_ + "/best.json"; }
  /// out_dir/samples/step-<step, 9 digits>.png
  std::string sample_grid_path(int64_t step) const {
    char name[48];
    std::snprintf(name, sizeof name, "step-%09lld.png", static_cast<long long>(step));
    return (std::filesystem::path(dir_) / "samples" / name).string();
  }

  /// Creates the directory and writes config.json, and class_names.json when `class_names` is
  /// not empty (class-conditional runs; what `sample --class NAME` resolves).
  void write_config(const nlohmann::json& effective_config, const std::vector<std::string>& class_names = {}) const {
    std::error_code ec;
    std::filesystem::create_directories(dir_, ec);
    if (ec || !std::filesystem::is_directory(dir_)) {
      throw Error("output folder '" + dir_ + "' cannot be created: " +
                  (ec ? ec.message() : std::string("a file of that name exists")));
    }
    detail::write_json_file(config_path(), effective_config);
    if (!class_names.empty()) detail::write_json_file(dir_ + "/class_names.json", nlohmann::json(class_names));
  }

  /// Writes `images` [n, C, S, S] in [-1, 1] as the grid of `step`; returns its path.
  std::string write_sample_grid(int64_t step, const torch::Tensor& images) const {
    std::filesystem::create_directories(std::filesystem::path(dir_) / "samples");
    const std::string path = sample_grid_path(step);
    save_image_grid(path, images, ImageRange::MinusOneToOne);
    return path;
  }

  /// Writes best.pt (`archive`, with the checkpoint integrity header) and then best.json.
  void write_best(torch::serialize::OutputArchive& archive, const BestEvalRecord& record) const {
    write_checkpoint_file(best_checkpoint_path(), archive);
    nlohmann::ordered_json j;
    j["step"] = record.step;
    j["metric"] = record.metric;
    j["fd"] = record.fd;
    j["kid"] = std::isfinite(record.kid) ? nlohmann::ordered_json(record.kid) : nlohmann::ordered_json();
    j["n"] = record.n;
    j["checkpoint"] = "best.pt";
    detail::write_json_file(best_record_path(), nlohmann::json::parse(j.dump()));
  }

  /// best.json's step and fd (+inf when not a number); nullopt when there is no readable
  /// best.json. Throws (nlohmann::json or ddpm::Error) when the file is not such a record.
  c10::optional<BestEvalRecord> read_best() const {
    const std::string path = best_record_path();
    if (!std::ifstream(path, std::ios::binary)) return c10::nullopt;
    const auto j = detail::read_json_file(path);
    BestEvalRecord r;
    if (j.at("fd").is_number()) r.fd = j.at("fd").get<double>();
    r.step = j.at("step").get<int64_t>();
    return r;
  }

 private:
  std::string dir_;
};

}  // namespace ddpm
