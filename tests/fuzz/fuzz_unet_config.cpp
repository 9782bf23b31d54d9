// UNet config.json (diffusers UNet2DModel form): parse and validate; build the network when the
// options describe a small one (a few hundred thousand parameters), to reach the constructors too.
#include "fuzz_util.hpp"

#include <ddpm/detail/json_util.hpp>
#include <ddpm/nn/unet.hpp>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  ddpm_fuzz::expect_only_ddpm_errors([&] {
    const std::string text(reinterpret_cast<const char*>(data), size);
    const ddpm::UNetOptions o = ddpm::unet_options_from_json(ddpm::detail::parse_json(text, "UNet config"), "UNet config");
    if (ddpm::detail::estimated_unet_parameters(o) < 3e5 && o.sample_size() <= 64) {
      ddpm::UNet net(o);
      (void)net;
    }
  });
  return 0;
}
