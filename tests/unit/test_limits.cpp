// Hostile and broken inputs (issue 17's classes): JSON nested deep enough to overflow a
// recursive dump, numbers out of every range ("1e400"), tiny configs that describe runaway
// allocations (a 1e9-step schedule, a ~160 GB UNet), and sizes whose arithmetic would overflow
// (a huge steps_offset). Each must become a ddpm::Error / c10::Error naming the file, key, value
// and limit, before anything large is allocated.
#include <ddpm/data/idx.hpp>
#include <ddpm/detail/json_util.hpp>
#include <ddpm/io/safetensors.hpp>
#include <ddpm/nn/unet.hpp>
#include <ddpm/sampler.hpp>
#include <ddpm/schedule.hpp>

#include <zlib.h>

#include <cstdint>
#include <fstream>
#include <functional>
#include <string>
#include <vector>

#include "test_util.hpp"

namespace {

std::string nested(int depth) { return std::string(static_cast<size_t>(depth), '[') + std::string(static_cast<size_t>(depth), ']'); }

void write_text(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary);
  out << text;
}

using ddpm_test::error_of;

}  // namespace

TEST_CASE("limits: JSON nesting is bounded and number overflow names the file", "[limits]") {
  ddpm_test::TempDir dir("limits_json");
  // 64 levels parse; 65 are refused (100000 would overflow the stack of a recursive dump()).
  CHECK(ddpm::detail::parse_json(nested(64), "t").is_array());
  CHECK_THROWS_WITH(ddpm::detail::parse_json(nested(65), "ctx"),
                    Catch::Contains("ctx: arrays/objects nested deeper than 64 levels"));
  const std::string deep = dir.file("deep.json");
  write_text(deep, "{\"a\": " + nested(100000) + "}");
  CHECK_THROWS_WITH(ddpm::detail::read_json_file(deep), Catch::Contains(deep) && Catch::Contains("deeper than 64"));
  CHECK_THROWS_WITH(ddpm::read_scheduler_config(deep), Catch::Contains(deep) && Catch::Contains("deeper than 64"));
  CHECK_THROWS_WITH(ddpm::load_unet_config(deep), Catch::Contains(deep) && Catch::Contains("deeper than 64"));
  // nlohmann's out_of_range for 1e400 becomes a ddpm::Error naming the file.
  const std::string big = dir.file("big.json");
  write_text(big, "{\"num_train_timesteps\": 1e400}");
  CHECK_THROWS_AS(ddpm::detail::read_json_file(big), ddpm::Error);
  CHECK_THROWS_WITH(ddpm::detail::read_json_file(big), Catch::Contains(big) && Catch::Contains("1e400"));
  CHECK_THROWS_AS(ddpm::read_scheduler_config(big), ddpm::Error);
  // A safetensors header nested too deep.
  const std::string header = "{\"t\": " + nested(1000) + "}";
  std::string file(8, '\0');
  for (int i = 0; i < 8; ++i) file[static_cast<size_t>(i)] = static_cast<char>((header.size() >> (8 * i)) & 0xff);
  write_text(dir.file("deep.safetensors"), file + header);
  CHECK_THROWS_WITH(ddpm::load_safetensors_file(dir.file("deep.safetensors")),
                    Catch::Contains("deep.safetensors") && Catch::Contains("deeper than 64"));
  // Error messages quote values cut short, never a whole hostile value.
  const std::string msg = error_of([] { (void)ddpm::make_sampler(nlohmann::json::array({std::string(100000, 'x')})); });
  CHECK_THAT(msg, Catch::Contains("must be a JSON object"));
  CHECK(msg.size() < 300);
}

