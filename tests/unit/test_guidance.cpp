// Classifier-free guidance (guidance.hpp, Pipeline, Trainer): diffusers' guided trajectories
// (tests/data/diffusers/cfg, tools/fixtures/cfg.py), scale 1 = the plain conditional model, the
// batched cond/uncond call = two calls (with every sampler), the guidance interval, rescale_noise_cfg, label dropping
// at the p_uncond rate, conditional training + bit-identical resume, --class parsing and errors.
#include "fixture_torch_version.hpp"
#include "fixture_util.hpp"
#include "test_util.hpp"
#include "train_test_util.hpp"

#include <ddpm/guidance.hpp>
#include <ddpm/io/diffusers.hpp>
#include <ddpm/io/safetensors.hpp>
#include <ddpm/pipeline.hpp>
#include <ddpm/sample.hpp>
#include <ddpm/sampler.hpp>
#include <ddpm/train/trainer.hpp>

#include <catch2/catch.hpp>
#include <torch/torch.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

using ddpm_test::diffusers_fixture;
using ddpm_test::diffusers_fixture_path;
using ddpm_test::max_rel_err;
using ddpm_test::require_error;

namespace {

// The fixtures come from torch 1.13: measured worst final-sample errors there (relative to max |x|)
// are 6.0e-5 (ddim, s = 3), 3.3e-5 (ddim_rescale), 1.2e-5 (heun), 4.3e-7 (euler_a), i.e. the
// UNet's ~1e-6 kernel differences amplified by s (c - u) over 6 steps. LibTorch 2.x kernels round
// differently (see fixture_torch_version.hpp), so there the bound is the e2e tests' 1e-3.
constexpr double kTrajTol = TORCH_VERSION_MAJOR >= 2 ? 1e-3 : 1e-4;

const std::map<std::string, torch::Tensor>& cfg_tensors() {
  static const auto t = ddpm::load_safetensors(diffusers_fixture_path("cfg/trajectories.safetensors"));
  return t;
}

ddpm::UNet cfg_unet() {
  auto unet = ddpm::load_diffusers_unet(diffusers_fixture_path("cfg/unet"));
  unet->eval();
  return unet;
}

nlohmann::json cfg_scheduler_config() {
  return ddpm::read_scheduler_config(diffusers_fixture_path("cfg/scheduler/scheduler_config.json"));
}

/// Two separate UNet calls, mixed by hand: the reference the batched GuidedModel must equal.
struct TwoCallModel {
  ddpm::UNet unet;
  torch::Tensor labels;
  int64_t null_label;
  double scale;
  int calls = 0;
  torch::Tensor operator()(const torch::Tensor& x, const torch::Tensor& t) {
    ++calls;
    const auto c = unet->forward(x, t, labels);
    const auto u = unet->forward(x, t, torch::full_like(labels, null_label));
    return u + scale * (c - u);
  }
};

}  // namespace

