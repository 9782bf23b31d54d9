// Euler, Euler ancestral, Heun, UniPC and DPM-Solver++ (Karras / SDE / 3M) trajectories against
// diffusers v0.31.0 (tests/data/diffusers/samplers/*.json, made by tools/fixtures/samplers.py):
// every model call's sample, scaled model input, toy model output and step result, within 1e-5
// relative (README tolerance), starting from diffusers' scheduler_config as it writes it.
#include "fixture_util.hpp"
#include "fixture_torch_version.hpp"

#include <ddpm/forward_diffuser.hpp>
#include <ddpm/io/diffusers.hpp>
#include <ddpm/io/safetensors.hpp>
#include <ddpm/sample.hpp>
#include <ddpm/sampler.hpp>
#include <ddpm/samplers/dpm_solver.hpp>
#include <ddpm/samplers/euler.hpp>
#include <ddpm/samplers/euler_ancestral.hpp>
#include <ddpm/samplers/heun.hpp>
#include <ddpm/samplers/unipc.hpp>

#include <catch2/catch.hpp>
#include <torch/torch.h>

#include <cmath>
#include <string>

using ddpm_test::diffusers_fixture;
using ddpm_test::max_rel_err;
using ddpm_test::tensor_from_json;

namespace {
// The fixtures were made on torch 1.13 (tools/fixtures/samplers.py). LibTorch 2.x's float32 kernels
// round some schedule elements differently (see fixture_torch_version.hpp), which moves sigmas and
// step results by up to ~1.6e-5 relative (measured on 2.15); 1.x stays at 1e-5 and bit-exact sigmas.
constexpr double kTol = TORCH_VERSION_MAJOR >= 2 ? 5e-5 : 1e-5;

/// The fixture's toy model: (0.1 * x) * cos(t / 100) + sin(t / 300).
torch::Tensor toy_model(const torch::Tensor& x, double t) {
  return (x * 0.1) * std::cos(t / 100.0) + std::sin(t / 300.0);
}

struct RunStats {
  int runs = 0, calls = 0, noisy_calls = 0;
};

/// Replays every run of samplers/<file> through S built from the recorded scheduler_config.
template <class S>
RunStats check_trajectories(const std::string& file) {
  RunStats st;
  const auto& fx = diffusers_fixture("samplers/" + file);
  for (const auto& run : fx.at("runs")) {
    INFO("run " << run.at("name").get<std::string>());
    REQUIRE(run.at("class_name") == S::kClassName);
    S s(run.at("scheduler_config").get<typename S::Options>());
    const int64_t n = run.at("num_inference_steps").get<int64_t>();
    s.set_timesteps(n);
    const auto ts = run.at("timesteps").get<std::vector<double>>();
    REQUIRE(s.timesteps().size() == ts.size());
    for (size_t i = 0; i < ts.size(); ++i) {
      CHECK(s.timesteps()[i] == Approx(ts[i]).epsilon(1e-6).margin(1e-4));
    }
    const auto sig = ddpm_test::float32_list(run.at("sigmas"));
    REQUIRE(s.sigmas().numel() == sig.numel());
    CHECK(ddpm_test::count_fixture_mismatches(s.sigmas(), sig) == 0);  // float32 bits on 1.x, Karras included
    CHECK(s.init_noise_sigma() == Approx(run.at("init_noise_sigma").get<double>()).epsilon(1e-6));

    // Step by step: every call starts from diffusers' sample and model output (the sampler's own
    // history comes from the previous calls), so each step is compared on its own (1e-5).
    // Alongside, a free-running trajectory (our samples, our model outputs) must end near
    // diffusers' final sample: float32 rounding differences may grow where a step cancels
    // (sigma_max = 4096 with zero-terminal SNR), hence 1e-4 there.
    S free(run.at("scheduler_config").get<typename S::Options>());
    free.set_timesteps(n);
    torch::Tensor y = tensor_from_json(run.at("initial_noise")) * free.init_noise_sigma();
    const auto& steps = run.at("steps");
    REQUIRE(steps.size() == ts.size());
    CHECK(max_rel_err(y, tensor_from_json(steps[0].at("sample"))) < kTol);
    for (size_t k = 0; k < steps.size(); ++k) {
      const auto& c = steps[k];
      INFO("call " << k << " t " << c.at("t").get<double>());
      const double t = s.timesteps()[k];
      const auto x = tensor_from_json(c.at("sample"));
      const auto in = s.scale_model_input(x, t);
      CHECK(max_rel_err(in, tensor_from_json(c.at("model_input"))) < kTol);
      const auto mo = tensor_from_json(c.at("model_output"));
      CHECK(max_rel_err(toy_model(in, t), mo) < kTol);
      c10::optional<torch::Tensor> noise;
      if (!c.at("noise").is_null()) {
        noise = tensor_from_json(c.at("noise"));
        ++st.noisy_calls;
      }
      const auto res = s.step(mo, t, x, c10::nullopt, noise);
      CHECK(max_rel_err(res.prev_sample, tensor_from_json(c.at("prev_sample"))) < kTol);
      if (c.contains("pred_original_sample")) {
        CHECK(max_rel_err(res.pred_original_sample, tensor_from_json(c.at("pred_original_sample"))) < kTol);
      }
      CHECK(res.prev_sample.scalar_type() == torch::kFloat32);
      if (k + 1 < steps.size()) {
        CHECK(max_rel_err(res.prev_sample, tensor_from_json(steps[k + 1].at("sample"))) < kTol);
      }
      // the free-running trajectory
      y = free.step(toy_model(free.scale_model_input(y, t), t), t, y, c10::nullopt, noise).prev_sample;
      ++st.calls;
    }
    CHECK(max_rel_err(y, tensor_from_json(run.at("final"))) < 1e-4);
    REQUIRE(torch::isfinite(y).all().item<bool>());
    ++st.runs;
  }
  return st;
}
}  // namespace

