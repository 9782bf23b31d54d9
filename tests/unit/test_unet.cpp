// UNet vs diffusers v0.31 UNet2DModel: fixture outputs, intermediate activations, the
// google/ddpm-cifar10-32 parameter layout, configs, clone, and the seed preset training.
#include <ddpm/io/diffusers.hpp>
#include <ddpm/io/safetensors.hpp>
#include <ddpm/nn/unet.hpp>

#include <catch2/catch.hpp>
#include <torch/torch.h>

#include <cmath>
#include <fstream>
#include <string>

#include "fixture_util.hpp"
#include "test_util.hpp"

using ddpm_test::require_error;

namespace {

using ddpm_test::fixture;

using ddpm_test::max_abs_diff;

using ddpm_test::load_fixture_unet;


}  // namespace

TEST_CASE("unet: tiny fixtures reproduce diffusers UNet2DModel outputs", "[unet]") {
  torch::NoGradGuard no_grad;
  for (const std::string name : {"unet_tiny", "unet_tiny_cifarstyle"}) {
    INFO(name);
    const auto meta = ddpm::detail::read_json_file(fixture(name + "/fixture_meta.json"));
    ddpm::UNet unet = load_fixture_unet(name);
    CHECK(unet->num_parameters() == meta.at("num_parameters").get<int64_t>());
    CHECK(static_cast<int64_t>(unet->named_parameters().size()) ==
          meta.at("num_state_dict_tensors").get<int64_t>());
    // The head layout diffusers used.
    for (const auto& [path, attn] : meta.at("attention_modules").items()) {
      INFO(path);
      ddpm::AttentionBlockImpl* block = nullptr;
      for (const auto& item : unet->named_modules()) {
        if (item.key() == path) block = item.value()->as<ddpm::AttentionBlockImpl>();
      }
      REQUIRE(block != nullptr);
      CHECK(block->heads == attn.at("heads").get<int64_t>());
      CHECK(block->dim_head == attn.at("dim_head").get<int64_t>());
      CHECK(block->options.eps() == attn.at("group_norm_eps").get<double>());
      CHECK(block->options.groups() == attn.at("group_norm_groups").get<int64_t>());
    }

    const auto io = ddpm::load_safetensors(fixture(name + "/io.safetensors"));
    const auto& x = io.at("sample");
    REQUIRE(io.at("timestep").scalar_type() == torch::kInt64);
    const double d_int = max_abs_diff(unet->forward(x, io.at("timestep")), io.at("expected"));
    const double d_float =
        max_abs_diff(unet->forward(x, io.at("timestep_float")), io.at("expected_float_t"));
    const double d_scalar =
        max_abs_diff(unet->forward(x, io.at("timestep_scalar")), io.at("expected_scalar_t"));
    // 0-dim timestep behaves like [1].
    const double d_zero_dim = max_abs_diff(
        unet->forward(x, io.at("timestep_scalar").reshape({})), io.at("expected_scalar_t"));
    WARN(name << " max |diff|: int t " << d_int << ", float t " << d_float << ", scalar t "
              << d_scalar);
    CHECK(d_int < 1e-4);
    CHECK(d_float < 1e-4);
    CHECK(d_scalar < 1e-4);
    CHECK(d_zero_dim < 1e-4);
    // The expected outputs are not trivially small, so the tolerance means something.
    CHECK(io.at("expected").abs().max().item<double>() > 0.5);

    const auto acts = ddpm::load_safetensors(fixture(name + "/debug_activations.safetensors"));
    const auto dbg = unet->forward_debug(x, io.at("timestep"));
    CHECK(dbg.activations.size() == acts.size());
    for (const auto& [key, ref] : acts) {
      INFO(key);
      REQUIRE(dbg.activations.count(key) == 1);
      const double scale = std::max(1.0, ref.abs().max().item<double>());
      CHECK(max_abs_diff(dbg.activations.at(key), ref) < 1e-4 * scale);
    }
    CHECK(max_abs_diff(dbg.output, io.at("expected")) < 1e-4);
  }
}

