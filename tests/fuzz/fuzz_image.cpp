// An image of a folder data set (PNG, JPEG or BMP through stb_image), with the pixel limit.
#include "fuzz_util.hpp"

#include <ddpm/data/folder.hpp>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  ddpm_fuzz::expect_only_ddpm_errors([&] { (void)ddpm::detail::decode_image_bytes(data, size); });
  return 0;
}
