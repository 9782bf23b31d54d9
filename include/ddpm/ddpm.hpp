#pragma once
/// Umbrella header: everything in ddpm except the optional headers that need
/// extra packages (ddpm/distributed.hpp: c10d + Gloo; ddpm/io/png.hpp: stb).
#include <ddpm/version.hpp>
#include <ddpm/error.hpp>
