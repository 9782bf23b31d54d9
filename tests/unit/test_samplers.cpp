// Samplers beyond the step fixtures: the traps, a perfect denoiser recovering x0 with each
// sampler, the sample loop, AnySampler / scheduler_config I/O, JSON round trips and errors.
#include "fixture_util.hpp"

#include <ddpm/forward_diffuser.hpp>
#include <ddpm/sample.hpp>
#include <ddpm/sampler.hpp>

#include <catch2/catch.hpp>
#include <torch/torch.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>

using namespace ddpm;
using Catch::Matchers::Contains;
using ddpm_test::abar64;
using ddpm_test::cpu_gen;
using ddpm_test::max_rel_err;

namespace {

/// A model that knows x0 and answers exactly for its prediction type.
struct PerfectDenoiser {
  ForwardDiffuser fd;
  torch::Tensor x0;
  int calls = 0;
  torch::Tensor operator()(const torch::Tensor& xt, const torch::Tensor& t) {
    ++calls;
    REQUIRE(t.scalar_type() == torch::kLong);
    REQUIRE(t.sizes() == torch::IntArrayRef({xt.size(0)}));
    const auto a = fd.schedule().sqrt_alphas_cumprod().to(torch::kFloat64).index_select(0, t).view({-1, 1, 1, 1});
    const auto s = fd.schedule().sqrt_one_minus_alphas_cumprod().to(torch::kFloat64).index_select(0, t).view({-1, 1, 1, 1});
    const auto x0d = x0.to(torch::kFloat64);
    const auto eps = (xt.to(torch::kFloat64) - a * x0d) / s;
    return fd.target(x0d, eps, t).to(xt.scalar_type());
  }
};
}  // namespace

TEST_CASE("trap: numpy round-half-even timesteps (166.5 -> 166, 499.5 -> 500)", "[sampler][traps]") {
  CHECK(ddpm::detail::np_round(166.5) == 166.0);
  CHECK(ddpm::detail::np_round(499.5) == 500.0);
  CHECK(ddpm::detail::np_round(832.5) == 832.0);
  CHECK(ddpm::detail::np_round(-0.5) == 0.0);
  // linspace(0, 999, 7) = 0, 166.5, 333, 499.5, 666, 832.5, 999
  DDIMSampler s(DDIMSamplerOptions().timestep_spacing(TimestepSpacing::Linspace));
  s.set_timesteps(7);
  CHECK(s.timesteps() == std::vector<double>{999, 832, 666, 500, 333, 166, 0});
}

TEST_CASE("trap: DDIM prev_t is t - T//N, not the next timestep", "[sampler][traps]") {
  DDIMSampler lin(DDIMSamplerOptions().timestep_spacing(TimestepSpacing::Linspace));
  lin.set_timesteps(10);
  CHECK(lin.timesteps()[1] == 888);
  CHECK(lin.previous_timestep(999) == 899);
  DDIMSampler tr(DDIMSamplerOptions().timestep_spacing(TimestepSpacing::Trailing));
  tr.set_timesteps(7);
  CHECK(tr.timesteps() == std::vector<double>{999, 856, 713, 570, 428, 285, 142});
  CHECK(tr.previous_timestep(856) == 714);
  DDPMSampler d;
  CHECK(d.previous_timestep(500) == 499);  // all T steps before set_timesteps
  CHECK(d.timesteps().size() == 1000);
  d.set_timesteps(50);
  CHECK(d.previous_timestep(980) == 960);
  CHECK(d.previous_timestep(0) == -20);
}