TEST_CASE("Guided sampling reproduces diffusers' CFG trajectories (DDIM, rescale, Euler ancestral, Heun)",
          "[guidance][fixtures]") {
  const auto& fx = diffusers_fixture("cfg/case.json");
  const auto& tensors = cfg_tensors();
  ddpm::UNet unet = cfg_unet();
  REQUIRE(unet->options.num_class_embeds().value_or(0) == 5);
  REQUIRE(unet->options.null_class_label() == fx.at("null_label").get<int64_t>());
  const auto latents = tensors.at("latents");
  const auto labels = tensors.at("labels");
  REQUIRE(labels.sizes() == torch::IntArrayRef({3}));
  int cases = 0;
  for (const auto& c : fx.at("cases")) {
    const std::string name = c.at("name").get<std::string>();
    INFO("case " << name);
    auto sampler = ddpm::make_sampler(cfg_scheduler_config(), c.at("sampler").get<std::string>());
    CHECK(sampler.info().class_name == c.at("scheduler").get<std::string>());
    sampler.set_timesteps(c.at("steps").get<int64_t>());
    const auto ts = c.at("timesteps").get<std::vector<double>>();
    REQUIRE(sampler.timesteps().size() == ts.size());
    for (size_t i = 0; i < ts.size(); ++i) CHECK(sampler.timesteps()[i] == Approx(ts[i]).epsilon(1e-6));
    const double scale = c.at("guidance_scale").get<double>(), rescale = c.at("guidance_rescale").get<double>();
    const uint64_t seed = c.at("seed").is_null() ? 0 : c.at("seed").get<uint64_t>();

    // Step by step through sample_from with the guided model.
    const auto traj = tensors.at("traj_" + name);
    REQUIRE(traj.size(0) == static_cast<int64_t>(ts.size()));
    ddpm::GuidedModel model{unet, labels, 4, scale, rescale};
    std::vector<double> errs;
    ddpm::sample_from(model, sampler, latents * sampler.init_noise_sigma(), ddpm_test::cpu_gen(seed),
                      [&](const ddpm::SampleStep& s) {
                        errs.push_back(max_rel_err(s.sample, traj[s.index]));
                        return true;
                      });
    REQUIRE(errs.size() == ts.size());
    for (size_t i = 0; i < errs.size(); ++i) {
      INFO("step " << i);
      CHECK(errs[i] < kTrajTol);
    }

    // The same through the Pipeline (its own batching, labels per image, no clamping).
    ddpm::Pipeline pipe(unet, ddpm::make_sampler(cfg_scheduler_config(), c.at("sampler").get<std::string>()));
    const auto opts = ddpm::GenerateOptions()
                          .num_inference_steps(c.at("steps").get<int64_t>())
                          .clamp(false)
                          .class_labels({2, 0, 3})
                          .guidance_scale(scale)
                          .guidance_rescale(rescale);
    const auto images = pipe.generate_from(latents, ddpm_test::cpu_gen(seed), opts);
    const auto expected = tensors.at("final_" + name);
    CHECK(expected.abs().max().item<double>() == Approx(c.at("max_abs").get<double>()).epsilon(1e-6));
    CHECK(max_rel_err(images, expected) < kTrajTol);
    // Guidance changed the result: the unguided conditional trajectory ends elsewhere.
    const auto plain = pipe.generate_from(latents, ddpm_test::cpu_gen(seed), ddpm::GenerateOptions(opts).guidance_scale(1));
    CHECK(max_rel_err(plain, expected) > 1e-2);
    ++cases;
  }
  CHECK(cases == 4);
}

TEST_CASE("guidance_scale 1 is the plain conditional model, bit for bit, in one call per step", "[guidance]") {
  ddpm::UNet unet = cfg_unet();
  const auto latents = cfg_tensors().at("latents");
  for (const std::string name : {"ddim", "euler_a", "dpmpp_2m_sde"}) {
    INFO("sampler " << name);
    ddpm::Pipeline pipe(unet, ddpm::make_sampler(cfg_scheduler_config(), name));
    const auto got = pipe.generate_from(latents, ddpm_test::cpu_gen(5),
                                        ddpm::GenerateOptions().num_inference_steps(4).clamp(false).class_labels({1}));
    auto sampler = ddpm::make_sampler(cfg_scheduler_config(), name);
    sampler.set_timesteps(4);
    int calls = 0;
    const auto labels = torch::full({3}, 1, torch::kLong);
    const auto want = ddpm::sample_from(
        [&](const torch::Tensor& x, const torch::Tensor& t) {
          ++calls;
          CHECK(x.size(0) == 3);  // no doubled batch without guidance
          return unet->forward(x, t, labels);
        },
        sampler, latents * sampler.init_noise_sigma(), ddpm_test::cpu_gen(5));
    CHECK(calls == static_cast<int>(sampler.timesteps().size()));
    CHECK(torch::equal(got, want));
  }
}

