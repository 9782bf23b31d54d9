// Training config (examples/configs/*.json): parse, validate, resolve an inline model config.
#include "fuzz_util.hpp"

#include <ddpm/detail/json_util.hpp>
#include <ddpm/train/config.hpp>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  ddpm_fuzz::expect_only_ddpm_errors([&] {
    const std::string text(reinterpret_cast<const char*>(data), size);
    const ddpm::TrainConfig c = ddpm::detail::parse_json(text, "training config").get<ddpm::TrainConfig>();
    if (c.model.is_object()) (void)ddpm::resolve_model_config(c.model);
    (void)ddpm::scheduler_config_of(c);
  });
  return 0;
}
