#pragma once
/// A run's metrics: out_dir/metrics.jsonl (one JSON object per log interval: step, loss,
/// lr, img_per_s, time, grad_norm) and the loss curve out_dir/loss.png drawn from it.
#include <ddpm/io/png.hpp>

#include <nlohmann/json.hpp>

#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

namespace ddpm {

/// metrics.jsonl and loss.png of one run directory. `write` = false (ranks other than 0)
/// keeps the curve in memory and writes nothing.
class MetricsLog {
 public:
  MetricsLog(std::string dir, bool write) : dir_(std::move(dir)), write_(write) {}

  /// After resuming at `step`: reloads the lines up to `step` and drops later ones (written
  /// after that checkpoint), so the file and the curve match an uninterrupted run.
  void truncate_to(int64_t step) {
    if (!write_) return;
    const std::string path = jsonl_path();
    std::ifstream in(path);
    if (!in) return;
    std::vector<std::string> keep;
    std::string line;
    while (std::getline(in, line)) {
      if (line.empty()) continue;
      try {
        const auto j = nlohmann::json::parse(line);
        const int64_t s = j.at("step").get<int64_t>();
        if (s > step) break;
        keep.push_back(line);
        steps_.push_back(static_cast<double>(s));
        losses_.push_back(j.at("loss").get<double>());
      } catch (const std::exception&) {
        break;  // a torn last line
      }
    }
    in.close();
    std::ofstream out(path, std::ios::trunc);
    for (const auto& l : keep) out << l << '\n';
  }

  /// Appends one line (grad_norm NaN = not computed, written as null).
  void append(int64_t step, double loss, double lr, double img_per_s, double time, double grad_norm) {
    steps_.push_back(static_cast<double>(step));
    losses_.push_back(loss);
    if (!write_) return;
    nlohmann::json j = {{"step", step}, {"loss", loss}, {"lr", lr}, {"img_per_s", img_per_s}, {"time", time}};
    j["grad_norm"] = std::isfinite(grad_norm) ? nlohmann::json(grad_norm) : nlohmann::json(nullptr);
    std::ofstream out(jsonl_path(), std::ios::app);
    out << j.dump() << '\n';
  }

  /// Redraws loss.png.
  void write_curve() const {
    if (write_) save_loss_curve((std::filesystem::path(dir_) / "loss.png").string(), steps_, losses_);
  }

  std::string jsonl_path() const { return dir_ + "/metrics.jsonl"; }

 private:
  std::string dir_;
  bool write_;
  std::vector<double> steps_, losses_;
};

}  // namespace ddpm