TEST_CASE("The batched cond/uncond call equals two separate calls, with every sampler", "[guidance]") {
  ddpm::UNet unet = cfg_unet();
  const auto latents = cfg_tensors().at("latents");
  const auto labels = torch::tensor(std::vector<int64_t>{2, 0, 3}, torch::kLong);
  // One model call.
  {
    const auto t = torch::full({3}, 400, torch::kLong);
    const auto batched = ddpm::GuidedModel{unet, labels, 4, 3.0, 0.0}(latents, t);
    const auto two = TwoCallModel{unet, labels, 4, 3.0}(latents, t);
    INFO("max |diff| " << (batched - two).abs().max().item<double>());
    // The same float32 arithmetic on a batch of 6 vs two batches of 3. Convolution kernels block
    // by batch size (and by the CPU's vector width), so the UNet outputs differ by ~1e-6 of their
    // scale, which the mix u + s (c - u) amplifies up to 2s - 1 = 5 times: measured 1.4e-6 on
    // LibTorch 2.15 here and 1.2e-6 on 1.13 on CI's CPU. A wrong mix (cond and uncond swapped, the
    // wrong label nulled) is off by more than 1e-2.
    CHECK(max_rel_err(batched, two) < 1e-5);
    // and it is a real mix: neither the conditional nor the unconditional output
    CHECK(max_rel_err(batched, unet->forward(latents, t, labels)) > 1e-3);
  }
  // Whole trajectories, every registered sampler (Heun: two calls per step; ancestral / SDE: noise).
  int samplers = 0;
  for (const auto& name : ddpm::sampler_names()) {
    INFO("sampler " << name);
    ddpm::Pipeline pipe(unet, ddpm::make_sampler(cfg_scheduler_config(), name));
    const auto got = pipe.generate_from(
        latents, ddpm_test::cpu_gen(9),
        ddpm::GenerateOptions().num_inference_steps(3).clamp(false).class_labels({2, 0, 3}).guidance_scale(2.5));
    auto sampler = ddpm::make_sampler(cfg_scheduler_config(), name);
    sampler.set_timesteps(3);
    TwoCallModel ref{unet, labels, 4, 2.5};
    const auto want = ddpm::sample_from(ref, sampler, latents * sampler.init_noise_sigma(), ddpm_test::cpu_gen(9));
    CHECK(ref.calls == static_cast<int>(sampler.timesteps().size()));
    // The one-call difference above carried through 3 guided steps: the fixture bound kTrajTol.
    CHECK(max_rel_err(got, want) < kTrajTol);
    ++samplers;
  }
  CHECK(samplers >= 8);
}

TEST_CASE("The guidance interval guides only the model calls whose timestep lies in it", "[guidance]") {
  ddpm::UNet unet = cfg_unet();
  const auto latents = cfg_tensors().at("latents");
  const auto labels = torch::tensor(std::vector<int64_t>{2, 0, 3}, torch::kLong);
  const double scale = 3.0;
  const auto base = ddpm::GenerateOptions().num_inference_steps(6).clamp(false).class_labels({2, 0, 3}).guidance_scale(scale);
  for (const std::string name : {"ddim", "dpmpp_2m", "heun"}) {
    INFO("sampler " << name);
    ddpm::Pipeline pipe(unet, ddpm::make_sampler(cfg_scheduler_config(), name));
    // [0.2, 0.6] of T = 1000: the calls at 200 <= t <= 600 are guided, the rest are not.
    const auto got = pipe.generate_from(latents, ddpm_test::cpu_gen(3),
                                        ddpm::GenerateOptions(base).guidance_interval_min(0.2).guidance_interval_max(0.6));
    auto sampler = ddpm::make_sampler(cfg_scheduler_config(), name);
    sampler.set_timesteps(6);
    int guided = 0, plain = 0;
    const auto want = ddpm::sample_from(
        [&](const torch::Tensor& x, const torch::Tensor& t) {
          const double tv = t[0].item<double>();
          if (tv >= 200.0 && tv <= 600.0) {
            ++guided;
            return TwoCallModel{unet, labels, 4, scale}(x, t);
          }
          ++plain;
          return unet->forward(x, t, labels);
        },
        sampler, latents * sampler.init_noise_sigma(), ddpm_test::cpu_gen(3));
    CHECK(guided > 0);  // the interval splits the trajectory
    CHECK(plain > 0);
    CHECK(max_rel_err(got, want) < kTrajTol);
    // ... and differs from guiding every call and from guiding none.
    const auto all = pipe.generate_from(latents, ddpm_test::cpu_gen(3), base);
    const auto none = pipe.generate_from(latents, ddpm_test::cpu_gen(3), ddpm::GenerateOptions(base).guidance_scale(1));
    CHECK(max_rel_err(got, all) > 1e-3);
    CHECK(max_rel_err(got, none) > 1e-3);
    // [0, 1] is the default, bit for bit; an interval no call falls in is no guidance, bit for bit.
    CHECK(torch::equal(pipe.generate_from(latents, ddpm_test::cpu_gen(3),
                                          ddpm::GenerateOptions(base).guidance_interval_min(0).guidance_interval_max(1)),
                       all));
    CHECK(torch::equal(pipe.generate_from(latents, ddpm_test::cpu_gen(3),
                                          ddpm::GenerateOptions(base).guidance_interval_min(0.9995).guidance_interval_max(1)),
                       none));
  }
}