TEST_CASE("limits: a config cannot describe a runaway allocation", "[limits]") {
  ddpm::NoiseScheduleOptions huge;
  huge.num_train_timesteps(1000000000);
  CHECK_THROWS_WITH(ddpm::NoiseSchedule(huge),
                    Catch::Contains("num_train_timesteps = 1000000000 exceeds the limit 100000"));
  CHECK_THROWS_WITH(ddpm::make_sampler(nlohmann::json{{"num_train_timesteps", 1e9}}, "ddim"),
                    Catch::Contains("exceeds the limit 100000"));
  CHECK_NOTHROW(ddpm::NoiseSchedule(ddpm::NoiseScheduleOptions().num_train_timesteps(4000)));

  auto unet_error = [](nlohmann::json j) {
    return error_of([&] { (void)ddpm::unet_options_from_json(j, "cfg.json"); });
  };
  const nlohmann::json base = {{"block_out_channels", {32, 64}},
                               {"down_block_types", {"DownBlock2D", "DownBlock2D"}},
                               {"up_block_types", {"UpBlock2D", "UpBlock2D"}},
                               {"norm_num_groups", 8}};
  CHECK(unet_error(base).empty());
  auto with = [&](const char* key, const nlohmann::json& v) {
    nlohmann::json j = base;
    j[key] = v;
    return j;
  };
  // A few hundred bytes asking for ~160 GB: refused with the estimate, before any weight exists.
  CHECK_THAT(unet_error(with("block_out_channels", {8192, 16384})),
             Catch::Contains("cfg.json: the UNet would have about") && Catch::Contains("above the limit 2e+09"));
  CHECK_THAT(unet_error(with("block_out_channels", {32, 1000000})),
             Catch::Contains("block_out_channels entry = 1000000 exceeds the limit 16384"));
  CHECK_THAT(unet_error(with("layers_per_block", 100000)), Catch::Contains("layers_per_block = 100000 exceeds the limit 64"));
  CHECK_THAT(unet_error(with("in_channels", 1 << 20)), Catch::Contains("in_channels = 1048576 exceeds the limit 1024"));
  CHECK_THAT(unet_error(with("num_class_embeds", 1e9)), Catch::Contains("num_class_embeds = 1000000000 exceeds the limit"));
  // Integers: no float-to-integer casts of 1e300, no wrap-around of 2^64 - 1.
  CHECK_THAT(unet_error(with("block_out_channels", {32, 1e300})),
             Catch::Contains("bad value for \"block_out_channels\"") && Catch::Contains("must be an integer"));
  CHECK_THAT(unet_error(with("layers_per_block", 18446744073709551615ull)), Catch::Contains("must be an integer in"));
  CHECK_THAT(unet_error(with("sample_size", 2.5)), Catch::Contains("sample_size") && Catch::Contains("expected an integer"));
  CHECK_THAT(unet_error(with("sample_size", 1e300)), Catch::Contains("sample_size") && Catch::Contains("expected an integer"));
}

TEST_CASE("limits: a huge steps_offset is refused before the timestep arithmetic", "[limits]") {
  const int64_t huge = INT64_MAX - 5;  // i * ratio + huge would overflow int64
  for (const char* name : {"ddim", "ddpm", "dpmpp_2m", "euler", "unipc"}) {
    INFO(name);
    auto s = ddpm::make_sampler(
        nlohmann::json{{"steps_offset", huge}, {"timestep_spacing", "leading"}, {"num_train_timesteps", 1000}}, name);
    CHECK_THROWS_WITH(s.set_timesteps(10), Catch::Contains("steps_offset must be in [0, num_train_timesteps = 1000)"));
  }
  // The usual offsets still work; other spacings ignore the offset, as diffusers does.
  auto ok = ddpm::make_sampler(nlohmann::json{{"steps_offset", 1}, {"timestep_spacing", "leading"}}, "ddim");
  CHECK_NOTHROW(ok.set_timesteps(10));
  auto trailing = ddpm::make_sampler(nlohmann::json{{"steps_offset", huge}, {"timestep_spacing", "trailing"}}, "ddim");
  CHECK_NOTHROW(trailing.set_timesteps(10));
}

TEST_CASE("limits: an IDX header cannot overflow its element count or inflate a gzip bomb", "[limits][data]") {
  ddpm_test::TempDir dir("limits_idx");
  // 4 dimensions of 2^28: the product (2^112) used to wrap to 0 and pass the size check.
  std::string wrap = {0, 0, 8, 4};
  for (int d = 0; d < 4; ++d) wrap += std::string{0x10, 0, 0, 0};
  write_text(dir.file("wrap-idx"), wrap);
  CHECK_THROWS_WITH(ddpm::read_idx(dir.file("wrap-idx")),
                    Catch::Contains("wrap-idx") && Catch::Contains("announces more than 4 GiB of data"));
  // A gzip file announcing 10 bytes, followed by 64 MiB of zeros: reading stops at 11 bytes.
  const std::string bomb = dir.file("bomb-idx.gz");
  gzFile f = gzopen(bomb.c_str(), "wb9");
  REQUIRE(f != nullptr);
  const char header[8] = {0, 0, 8, 1, 0, 0, 0, 10};
  gzwrite(f, header, 8);
  const std::vector<char> zeros(1 << 20, 0);
  for (int i = 0; i < 64; ++i) gzwrite(f, zeros.data(), static_cast<unsigned>(zeros.size()));
  gzclose(f);
  CHECK_THROWS_WITH(ddpm::read_idx(bomb), Catch::Contains("bomb-idx.gz") && Catch::Contains("1 unexpected trailing bytes") &&
                                              Catch::Contains("byte offset 18"));
  CHECK(ddpm::detail::read_file_bytes(bomb, 20).size() == 20);
}
