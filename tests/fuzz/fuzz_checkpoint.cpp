// A training checkpoint as `sample --checkpoint FILE` reads it. An input starting with the magic
// "DDPMCKPT" is the whole file; any other input is the archive, wrapped in a valid header with
// its CRC-32 (so the fuzzer spends its time past the integrity check).
//
// By default the harness stops where ddpm hands the archive to LibTorch: it runs the integrity
// check and the archive check (detail::check_zip_archive), ddpm's own parsing. LibTorch's reader
// behind it compiles the TorchScript source and unpickles the pickles an archive holds, and it is
// not hardened: within a minute or two the fuzzer crashes it (SEGV in
// torch::jit::ScriptTypeParser::parseClassConstant, LibTorch 1.13; the input is in
// tests/fuzz/libtorch-crashes/). So checkpoints are trusted files (docs/reliability.md). With
// DDPM_FUZZ_LIBTORCH=1 the harness goes on through load_training_checkpoint, LibTorch included.
#include "fuzz_util.hpp"

#include <ddpm/detail/zip_archive.hpp>
#include <ddpm/train/checkpoint.hpp>

#include <cstdlib>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const bool through_libtorch = [] {
    const char* v = std::getenv("DDPM_FUZZ_LIBTORCH");
    return v != nullptr && std::string(v) == "1";
  }();
  const std::string& path = ddpm_fuzz::scratch_path("-ckpt.pt");
  if (size >= 8 && std::memcmp(data, ddpm::detail::kCheckpointMagic, 8) == 0) {
    ddpm_fuzz::write_file(path, data, size);
  } else {
    std::vector<uint8_t> file;
    file.insert(file.end(), ddpm::detail::kCheckpointMagic, ddpm::detail::kCheckpointMagic + 8);
    ddpm::detail::put_le(file, ddpm::detail::kCheckpointVersion, 4);
    ddpm::detail::put_le(file, size, 8);
    ddpm::detail::put_le(file, ddpm::detail::crc32_of(data, size), 4);
    file.insert(file.end(), data, data + size);
    ddpm_fuzz::write_file(path, file.data(), file.size());
  }
  ddpm_fuzz::expect_only_ddpm_errors([&] {
    if (through_libtorch) {
      (void)ddpm::load_training_checkpoint(path);
    } else {
      const std::vector<uint8_t> payload = ddpm::detail::read_verified_checkpoint_payload(path);
      (void)ddpm::detail::check_zip_archive(payload.data(), payload.size(), "checkpoint '" + path + "'");
    }
  });
  return 0;
}