TEST_CASE("GuidedModel's interval mixes per sample: samples outside it get the conditional output", "[guidance]") {
  ddpm::UNet unet = cfg_unet();
  const auto latents = cfg_tensors().at("latents");
  const auto labels = torch::tensor(std::vector<int64_t>{2, 0, 3}, torch::kLong);
  const auto t = torch::tensor(std::vector<int64_t>{100, 500, 900}, torch::kLong);
  ddpm::GuidedModel model{unet, labels, 4, 3.0, 0.0, 200.0, 600.0};
  const auto got = model(latents, t);
  const auto mixed = TwoCallModel{unet, labels, 4, 3.0}(latents, t);
  const auto cond = unet->forward(latents, t, labels);
  for (int64_t i : {0, 2}) {
    INFO("sample " << i << " (outside)");
    CHECK(max_rel_err(got[i], cond[i]) < 1e-5);
    CHECK(max_rel_err(got[i], mixed[i]) > 1e-3);
  }
  CHECK(max_rel_err(got[1], mixed[1]) < 1e-5);
  CHECK(max_rel_err(got[1], cond[1]) > 1e-3);
  // Bounds are inclusive; every sample outside makes the one plain call of batch B.
  CHECK(max_rel_err(ddpm::GuidedModel{unet, labels, 4, 3.0, 0.0, 100.0, 900.0}(latents, t), mixed) < 1e-5);
  CHECK(torch::equal(ddpm::GuidedModel{unet, labels, 4, 3.0, 0.0, 901.0, 1000.0}(latents, t), cond));
}

TEST_CASE("A guidance interval outside [0, 1] or upside down is an error naming it", "[guidance][pipeline]") {
  ddpm::Pipeline pipe(cfg_unet(), ddpm::make_sampler(cfg_scheduler_config(), "ddim"));
  auto gen = ddpm_test::cpu_gen(0);
  const auto opts = ddpm::GenerateOptions().num_inference_steps(1).class_labels({1}).guidance_scale(2);
  require_error([&] { pipe.generate(1, gen, ddpm::GenerateOptions(opts).guidance_interval_min(0.7).guidance_interval_max(0.2)); },
                {"guidance interval [0.7, 0.2]", "min <= max"});
  require_error([&] { pipe.generate(1, gen, ddpm::GenerateOptions(opts).guidance_interval_min(-0.1)); },
                {"guidance interval [-0.1, 1]", "[0, 1]"});
  require_error([&] { pipe.generate(1, gen, ddpm::GenerateOptions(opts).guidance_interval_max(1.5)); },
                {"guidance interval [0, 1.5]"});
}

