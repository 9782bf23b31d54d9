#pragma once
/// A run's metrics: the sums of a log interval (LogInterval), out_dir/metrics.jsonl (one JSON object per log interval: step, loss,
/// lr, img_per_s, time, grad_norm; and one per evaluation: {"step", "eval": EvalResult JSON})
/// and the curves drawn from it: out_dir/loss.png (loss) and out_dir/eval.png (the evaluation
/// distance, when the run evaluates).
#include <ddpm/io/png.hpp>

#include <nlohmann/json.hpp>

#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

namespace ddpm {

/// The running sums of one log interval (the steps since the last metrics line): its mean
/// loss and throughput, and the last finite gradient norm (kept across intervals).
struct LogInterval {
  double loss = 0;
  double seconds = 0;
  int64_t steps = 0;
  double grad_norm = NAN;

  void add(double step_loss, double step_seconds, double step_grad_norm) {
    seconds += step_seconds;
    loss += step_loss;
    ++steps;
    if (std::isfinite(step_grad_norm)) grad_norm = step_grad_norm;
  }
  double mean_loss() const { return loss / steps; }
  /// Images per second with `global_batch` images a step (0 before any time has passed).
  double images_per_second(int64_t global_batch) const { return seconds > 0 ? steps * global_batch / seconds : 0; }
  /// Starts the next interval.
  void clear() {
    loss = seconds = 0;
    steps = 0;
  }
};

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
        if (j.contains("eval")) {
          const auto& e = j.at("eval");
          eval_steps_.push_back(static_cast<double>(s));
          eval_values_.push_back(e.contains("fd") && e.at("fd").is_number() ? e.at("fd").get<double>() : NAN);
          if (e.contains("metric") && e.at("metric").is_string()) eval_metric_ = e.at("metric").get<std::string>();
        } else {
          steps_.push_back(static_cast<double>(s));
          losses_.push_back(j.at("loss").get<double>());
        }
        keep.push_back(line);
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

  /// Appends one evaluation line {"step": step, "eval": result} (result: EvalResult::to_json(),
  /// whose "fd" (null when not finite) and "metric" are plotted in eval.png).
  void append_eval(int64_t step, const nlohmann::ordered_json& result) {
    eval_steps_.push_back(static_cast<double>(step));
    eval_values_.push_back(result.contains("fd") && result.at("fd").is_number() ? result.at("fd").get<double>() : NAN);
    if (result.contains("metric") && result.at("metric").is_string()) eval_metric_ = result.at("metric").get<std::string>();
    if (!write_) return;
    nlohmann::ordered_json j;
    j["step"] = step;
    j["eval"] = result;
    std::ofstream out(jsonl_path(), std::ios::app);
    out << j.dump() << '\n';
  }

  /// Redraws loss.png (and eval.png when there are evaluations).
  void write_curve() const {
    if (!write_) return;
    save_loss_curve((std::filesystem::path(dir_) / "loss.png").string(), steps_, losses_);
    if (!eval_steps_.empty()) {
      save_loss_curve((std::filesystem::path(dir_) / "eval.png").string(), eval_steps_, eval_values_, 800, 450,
                      eval_metric_ + " of the EMA samples (log scale) vs step");
    }
  }

  std::string jsonl_path() const { return dir_ + "/metrics.jsonl"; }

 private:
  std::string dir_;
  bool write_;
  std::vector<double> steps_, losses_;
  std::vector<double> eval_steps_, eval_values_;
  std::string eval_metric_ = "FD";
};

}  // namespace ddpm
