// The sampler protocol and registry (sampler.hpp) and the Pipeline (pipeline.hpp): protocol
// conformance at compile time, names / aliases / class names from the one table, round trips
// for every registered sampler, and Pipeline generation checked against a hand-written loop and
// against diffusers' own pipeline output (tests/data/diffusers/e2e).
#include <ddpm/io/safetensors.hpp>
#include <ddpm/pipeline.hpp>
#include <ddpm/sampler.hpp>

#include <catch2/catch.hpp>

#include "fixture_util.hpp"
#include "test_util.hpp"

#include <algorithm>
#include <string>

using namespace ddpm;
using Catch::Matchers::Contains;

namespace {
// A type that has everything but scale_model_input: must not pass as a Sampler.
struct NotASampler {
  using Options = DDIMSamplerOptions;
  static constexpr const char* kClassName = "X";
  static const std::vector<const char*>& config_keys() { static std::vector<const char*> k; return k; }
  explicit NotASampler(Options) {}
  const Options& options() const { static Options o; return o; }
  void set_timesteps(int64_t) {}
  const std::vector<double>& timesteps() const { static std::vector<double> t; return t; }
  torch::Tensor sigmas() const { return {}; }
  double init_noise_sigma() const { return 1; }
  SamplerStepOutput step(const torch::Tensor&, double, const torch::Tensor&, c10::optional<at::Generator>,
                         c10::optional<torch::Tensor>) { return {}; }
  int64_t order() const { return 1; }
  int64_t num_inference_steps() const { return 0; }
  void reset() {}
  const NoiseSchedule& schedule() const { static NoiseSchedule s{NoiseScheduleOptions()}; return s; }
  PredictionType prediction_type() const { return PredictionType::Epsilon; }
};

std::string e2e(const std::string& name) { return std::string(DDPM_TEST_DATA_DIR) + "/diffusers/e2e/" + name; }

UNet tiny_unet() {
  torch::manual_seed(3);
  return UNet(UNetOptions()
                  .in_channels(1).out_channels(1).sample_size(8)
                  .block_out_channels({8, 16})
                  .down_block_types({"DownBlock2D", "DownBlock2D"})
                  .up_block_types({"UpBlock2D", "UpBlock2D"})
                  .layers_per_block(1).norm_num_groups(4));
}
}  // namespace

TEST_CASE("protocol: every registered sampler satisfies it; a type without scale_model_input does not",
          "[sampler][protocol]") {
  STATIC_REQUIRE(is_sampler_v<DDPMSampler>);
  STATIC_REQUIRE(is_sampler_v<DDIMSampler>);
  STATIC_REQUIRE(is_sampler_v<DPMSolverSampler>);
  STATIC_REQUIRE_FALSE(is_sampler_v<NotASampler>);
  STATIC_REQUIRE_FALSE(is_sampler_v<int>);
}

TEST_CASE("registry: names, aliases and class names come from one table", "[sampler][registry]") {
  const auto& infos = registered_samplers();
  REQUIRE(infos.size() >= 3);
  const auto names = sampler_names();
  for (const char* n : {"ddpm", "ddim", "dpm++", "dpmpp_2m"}) {
    CHECK(std::find(names.begin(), names.end(), n) != names.end());
  }
  CHECK(resolve_sampler_name("dpmpp_2m").kind == SamplerKind::DPMSolver);
  CHECK(resolve_sampler_name("DDIMScheduler").kind == SamplerKind::DDIM);
  CHECK(sampler_kind_name(SamplerKind::DPMSolver) == "dpm++");
  CHECK(sampler_info(SamplerKind::DDPM).class_name == "DDPMScheduler");
  for (size_t i = 0; i < infos.size(); ++i) {
    CHECK(static_cast<size_t>(infos[i].kind) == i);  // enum order = registry order = variant order
    CHECK_FALSE(infos[i].help.empty());
  }
  ddpm_test::require_error([] { resolve_sampler_name("bogus"); }, {"unknown sampler \"bogus\"", "\"ddim\"", "\"dpm++\""});
}

TEST_CASE("registry: every registered sampler round-trips through scheduler_config and steps through AnySampler",
          "[sampler][registry]") {
  for (const auto& info : registered_samplers()) {
    INFO("sampler " << info.name);
    AnySampler s = make_sampler(nlohmann::json{{"_class_name", info.class_name}, {"num_train_timesteps", 100}});
    CHECK(s.kind() == info.kind);
    const auto cfg = to_scheduler_config(s);
    CHECK(cfg.at("_class_name") == info.class_name);
    AnySampler back = make_sampler(cfg);
    CHECK(to_scheduler_config(back) == cfg);
    s.set_timesteps(5);
    CHECK(static_cast<int64_t>(s.timesteps().size()) == 5 * s.order() - (s.order() - 1) * (s.order() > 1));
    auto x = torch::randn({1, 1, 2, 2}, ddpm_test::cpu_gen(1));
    s.reset();
    for (double t : s.timesteps()) {
      const auto in = s.scale_model_input(x, t);
      x = s.step(0.5 * in, t, x, ddpm_test::cpu_gen(2)).prev_sample;
    }
    CHECK(torch::isfinite(x).all().item<bool>());
  }
  // A preset name applies its overrides on top of the config; the key check covers every sampler's keys.
  ddpm_test::require_error([] { make_sampler(nlohmann::json{{"_class_name", "DDIMScheduler"}, {"foo", 1}}); },
                           {"DDIMScheduler config", "\"foo\""});
}

