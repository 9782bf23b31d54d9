// The progress bar's plain (non-terminal) output: counts, loss, rate and an ETA
// bounded by the run's time limit.
#include <ddpm/train/progress.hpp>

#include <catch2/catch.hpp>

#include <cstdio>
#include <cstdlib>
#include <regex>
#include <string>
#include <thread>

namespace {

/// Runs `fn(FILE*)` on an in-memory stream and returns what it wrote.
template <typename F>
std::string capture(F&& fn) {
  char* buf = nullptr;
  size_t len = 0;
  FILE* f = open_memstream(&buf, &len);
  REQUIRE(f != nullptr);
  fn(f);
  std::fclose(f);
  std::string out(buf, len);
  std::free(buf);
  return out;
}

/// Seconds of "ETA mm:ss" (or h:mm:ss) in `line`; -1 when absent.
double eta_seconds(const std::string& line) {
  std::smatch m;
  if (std::regex_search(line, m, std::regex("ETA (?:(\\d+):)?(\\d+):(\\d+)"))) {
    const double h = m[1].matched ? std::stod(m[1]) : 0.0;
    return h * 3600 + std::stod(m[2]) * 60 + std::stod(m[3]);
  }
  return -1;
}

}  // namespace

TEST_CASE("ProgressBar: plain lines carry step, percentage, loss, rate and ETA", "[train][progress]") {
  const std::string out = capture([](FILE* f) {
    ddpm::ProgressBar bar(1000, 0, "train", f, /*tty=*/0, /*plain_interval_s=*/0.0);
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    bar.update(10, 0.1234, 42.0);
    bar.update(1000, 0.05, 40.0);
  });
  INFO(out);
  const auto first = out.substr(0, out.find('\n'));
  CHECK(first.rfind("train 10/1000   1% loss 0.1234 42.0 img/s elapsed ", 0) == 0);
  // 10 steps in ~20 ms: the remaining 990 take about 2 s, certainly under a minute.
  const double eta = eta_seconds(first);
  CHECK(eta >= 0);
  CHECK(eta < 60);
  // The last line has no ETA and no terminal escape codes.
  const auto last = out.substr(first.size() + 1);
  CHECK(last.rfind("train 1000/1000 100% loss 0.0500", 0) == 0);
  CHECK(eta_seconds(last) < 0);
  CHECK(out.find('\x1b') == std::string::npos);
}

TEST_CASE("ProgressBar: a time limit caps the ETA", "[train][progress]") {
  auto eta_for = [](double limit_s) {
    const std::string out = capture([&](FILE* f) {
      ddpm::ProgressBar bar(1000000, 0, "train", f, 0, 0.0);
      bar.set_time_limit(limit_s);
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
      bar.update(1);  // 1 step in 50 ms: ~14 hours for the rest
    });
    return eta_seconds(out);
  };
  CHECK(eta_for(0.0) > 3600);  // no limit: the step-based estimate
  const double capped = eta_for(120.0);
  CHECK(capped <= 120);
  CHECK(capped >= 118);
}