TEST_CASE("trailing spacing never yields a negative timestep (numpy arange overshoot)", "[sampler][traps]") {
  // np.arange(1000, 0, -1000/61) has 62 entries (the last rounds to 0 -> -1); diffusers would
  // then index alphas_cumprod[-1]. ddpm drops it.
  for (int64_t n : {61L, 103L, 7L, 1000L}) {
    DDIMSampler s(DDIMSamplerOptions().timestep_spacing(TimestepSpacing::Trailing));
    s.set_timesteps(n);
    INFO("N=" << n);
    CHECK(static_cast<int64_t>(s.timesteps().size()) == n);
    CHECK(s.timesteps().front() == 999);
    CHECK(s.timesteps().back() >= 0);
  }
}

TEST_CASE("trap: zero-terminal-SNR last step stays finite", "[sampler][traps]") {
  NoiseScheduleOptions zs;
  zs.rescale_betas_zero_snr(true);
  // DPM-Solver replaces abar[-1] = 0 by 2^-24: sigma(999) = sqrt((1 - 2^-24) / 2^-24) ~ 4096.
  DPMSolverSampler dpm(DPMSolverSamplerOptions().schedule(zs).prediction_type(PredictionType::VPrediction)
                           .timestep_spacing(TimestepSpacing::Trailing));
  dpm.set_timesteps(10);
  REQUIRE(dpm.timesteps().front() == 999);
  CHECK(dpm.sigmas()[0].item<double>() == Approx(std::sqrt((1 - std::pow(2.0, -24)) / std::pow(2.0, -24))).epsilon(1e-6));
  auto gen = cpu_gen(0);
  const auto x0 = torch::rand({2, 3, 4, 4}, gen) * 1.6 - 0.8;
  PerfectDenoiser model{ForwardDiffuser(NoiseSchedule(zs), ForwardDiffuserOptions().prediction_type(PredictionType::VPrediction)), x0};
  const auto xT = torch::randn({2, 3, 4, 4}, gen);
  const auto out = sample_from(model, dpm, xT, gen);
  CHECK(torch::isfinite(out).all().item<bool>());
  CHECK((out - x0).abs().max().item<double>() < 1e-3);
  // DDIM with v-prediction at abar_t = 0: x0 = -v exactly.
  DDIMSampler ddim(DDIMSamplerOptions().schedule(zs).prediction_type(PredictionType::VPrediction)
                       .timestep_spacing(TimestepSpacing::Trailing).clip_sample(false));
  ddim.set_timesteps(10);
  const auto v = torch::randn({1, 3, 2, 2}, gen);
  const auto step = ddim.step(v, 999, torch::randn({1, 3, 2, 2}, gen));
  CHECK(torch::allclose(step.pred_original_sample, -v));
  CHECK(torch::isfinite(step.prev_sample).all().item<bool>());
}

TEST_CASE("DDPM step equals a float64 hand computation of the posterior", "[sampler][ddpm]") {
  DDPMSampler s(DDPMSamplerOptions().schedule(NoiseScheduleOptions().dtype(torch::kFloat64)).clip_sample(false));
  auto gen = cpu_gen(5);
  const auto xt = torch::randn({2, 3}, gen, torch::kFloat64);
  const auto eps = torch::randn({2, 3}, gen, torch::kFloat64);
  const auto z = torch::randn({2, 3}, gen, torch::kFloat64);
  const int64_t t = 500;
  const double ab = abar64(t), abp = abar64(t - 1), beta = 1 - ab / abp;
  const auto x0 = (xt - std::sqrt(1 - ab) * eps) / std::sqrt(ab);
  const auto mean = std::sqrt(abp) * beta / (1 - ab) * x0 + std::sqrt(1 - beta) * (1 - abp) / (1 - ab) * xt;
  const double var = (1 - abp) / (1 - ab) * beta;
  const auto out = s.step(eps, t, xt, c10::nullopt, z);
  CHECK(max_rel_err(out.prev_sample, mean + std::sqrt(var) * z) < 1e-12);
  DDPMSampler large(DDPMSamplerOptions().schedule(NoiseScheduleOptions().dtype(torch::kFloat64))
                        .clip_sample(false).variance_type(VarianceType::FixedLarge));
  CHECK(max_rel_err(large.step(eps, t, xt, c10::nullopt, z).prev_sample, mean + std::sqrt(beta) * z) < 1e-12);
  // Same generator seed -> same draw; different seed -> different.
  auto g1 = cpu_gen(9), g2 = cpu_gen(9), g3 = cpu_gen(10);
  CHECK(torch::equal(s.step(eps, t, xt, g1).prev_sample, s.step(eps, t, xt, g2).prev_sample));
  CHECK(!torch::equal(s.step(eps, t, xt, cpu_gen(9)).prev_sample, s.step(eps, t, xt, g3).prev_sample));
}