TEST_CASE("Euler trajectories match diffusers EulerDiscreteScheduler", "[sampler][euler][fixture]") {
  const auto st = check_trajectories<ddpm::EulerSampler>("euler.json");
  CHECK(st.runs == 7);
  CHECK(st.noisy_calls == 0);
}

TEST_CASE("Euler ancestral trajectories match diffusers with its recorded noise", "[sampler][euler_a][fixture]") {
  const auto st = check_trajectories<ddpm::EulerAncestralSampler>("euler_ancestral.json");
  CHECK(st.runs == 3);
  CHECK(st.noisy_calls == st.calls);  // a draw every step, the last one included
}

TEST_CASE("Heun trajectories match diffusers HeunDiscreteScheduler (2N-1 calls)", "[sampler][heun][fixture]") {
  const auto st = check_trajectories<ddpm::HeunSampler>("heun.json");
  CHECK(st.runs == 4);
  CHECK(st.calls == (2 * 6 - 1) + (2 * 8 - 1) + (2 * 5 - 1) + (2 * 16 - 1));
}

TEST_CASE("DPM-Solver++ Karras / SDE / 3M trajectories match diffusers", "[sampler][dpm][fixture]") {
  const auto st = check_trajectories<ddpm::DPMSolverSampler>("dpmsolver.json");
  CHECK(st.runs == 10);
  CHECK(st.noisy_calls == 10 + 16 + 8);  // the three sde-dpmsolver++ runs
}

TEST_CASE("UniPC trajectories match diffusers UniPCMultistepScheduler", "[sampler][unipc][fixture]") {
  const auto st = check_trajectories<ddpm::UniPCSampler>("unipc.json");
  CHECK(st.runs == 10);
}

