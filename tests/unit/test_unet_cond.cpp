// Class-conditional UNet (diffusers UNet2DModel's num_class_embeds / class_embed_type):
// outputs against diffusers fixtures (tools/fixtures/unet_cond.py), diffusers folder round
// trips, config validation and class-label errors.
#include <ddpm/nn/flops.hpp>
#include <ddpm/io/diffusers.hpp>
#include <ddpm/io/safetensors.hpp>
#include <ddpm/nn/unet.hpp>

#include <catch2/catch.hpp>
#include <torch/torch.h>

#include <cstdlib>
#include <filesystem>
#include <map>
#include <string>

#include "fixture_util.hpp"
#include "test_util.hpp"

namespace {

using ddpm_test::fixture;

using ddpm_test::max_abs_diff;

/// unet_tiny_cond's weights without its class table (the part every variant shares).
std::map<std::string, torch::Tensor> shared_weights() {
  auto w = ddpm::load_safetensors(fixture("unet_tiny_cond/model.safetensors"));
  REQUIRE(w.erase("class_embedding.weight") == 1);
  return w;
}

/// Runs every expected* case of a cond io.safetensors through `unet`.
void check_io(ddpm::UNet& unet, const std::map<std::string, torch::Tensor>& io) {
  const auto& x = io.at("sample");
  const auto& y = io.at("class_labels");
  CHECK(max_abs_diff(unet->forward(x, io.at("timestep"), y), io.at("expected")) < 1e-4);
  CHECK(max_abs_diff(unet->forward(x, io.at("timestep_float"), y), io.at("expected_float_t")) < 1e-4);
  CHECK(max_abs_diff(unet->forward(x, io.at("timestep_scalar"), y), io.at("expected_scalar_t")) < 1e-4);
  CHECK(max_abs_diff(unet->forward(x, io.at("timestep"), io.at("class_labels_null")), io.at("expected_null")) <
        1e-4);
  CHECK(max_abs_diff(unet->forward(x, io.at("timestep"), io.at("class_labels_other")),
                     io.at("expected_other")) < 1e-4);
}

}  // namespace

TEST_CASE("unet cond: class-embedding table matches diffusers", "[unet][unet_cond]") {
  torch::NoGradGuard no_grad;
  ddpm::UNet unet = ddpm::load_diffusers_unet(fixture("unet_tiny_cond"));
  unet->eval();
  const auto& o = unet->options;
  CHECK(o.num_class_embeds() == c10::optional<int64_t>(5));
  CHECK_FALSE(o.class_embed_type().has_value());
  CHECK(o.class_conditioning() == "embedding");
  CHECK(o.null_class_label() == 4);  // 4 classes + the guidance null class, last
  REQUIRE(unet->class_embedding);
  CHECK(unet->class_embedding->weight.sizes() == torch::IntArrayRef({5, 32}));
  const auto io = ddpm::load_safetensors(fixture("unet_tiny_cond/io.safetensors"));
  check_io(unet, io);
  // The labels matter: another class gives a clearly different output.
  CHECK(max_abs_diff(io.at("expected"), io.at("expected_other")) > 1e-3);
  // int32 labels are accepted too.
  CHECK(max_abs_diff(unet->forward(io.at("sample"), io.at("timestep"), io.at("class_labels").to(torch::kInt)),
                     io.at("expected")) < 1e-4);
}

TEST_CASE("unet cond: class_embed_type timestep matches diffusers", "[unet][unet_cond]") {
  torch::NoGradGuard no_grad;
  const auto options = ddpm::load_unet_config(fixture("unet_tiny_cond_timestep/config.json"));
  CHECK(options.class_conditioning() == "timestep");
  ddpm::UNet unet(options);
  auto w = shared_weights();
  for (auto& [k, v] : ddpm::load_safetensors(fixture("unet_tiny_cond_timestep/class_embedding.safetensors"))) {
    w[k] = v;
  }
  CHECK(w.count("class_embedding.linear_1.weight") == 1);
  ddpm::load_unet_state(unet, w, "unet_tiny_cond_timestep");
  unet->eval();
  check_io(unet, ddpm::load_safetensors(fixture("unet_tiny_cond_timestep/io.safetensors")));
}