TEST_CASE("clipping and dynamic thresholding of x0", "[sampler]") {
  const auto x0 = torch::tensor({2.5, 2.5, 2.5, -2.5, 0.3, -0.2, 0.1, 0.0}).view({2, 1, 4});
  // sample prediction: x0 = model_output; t = 0 so prev_sample = x0 after clipping.
  DDPMSampler clip(DDPMSamplerOptions().prediction_type(PredictionType::Sample).clip_sample_range(2.0));
  const auto c = clip.step(x0, 0, torch::zeros_like(x0)).pred_original_sample;
  CHECK(torch::allclose(c, torch::tensor({2.0, 2.0, 2.0, -2.0, 0.3, -0.2, 0.1, 0.0}).view({2, 1, 4})));
  DDPMSampler thr(DDPMSamplerOptions().prediction_type(PredictionType::Sample).thresholding(true).sample_max_value(2.0));
  const auto th = thr.step(x0, 0, torch::zeros_like(x0));
  // row 0: s = quantile(|x|) = 2.5 clamped to max 2 -> clamp to [-2, 2] / 2 = +-1;
  // row 1: s = ~0.3 clamped up to 1 -> unchanged.
  CHECK(torch::allclose(th.pred_original_sample,
                        torch::tensor({1.0, 1.0, 1.0, -1.0, 0.3, -0.2, 0.1, 0.0}).view({2, 1, 4})));
  CHECK(torch::allclose(th.prev_sample, th.pred_original_sample, 1e-5, 1e-6));
}

TEST_CASE("each sampler recovers x0 from a perfect denoiser (sample loop)", "[sampler][sample]") {
  auto gen = cpu_gen(21);
  const auto x0 = torch::rand({2, 3, 4, 4}, gen) * 1.8 - 0.9;
  for (auto pt : {PredictionType::Epsilon, PredictionType::Sample, PredictionType::VPrediction}) {
    INFO("prediction " << nlohmann::json(pt).dump());
    PerfectDenoiser model{ForwardDiffuser(NoiseSchedule(), ForwardDiffuserOptions().prediction_type(pt)), x0};
    nlohmann::json cfg = {{"prediction_type", pt}};
    for (SamplerKind kind : {SamplerKind::DDPM, SamplerKind::DDIM, SamplerKind::DPMSolver}) {
      INFO("sampler " << sampler_kind_name(kind));
      AnySampler s = make_sampler(cfg, kind);
      CHECK(s.kind() == kind);
      CHECK(s.prediction_type() == pt);
      s.set_timesteps(kind == SamplerKind::DDPM ? 100 : 20);
      model.calls = 0;
      int64_t seen = 0;
      auto g = cpu_gen(3);
      const auto out = sample(model, s, {2, 3, 4, 4}, g, [&](const SampleStep& st) {
        CHECK(st.index == seen);
        CHECK(st.num_steps == static_cast<int64_t>(s.timesteps().size()));
        CHECK(st.t == s.timesteps()[static_cast<size_t>(st.index)]);
        CHECK(st.sample.sizes() == x0.sizes());
        ++seen;
        return true;
      });
      CHECK(seen == static_cast<int64_t>(s.timesteps().size()));
      CHECK(model.calls == seen);
      CHECK((out - x0).abs().max().item<double>() < 1e-4);
    }
  }
}