TEST_CASE("scheduler_config round trip for each new class, as diffusers writes it", "[sampler][json]") {
  int configs = 0;
  for (const char* file : {"euler.json", "euler_ancestral.json", "heun.json", "dpmsolver.json", "unipc.json"}) {
    for (const auto& run : diffusers_fixture(std::string("samplers/") + file).at("runs")) {
      const auto& cfg = run.at("scheduler_config");
      INFO(file << " " << run.at("name").get<std::string>());
      const auto s = ddpm::make_sampler(cfg);  // kind from "_class_name"
      CHECK(s.info().class_name == cfg.at("_class_name").get<std::string>());
      const auto written = ddpm::to_scheduler_config(s);
      // every key ddpm writes carries diffusers' value; every key diffusers wrote is written back
      for (auto it = cfg.begin(); it != cfg.end(); ++it) {
        if (it.key() == "_diffusers_version") continue;
        // JSON has no -inf: ddpm omits diffusers' default lambda_min_clipped = -Infinity
        if (it.key() == "lambda_min_clipped" && *it == "-Infinity" && !written.contains(it.key())) continue;
        INFO("key " << it.key());
        REQUIRE(written.contains(it.key()));
        if (it->is_number_float()) {
          CHECK(written.at(it.key()).get<double>() == Approx(it->get<double>()));
        } else {
          CHECK(written.at(it.key()) == *it);
        }
      }
      // and reading it back gives the same sampler configuration
      const auto again = ddpm::make_sampler(written);
      CHECK(again.options_json() == s.options_json());
      ++configs;
    }
  }
  CHECK(configs == 7 + 3 + 4 + 10 + 10);
}

TEST_CASE("stochastic samplers reproduce from a seed, and the noise can be supplied", "[sampler][seed]") {
  for (const char* name : {"euler_a", "dpmpp_2m_sde"}) {
    INFO(name);
    auto run = [&](c10::optional<at::Generator> gen, bool supply) {
      auto s = ddpm::make_sampler(nlohmann::json::object(), std::string(name));
      s.set_timesteps(8);
      auto x = torch::ones({2, 1, 4, 4}) * s.init_noise_sigma();
      auto g2 = ddpm_test::cpu_gen(99);
      for (double t : s.timesteps()) {
        const auto out = toy_model(s.scale_model_input(x, t), t);
        c10::optional<torch::Tensor> z;
        if (supply) z = torch::randn(x.sizes(), g2);
        x = s.step(out, t, x, gen, z).prev_sample;
      }
      return x;
    };
    const auto a = run(ddpm_test::cpu_gen(5), false);
    const auto b = run(ddpm_test::cpu_gen(5), false);
    const auto c = run(ddpm_test::cpu_gen(6), false);
    CHECK(torch::equal(a, b));
    CHECK(!torch::allclose(a, c));
    // supplied noise wins over the generator: same noise stream from different generators
    const auto d = run(ddpm_test::cpu_gen(5), true);
    const auto e = run(ddpm_test::cpu_gen(6), true);
    CHECK(torch::equal(d, e));
    CHECK(!torch::allclose(a, d));
  }
}

TEST_CASE("presets and names resolve to the diffusers configs they stand for", "[sampler][names]") {
  using ddpm::resolve_sampler_name;
  CHECK(resolve_sampler_name("euler").kind == ddpm::SamplerKind::Euler);
  CHECK(resolve_sampler_name("EulerDiscreteScheduler").kind == ddpm::SamplerKind::Euler);
  CHECK(resolve_sampler_name("euler_a").kind == ddpm::SamplerKind::EulerAncestral);
  CHECK(resolve_sampler_name("heun").kind == ddpm::SamplerKind::Heun);
  CHECK(resolve_sampler_name("unipc").kind == ddpm::SamplerKind::UniPC);
  CHECK(resolve_sampler_name("dpmpp_2m").kind == ddpm::SamplerKind::DPMSolver);
  const auto k = resolve_sampler_name("dpmpp_2m_karras");
  CHECK(k.kind == ddpm::SamplerKind::DPMSolver);
  CHECK(k.overrides == nlohmann::json{{"use_karras_sigmas", true}});
  auto s3 = ddpm::make_sampler(nlohmann::json{{"_class_name", "DDIMScheduler"}, {"beta_end", 0.012}}, "dpmpp_3m");
  REQUIRE(s3.get_if<ddpm::DPMSolverSampler>() != nullptr);
  CHECK(s3.get_if<ddpm::DPMSolverSampler>()->options().solver_order() == 3);
  CHECK(s3.schedule().options().beta_end() == 0.012);
  auto sde = ddpm::make_sampler(nlohmann::json::object(), "dpmpp_2m_sde");
  CHECK(sde.get_if<ddpm::DPMSolverSampler>()->options().algorithm_type() ==
        ddpm::DPMSolverAlgorithm::SDEDPMSolverPlusPlus);
  // every registered name and preset has a one-line help
  for (const auto& i : ddpm::registered_samplers()) {
    CHECK(!i.help.empty());
    CHECK(i.help.find('\n') == std::string::npos);
  }
  for (const auto& p : ddpm::sampler_presets()) {
    INFO(p.name);
    CHECK(!p.help.empty());
    CHECK(p.help.find('\n') == std::string::npos);
    CHECK_NOTHROW(ddpm::make_sampler(nlohmann::json::object(), p.name));
  }
  for (const char* a1111 : {"euler", "euler_a", "heun", "dpmpp_2m", "dpmpp_2m_karras", "dpmpp_2m_sde", "dpmpp_3m",
                            "unipc", "ddim", "ddpm"}) {
    CHECK_NOTHROW(resolve_sampler_name(a1111));
  }
}