TEST_CASE("cyclic_class_labels draws the classes in turn; run_guidance_of reads a run's guidance", "[guidance]") {
  CHECK(ddpm::cyclic_class_labels(7, 3) == std::vector<int64_t>{0, 1, 2, 0, 1, 2, 0});
  CHECK(ddpm::cyclic_class_labels(0, 3).empty());
  CHECK_THROWS_AS(ddpm::cyclic_class_labels(4, 0), c10::Error);

  const auto g = ddpm::run_guidance_of(
      {{"num_classes", 10}, {"guidance_scale", 1.5}, {"guidance_interval_min", 0.08}, {"guidance_interval_max", 0.58}});
  CHECK(g.conditional);
  CHECK(g.scale == 1.5);
  CHECK(g.interval_min == 0.08);
  CHECK(g.interval_max == 0.58);
  // A run from before the guidance interval guided every call.
  const auto old = ddpm::run_guidance_of({{"num_classes", 10}, {"guidance_scale", 4}});
  CHECK(old.conditional);
  CHECK(old.scale == 4);
  CHECK(old.interval_min == 0.0);
  CHECK(old.interval_max == 1.0);
  // An unconditional run is not guided, whatever its config says.
  const auto plain = ddpm::run_guidance_of({{"num_classes", 0}, {"guidance_scale", 4}, {"guidance_interval_max", 0.5}});
  CHECK_FALSE(plain.conditional);
  CHECK(plain.scale == 1.0);
  CHECK(plain.interval_max == 1.0);
  // A TrainConfig's own JSON round-trips through it.
  ddpm::TrainConfig c;
  c.num_classes = 10;
  c.guidance_scale = 2;
  c.guidance_interval_min = 0.1;
  c.guidance_interval_max = 0.6;
  const auto fromcfg = ddpm::run_guidance_of(nlohmann::json(c));
  CHECK(fromcfg.scale == 2);
  CHECK(fromcfg.interval_min == 0.1);
  CHECK(fromcfg.interval_max == 0.6);
}

TEST_CASE("rescale_noise_cfg and mix_guidance follow diffusers' formulas", "[guidance]") {
  auto g = ddpm_test::cpu_gen(1);
  const auto cond = torch::randn({2, 3, 4, 4}, g) * 2 + 0.5;
  const auto uncond = torch::randn({2, 3, 4, 4}, g);
  const auto mixed = ddpm::mix_guidance(cond, uncond, 4.0);
  CHECK(max_rel_err(mixed, uncond.to(torch::kDouble) + 4.0 * (cond.to(torch::kDouble) - uncond.to(torch::kDouble))) < 1e-6);
  CHECK(torch::equal(ddpm::mix_guidance(cond, uncond, 1.0), uncond + 1.0 * (cond - uncond)));
  CHECK(torch::equal(ddpm::rescale_noise_cfg(mixed, cond, 0.0), mixed));
  // Independent float64 reference: per sample, std with n - 1 over C*H*W values.
  const auto r = ddpm::rescale_noise_cfg(mixed, cond, 0.7);
  for (int64_t b = 0; b < 2; ++b) {
    auto sd = [](const torch::Tensor& v) {
      const auto d = v.to(torch::kDouble).flatten();
      const double m = d.mean().item<double>();
      return std::sqrt((d - m).pow(2).sum().item<double>() / static_cast<double>(d.numel() - 1));
    };
    const double ratio = sd(cond[b]) / sd(mixed[b]);
    const auto want = 0.7 * mixed[b].to(torch::kDouble) * ratio + 0.3 * mixed[b].to(torch::kDouble);
    CHECK(max_rel_err(r[b], want) < 1e-6);
  }
  // phi = 1: the result has the conditional output's std, sample by sample.
  const auto full = ddpm::rescale_noise_cfg(mixed, cond, 1.0);
  for (int64_t b = 0; b < 2; ++b) CHECK(full[b].std().item<double>() == Approx(cond[b].std().item<double>()).epsilon(1e-5));
}

