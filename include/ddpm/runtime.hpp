#pragma once
/// CPU runtime settings that decide whether LibTorch reaches the machine's speed.
///
/// LibTorch on Debian runs convolutions on oneDNN with OpenMP threads and matrix products on
/// OpenBLAS with its OWN thread pool. Both pools busy-wait after each call, so on a small machine
/// they steal the cores from each other (and from any other process): measured on a 2-core
/// machine, a batch-1 ddpm_cifar10 forward took 2.3 s with the defaults and 0.1 s with
/// OMP_WAIT_POLICY=PASSIVE (docs/performance.md). OpenMP and OpenBLAS read these settings only
/// at process start, so they must be in the environment before the program runs:
/// reexec_with_env() does that for a program that opts in.
#include <ATen/Parallel.h>

#include <cstdlib>
#include <string>
#include <utility>
#include <vector>

#if defined(__linux__)
#include <dlfcn.h>
#include <unistd.h>
#endif

namespace ddpm {

namespace detail {

/// Address of `name` in the already loaded libraries (nullptr if absent or not on Linux).
inline void* find_symbol(const char* name) {
#if defined(__linux__)
  return dlsym(RTLD_DEFAULT, name);
#else
  (void)name;
  return nullptr;
#endif
}

}  // namespace detail

/// Sets OpenBLAS's own thread pool to n threads; false if this process does not use OpenBLAS.
inline bool set_blas_num_threads(int n) {
  using SetFn = void (*)(int);
  void* sym = detail::find_symbol("openblas_set_num_threads");
  if (sym == nullptr || n < 1) return false;
  reinterpret_cast<SetFn>(sym)(n);
  return true;
}

/// Sets LibTorch's intra-op threads (LibTorch 1.13 defaults to half the cores) and OpenBLAS's
/// pool to n. blas_threads >= 1 gives OpenBLAS a different count.
inline void set_num_threads(int n, int blas_threads = -1) {
  at::set_num_threads(n);
  set_blas_num_threads(blas_threads >= 1 ? blas_threads : n);
}

/// "OpenBLAS <config> core <name>" when OpenBLAS is loaded, else "unknown".
inline std::string blas_info() {
  using StrFn = char* (*)();
  void* config = detail::find_symbol("openblas_get_config");
  void* core = detail::find_symbol("openblas_get_corename");
  if (config == nullptr) return "unknown";
  std::string out = std::string("OpenBLAS ") + reinterpret_cast<StrFn>(config)();
  if (core != nullptr) out += std::string(" core ") + reinterpret_cast<StrFn>(core)();
  return out;
}

/// The environment that makes LibTorch fast on a CPU: OMP_WAIT_POLICY=PASSIVE, so OpenMP
/// workers sleep instead of spinning between parallel regions and leave the cores to OpenBLAS's
/// threads (and to other processes). (OpenBLAS picks its kernel by itself; an
/// OPENBLAS_CORETYPE the user set is left alone.)
inline std::vector<std::pair<std::string, std::string>> recommended_cpu_env() {
  return {{"OMP_WAIT_POLICY", "PASSIVE"}};
}

/// If one of `vars` is not set in the environment, sets every unset one (never overriding what
/// the user set) and re-executes this program (/proc/self/exe) with the same argv, so that the
/// OpenMP and OpenBLAS runtimes read them at start-up. Call it first thing in main(). Returns
/// false when nothing had to change, when DDPM_NO_REEXEC is set, or off Linux; returns only on
/// those paths or if the exec failed.
inline bool reexec_with_env(char** argv,
                            const std::vector<std::pair<std::string, std::string>>& vars) {
#if defined(__linux__)
  if (argv == nullptr || std::getenv("DDPM_NO_REEXEC") != nullptr) return false;
  bool changed = false;
  for (const auto& kv : vars) {
    if (std::getenv(kv.first.c_str()) == nullptr) {
      setenv(kv.first.c_str(), kv.second.c_str(), 0);
      changed = true;
    }
  }
  if (!changed) return false;
  execv("/proc/self/exe", argv);
  return false;  // exec failed: carry on in this process
#else
  (void)argv;
  (void)vars;
  return false;
#endif
}

}  // namespace ddpm