TEST_CASE("unet: time embedding matches a float64 evaluation of the formula", "[unet]") {
  const auto t = torch::tensor({0.0, 1.0, 17.0, 500.0, 999.0}, torch::kFloat64);
  for (bool flip : {false, true}) {
    for (double shift : {0.0, 1.0}) {
      const int64_t dim = 16, half = 8;
      auto ref = torch::empty({5, dim}, torch::kFloat64);
      for (int64_t b = 0; b < 5; ++b) {
        for (int64_t i = 0; i < half; ++i) {
          const double f = std::exp(-std::log(10000.0) * i / (half - shift));
          const double a = t[b].item<double>() * f;
          ref[b][flip ? half + i : i] = std::sin(a);
          ref[b][flip ? i : half + i] = std::cos(a);
        }
      }
      const auto got = ddpm::timestep_embedding(t.to(torch::kInt64), dim, flip, shift);
      CHECK(got.scalar_type() == torch::kFloat32);
      // float32 arguments up to ~1000 rad: ~1e-4 absolute after sin/cos.
      CHECK(max_abs_diff(got, ref) < 2e-4);
    }
  }
  // Odd dim: zero padded last column.
  const auto odd = ddpm::timestep_embedding(torch::tensor({3}), 5, true, 0.0);
  CHECK(odd.sizes() == torch::IntArrayRef({1, 5}));
  CHECK(odd[0][4].item<float>() == 0.0f);
  CHECK(odd[0][0].item<float>() == Approx(std::cos(3.0)).margin(1e-6));

  ddpm::TimeEmbedding te(ddpm::TimeEmbeddingOptions(16, 64));
  CHECK(te->forward(torch::tensor({5}), 4).sizes() == torch::IntArrayRef({4, 64}));
  CHECK_THROWS_AS(te->forward(torch::tensor({5, 6}), 4), c10::Error);
  auto names = te->named_parameters();
  CHECK(names.contains("linear_1.weight"));
  CHECK(names.contains("linear_2.bias"));
  CHECK(names.size() == 4);
}

TEST_CASE("unet: ddpm_cifar10 preset has google/ddpm-cifar10-32's exact parameter layout",
          "[unet]") {
  const auto keys = ddpm::detail::read_json_file(fixture("ddpm_cifar10_keys.json"));
  const auto opts = ddpm::UNetOptions::ddpm_cifar10();
  ddpm::UNet unet(opts);
  CHECK(unet->num_parameters() == 35746307);
  CHECK(keys.at("total_parameters").get<int64_t>() == 35746307);
  const auto params = unet->named_parameters();
  const auto& expected = keys.at("keys");
  REQUIRE(expected.size() == 328);
  REQUIRE(params.size() == 328);
  CHECK(unet->named_buffers().size() == 0);
  for (size_t i = 0; i < expected.size(); ++i) {
    const std::string name = expected[i].at("name").get<std::string>();
    INFO(name);
    REQUIRE(params.contains(name));
    CHECK(params[name].sizes().vec() == expected[i].at("shape").get<std::vector<int64_t>>());
    CHECK(params.keys()[i] == name);  // diffusers' state_dict order too
  }
  // The hub config parses to the same options.
  const auto from_file = ddpm::load_unet_config(fixture("ddpm_cifar10_config.json"));
  CHECK(nlohmann::json(from_file) == nlohmann::json(opts));
  CHECK_FALSE(from_file.attention_head_dim().has_value());
  CHECK(from_file.add_attention());
  CHECK(from_file.norm_eps() == 1e-6);
}