TEST_CASE("drop_labels replaces labels by the null class at rate p_uncond; p_uncond 0 never", "[guidance]") {
  const int64_t n = 20000, null_label = 10;
  const auto labels = torch::arange(n, torch::kLong) % 10;
  for (const double p : {0.1, 0.5}) {
    INFO("p_uncond " << p);
    auto g = ddpm_test::cpu_gen(42);
    const auto out = ddpm::drop_labels(labels, p, null_label, g);
    const auto dropped = (out == null_label);
    const int64_t k = dropped.sum().item<int64_t>();
    // Binomial(n, p): mean n p, sd sqrt(n p (1 - p)); 6 sd is a bound a correct sampler fails
    // with probability ~1e-9, a wrong rate (e.g. p/2 or 2p) always.
    const double mean = n * p, sd = std::sqrt(n * p * (1 - p));
    CHECK(std::abs(static_cast<double>(k) - mean) < 6 * sd);
    // The kept ones are unchanged.
    CHECK(torch::equal(out.masked_select(~dropped), labels.masked_select(~dropped)));
    // Seeded: the same generator seed drops the same labels.
    auto g2 = ddpm_test::cpu_gen(42);
    CHECK(torch::equal(ddpm::drop_labels(labels, p, null_label, g2), out));
  }
  auto g = ddpm_test::cpu_gen(7);
  CHECK(torch::equal(ddpm::drop_labels(labels, 0.0, null_label, g), labels));
  // p_uncond 0 draws nothing: the generator is where a fresh one is.
  auto fresh = ddpm_test::cpu_gen(7);
  CHECK(torch::equal(torch::rand({4}, g), torch::rand({4}, fresh)));
  auto g1 = ddpm_test::cpu_gen(8);
  CHECK((ddpm::drop_labels(labels, 1.0, null_label, g1) == null_label).all().item<bool>());
}

TEST_CASE("Pipeline rejects labels and guidance that do not suit the UNet", "[guidance][pipeline]") {
  ddpm::UNet cond = cfg_unet();
  ddpm::Pipeline pipe(cond, ddpm::make_sampler(cfg_scheduler_config(), "ddim"));
  auto gen = ddpm_test::cpu_gen(0);
  const auto opts = ddpm::GenerateOptions().num_inference_steps(1);
  require_error([&] { pipe.generate(2, gen, opts); }, {"class-conditional", "null class 4", "class_labels"});
  require_error([&] { pipe.generate(2, gen, ddpm::GenerateOptions(opts).class_labels({5})); },
                {"class label 5", "[0, 5)"});
  require_error([&] { pipe.generate(2, gen, ddpm::GenerateOptions(opts).class_labels({0, 1, 2})); },
                {"3 class labels for 2 images"});
  require_error([&] { pipe.generate(2, gen, ddpm::GenerateOptions(opts).class_labels({1}).guidance_rescale(1.5)); },
                {"guidance_rescale", "1.5"});
  // The null class itself may be asked for (unconditional samples from a CFG model).
  CHECK(pipe.generate(2, gen, ddpm::GenerateOptions(opts).class_labels({4})).size(0) == 2);

  ddpm::UNet plain = ddpm::load_diffusers_unet(diffusers_fixture_path("unet_tiny"));
  ddpm::Pipeline p2(plain, ddpm::make_sampler(cfg_scheduler_config(), "ddim"));
  require_error([&] { p2.generate(1, gen, ddpm::GenerateOptions(opts).class_labels({1})); }, {"not class-conditional"});
  require_error([&] { p2.generate(1, gen, ddpm::GenerateOptions(opts).guidance_scale(3)); },
                {"guidance_scale 3", "class-conditional"});
}

