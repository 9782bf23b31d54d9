#pragma once
/// ddpm's version; kept equal to `project(ddpm VERSION ...)` in CMakeLists.txt
/// (the test suite checks that they agree).
#define DDPM_VERSION_MAJOR 0
#define DDPM_VERSION_MINOR 1
#define DDPM_VERSION_PATCH 0
#define DDPM_VERSION_STRING "0.1.0"

namespace ddpm {
/// The library version as "MAJOR.MINOR.PATCH".
inline constexpr const char* version() { return DDPM_VERSION_STRING; }
}  // namespace ddpm
