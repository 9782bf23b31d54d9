#pragma once
/// Progress display for training and sampling: on a terminal a bar redrawn in
/// place ("[=====>    ] 1200/5000 24% loss 0.0412 312.5 img/s ETA 03:12"), when
/// the output is not a terminal (a log file, CI) plain lines at most every
/// `plain_interval_s` seconds plus the first and last update.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <string>
#include <unistd.h>

namespace ddpm {

/// "1:02:03" / "02:03" for a duration in seconds ("--:--" when unknown).
inline std::string format_duration(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0) return "--:--";
  const auto s = static_cast<long long>(seconds + 0.5);
  char buf[32];
  if (s >= 3600) {
    std::snprintf(buf, sizeof buf, "%lld:%02lld:%02lld", s / 3600, (s / 60) % 60, s % 60);
  } else {
    std::snprintf(buf, sizeof buf, "%02lld:%02lld", s / 60, s % 60);
  }
  return buf;
}

/// A progress bar over steps [start, total].
class ProgressBar {
 public:
  /// `out`: stream to draw on (stderr by default); `tty`: -1 = detect with isatty.
  ProgressBar(int64_t total, int64_t start = 0, std::string label = "", FILE* out = stderr, int tty = -1,
              double plain_interval_s = 10.0)
      : total_(total), start_(start), label_(std::move(label)), out_(out),
        tty_(tty < 0 ? isatty(fileno(out)) != 0 : tty != 0), plain_interval_s_(plain_interval_s),
        t0_(Clock::now()) {}

  bool is_tty() const { return tty_; }

  /// The run also stops after `seconds` from the bar's creation (a time limit): the ETA is then
  /// the sooner of the step-based estimate and the time left. 0 = no limit.
  void set_time_limit(double seconds) { time_limit_s_ = seconds; }

  /// Reports that `step` of total is done. `loss` < 0 and `images_per_s` < 0 are not shown.
  void update(int64_t step, double loss = -1.0, double images_per_s = -1.0) {
    const auto now = Clock::now();
    const double elapsed = std::chrono::duration<double>(now - t0_).count();
    const bool last = step >= total_;
    if (!tty_) {
      const double since = std::chrono::duration<double>(now - last_print_).count();
      if (printed_ && !last && since < plain_interval_s_) return;
    } else if (printed_ && !last && std::chrono::duration<double>(now - last_print_).count() < 0.1) {
      return;
    }
    last_print_ = now;
    printed_ = true;
    const int64_t done = step - start_;
    const double rate = elapsed > 0 ? done / elapsed : 0.0;
    double eta = rate > 0 ? (total_ - step) / rate : NAN;
    if (time_limit_s_ > 0) {
      const double left = std::max(0.0, time_limit_s_ - elapsed);
      eta = std::isnan(eta) ? left : std::min(eta, left);
    }
    std::string line;
    if (!label_.empty()) line += label_ + " ";
    char buf[160];
    if (tty_) {
      const int width = 30;
      const double frac = total_ > 0 ? std::min(1.0, std::max(0.0, double(step) / double(total_))) : 1.0;
      const int fill = static_cast<int>(frac * width);
      line += "[";
      for (int i = 0; i < width; ++i) line += i < fill ? '=' : (i == fill ? '>' : ' ');
      line += "] ";
    }
    std::snprintf(buf, sizeof buf, "%lld/%lld %3d%%", static_cast<long long>(step),
                  static_cast<long long>(total_),
                  total_ > 0 ? static_cast<int>(100.0 * step / total_) : 100);
    line += buf;
    if (loss >= 0) {
      std::snprintf(buf, sizeof buf, " loss %.4f", loss);
      line += buf;
    }
    if (images_per_s >= 0) {
      std::snprintf(buf, sizeof buf, " %.1f img/s", images_per_s);
      line += buf;
    }
    line += " elapsed " + format_duration(elapsed);
    if (!last) line += " ETA " + format_duration(eta);
    if (tty_) {
      std::fprintf(out_, "\r%s\x1b[K", line.c_str());
      if (last) std::fputc('\n', out_);
    } else {
      std::fprintf(out_, "%s\n", line.c_str());
    }
    std::fflush(out_);
  }

  /// Ends the bar's line on a terminal (before printing other messages).
  void finish() {
    if (tty_ && printed_) {
      std::fputc('\n', out_);
      std::fflush(out_);
      printed_ = false;
    }
  }

  /// Prints a message on its own line without garbling the bar.
  void message(const std::string& text) {
    if (tty_ && printed_) std::fprintf(out_, "\r\x1b[K");
    std::fprintf(out_, "%s\n", text.c_str());
    std::fflush(out_);
    if (tty_) printed_ = false;
  }

 private:
  using Clock = std::chrono::steady_clock;
  int64_t total_, start_;
  std::string label_;
  FILE* out_;
  bool tty_;
  double plain_interval_s_;
  double time_limit_s_ = 0.0;
  Clock::time_point t0_;
  Clock::time_point last_print_{};
  bool printed_ = false;
};

/// A log that writes each message through `bar` while one is drawn (`bar` non-null: above it,
/// without garbling it), else as a line on stderr. `bar` is read at every call.
inline std::function<void(const std::string&)> log_to_stderr_or(ProgressBar* const& bar) {
  return [&bar](const std::string& s) {
    if (bar != nullptr) {
      bar->message(s);
    } else {
      std::fprintf(stderr, "%s\n", s.c_str());
    }
  };
}

}  // namespace ddpm