TEST_CASE("parse_class_labels (--class): indices, names, lists, grid rows and clear errors", "[guidance][cli]") {
  const std::vector<std::string> names = {"T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                                          "Sandal",      "Shirt",   "Sneaker",  "Bag",   "Ankle boot"};
  CHECK(ddpm::parse_class_labels("7", names, 10) == std::vector<int64_t>{7});
  CHECK(ddpm::parse_class_labels("Sneaker", names, 10) == std::vector<int64_t>{7});
  CHECK(ddpm::parse_class_labels("sneaker", names, 10) == std::vector<int64_t>{7});
  CHECK(ddpm::parse_class_labels("0,2, 4,ankle boot", names, 10) == std::vector<int64_t>{0, 2, 4, 9});
  CHECK(ddpm::parse_class_labels("3", {}, 4) == std::vector<int64_t>{3});
  require_error([&] { ddpm::parse_class_labels("10", names, 10); }, {"out of range [0, 10)", "null class"});
  require_error([&] { ddpm::parse_class_labels("-1", names, 10); }, {"out of range"});
  require_error([&] { ddpm::parse_class_labels("boot", names, 10); }, {"unknown class name", "7 Sneaker", "9 Ankle boot"});
  require_error([&] { ddpm::parse_class_labels("cat", {}, 4); }, {"unknown class name", "use indices"});
  require_error([&] { ddpm::parse_class_labels("1,,2", names, 10); }, {"empty entry"});
  require_error([&] { ddpm::parse_class_labels("1", names, 0); }, {"not class-conditional"});
  CHECK(ddpm::sample_class_labels("0,2,4", names, 10, 3) == std::vector<int64_t>{0, 2, 4});
  CHECK(ddpm::sample_class_labels("5", names, 10, 3) == std::vector<int64_t>{5});
  require_error([&] { ddpm::sample_class_labels("0,2,4", names, 10, 16); }, {"3 labels", "16 images"});
  CHECK(ddpm::sample_class_labels("", names, 0, 4).empty());
  // No --class: one class per row of the square grid (16 images: 4 per row), or of nrow.
  CHECK(ddpm::sample_class_labels("", names, 10, 16) ==
        std::vector<int64_t>{0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3});
  CHECK(ddpm::class_grid_labels(7, 2, 3) == std::vector<int64_t>{0, 0, 0, 1, 1, 1, 0});
  CHECK(ddpm::class_grid_labels(5, 10) == std::vector<int64_t>{0, 0, 0, 1, 1});  // ceil(sqrt(5)) = 3 columns
}

// ----------------------------------------------------------------------------- training
namespace {

std::string cfg_trainer_dir() { return ddpm_test::process_temp_dir("cfg-trainer"); }

// 32 grayscale 6x6 images with a bright square in one of four corners; label = the corner.
ddpm::ImageData corner_data(bool names = true) {
  ddpm::ImageData d;
  d.images = torch::full({32, 1, 6, 6}, 10, torch::kUInt8);
  d.labels = torch::zeros({32}, torch::kInt64);
  for (int i = 0; i < 32; ++i) {
    const int oy = (i % 4) / 2 * 3, ox = (i % 2) * 3;
    d.images[i][0].slice(0, oy, oy + 3).slice(1, ox, ox + 3).fill_(240);
    d.labels[i] = i % 4;
  }
  if (names) d.class_names = {"top-left", "top-right", "bottom-left", "bottom-right"};
  d.name = "corners";
  return d;
}

ddpm::TrainConfig cond_config(const std::string& out) {
  ddpm::TrainConfig c = ddpm_test::tiny_train_config(out, 8);
  c.num_classes = 4;
  c.p_uncond = 0.25;
  c.guidance_scale = 2.0;
  c.batch_size = 8;
  c.lr = 2e-3;
  c.warmup_steps = 2;
  c.ema_decay = 0.9;
  c.steps = 6;
  c.seed = 3;
  c.num_threads = 2;
  c.log_every = 1;
  c.sample_count = 4;
  c.sample_steps = 2;
  return c;
}

using ddpm_test::metric_losses;
using ddpm_test::QuietTrainer;

}  // namespace

TEST_CASE("Conditional training feeds the batch labels, dropping p_uncond of them", "[guidance][train]") {
  {
    auto cfg = cond_config(cfg_trainer_dir());
    cfg.p_uncond = 0.5;
    QuietTrainer t(cfg, corner_data());
    CHECK(t.unet_options().num_class_embeds().value_or(0) == 5);
    CHECK(t.model()->options.null_class_label() == 4);
    int64_t dropped = 0, total = 0;
    for (int64_t s = 0; s < 12; ++s) {
      const auto want = *t.loader().batch(s).labels;
      const auto so = t.train_step();
      REQUIRE(so.finite);
      REQUIRE(so.class_labels.defined());
      const auto drop = so.class_labels == 4;
      dropped += drop.sum().item<int64_t>();
      total += so.class_labels.numel();
      CHECK(torch::equal(so.class_labels.masked_select(~drop), want.masked_select(~drop)));
    }
    // Binomial(96, 0.5): mean 48, sd 4.9; 5 sd.
    CHECK(total == 96);
    CHECK(std::abs(static_cast<double>(dropped) - 48.0) < 5 * std::sqrt(96 * 0.25));
  }
  {
    auto cfg = cond_config(cfg_trainer_dir());
    cfg.p_uncond = 0.0;
    QuietTrainer t(cfg, corner_data());
    for (int64_t s = 0; s < 4; ++s) {
      const auto want = *t.loader().batch(s).labels;
      const auto so = t.train_step();
      CHECK(torch::equal(so.class_labels, want));  // never the null class
    }
  }
  {
    // Unconditional runs report no labels.
    auto cfg = cond_config(cfg_trainer_dir());
    cfg.num_classes = 0;
    QuietTrainer t(cfg, corner_data());
    CHECK_FALSE(t.train_step().class_labels.defined());
    CHECK_FALSE(t.unet_options().num_class_embeds().has_value());
  }
}

TEST_CASE("Conditional stop + resume equals the uninterrupted run; checkpoints record the class names",
          "[guidance][train]") {
  const std::string dir_a = cfg_trainer_dir(), dir_b = cfg_trainer_dir();
  {
    QuietTrainer a(cond_config(dir_a), corner_data());
    CHECK(a.run().status == ddpm::RunStatus::Completed);
  }
  {
    QuietTrainer b(cond_config(dir_b), corner_data());
    CHECK(b.run(3).step == 3);
  }
  {
    QuietTrainer c(cond_config(dir_b), corner_data());
    CHECK(c.step() == 3);
    c.run();
    CHECK(c.step() == 6);
  }
  const auto la = metric_losses(dir_a), lb = metric_losses(dir_b);
  REQUIRE(la.size() == 6);
  REQUIRE(lb.size() == 6);
  for (size_t i = 0; i < 6; ++i) CHECK(la[i] == lb[i]);  // bit-identical on CPU
  auto ea = ddpm::load_training_checkpoint(dir_a);
  auto eb = ddpm::load_training_checkpoint(dir_b);
  for (const auto& p : ea.ema_model->named_parameters()) {
    CHECK(torch::equal(p.value(), eb.ema_model->named_parameters()[p.key()]));
  }
  CHECK(ea.class_names == std::vector<std::string>{"top-left", "top-right", "bottom-left", "bottom-right"});
  CHECK(ea.unet_options.num_class_embeds().value_or(0) == 5);
  CHECK(ea.train_config.at("num_classes") == 4);
  const auto names = ddpm::detail::read_json_file(dir_a + "/class_names.json");
  CHECK(names == nlohmann::json(ea.class_names));
  CHECK(std::ifstream(dir_a + "/samples/step-000000006.png").good());
  // The trained model generates with guidance from its checkpoint.
  ddpm::Pipeline pipe(ea.ema_model, ddpm::make_sampler(ea.scheduler_config, "ddim"));
  auto gen = ddpm_test::cpu_gen(1);
  const auto img = pipe.generate(2, gen, ddpm::GenerateOptions().num_inference_steps(2).class_labels({1}).guidance_scale(2));
  CHECK(img.sizes() == torch::IntArrayRef({2, 1, 8, 8}));
  CHECK(torch::isfinite(img).all().item<bool>());
}

TEST_CASE("num_classes errors name the key and the data", "[guidance][train]") {
  auto no_labels = corner_data();
  no_labels.labels = torch::Tensor();
  require_error([&] { QuietTrainer t(cond_config(cfg_trainer_dir()), no_labels); },
                {"\"num_classes\" = 4", "corners", "has none"});
  auto cfg = cond_config(cfg_trainer_dir());
  cfg.num_classes = 10;
  require_error([&] { QuietTrainer t(cfg, corner_data()); }, {"\"num_classes\" = 10", "has 4 classes"});
  cfg.num_classes = 3;
  require_error([&] { QuietTrainer t(cfg, corner_data(false)); }, {"\"num_classes\" = 3", "labels in [0, 3]"});
  // A class-conditional model config needs num_classes.
  auto uncond = cond_config(cfg_trainer_dir());
  uncond.num_classes = 0;
  uncond.model["num_class_embeds"] = 5;
  require_error([&] { QuietTrainer t(uncond, corner_data()); }, {"num_class_embeds 5", "\"num_classes\" is 0"});
  // JSON range checks.
  nlohmann::json j = cond_config("x");
  j["p_uncond"] = 1.5;
  require_error([&] { (void)j.get<ddpm::TrainConfig>(); }, {"\"p_uncond\"", "1.5"});
}
