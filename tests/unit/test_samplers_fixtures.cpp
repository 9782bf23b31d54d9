// DDPM / DDIM / DPM-Solver++ steps against diffusers v0.31.0 fixtures
// (tests/data/diffusers/{ddpm,ddim,dpmsolver}_steps.json), README tolerance 1e-5 relative.
#include "fixture_util.hpp"
#include "fixture_torch_version.hpp"

#include <ddpm/samplers/ddim.hpp>
#include <ddpm/samplers/ddpm.hpp>
#include <ddpm/samplers/dpm_solver.hpp>

#include <catch2/catch.hpp>
#include <torch/torch.h>

using ddpm::DDIMSampler;
using ddpm::DDIMSamplerOptions;
using ddpm::DDPMSampler;
using ddpm::DDPMSamplerOptions;
using ddpm::DPMSolverSampler;
using ddpm::DPMSolverSamplerOptions;
using ddpm_test::diffusers_fixture;
using ddpm_test::max_rel_err;
using ddpm_test::tensor_from_json;

namespace {
// 1e-5 on LibTorch 1.x (the fixtures' torch); 2.x's betas differ by ~1 ulp (fixture_torch_version.hpp),
// which moves the DDPM posterior variance near t = 0 by up to 2.7e-5 relative.
constexpr double kStepTol = ddpm_test::kFixtureBitTol > 0 ? 5e-5 : 1e-5;

std::string describe(const nlohmann::json& c) {
  nlohmann::json d = c.at("config");
  for (const char* k : {"num_inference_steps", "t", "prev_t", "eta", "step_index"}) {
    if (c.contains(k)) d[k] = c.at(k);
  }
  return d.dump();
}
}  // namespace

TEST_CASE("DDPM step matches diffusers for every ddpm_steps.json case", "[sampler][ddpm][fixture]") {
  const auto& fx = diffusers_fixture("ddpm_steps.json");
  REQUIRE(fx.at("cases").size() == 60);
  int with_noise = 0, at_zero = 0, spaced = 0;
  for (const auto& c : fx.at("cases")) {
    INFO(describe(c));
    DDPMSampler s(c.at("config").get<DDPMSamplerOptions>());
    if (!c.at("num_inference_steps").is_null()) {
      s.set_timesteps(c.at("num_inference_steps").get<int64_t>());
      ++spaced;
    }
    const int64_t t = c.at("t").get<int64_t>();
    CHECK(s.previous_timestep(t) == c.at("prev_t").get<int64_t>());
    c10::optional<torch::Tensor> noise;
    if (!c.at("variance_noise").is_null()) {
      noise = tensor_from_json(c.at("variance_noise"));
      ++with_noise;
    } else {
      REQUIRE(t == 0);  // trap: diffusers adds no noise at t == 0
      ++at_zero;
    }
    if (!c.at("variance").is_null()) {
      CHECK(s.variance(t).item<double>() ==
            Approx(static_cast<float>(c.at("variance").get<double>())).epsilon(kStepTol));
    }
    const auto out = s.step(tensor_from_json(c.at("model_output")), t, tensor_from_json(c.at("sample")),
                            c10::nullopt, noise);
    CHECK(max_rel_err(out.prev_sample, tensor_from_json(c.at("prev_sample"))) < kStepTol);
    CHECK(max_rel_err(out.pred_original_sample, tensor_from_json(c.at("pred_original_sample"))) < kStepTol);
  }
  CHECK(with_noise == 44);
  CHECK(at_zero == 16);  // 12 unspaced + 4 after set_timesteps(50)
  CHECK(spaced == 12);
}