TEST_CASE("tiny UNet end to end: each sampler name reproduces diffusers' output", "[sampler][e2e]") {
  // tools/fixtures/samplers.py ran the unet_tiny UNet2DModel (= e2e/dpmpp_tiny's) with each
  // diffusers class made by Cls.from_config(dpmpp_tiny's scheduler_config, **overrides the name
  // stands for), 10 steps, from the stored latents; stochastic ones drew from
  // torch.Generator().manual_seed(seed) on CPU.
  const auto& fx = diffusers_fixture("samplers/e2e_tiny_unet.json");
  const auto tensors =
      ddpm::load_safetensors(ddpm_test::diffusers_fixture_path("samplers/e2e_tiny_unet.safetensors"));
  ddpm::UNet unet = ddpm::load_diffusers_unet(ddpm_test::diffusers_fixture_path("unet_tiny"));
  unet->eval();
  const auto latents = tensors.at("latents");
  int cases = 0;
  for (const auto& c : fx.at("cases")) {
    const auto name = c.at("sampler").get<std::string>();
    INFO("sampler " << name);
    auto sampler = ddpm::make_sampler(c.at("scheduler_config"), name);
    // the name on the folder's config means the config diffusers' Cls.from_config(config, **overrides)
    // wrote (which also carries the DPM keys it does not use)
    const auto as_diffusers = ddpm::make_sampler(c.at("diffusers_config"));
    CHECK(as_diffusers.kind() == sampler.kind());
    CHECK(as_diffusers.options_json() == sampler.options_json());
    sampler.set_timesteps(c.at("steps").get<int64_t>());
    const auto ts = c.at("timesteps").get<std::vector<double>>();
    REQUIRE(sampler.timesteps().size() == ts.size());
    for (size_t i = 0; i < ts.size(); ++i) CHECK(sampler.timesteps()[i] == Approx(ts[i]).epsilon(1e-6));
    const auto x_T = latents * sampler.init_noise_sigma();
    const auto out = ddpm::sample_from(unet, sampler, x_T, ddpm_test::cpu_gen(c.at("seed").get<uint64_t>()));
    const auto expected = tensors.at("expected_" + name);
    const double scale = expected.abs().max().item<double>();
    CHECK(scale == Approx(c.at("max_abs").get<double>()).epsilon(1e-6));
    CHECK((out - expected).abs().max().item<double>() < 1e-4 * scale);
    ++cases;
  }
  CHECK(cases == 7);
}