TEST_CASE("pipeline: generate matches a hand-written protocol loop, in batches, any range", "[pipeline]") {
  UNet unet = tiny_unet();
  DDIMSampler ddim(DDIMSamplerOptions().schedule(NoiseScheduleOptions().num_train_timesteps(100)));
  Pipeline pipe(unet, ddim);
  const auto opts = GenerateOptions().num_inference_steps(4).batch_size(2).clamp(false);
  const auto images = pipe.generate(5, ddpm_test::cpu_gen(7), opts);
  REQUIRE(images.sizes() == torch::IntArrayRef({5, 1, 8, 8}));

  // Independent computation: the same noise draws (batch by batch from one generator), the same loop.
  auto gen = ddpm_test::cpu_gen(7);
  DDIMSampler ref(DDIMSamplerOptions().schedule(NoiseScheduleOptions().num_train_timesteps(100)));
  ref.set_timesteps(4);
  std::vector<torch::Tensor> parts;
  torch::NoGradGuard ng;
  for (int64_t b : {2, 2, 1}) {
    auto x = torch::randn({b, 1, 8, 8}, gen);
    for (double t : ref.timesteps()) {
      const auto tb = torch::full({b}, static_cast<int64_t>(t), torch::kLong);
      x = ref.step(unet->forward(x, tb), t, x).prev_sample;
    }
    parts.push_back(x);
  }
  CHECK(torch::equal(images, torch::cat(parts)));

  const auto again = pipe.generate(5, ddpm_test::cpu_gen(7), opts);
  CHECK(torch::equal(images, again));
  const auto unit = pipe.generate(5, ddpm_test::cpu_gen(7), GenerateOptions(opts).output_range(OutputRange::ZeroToOne).clamp(true));
  CHECK(torch::allclose(unit, ((images + 1) / 2).clamp(0, 1)));
  CHECK(unit.min().item<float>() >= 0.0f);
  CHECK(unit.max().item<float>() <= 1.0f);
}

TEST_CASE("pipeline: progress reports every step; returning false stops after whole batches", "[pipeline]") {
  Pipeline pipe(tiny_unet(), DDIMSampler(DDIMSamplerOptions().schedule(NoiseScheduleOptions().num_train_timesteps(50))));
  int64_t calls = 0, last_batch = -1;
  const auto all = pipe.generate(3, ddpm_test::cpu_gen(1), GenerateOptions().num_inference_steps(2).batch_size(2),
                                 [&](const GenerateProgress& p) {
                                   ++calls;
                                   CHECK(p.num_batches == 2);
                                   CHECK(p.num_steps == 2);
                                   CHECK(p.num_images == 3);
                                   last_batch = p.batch_index;
                                   return true;
                                 });
  CHECK(calls == 4);
  CHECK(last_batch == 1);
  CHECK(all.size(0) == 3);
  const auto part = pipe.generate(3, ddpm_test::cpu_gen(1), GenerateOptions().num_inference_steps(2).batch_size(2),
                                  [&](const GenerateProgress& p) { return p.batch_index == 0; });
  CHECK(part.size(0) == 2);
  CHECK(torch::equal(part, all.narrow(0, 0, 2)));
}

TEST_CASE("pipeline: bad arguments are ddpm::Error naming the value", "[pipeline]") {
  Pipeline pipe(tiny_unet(), DDIMSampler());
  ddpm_test::require_error([&] { pipe.generate(0, {}); }, {"number of images", "0"});
  ddpm_test::require_error([&] { pipe.generate(2, {}, GenerateOptions().batch_size(0)); }, {"batch_size", "0"});
  ddpm_test::require_error([&] { pipe.generate_from(torch::zeros({2, 3, 8, 8}), {}); }, {"latents", "[2, 3, 8, 8]"});
  ddpm_test::require_error([] { Pipeline::from_diffusers(e2e("ddim_tiny"), "bogus"); }, {"unknown sampler \"bogus\""});
}

TEST_CASE("pipeline: from_diffusers reproduces diffusers' pipeline output for both e2e folders", "[pipeline][e2e]") {
  for (const std::string name : {"ddim_tiny", "dpmpp_tiny"}) {
    INFO(name);
    Pipeline pipe = Pipeline::from_diffusers(e2e(name));
    const auto latents = load_safetensors(e2e(name) + "/latents.safetensors").at("latents");
    const auto expected = load_safetensors(e2e(name) + "/expected.safetensors").at("images");
    const auto got = pipe.generate_from(latents, {}, GenerateOptions().num_inference_steps(10).clamp(false).batch_size(1));
    REQUIRE(got.sizes() == expected.sizes());
    INFO("max abs diff " << (got - expected.to(torch::kFloat32)).abs().max().item<double>());
    // Same tolerance as cli.sample.*.matches_diffusers (ddim_tiny differs by up to ~1.6e-4: float32
    // network outputs from another BLAS, through 10 clipped steps).
    CHECK(torch::allclose(got, expected.to(torch::kFloat32), 1e-3, 1e-3));

    // The fast inference layout: within 1e-3 relative of the exact path after all 10 steps.
    pipe.unet()->set_channels_last(true);
    const auto fast = pipe.generate_from(latents, {}, GenerateOptions().num_inference_steps(10).clamp(false).batch_size(1));
    const double rel = (fast - got).abs().max().item<double>() / got.abs().max().item<double>();
    INFO("channels-last: max |fast - exact| / max |exact| = " << rel);
    CHECK(rel < 1e-3);
    CHECK(torch::allclose(fast, expected.to(torch::kFloat32), 1e-3, 1e-3));
  }
}