TEST_CASE("unet: config JSON round trip and rejection of bad configs", "[unet]") {
  const auto tiny = ddpm::detail::read_json_file(fixture("unet_tiny_cifarstyle/config.json"));
  const auto opts = ddpm::unet_options_from_json(tiny, "tiny");
  nlohmann::json back = opts;
  // Same keys and values as diffusers wrote (diffusers also writes _diffusers_version).
  CHECK(back == tiny);
  CHECK(back.at("_class_name") == "UNet2DModel");

  auto with = [&](const std::string& key, const nlohmann::json& value) {
    nlohmann::json j = tiny;
    j[key] = value;
    return j;
  };
  require_error([&] { ddpm::unet_options_from_json(with("bogus_key", 1), "cfg.json"); },
                {"cfg.json", "unknown key", "bogus_key"});
  require_error(
      [&] {
        ddpm::unet_options_from_json(
            with("down_block_types", {"DownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"}), "cfg");
      },
      {"CrossAttnDownBlock2D", "AttnDownBlock2D"});
  require_error(
      [&] {
        ddpm::unet_options_from_json(with("up_block_types", {"UpBlock2D", "UpBlock2D"}), "cfg");
      },
      {"same length", "up_block_types (2)"});
  require_error([&] { ddpm::unet_options_from_json(with("act_fn", "tanh"), "cfg"); },
                {"act_fn", "tanh", "silu"});
  require_error([&] { ddpm::unet_options_from_json(with("time_embedding_type", "fourier"), "cfg"); },
                {"time_embedding_type", "fourier", "positional"});
  // Class conditioning is supported (test_unet_cond.cpp); unknown kinds are not.
  require_error([&] { ddpm::unet_options_from_json(with("class_embed_type", "projection"), "cfg"); },
                {"class_embed_type", "projection"});
  require_error([&] { ddpm::unet_options_from_json(with("num_class_embeds", 0), "cfg"); },
                {"num_class_embeds"});
  require_error([&] { ddpm::unet_options_from_json(with("norm_num_groups", 3), "cfg"); },
                {"norm_num_groups 3", "[8, 16, 16]"});
  require_error([&] { ddpm::unet_options_from_json(with("layers_per_block", "two"), "cfg"); },
                {"layers_per_block", "\"two\""});
  require_error([&] { ddpm::unet_options_from_json(with("attention_head_dim", 3), "cfg"); },
                {"attention_head_dim 3"});
  require_error([&] { ddpm::unet_options_from_json(with("resnet_time_scale_shift", "scale_shift"), "cfg"); },
                {"scale_shift", "default"});
  require_error([&] { ddpm::load_unet_config(fixture("no_such_config.json")); },
                {"no_such_config.json"});
  // UNet's constructor validates too.
  CHECK_THROWS_AS(ddpm::UNet(ddpm::UNetOptions::seed().block_out_channels({64, 128})), ddpm::Error);
}

TEST_CASE("unet: clone() is an independent deep copy", "[unet]") {
  torch::manual_seed(0);
  auto opts = ddpm::unet_options_from_json(
      ddpm::detail::read_json_file(fixture("unet_tiny/config.json")), "tiny");
  ddpm::UNet a(opts);
  a->eval();
  auto b = std::dynamic_pointer_cast<ddpm::UNetImpl>(a->clone());
  REQUIRE(b != nullptr);
  b->eval();
  const auto x = torch::randn({2, 3, 16, 16});
  const auto t = torch::tensor({3, 700});
  torch::NoGradGuard no_grad;
  const auto ya = a->forward(x, t);
  CHECK(torch::equal(ya, b->forward(x, t)));
  auto pa = a->named_parameters();
  auto pb = b->named_parameters();
  REQUIRE(pa.size() == pb.size());
  for (const auto& item : pa) {
    CHECK(item.value().data_ptr() != pb[item.key()].data_ptr());
  }
  // Changing the copy (incl. a weight deep inside a ModuleList) leaves the original alone.
  pb["up_blocks.0.attentions.1.to_out.0.weight"].add_(1.0);
  pb["mid_block.resnets.1.conv2.bias"].add_(1.0);
  CHECK(torch::equal(a->forward(x, t), ya));
  CHECK_FALSE(torch::allclose(b->forward(x, t), ya));
}

