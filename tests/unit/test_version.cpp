#include <ddpm/ddpm.hpp>

#include <catch2/catch.hpp>

#include <string>

TEST_CASE("version.hpp agrees with the CMake project version", "[version]") {
  CHECK(std::string(ddpm::version()) == DDPM_CMAKE_VERSION);
  CHECK(std::to_string(DDPM_VERSION_MAJOR) + "." + std::to_string(DDPM_VERSION_MINOR) + "." +
            std::to_string(DDPM_VERSION_PATCH) ==
        DDPM_CMAKE_VERSION);
}