TEST_CASE("sample loop: early stop, determinism, DPM history reset, no set_timesteps", "[sampler][sample]") {
  auto toy = [](const torch::Tensor& x, const torch::Tensor& t) {
    return 0.1 * x + (t.to(torch::kFloat32) / 1000.0).view({-1, 1, 1, 1});
  };
  DPMSolverSampler dpm;
  CHECK_THROWS_WITH(sample(toy, dpm, {1, 1, 2, 2}, cpu_gen(0)), Contains("set_timesteps"));
  DDIMSampler ddim;
  CHECK_THROWS_WITH(sample(toy, ddim, {1, 1, 2, 2}, cpu_gen(0)), Contains("set_timesteps"));
  dpm.set_timesteps(8);
  const auto a = sample(toy, dpm, {1, 1, 2, 2}, cpu_gen(4));
  const auto b = sample(toy, dpm, {1, 1, 2, 2}, cpu_gen(4));  // second run resets the history
  CHECK(torch::equal(a, b));
  int steps = 0;
  sample(toy, dpm, {1, 1, 2, 2}, cpu_gen(4), [&](const SampleStep&) { return ++steps < 3; });
  CHECK(steps == 3);
  // DDPM without set_timesteps runs all T steps (diffusers' default).
  DDPMSampler ddpm(DDPMSamplerOptions().schedule(NoiseScheduleOptions().num_train_timesteps(30)));
  int n = 0;
  const auto out = sample(toy, ddpm, {2, 1, 2, 2}, cpu_gen(1), [&](const SampleStep&) { return ++n > 0; },
                          torch::TensorOptions().dtype(torch::kFloat64));
  CHECK(n == 30);
  CHECK(out.scalar_type() == torch::kFloat64);
  // sample() draws x_T from gen on CPU: equal seeds -> equal x_T and results.
  CHECK(torch::equal(sample(toy, ddpm, {2, 1, 2, 2}, cpu_gen(7)), sample(toy, ddpm, {2, 1, 2, 2}, cpu_gen(7))));
}

TEST_CASE("DDIM eta: options default vs explicit, stochastic with a generator", "[sampler][ddim]") {
  auto gen = cpu_gen(2);
  const auto x = torch::randn({1, 2, 2, 2}, gen), e = torch::randn({1, 2, 2, 2}, gen), z = torch::randn({1, 2, 2, 2}, gen);
  DDIMSampler s0;
  s0.set_timesteps(10);
  DDIMSampler s1(DDIMSamplerOptions().eta(1.0));
  s1.set_timesteps(10);
  CHECK(torch::equal(s1.step(e, 500 - 100, x, c10::nullopt, z).prev_sample,
                     s0.step(e, 400, x, 1.0, c10::nullopt, z).prev_sample));
  // Independent: eta = 1, t = 400 -> 300.
  const double ab = abar64(400), abp = abar64(300);
  const double var = (1 - abp) / (1 - ab) * (1 - ab / abp);
  const auto x0 = ((x.to(torch::kFloat64) - std::sqrt(1 - ab) * e) / std::sqrt(ab)).clamp(-1, 1);
  const auto expect = std::sqrt(abp) * x0 + std::sqrt(1 - abp - var) * e + std::sqrt(var) * z;
  CHECK(max_rel_err(s1.step(e, 400, x, c10::nullopt, z).prev_sample, expect) < 1e-5);
}