TEST_CASE("unet cond: class_embed_type identity adds the given vectors", "[unet][unet_cond]") {
  // diffusers' "identity" adds class_labels [B, time_embed_dim] as they are: feeding the rows of
  // unet_tiny_cond's table must reproduce that model's diffusers outputs.
  torch::NoGradGuard no_grad;
  auto options = ddpm::load_unet_config(fixture("unet_tiny_cond/config.json"));
  options.num_class_embeds(c10::nullopt).class_embed_type(std::string("identity"));
  ddpm::UNet unet(options);
  ddpm::load_unet_state(unet, shared_weights(), "shared");
  unet->eval();
  const auto table = ddpm::load_safetensors(fixture("unet_tiny_cond/model.safetensors")).at("class_embedding.weight");
  const auto io = ddpm::load_safetensors(fixture("unet_tiny_cond/io.safetensors"));
  const auto vectors = table.index_select(0, io.at("class_labels"));
  CHECK(max_abs_diff(unet->forward(io.at("sample"), io.at("timestep"), vectors), io.at("expected")) < 1e-4);
  CHECK_THROWS_WITH(unet->forward(io.at("sample"), io.at("timestep"), io.at("class_labels")),
                    Catch::Contains("identity") && Catch::Contains("[2, 32]"));
}

TEST_CASE("unet cond: diffusers folder save -> load round trip", "[unet][unet_cond][diffusers_io]") {
  torch::NoGradGuard no_grad;
  ddpm_test::TempDir dir("unet_cond_rt");
  ddpm::UNet src = ddpm::load_diffusers_unet(fixture("unet_tiny_cond"));
  src->eval();
  ddpm::save_diffusers_unet(src, dir.file("unet"));
  const auto config = ddpm::detail::read_json_file(dir.file("unet/config.json"));
  CHECK(config.at("num_class_embeds") == 5);
  CHECK(config.at("class_embed_type").is_null());
  const auto saved = ddpm::load_safetensors(dir.file("unet/diffusion_pytorch_model.safetensors"));
  REQUIRE(saved.count("class_embedding.weight") == 1);
  CHECK(torch::equal(saved.at("class_embedding.weight"), src->class_embedding->weight));
  ddpm::UNet back = ddpm::load_diffusers_unet(dir.file("unet"));
  back->eval();
  const auto io = ddpm::load_safetensors(fixture("unet_tiny_cond/io.safetensors"));
  CHECK(torch::equal(back->forward(io.at("sample"), io.at("timestep"), io.at("class_labels")),
                     src->forward(io.at("sample"), io.at("timestep"), io.at("class_labels"))));

  // "timestep" variant: its class MLP is saved under class_embedding.linear_{1,2}.
  auto options = ddpm::load_unet_config(fixture("unet_tiny_cond_timestep/config.json"));
  ddpm::UNet ts(options);
  ddpm::save_diffusers_unet(ts, dir.file("ts"));
  const auto ts_saved = ddpm::load_safetensors(dir.file("ts/diffusion_pytorch_model.safetensors"));
  CHECK(ts_saved.count("class_embedding.linear_1.weight") == 1);
  CHECK(ts_saved.count("class_embedding.linear_2.bias") == 1);
  CHECK(ddpm::detail::read_json_file(dir.file("ts/config.json")).at("class_embed_type") == "timestep");
  CHECK(ddpm::load_diffusers_unet(dir.file("ts"))->options.class_conditioning() == "timestep");
}

TEST_CASE("unet cond: bad class labels are rejected", "[unet][unet_cond]") {
  torch::NoGradGuard no_grad;
  ddpm::UNet unet = ddpm::load_diffusers_unet(fixture("unet_tiny_cond"));
  const auto x = torch::zeros({2, 3, 8, 8});
  const auto t = torch::tensor({1, 2}, torch::kLong);
  CHECK_THROWS_WITH(unet->forward(x, t), Catch::Contains("class_labels are required"));
  CHECK_THROWS_WITH(unet->forward(x, t, torch::tensor({0, 5}, torch::kLong)),
                    Catch::Contains("class label 5 is out of range [0, 5)"));
  CHECK_THROWS_WITH(unet->forward(x, t, torch::tensor({-1, 0}, torch::kLong)),
                    Catch::Contains("class label -1 is out of range"));
  CHECK_THROWS_WITH(unet->forward(x, t, torch::tensor({0, 1, 2}, torch::kLong)),
                    Catch::Contains("class_labels must have shape [2]"));
  CHECK_THROWS_WITH(unet->forward(x, t, torch::zeros({2, 1}, torch::kLong)),
                    Catch::Contains("class_labels must have shape [2]"));
  CHECK_THROWS_WITH(unet->forward(x, t, torch::zeros({2})), Catch::Contains("integer tensor"));

  ddpm::UNet plain = ddpm::load_diffusers_unet(fixture("unet_tiny"));
  CHECK_THROWS_WITH(plain->forward(torch::zeros({2, 3, 16, 16}), t, torch::zeros({2}, torch::kLong)),
                    Catch::Contains("not class-conditional"));
}

