// scheduler_config.json (diffusers form, Python's NaN/Infinity literals allowed): parse, build the
// sampler it names, then set its timesteps for a step count taken from the first input byte.
#include "fuzz_util.hpp"

#include <ddpm/sampler.hpp>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  ddpm_fuzz::expect_only_ddpm_errors([&] {
    const int64_t steps = size > 0 ? 1 + data[0] % 64 : 1;
    const std::string text(reinterpret_cast<const char*>(data), size);
    const nlohmann::json j = ddpm::detail::parse_json(ddpm::detail::quote_nonfinite_literals(text), "scheduler config");
    ddpm::AnySampler s = ddpm::make_sampler(j);
    s.set_timesteps(steps);
  });
  return 0;
}