TEST_CASE("unet: seed preset shapes, input checks and a few training steps", "[unet]") {
  torch::manual_seed(0);
  const auto opts = ddpm::UNetOptions::seed();
  CHECK(opts.time_embed_dim() == 256);
  CHECK(opts.size_multiple() == 4);
  ddpm::UNet unet(opts);
  CHECK(unet->num_parameters() == 14142851);  // documented in docs/unet.md
  for (const auto& item : unet->named_parameters()) {
    CHECK(item.key().find("attentions") == std::string::npos);
  }
  {
    torch::NoGradGuard no_grad;
    unet->eval();
    for (int64_t s : {32, 24, 40, 8}) {
      INFO(s);
      CHECK(unet->forward(torch::randn({2, 3, s, s}), torch::tensor({1, 999})).sizes() ==
            torch::IntArrayRef({2, 3, s, s}));
    }
    CHECK(unet->forward(torch::randn({1, 3, 16, 12}), torch::tensor(5.5)).sizes() ==
          torch::IntArrayRef({1, 3, 16, 12}));
    auto message = [&](const torch::Tensor& x, const torch::Tensor& t) -> std::string {
      try {
        unet->forward(x, t);
      } catch (const c10::Error& e) {
        return e.what_without_backtrace();
      }
      return "no error";
    };
    CHECK_THAT(message(torch::randn({1, 1, 32, 32}), torch::tensor({1})),
               Catch::Contains("1 channels") && Catch::Contains("expects 3"));
    CHECK_THAT(message(torch::randn({1, 3, 30, 32}), torch::tensor({1})),
               Catch::Contains("[1, 3, 30, 32]") && Catch::Contains("multiples of 4"));
    CHECK_THAT(message(torch::randn({2, 3, 32, 32}), torch::tensor({1, 2, 3})),
               Catch::Contains("timesteps"));
  }
  // A few Adam steps on a fixed batch must reduce the noise-prediction loss.
  unet->train();
  torch::optim::Adam opt(unet->parameters(), torch::optim::AdamOptions(1e-3));
  const auto x = torch::randn({4, 3, 16, 16});
  const auto noise = torch::randn({4, 3, 16, 16});
  const auto t = torch::tensor({10, 200, 500, 900});
  double first = 0, last = 0;
  for (int step = 0; step < 6; ++step) {
    opt.zero_grad();
    const auto loss = torch::mse_loss(unet->forward(x + noise, t), noise);
    loss.backward();
    opt.step();
    if (step == 0) first = loss.item<double>();
    last = loss.item<double>();
  }
  WARN("seed preset loss " << first << " -> " << last);
  CHECK(std::isfinite(last));
  CHECK(last < 0.7 * first);
}

TEST_CASE("unet: the channels-last inference layout keeps diffusers' outputs; switching back is exact", "[unet][fast]") {
  torch::NoGradGuard no_grad;
  for (const std::string name : {"unet_tiny", "unet_tiny_cifarstyle"}) {
    INFO(name);
    const auto io = ddpm::load_safetensors(fixture(name + "/io.safetensors"));
    const auto& x = io.at("sample");
    ddpm::UNet unet = load_fixture_unet(name);
    const torch::Tensor exact = unet->forward(x, io.at("timestep"));

    unet->set_channels_last(true);
    CHECK(unet->channels_last());
    CHECK(unet->conv_in->weight.is_contiguous(torch::MemoryFormat::ChannelsLast));
    CHECK_FALSE(unet->conv_in->weight.is_contiguous());
    const auto dbg = unet->forward_debug(x, io.at("timestep"));
    // The activations really are NHWC (the layout is not silently dropped along the way) ...
    for (const char* key : {"conv_in", "down_blocks.0", "mid_block", "conv_norm_out"}) {
      INFO(key);
      REQUIRE(dbg.activations.count(key) == 1);
      CHECK(dbg.activations.at(key).is_contiguous(torch::MemoryFormat::ChannelsLast));
      CHECK_FALSE(dbg.activations.at(key).is_contiguous());
    }
    // ... the output is NCHW and matches diffusers with the exact path's tolerance.
    CHECK(dbg.output.is_contiguous());
    CHECK(max_abs_diff(dbg.output, io.at("expected")) < 1e-4);
    CHECK(max_abs_diff(dbg.output, exact) < 1e-3 * exact.abs().max().item<double>());
    // A channels-last input is taken as it is.
    CHECK(max_abs_diff(unet->forward(x.contiguous(torch::MemoryFormat::ChannelsLast), io.at("timestep")), exact) <
          1e-4);
    // Weights loaded while the layout is on keep it and are used.
    ddpm::load_unet_state(unet, ddpm::load_safetensors(fixture(name + "/model.safetensors")), name);
    CHECK(unet->conv_in->weight.is_contiguous(torch::MemoryFormat::ChannelsLast));
    CHECK(max_abs_diff(unet->forward(x, io.at("timestep")), io.at("expected")) < 1e-4);

    unet->set_channels_last(false);
    CHECK(unet->conv_in->weight.is_contiguous());
    CHECK(torch::equal(unet->forward(x, io.at("timestep")), exact));
  }
}
