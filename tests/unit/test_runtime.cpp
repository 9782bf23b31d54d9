#include <ddpm/runtime.hpp>

#include <catch2/catch.hpp>
#include <torch/torch.h>

#include <cstdlib>

namespace {
using GetFn = int (*)();
int openblas_threads() {
  void* sym = dlsym(RTLD_DEFAULT, "openblas_get_num_threads");
  return sym ? reinterpret_cast<GetFn>(sym)() : -1;
}
}  // namespace

TEST_CASE("set_num_threads sets LibTorch's and OpenBLAS's pools", "[runtime]") {
  const int before = at::get_num_threads();
  ddpm::set_num_threads(1);
  CHECK(at::get_num_threads() == 1);
  if (openblas_threads() > 0) {  // Debian's LibTorch links OpenBLAS
    CHECK(openblas_threads() == 1);
    ddpm::set_num_threads(2, 1);
    CHECK(at::get_num_threads() == 2);
    CHECK(openblas_threads() == 1);
    CHECK(ddpm::blas_info().rfind("OpenBLAS ", 0) == 0);
  } else {
    CHECK_FALSE(ddpm::set_blas_num_threads(1));
    CHECK(ddpm::blas_info() == "unknown");
  }
  ddpm::set_num_threads(before);
  CHECK(at::get_num_threads() == before);
}

TEST_CASE("recommended_cpu_env asks for passive OpenMP waiting", "[runtime]") {
  const auto env = ddpm::recommended_cpu_env();
  REQUIRE(env.size() == 1);
  CHECK(env[0].first == "OMP_WAIT_POLICY");
  CHECK(env[0].second == "PASSIVE");
}

TEST_CASE("reexec_with_env does not restart when nothing changes", "[runtime]") {
  char prog[] = "ddpm_tests";
  char* argv[] = {prog, nullptr};
  setenv("DDPM_TEST_RUNTIME_SET", "mine", 1);
  // Already set: kept as is, no restart.
  CHECK_FALSE(ddpm::reexec_with_env(argv, {{"DDPM_TEST_RUNTIME_SET", "other"}}));
  CHECK(std::string(std::getenv("DDPM_TEST_RUNTIME_SET")) == "mine");
  // DDPM_NO_REEXEC: no restart, and the environment is left untouched.
  unsetenv("DDPM_TEST_RUNTIME_UNSET");
  setenv("DDPM_NO_REEXEC", "1", 1);
  CHECK_FALSE(ddpm::reexec_with_env(argv, {{"DDPM_TEST_RUNTIME_UNSET", "x"}}));
  CHECK(std::getenv("DDPM_TEST_RUNTIME_UNSET") == nullptr);
  unsetenv("DDPM_NO_REEXEC");
  unsetenv("DDPM_TEST_RUNTIME_SET");
}
