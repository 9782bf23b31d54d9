// A .safetensors file: header length, JSON header, dtypes, shapes, offsets, then the tensors.
#include "fuzz_util.hpp"

#include <ddpm/io/safetensors.hpp>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string& path = ddpm_fuzz::scratch_path(".safetensors");
  ddpm_fuzz::write_file(path, data, size);
  ddpm_fuzz::expect_only_ddpm_errors([&] { (void)ddpm::load_safetensors_file(path); });
  return 0;
}
