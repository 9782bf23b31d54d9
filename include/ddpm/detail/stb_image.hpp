#pragma once
/// stb_image (Debian's libstb-dev), compiled into the including translation unit with static
/// linkage (like stb_image_write in <ddpm/io/png.hpp>), once, for every ddpm header that
/// decodes images: <ddpm/data/folder.hpp> (PNG, JPEG, BMP) and <ddpm/eval/sample_io.hpp>
/// (PNG). DDPM_HAS_STB_IMAGE is 1 when <stb/stb_image.h> exists and 0 otherwise (the
/// includers then say what to install).
#if __has_include(<stb/stb_image.h>)
#if defined(STBI_INCLUDE_STB_IMAGE_H)
#error "ddpm's headers that decode images (<ddpm/data/folder.hpp>, included by <ddpm/data/registry.hpp> and <ddpm/train/trainer.hpp>, and <ddpm/eval/sample_io.hpp>) must be included before any other inclusion of stb_image.h"
#endif
#define DDPM_STB_IMAGE_INCLUDED 1
#define DDPM_HAS_STB_IMAGE 1
#if defined(__GNUC__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-function"
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"
#pragma GCC diagnostic ignored "-Wsign-compare"
#pragma GCC diagnostic ignored "-Wunused-parameter"
#pragma GCC diagnostic ignored "-Wunused-but-set-variable"
#pragma GCC diagnostic ignored "-Wimplicit-fallthrough"
#pragma GCC diagnostic ignored "-Wshadow"
#if !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#endif
#define STB_IMAGE_STATIC
#define STB_IMAGE_IMPLEMENTATION
#define STBI_ONLY_PNG
#define STBI_ONLY_JPEG
#define STBI_ONLY_BMP
#include <stb/stb_image.h>
#undef STB_IMAGE_IMPLEMENTATION
#if defined(__GNUC__)
#pragma GCC diagnostic pop
#endif
#else
#define DDPM_HAS_STB_IMAGE 0
#endif