namespace {
/// A denoiser that knows x0: from the model input (the VP sample x_t = alpha x0 + sigma_vp eps)
/// and a float timestep t it answers exactly for its prediction type, with sigma(t) linearly
/// interpolated (float64) between the training sigmas sqrt((1 - abar)/abar), independently of
/// the samplers' code.
struct SigmaPerfectDenoiser {
  torch::Tensor abar;  // float64 [T]
  torch::Tensor x0;    // float64
  ddpm::PredictionType type;
  int calls = 0;
  torch::Tensor operator()(const torch::Tensor& x_in, const torch::Tensor& t) {
    ++calls;
    const double tv = t[0].item<double>();
    const auto lo = static_cast<int64_t>(std::floor(tv));
    const auto hi = std::min<int64_t>(lo + 1, abar.size(0) - 1);
    auto sig = [&](int64_t i) {
      const double a = abar[i].item<double>();
      return std::sqrt((1 - a) / a);
    };
    const double sigma = sig(lo) + (tv - static_cast<double>(lo)) * (sig(hi) - sig(lo));
    const double alpha = 1.0 / std::sqrt(sigma * sigma + 1.0);
    const double s_vp = sigma * alpha;
    const auto x = x_in.to(torch::kFloat64);
    const auto eps = (x - alpha * x0) / s_vp;
    torch::Tensor out;
    switch (type) {
      case ddpm::PredictionType::Epsilon: out = eps; break;
      case ddpm::PredictionType::Sample: out = x0; break;
      case ddpm::PredictionType::VPrediction: out = alpha * eps - s_vp * x0; break;
    }
    return out.to(x_in.scalar_type());
  }
};
}  // namespace

TEST_CASE("new samplers recover x0 from a perfect denoiser through ddpm::sample", "[sampler][sample]") {
  auto gen = ddpm_test::cpu_gen(21);
  const auto x0 = torch::rand({2, 3, 4, 4}, gen) * 1.8 - 0.9;
  const auto abar = ddpm::NoiseSchedule().alphas_cumprod().to(torch::kFloat64);
  for (auto pt : {ddpm::PredictionType::Epsilon, ddpm::PredictionType::Sample, ddpm::PredictionType::VPrediction}) {
    for (const char* name : {"euler", "euler_a", "heun", "unipc", "unipc_3", "dpmpp_2m_sde", "dpmpp_3m"}) {
      if (pt == ddpm::PredictionType::Sample && std::string(name) == "euler_a") continue;  // unsupported
      INFO(name << " " << nlohmann::json(pt).dump());
      // linear betas 1e-4 .. 0.02 for all (Heun's class default differs)
      nlohmann::json cfg = {{"prediction_type", pt}, {"beta_start", 1e-4}, {"beta_end", 0.02}};
      auto s = ddpm::make_sampler(cfg, std::string(name));
      s.set_timesteps(25);
      SigmaPerfectDenoiser model{abar, x0.to(torch::kFloat64), pt};
      auto g = ddpm_test::cpu_gen(3);
      const auto out = ddpm::sample(model, s, {2, 3, 4, 4}, g);
      CHECK(model.calls == static_cast<int>(s.timesteps().size()));
      CHECK((out - x0).abs().max().item<double>() < 1e-4);
    }
  }
}

TEST_CASE("DPM-Solver refuses the Karras + sigma_min last step diffusers turns into NaN", "[sampler][dpm][errors]") {
  using Catch::Matchers::Contains;
  auto opts = ddpm::DPMSolverSamplerOptions().use_karras_sigmas(true).final_sigmas_type(ddpm::FinalSigmasType::SigmaMin);
  ddpm::DPMSolverSampler o3(ddpm::DPMSolverSamplerOptions(opts).solver_order(3));
  CHECK_THROWS_WITH(o3.set_timesteps(16), Contains("sigma_min") && Contains("NaN") && Contains("order 3"));
  CHECK_NOTHROW(o3.set_timesteps(12));  // lower_order_final, < 15 steps: a first-order last step (fixture run)
  ddpm::DPMSolverSampler heun(ddpm::DPMSolverSamplerOptions(opts).solver_type(ddpm::DPMSolverType::Heun));
  CHECK_THROWS_WITH(heun.set_timesteps(20), Contains("order 2"));
  ddpm::DPMSolverSampler mid(opts);  // midpoint: D1 = 0 there, finite as in diffusers
  mid.set_timesteps(20);
  auto x = torch::randn({1, 1, 2, 2}, ddpm_test::cpu_gen(1));
  for (double t : mid.timesteps()) x = mid.step(toy_model(x, t), t, x).prev_sample;
  CHECK(torch::isfinite(x).all().item<bool>());
}