TEST_CASE("options JSON round trips (diffusers key names, flat schedule keys)", "[sampler][json]") {
  NoiseScheduleOptions sch;
  sch.beta_schedule(BetaSchedule::ScaledLinear).beta_start(0.00085).beta_end(0.012).num_train_timesteps(500);
  {
    DDPMSamplerOptions o;
    o.schedule(sch).prediction_type(PredictionType::VPrediction).variance_type(VarianceType::FixedLarge)
        .clip_sample(false).clip_sample_range(2.0).thresholding(true).dynamic_thresholding_ratio(0.9)
        .sample_max_value(1.5).timestep_spacing(TimestepSpacing::Trailing).steps_offset(1);
    nlohmann::json j = o;
    CHECK(j.at("beta_schedule") == "scaled_linear");
    CHECK(j.at("variance_type") == "fixed_large");
    CHECK(j.at("timestep_spacing") == "trailing");
    const auto b = j.get<DDPMSamplerOptions>();
    CHECK(nlohmann::json(b) == j);
    CHECK(b.schedule().num_train_timesteps() == 500);
    CHECK(b.steps_offset() == 1);
  }
  {
    DDIMSamplerOptions o;
    o.schedule(sch).prediction_type(PredictionType::Sample).set_alpha_to_one(false).eta(0.3)
        .timestep_spacing(TimestepSpacing::Linspace).clip_sample(false);
    nlohmann::json j = o;
    CHECK(j.at("set_alpha_to_one") == false);
    const auto b = j.get<DDIMSamplerOptions>();
    CHECK(nlohmann::json(b) == j);
    CHECK(b.eta() == 0.3);
  }
  {
    DPMSolverSamplerOptions o;
    o.schedule(sch).solver_order(1).solver_type(DPMSolverType::Heun).lower_order_final(false)
        .euler_at_final(true).final_sigmas_type(FinalSigmasType::SigmaMin).lambda_min_clipped(-5.1)
        .timestep_spacing(TimestepSpacing::Leading).steps_offset(1);
    nlohmann::json j = o;
    CHECK(j.at("algorithm_type") == "dpmsolver++");
    CHECK(j.at("final_sigmas_type") == "sigma_min");
    const auto b = j.get<DPMSolverSamplerOptions>();
    CHECK(nlohmann::json(b) == j);
    CHECK(b.lambda_min_clipped() == -5.1);
    const auto d = nlohmann::json(DPMSolverSamplerOptions()).get<DPMSolverSamplerOptions>();
    CHECK(std::isinf(d.lambda_min_clipped()));
    CHECK(d.lambda_min_clipped() < 0);
  }
  CHECK(nlohmann::json(SamplerKind::DPMSolver) == "dpm++");
  CHECK(sampler_kind_from_string("ddim") == SamplerKind::DDIM);
  CHECK(nlohmann::json("ddpm").get<SamplerKind>() == SamplerKind::DDPM);
}

TEST_CASE("scheduler_config: load diffusers e2e configs, write and re-read", "[sampler][json]") {
  const std::string e2e = std::string(DDPM_TEST_DATA_DIR) + "/diffusers/e2e/";
  for (std::string name : {"ddim_tiny", "dpmpp_tiny"}) {
    INFO(name);
    AnySampler s = load_sampler(e2e + name + "/scheduler/scheduler_config.json");
    const auto cs = ddpm::detail::read_json_file(e2e + name + "/case.json");
    CHECK(s.kind() == cs.at("sampler").get<SamplerKind>());
    s.set_timesteps(cs.at("steps").get<int64_t>());
    CHECK(s.timesteps() == cs.at("timesteps").get<std::vector<double>>());
    const auto cfg = to_scheduler_config(s);
    CHECK(cfg.at("_class_name") == (name == "ddim_tiny" ? "DDIMScheduler" : "DPMSolverMultistepScheduler"));
    CHECK_FALSE(cfg.contains("dtype"));
    CHECK_FALSE(cfg.contains("eta"));
    CHECK_FALSE(cfg.contains("lambda_min_clipped"));
    // Every key we write is a key diffusers itself wrote for this scheduler, with equal values
    // for the keys both have.
    const auto orig = read_scheduler_config(e2e + name + "/scheduler/scheduler_config.json");
    for (auto it = cfg.begin(); it != cfg.end(); ++it) {
      INFO("key " << it.key());
      REQUIRE(orig.contains(it.key()));
      if (it.key() != "_diffusers_version") CHECK(orig.at(it.key()) == it.value());
    }
    AnySampler back = make_sampler(cfg);
    CHECK(back.kind() == s.kind());
    CHECK(to_scheduler_config(back) == cfg);
  }
  // The DDIM config's kind can be overridden; irrelevant keys (set_alpha_to_one) are ignored.
  AnySampler as_dpm = load_sampler(e2e + "ddim_tiny/scheduler/scheduler_config.json", SamplerKind::DPMSolver);
  CHECK(as_dpm.kind() == SamplerKind::DPMSolver);
  // Python's -Infinity literal is understood.
  CHECK(ddpm::detail::quote_nonfinite_literals(R"({"a": -Infinity, "b": "NaN -Infinity", "c": [Infinity, NaN]})") ==
        R"({"a": "-Infinity", "b": "NaN -Infinity", "c": ["Infinity", "NaN"]})");
}