TEST_CASE("DDPM t = 0 adds no noise even with a generator", "[sampler][ddpm]") {
  const auto& c = diffusers_fixture("ddpm_steps.json").at("cases").at(0);
  REQUIRE(c.at("t") == 0);
  DDPMSampler s(c.at("config").get<DDPMSamplerOptions>());
  auto gen = at::detail::createCPUGenerator(3);
  const auto out = s.step(tensor_from_json(c.at("model_output")), 0, tensor_from_json(c.at("sample")), gen);
  CHECK(max_rel_err(out.prev_sample, tensor_from_json(c.at("prev_sample"))) < kStepTol);
}

TEST_CASE("DDPM variance for every t matches diffusers _get_variance", "[sampler][ddpm][fixture]") {
  for (const auto& g : diffusers_fixture("ddpm_steps.json").at("get_variance")) {
    const auto vt = g.at("variance_type").get<ddpm::VarianceType>();
    INFO("variance_type " << g.at("variance_type").dump());
    DDPMSampler s(DDPMSamplerOptions().variance_type(vt));
    const auto expected = ddpm_test::float32_list(g.at("values"));
    REQUIRE(expected.numel() == 1000);
    torch::Tensor ours = torch::empty({1000});
    for (int64_t t = 0; t < 1000; ++t) ours[t] = s.variance(t);
    CHECK(ddpm_test::max_elementwise_rel_err(ours, expected, 1e-30) < kStepTol);
    if (vt == ddpm::VarianceType::FixedSmall) CHECK(ours[0].item<float>() == 1e-20f);  // clamped
  }
}

TEST_CASE("DDIM timesteps match diffusers for every spacing", "[sampler][ddim][fixture]") {
  const auto& fx = diffusers_fixture("ddim_steps.json");
  REQUIRE(fx.at("timesteps").size() == 6);
  for (const auto& c : fx.at("timesteps")) {
    INFO(c.dump());
    DDIMSampler s(DDIMSamplerOptions()
                      .timestep_spacing(c.at("timestep_spacing").get<ddpm::TimestepSpacing>())
                      .steps_offset(c.at("steps_offset").get<int64_t>()));
    s.set_timesteps(c.at("num_inference_steps").get<int64_t>());
    CHECK(s.timesteps() == c.at("timesteps").get<std::vector<double>>());
    DDPMSampler d(DDPMSamplerOptions().timestep_spacing(c.at("timestep_spacing").get<ddpm::TimestepSpacing>()));
    d.set_timesteps(c.at("num_inference_steps").get<int64_t>());
    CHECK(d.timesteps() == c.at("timesteps").get<std::vector<double>>());
  }
}

TEST_CASE("DDIM step matches diffusers for every ddim_steps.json case", "[sampler][ddim][fixture]") {
  const auto& fx = diffusers_fixture("ddim_steps.json");
  REQUIRE(fx.at("cases").size() == 96);
  int stochastic = 0;
  for (const auto& c : fx.at("cases")) {
    INFO(describe(c));
    DDIMSampler s(c.at("config").get<DDIMSamplerOptions>());
    s.set_timesteps(c.at("num_inference_steps").get<int64_t>());
    const int64_t t = c.at("t").get<int64_t>();
    REQUIRE(s.timesteps().at(c.at("step_index").get<size_t>()) == t);
    const int64_t prev_t = s.previous_timestep(t);
    CHECK(prev_t == c.at("prev_t").get<int64_t>());  // trap: t - T//N, not the next timestep
    CHECK(s.variance(t, prev_t).item<double>() ==
          Approx(static_cast<float>(c.at("variance").get<double>())).epsilon(kStepTol).margin(1e-12));
    c10::optional<torch::Tensor> noise;
    if (!c.at("variance_noise").is_null()) {
      noise = tensor_from_json(c.at("variance_noise"));
      ++stochastic;
    }
    const auto out = s.step(tensor_from_json(c.at("model_output")), t, tensor_from_json(c.at("sample")),
                            c.at("eta").get<double>(), c10::nullopt, noise);
    CHECK(max_rel_err(out.prev_sample, tensor_from_json(c.at("prev_sample"))) < kStepTol);
    CHECK(max_rel_err(out.pred_original_sample, tensor_from_json(c.at("pred_original_sample"))) < kStepTol);
  }
  CHECK(stochastic == 48);
}

