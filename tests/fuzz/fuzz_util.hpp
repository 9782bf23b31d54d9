#pragma once
// Shared by the libFuzzer harnesses of tests/fuzz (see README.md there).
// Each harness feeds one input to one ddpm parser through its public entry point. The parser may
// refuse the input only with ddpm::Error (the exception funnel of docs/reliability.md): any other
// exception escaping it is a finding, and so is a crash, a sanitizer report, a leak, a timeout or
// an allocation above libFuzzer's -malloc_limit_mb.
#include <ddpm/error.hpp>

#include <c10/util/Exception.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <string>
#include <typeinfo>
#include <unistd.h>

namespace ddpm_fuzz {

/// A file of this process's own under $TMPDIR (default /tmp), for parsers that read paths.
inline const std::string& scratch_path(const char* suffix) {
  static std::string path = [&] {
    const char* dir = std::getenv("TMPDIR");
    return std::string(dir && *dir ? dir : "/tmp") + "/ddpm-fuzz-" + std::to_string(::getpid()) + suffix;
  }();
  return path;
}

/// Writes `data` to `path` (whole file); aborts if it cannot (not a finding about ddpm).
inline void write_file(const std::string& path, const uint8_t* data, size_t size) {
  FILE* f = std::fopen(path.c_str(), "wb");
  if (f == nullptr || (size > 0 && std::fwrite(data, 1, size, f) != size) || std::fclose(f) != 0) {
    std::fprintf(stderr, "fuzz harness: cannot write %s\n", path.c_str());
    std::abort();
  }
}

/// Runs `fn`; a ddpm::Error is the expected refusal of bad input, anything else aborts.
template <typename F>
void expect_only_ddpm_errors(F&& fn) {
  try {
    fn();
  } catch (const ddpm::Error&) {
  } catch (const c10::Error& e) {
    std::fprintf(stderr, "escaped the ddpm::Error funnel: c10::Error: %s\n", e.what_without_backtrace());
    std::abort();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "escaped the ddpm::Error funnel: %s: %s\n", typeid(e).name(), e.what());
    std::abort();
  } catch (...) {
    std::fprintf(stderr, "escaped the ddpm::Error funnel: a non-standard exception\n");
    std::abort();
  }
}

}  // namespace ddpm_fuzz
