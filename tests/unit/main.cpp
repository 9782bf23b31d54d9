// The Catch2 runner for ddpm_tests. Compiled without the precompiled header,
// because CATCH_CONFIG_MAIN must be defined before catch.hpp is first included.
#define CATCH_CONFIG_MAIN
#include <catch2/catch.hpp>