TEST_CASE("DPM-Solver++ 2M trajectories match diffusers step by step", "[sampler][dpm][fixture]") {
  const auto& fx = diffusers_fixture("dpmsolver_steps.json");
  REQUIRE(fx.at("runs").size() == 3);
  for (const auto& run : fx.at("runs")) {
    INFO("run " << run.at("name").get<std::string>());
    DPMSolverSampler s(run.at("config").get<DPMSolverSamplerOptions>());
    const int64_t n = run.at("num_inference_steps").get<int64_t>();
    s.set_timesteps(n);
    CHECK(s.timesteps() == run.at("timesteps").get<std::vector<double>>());
    const auto sig = ddpm_test::float32_list(run.at("sigmas"));
    REQUIRE(s.sigmas().numel() == n + 1);
    CHECK(ddpm_test::count_fixture_mismatches(s.sigmas(), sig) == 0);  // bit-exact on LibTorch 1.x
    CHECK(s.sigmas()[-1].item<float>() == 0.0f);

    auto x = tensor_from_json(run.at("initial_sample"));
    const auto& steps = run.at("steps");
    REQUIRE(static_cast<int64_t>(steps.size()) == n);
    for (int64_t i = 0; i < n; ++i) {
      const auto& st = steps.at(static_cast<size_t>(i));
      const int64_t t = st.at("t").get<int64_t>();
      INFO("step " << i << " t=" << t);
      REQUIRE(s.timesteps()[static_cast<size_t>(i)] == t);
      CHECK(s.order_at(i) == st.at("solver_order_used").get<int64_t>());
      CHECK(max_rel_err(x, tensor_from_json(st.at("sample"))) < kStepTol);
      // The toy model of the fixture: float32(0.1) * x + float32(0.05 * t / 1000).
      const double c = static_cast<float>(0.05 * static_cast<double>(t) / 1000.0);
      const auto mo = x * 0.1 + c;
      CHECK(max_rel_err(mo, tensor_from_json(st.at("model_output"))) < kStepTol);
      x = s.step(mo, t, x).prev_sample;
      CHECK(max_rel_err(x, tensor_from_json(st.at("prev_sample"))) < kStepTol);
    }
    CHECK(max_rel_err(x, tensor_from_json(run.at("final_sample"))) < kStepTol);
  }
}

TEST_CASE("DPM-Solver++ single steps from the fixture's own inputs", "[sampler][dpm][fixture]") {
  // Feeding diffusers' recorded (sample, model_output) pairs isolates each step's error.
  const auto& run = diffusers_fixture("dpmsolver_steps.json").at("runs").at(1);
  DPMSolverSampler s(run.at("config").get<DPMSolverSamplerOptions>());
  s.set_timesteps(run.at("num_inference_steps").get<int64_t>());
  for (const auto& st : run.at("steps")) {
    const auto out = s.step(tensor_from_json(st.at("model_output")), st.at("t").get<int64_t>(),
                            tensor_from_json(st.at("sample")));
    CHECK(max_rel_err(out.prev_sample, tensor_from_json(st.at("prev_sample"))) < kStepTol);
  }
  // Last step (sigma = 0, lambda = +inf) returns the x0 prediction exactly.
  const auto& last = run.at("steps").back();
  DPMSolverSampler s2(run.at("config").get<DPMSolverSamplerOptions>());
  s2.set_timesteps(run.at("num_inference_steps").get<int64_t>());
  const auto x = tensor_from_json(last.at("sample"));
  const auto out = s2.step(tensor_from_json(last.at("model_output")), last.at("t").get<int64_t>(), x);
  CHECK(torch::equal(out.prev_sample, out.pred_original_sample));
}
