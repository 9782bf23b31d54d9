// The config field lists (detail/fields.hpp): TrainConfig and UNetOptions JSON derived from
// one declaration, strict keys, ranges and choices, and the docs table naming every key.
#include <ddpm/nn/unet.hpp>
#include <ddpm/train/config.hpp>

#include <fstream>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "test_util.hpp"

TEST_CASE("TrainConfig: every declared key is read, written and documented", "[train][config]") {
  const auto keys = ddpm::detail::field_keys<ddpm::TrainConfig>();
  CHECK(keys.size() == 49);
  CHECK(std::set<std::string>(keys.begin(), keys.end()).size() == keys.size());
  const nlohmann::json defaults = ddpm::TrainConfig{};
  CHECK(defaults.size() == keys.size());
  for (const auto& k : keys) CHECK(defaults.contains(k));
  CHECK(defaults.at("dataset") == "auto");
  CHECK(defaults.at("lr") == 2e-4);
  CHECK(defaults.at("device") == "auto");

  // Every non-default value survives a round trip.
  ddpm::TrainConfig c;
  c.dataset = "mnist";
  c.data_dir = "/d";
  c.image_size = 28;
  c.random_flip = false;
  c.prefetch = 0;
  c.model = "ddpm-cifar10";
  c.steps = 7;
  c.time_limit_minutes = 1.5;
  c.seed = 1ull << 40;
  c.device = ddpm::DeviceKind::Cpu;
  c.mixed_precision = ddpm::MixedPrecision::BF16;
  c.sampler = "dpm++";
  c.keep_checkpoints = 9;
  c.loader_threads = 7;
  c.color_mode = ddpm::ColorMode::Grayscale;
  c.folder_labels = ddpm::FolderLabels::None;
  c.folder_crop = ddpm::CropMode::Random;
  c.on_bad_image = ddpm::BadImagePolicy::Skip;
  c.guidance_interval_min = 0.08;
  c.guidance_interval_max = 0.58;
  const nlohmann::json j = c;
  const auto back = j.get<ddpm::TrainConfig>();
  CHECK(nlohmann::json(back) == j);
  CHECK(back.seed == (1ull << 40));
  CHECK(back.mixed_precision == ddpm::MixedPrecision::BF16);
  CHECK(j.at("time_limit_minutes") == 1.5);
  CHECK(j.at("color_mode") == "grayscale");
  CHECK(j.at("folder_labels") == "none");
  CHECK(j.at("folder_crop") == "random");
  CHECK(j.at("on_bad_image") == "skip");
  CHECK(back.on_bad_image == ddpm::BadImagePolicy::Skip);
  CHECK(back.loader_threads == 7);
  CHECK(back.guidance_interval_min == 0.08);
  CHECK(back.guidance_interval_max == 0.58);
  CHECK(defaults.at("guidance_interval_min") == 0.0);
  CHECK(defaults.at("guidance_interval_max") == 1.0);

  // A null value keeps the default; a partial object fills in the rest.
  const auto partial = nlohmann::json({{"steps", 5}, {"lr", nullptr}}).get<ddpm::TrainConfig>();
  CHECK(partial.steps == 5);
  CHECK(partial.lr == 2e-4);

  // docs/training.md's key table has a row for every key (and no row for a key that is gone).
  std::ifstream doc(std::string(DDPM_TEST_DATA_DIR) + "/../../docs/training.md");
  REQUIRE(doc);
  std::stringstream ss;
  ss << doc.rdbuf();
  const std::string text = ss.str();
  for (const auto& k : keys) {
    INFO("key " << k);
    CHECK(text.find("| `" + k + "` |") != std::string::npos);
  }
}