TEST_CASE("unet cond: config validation", "[unet][unet_cond]") {
  auto base = ddpm::load_unet_config(fixture("unet_tiny_cond/config.json"));
  ddpm_test::require_error([&] { base.num_class_embeds(0).validate("cfg"); },
                           {"cfg", "num_class_embeds must be >= 1", "0"});
  auto o = ddpm::load_unet_config(fixture("unet_tiny_cond/config.json"));
  ddpm_test::require_error([&] { o.class_embed_type(std::string("projection")).validate("cfg"); },
                           {"cfg", "class_embed_type", "projection", "timestep", "identity"});
  auto j = ddpm::detail::read_json_file(fixture("unet_tiny_cond/config.json"));
  j["class_embed_type"] = "simple_projection";
  ddpm_test::require_error([&] { ddpm::unet_options_from_json(j, "my/config.json"); },
                           {"my/config.json", "simple_projection"});
  const ddpm::UNetOptions plain;
  CHECK(plain.class_conditioning() == "none");
  CHECK_THROWS(plain.null_class_label());
  // JSON round trip keeps the class keys.
  const nlohmann::json back = ddpm::load_unet_config(fixture("unet_tiny_cond_timestep/config.json"));
  CHECK(back.at("class_embed_type") == "timestep");
  CHECK(back.at("num_class_embeds").is_null());
}

// Hidden (not run by default): writes what ddpm saves for tools/check_diffusers_load.py, which
// loads it with the real diffusers. Run by hand:
//   DDPM_EXPORT_DIR=/tmp/cond_export ./build/tests/ddpm_tests "[.unet_cond_export]"
TEST_CASE("unet cond: export diffusers folders for tools/check_diffusers_load.py", "[.unet_cond_export]") {
  torch::NoGradGuard no_grad;
  const char* env = std::getenv("DDPM_EXPORT_DIR");
  REQUIRE(env != nullptr);
  const std::string out = env;
  const auto io = ddpm::load_safetensors(fixture("unet_tiny_cond/io.safetensors"));
  // 1. the fixture model, loaded and saved again.
  ddpm::UNet cond = ddpm::load_diffusers_unet(fixture("unet_tiny_cond"));
  cond->eval();
  ddpm::save_diffusers_unet(cond, out + "/cond");
  // 2. a freshly initialised model of each kind (weights diffusers has never seen).
  torch::manual_seed(123);
  auto options = ddpm::load_unet_config(fixture("unet_tiny_cond/config.json"));
  ddpm::UNet fresh(options.num_class_embeds(7));
  fresh->eval();
  ddpm::save_diffusers_unet(fresh, out + "/fresh_embedding");
  auto ts_options = ddpm::load_unet_config(fixture("unet_tiny_cond_timestep/config.json"));
  ddpm::UNet ts(ts_options);
  ts->eval();
  ddpm::save_diffusers_unet(ts, out + "/fresh_timestep");
  const auto& x = io.at("sample");
  const auto& t = io.at("timestep");
  const auto y = torch::tensor({6, 2}, torch::kLong);
  ddpm::save_safetensors(out + "/ours.safetensors",
                         {{"sample", x},
                          {"timestep", t},
                          {"class_labels", io.at("class_labels")},
                          {"cond", cond->forward(x, t, io.at("class_labels"))},
                          {"fresh_labels", y},
                          {"fresh_embedding", fresh->forward(x, t, y)},
                          {"fresh_timestep", ts->forward(x, t, y)}});
}

TEST_CASE("unet cond: FLOP count includes the timestep class MLP", "[unet_cond][flops]") {
  // The class MLP is linear_1 [32, 8] and linear_2 [32, 32]: 2 * (32*8 + 32*32) = 2560 FLOPs on
  // top of the same model without class conditioning; a table lookup adds none.
  auto ts_options = ddpm::load_unet_config(fixture("unet_tiny_cond_timestep/config.json"));
  auto plain_options = ts_options;
  plain_options.class_embed_type(c10::nullopt);
  auto table_options = plain_options;
  table_options.num_class_embeds(5);
  const ddpm::UNet ts(ts_options), plain(plain_options), table(table_options);
  const auto f_ts = ddpm::unet_forward_flops(*ts, 8, 8);
  const auto f_plain = ddpm::unet_forward_flops(*plain, 8, 8);
  CHECK(f_ts.linear - f_plain.linear == 2560.0);
  CHECK(f_ts.conv == f_plain.conv);
  CHECK(ddpm::unet_forward_flops(*table, 8, 8).matmul() == f_plain.matmul());
}
