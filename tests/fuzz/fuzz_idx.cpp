// An IDX file (MNIST layout), plain or gzip-compressed (read through zlib either way).
#include "fuzz_util.hpp"

#include <ddpm/data/idx.hpp>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string& path = ddpm_fuzz::scratch_path("-idx3-ubyte.gz");
  ddpm_fuzz::write_file(path, data, size);
  ddpm_fuzz::expect_only_ddpm_errors([&] { (void)ddpm::read_idx(path); });
  return 0;
}