TEST_CASE("TrainConfig: ranges and choices come from the field list, errors name key and value",
          "[train][config]") {
  auto err = [](const nlohmann::json& j) {
    try {
      (void)j.get<ddpm::TrainConfig>();
    } catch (const ddpm::Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  CHECK(err({{"lr", -1}}) == "ddpm: training config: \"lr\" must be > 0, got -1");
  CHECK(err({{"steps", -5}}) == "ddpm: training config: \"steps\" must be in [0, 1e+12], got -5");
  CHECK(err({{"ema_decay", 1.5}}) == "ddpm: training config: \"ema_decay\" must be in [0, 1], got 1.5");
  CHECK(err({{"adam_beta2", -0.1}}) == "ddpm: training config: \"adam_beta2\" must be in [0, 1], got -0.1");
  CHECK(err({{"image_size", 2}}) == "ddpm: training config: \"image_size\" must be in [4, 16384], got 2");
  CHECK_THAT(err({{"dataset", "imagenet"}}),
             Catch::Contains("\"dataset\" must be one of \"auto\", \"cifar10\"") && Catch::Contains("got \"imagenet\""));
  CHECK_THAT(err({{"sampler", "bogus"}}), Catch::Contains("\"sampler\" must be one of \"ddpm\", \"ddim\", \"dpm++\""));
  CHECK_THAT(err({{"eval_sampler", "bogus"}}), Catch::Contains("\"eval_sampler\" must be one of \"\", \"ddpm\""));
  CHECK(err({{"eval_sampler", "euler"}}) == "no error");
  CHECK(err({{"eval_every", -1}}) == "ddpm: training config: \"eval_every\" must be in [0, 1e+12], got -1");
  CHECK_THAT(err({{"device", "tpu"}}), Catch::Contains("\"device\"") && Catch::Contains("\"auto\", \"cpu\", \"cuda\""));
  CHECK_THAT(err({{"learning_rate", 1}}),
             Catch::Contains("unknown key \"learning_rate\"") && Catch::Contains("known keys: dataset, data_dir"));
  CHECK_THAT(err({{"steps", "many"}}), Catch::Contains("bad value for \"steps\": \"many\""));
  // Integers are never truncated, saturated or wrapped: a fraction, a huge float and a value
  // beyond int64 are errors naming the key and the value; a float with an integral value is read.
  CHECK_THAT(err({{"steps", 2.7}}), Catch::Contains("bad value for \"steps\": 2.7 (must be an integer in"));
  CHECK_THAT(err({{"steps", 1e300}}), Catch::Contains("bad value for \"steps\": 1e+300 (must be an integer in"));
  CHECK_THAT(err({{"steps", 18446744073709551615ull}}),
             Catch::Contains("bad value for \"steps\": 18446744073709551615 (must be an integer in"));
  CHECK(err({{"steps", 1e13}}) == "ddpm: training config: \"steps\" must be in [0, 1e+12], got 1e+13");
  CHECK(nlohmann::json({{"steps", 3.0}}).get<ddpm::TrainConfig>().steps == 3);
  CHECK_THAT(err({{"seed", -1}}), Catch::Contains("bad value for \"seed\": -1 (must be an integer in [0, 18446744073709551615]"));
  CHECK_THAT(err({{"batch_size", 100000}}), Catch::Contains("\"batch_size\" must be in [1, 65536], got 100000"));
  CHECK_THAT(err({{"time_limit_minutes", 1e300}}), Catch::Contains("\"time_limit_minutes\" must be in [0, 1e+07]"));
  CHECK_THAT(err({{"model", 3}}), Catch::Contains("\"model\" must be a preset name"));
  CHECK(err({{"guidance_interval_max", 1.2}}) ==
        "ddpm: training config: \"guidance_interval_max\" must be in [0, 1], got 1.2");
  CHECK(err({{"guidance_interval_min", 0.6}, {"guidance_interval_max", 0.3}}) ==
        "ddpm: training config: \"guidance_interval_min\" 0.6 is above \"guidance_interval_max\" 0.3");
  CHECK_THAT(err(nlohmann::json::array()), Catch::Contains("must be a JSON object"));
  // validate() applies the same ranges to a config built in code.
  ddpm::TrainConfig c;
  c.batch_size = 0;
  CHECK_THROWS_WITH(ddpm::validate(c), "ddpm: training config: \"batch_size\" must be in [1, 65536], got 0");
  // Flags are derived from the keys unless a field names its own.
  std::vector<std::string> flags;
  ddpm::detail::for_each_field(c, [&](const ddpm::detail::FieldSpec& s, const auto&, const auto&) {
    flags.push_back(ddpm::detail::flag_name(s));
  });
  const std::set<std::string> fs(flags.begin(), flags.end());
  for (const char* f : {"data", "out", "time-limit", "threads", "batch-size", "adam-beta1", "keep-checkpoints"}) {
    CHECK(fs.count(f) == 1);
  }
  CHECK(fs.count("") == 1);  // schedule and objective (JSON objects) have no flag
}

TEST_CASE("UNetOptions JSON from its field list: diffusers forms of null, integers and sample_size",
          "[train][config][unet]") {
  const auto keys = ddpm::detail::field_keys<ddpm::UNetOptions>();
  const nlohmann::json j = ddpm::UNetOptions::ddpm_cifar10();
  CHECK(j.size() == keys.size() + 2);  // + _class_name, _diffusers_version
  CHECK(j.at("_class_name") == "UNet2DModel");
  CHECK(j.at("freq_shift").is_number_integer());  // 1, as diffusers writes it
  CHECK(j.at("freq_shift") == 1);
  CHECK(j.at("norm_eps") == 1e-6);
  CHECK(j.at("attention_head_dim").is_null());
  CHECK(j.at("sample_size") == 32);
  CHECK(nlohmann::json(ddpm::UNetOptions().sample_size(0)).at("sample_size").is_null());

  // null means "none" for optional keys; an absent key keeps diffusers' default.
  auto o = ddpm::unet_options_from_json({{"attention_head_dim", nullptr}}, "t");
  CHECK_FALSE(o.attention_head_dim().has_value());
  o = ddpm::unet_options_from_json(nlohmann::json::object(), "t");
  CHECK(o.attention_head_dim() == c10::optional<int64_t>(8));
  o = ddpm::unet_options_from_json({{"sample_size", {64, 64}}}, "t");
  CHECK(o.sample_size() == 64);
  CHECK_THROWS_WITH(ddpm::unet_options_from_json({{"sample_size", {64, 32}}}, "cfg.json"),
                    Catch::Contains("cfg.json: bad value for \"sample_size\"") && Catch::Contains("square"));
  CHECK_THROWS_WITH(ddpm::unet_options_from_json({{"layers", 2}}, "cfg.json"),
                    Catch::Contains("cfg.json: unknown key \"layers\""));
  const auto back = ddpm::unet_options_from_json(j, "t");
  CHECK(nlohmann::json(back) == j);
}