TEST_CASE("sampler errors name the value at fault", "[sampler][errors]") {
  DDIMSampler ddim;
  const auto x = torch::zeros({1, 3, 2, 2});
  CHECK_THROWS_WITH(ddim.step(x, 10, x), Contains("set_timesteps"));
  DPMSolverSampler dpm;
  CHECK_THROWS_WITH(dpm.step(x, 10, x), Contains("set_timesteps"));
  CHECK_THROWS_WITH(ddim.set_timesteps(1001), Contains("1001") && Contains("1000"));
  CHECK_THROWS_WITH(ddim.set_timesteps(0), Contains("got 0"));
  CHECK_THROWS_WITH(dpm.set_timesteps(2000), Contains("2000"));
  DDPMSampler ddpm;
  CHECK_THROWS_WITH(ddpm.set_timesteps(1001), Contains("1001"));
  CHECK_THROWS_WITH(ddpm.step(x, 1000, x), Contains("1000") && Contains("[0, 1000)"));
  CHECK_THROWS_WITH(ddpm.step(x, -1, x), Contains("-1"));
  CHECK_THROWS_WITH(ddpm.step(torch::zeros({1, 6, 2, 2}), 5, x), Contains("[1, 6, 2, 2]"));
  CHECK_THROWS_WITH(ddpm.step(x, 5, x, c10::nullopt, torch::zeros({2})), Contains("variance_noise"));
  DDIMSampler off(DDIMSamplerOptions().steps_offset(1));
  CHECK_THROWS_WITH(off.set_timesteps(1000), Contains("1000") && Contains("steps_offset"));
  dpm.set_timesteps(10);
  CHECK_THROWS_WITH(dpm.step(x, 501, x), Contains("501") && Contains("not one of"));
  dpm.step(x, 999, x);
  CHECK_THROWS_WITH(dpm.step(x, 799, x), Contains("expected timestep 899"));

  auto bad = [](const char* text) { return nlohmann::json::parse(text); };
  CHECK_THROWS_WITH(make_sampler(bad(R"({"_class_name": "DDIMScheduler", "foo": 1})")), Contains("\"foo\""));
  CHECK_THROWS_WITH(make_sampler(bad(R"({"_class_name": "LMSDiscreteScheduler"})")),
                    Contains("LMSDiscreteScheduler") && Contains("DDIMScheduler") &&
                        Contains("EulerDiscreteScheduler") && Contains("UniPCMultistepScheduler"));
  CHECK_THROWS_WITH(make_sampler(bad(R"({"beta_end": 0.02})")), Contains("_class_name"));
  CHECK_THROWS_WITH(make_sampler(bad(R"({"_class_name": "DDIMScheduler", "timestep_spacing": "uniform"})")),
                    Contains("uniform") && Contains("leading") && Contains("trailing") && Contains("linspace"));
  CHECK_THROWS_WITH(make_sampler(bad(R"({"_class_name": "DDPMScheduler", "prediction_type": "x0"})")),
                    Contains("x0") && Contains("v_prediction"));
  CHECK_THROWS_WITH(make_sampler(bad(R"({"_class_name": "DDPMScheduler", "beta_schedule": "cosine"})")),
                    Contains("cosine") && Contains("squaredcos_cap_v2"));
  CHECK_THROWS_WITH(make_sampler(bad(R"({"_class_name": "DDPMScheduler", "variance_type": "learned_range"})")),
                    Contains("learned_range") && Contains("fixed_small"));
  CHECK_THROWS_WITH(make_sampler(bad(R"({"_class_name": "DPMSolverMultistepScheduler", "algorithm_type": "dpmsolver"})")),
                    Contains("\"dpmsolver\"") && Contains("dpmsolver++"));
  CHECK_THROWS_WITH(make_sampler(bad(R"({"_class_name": "DPMSolverMultistepScheduler", "use_lu_lambdas": true})")),
                    Contains("use_lu_lambdas"));
  CHECK_THROWS_WITH(make_sampler(bad(R"({"_class_name": "DPMSolverMultistepScheduler", "solver_order": 4})")),
                    Contains("solver_order") && Contains("4"));
  CHECK_THROWS_WITH(make_sampler(bad(R"({"_class_name": "DPMSolverMultistepScheduler", "solver_order": 3,
                                         "algorithm_type": "sde-dpmsolver++"})")),
                    Contains("solver_order 3") && Contains("sde-dpmsolver++"));
  CHECK_THROWS_WITH(make_sampler(bad(R"({"_class_name": "EulerDiscreteScheduler", "use_beta_sigmas": true})")),
                    Contains("use_beta_sigmas"));
  CHECK_THROWS_WITH(make_sampler(bad(R"({"_class_name": "EulerDiscreteScheduler", "interpolation_type": "log_linear"})")),
                    Contains("interpolation_type") && Contains("log_linear"));
  CHECK_THROWS_WITH(make_sampler(bad(R"({"_class_name": "EulerAncestralDiscreteScheduler", "prediction_type": "sample"})")),
                    Contains("sample") && Contains("v_prediction"));
  CHECK_THROWS_WITH(make_sampler(bad(R"({"_class_name": "UniPCMultistepScheduler", "solver_type": "bh1"})")),
                    Contains("sigma_min") && Contains("bh2"));
  CHECK_THROWS_WITH(make_sampler(bad(R"({"_class_name": "UniPCMultistepScheduler", "solver_order": 4})")),
                    Contains("solver_order") && Contains("3"));
  CHECK_THROWS_WITH(make_sampler(bad(R"({"_class_name": "DDIMScheduler", "steps_offset": "one"})")),
                    Contains("steps_offset"));
  CHECK_THROWS_WITH(sampler_kind_from_string("lms"), Contains("lms") && Contains("dpm++") && Contains("euler_a") &&
                                                        Contains("dpmpp_2m_karras") && Contains("unipc"));
  CHECK_THROWS_WITH(sampler_kind_from_string("dpmpp_3m"), Contains("preset"));

  const std::string missing = "/nonexistent/dir/scheduler_config.json";
  CHECK_THROWS_WITH(load_sampler(missing), Contains(missing));
  const std::string path = (std::filesystem::temp_directory_path() / "ddpm_math_bad_scheduler.json").string();
  {
    std::ofstream f(path);
    f << R"({"_class_name": "DDIMScheduler", "beta_end": )";
  }
  CHECK_THROWS_WITH(load_sampler(path), Contains(path));
  {
    std::ofstream f(path);
    f << R"({"_class_name": "DDIMScheduler", "bogus_key": 1})";
  }
  CHECK_THROWS_WITH(load_sampler(path), Contains(path) && Contains("bogus_key"));
  std::remove(path.c_str());
}
