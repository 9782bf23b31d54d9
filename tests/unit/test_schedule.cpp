// Noise schedules: bit-exact against diffusers v0.31.0 (tests/data/diffusers/schedules.json),
// derived quantities against an independent float64 computation, JSON and validation.
#include "fixture_util.hpp"
#include "fixture_torch_version.hpp"

#include <ddpm/schedule.hpp>

#include <catch2/catch.hpp>
#include <torch/torch.h>

#include <cmath>
#include <limits>

using ddpm::BetaSchedule;
using ddpm::NoiseSchedule;
using ddpm::NoiseScheduleOptions;
using ddpm_test::count_bit_mismatches;
using ddpm_test::diffusers_fixture;
using ddpm_test::float32_list;

namespace {
NoiseScheduleOptions options_from_fixture(const nlohmann::json& s) {
  NoiseScheduleOptions o;
  o.num_train_timesteps(s.at("num_train_timesteps").get<int64_t>())
      .beta_schedule(s.at("beta_schedule").get<BetaSchedule>())
      .beta_start(s.at("beta_start").get<double>())
      .beta_end(s.at("beta_end").get<double>())
      .rescale_betas_zero_snr(s.at("rescale_betas_zero_snr").get<bool>());
  return o;
}
}  // namespace

TEST_CASE("schedules are bit-exact vs diffusers for every schedules.json case", "[schedule]") {
  const auto& fx = diffusers_fixture("schedules.json");
  REQUIRE(fx.at("schedules").size() == 8);
  for (const auto& s : fx.at("schedules")) {
    const std::string name = s.at("beta_schedule").get<std::string>() +
                             (s.at("rescale_betas_zero_snr").get<bool>() ? "+zero_snr" : "");
    INFO("case " << name);
    NoiseSchedule sch(options_from_fixture(s));
    const auto betas = float32_list(s.at("betas"));
    const auto ac = float32_list(s.at("alphas_cumprod"));
    REQUIRE(sch.betas().scalar_type() == torch::kFloat32);
    REQUIRE(sch.betas().numel() == 1000);
    CHECK(ddpm_test::count_fixture_mismatches(sch.betas(), betas) == 0);  // bit-exact on LibTorch 1.x
    CHECK(ddpm_test::count_fixture_mismatches(sch.alphas_cumprod(), ac) == 0);
    if (s.at("rescale_betas_zero_snr").get<bool>()) {
      CHECK(sch.betas()[-1].item<float>() == 1.0f);
      CHECK(sch.alphas_cumprod()[-1].item<float>() == 0.0f);
    }
  }
}

TEST_CASE("float32 linear betas need the float32 linspace kernel (trap)", "[schedule]") {
  // A float64 linspace cast to float32 differs by 1 ulp in ~37% of the entries; make sure the
  // fixture actually distinguishes the two recipes, so the bit-exact test above means something.
  const auto& s = diffusers_fixture("schedules.json").at("schedules").at(0);
  REQUIRE(s.at("beta_schedule") == "linear");
  const auto d64 = torch::linspace(1e-4, 0.02, 1000, torch::kFloat64).to(torch::kFloat32);
  CHECK(count_bit_mismatches(d64, float32_list(s.at("betas"))) > 300);
  // And a running float32 product is not torch's CPU cumprod.
  const auto betas = float32_list(s.at("betas"));
  auto acc = betas.clone();
  float run = 1.0f;
  for (int64_t i = 0; i < 1000; ++i) {
    run *= (1.0f - betas[i].item<float>());
    acc[i] = run;
  }
  CHECK(count_bit_mismatches(acc, float32_list(s.at("alphas_cumprod"))) > 500);
}

TEST_CASE("derived schedule quantities match a float64 direct computation", "[schedule]") {
  for (auto kind : {BetaSchedule::Linear, BetaSchedule::SquaredCosCapV2}) {
    NoiseSchedule sch(NoiseScheduleOptions().beta_schedule(kind).dtype(torch::kFloat64));
    REQUIRE(sch.betas().scalar_type() == torch::kFloat64);
    const int64_t T = 1000;
    const auto b = sch.betas().contiguous();
    const double* pb = b.data_ptr<double>();
    std::vector<double> ab(T), abp(T);
    double prod = 1.0;
    for (int64_t i = 0; i < T; ++i) {
      abp[i] = prod;
      prod *= 1.0 - pb[i];
      ab[i] = prod;
    }
    auto at = [](const torch::Tensor& x, int64_t i) { return x[i].item<double>(); };
    for (int64_t i : {0L, 1L, 2L, 17L, 500L, 998L, 999L}) {
      INFO("t=" << i);
      const double beta = pb[i];
      CHECK(at(sch.alphas_cumprod(), i) == Approx(ab[i]).epsilon(1e-12));
      CHECK(at(sch.alphas_cumprod_prev(), i) == Approx(abp[i]).epsilon(1e-12));
      CHECK(at(sch.sqrt_alphas_cumprod(), i) == Approx(std::sqrt(ab[i])).epsilon(1e-12));
      CHECK(at(sch.sqrt_one_minus_alphas_cumprod(), i) == Approx(std::sqrt(1 - ab[i])).epsilon(1e-12));
      const double var = beta * (1 - abp[i]) / (1 - ab[i]);
      CHECK(at(sch.posterior_variance(), i) == Approx(var).epsilon(1e-12).margin(1e-300));
      const double var1 = pb[1] * (1 - ab[0]) / (1 - ab[1]);
      CHECK(at(sch.posterior_log_variance_clipped(), i) ==
            Approx(std::log(i == 0 ? var1 : var)).epsilon(1e-12));
      CHECK(at(sch.posterior_mean_coef1(), i) ==
            Approx(beta * std::sqrt(abp[i]) / (1 - ab[i])).epsilon(1e-12));
      CHECK(at(sch.posterior_mean_coef2(), i) ==
            Approx((1 - abp[i]) * std::sqrt(1 - beta) / (1 - ab[i])).epsilon(1e-12));
      CHECK(at(sch.snr(), i) == Approx(ab[i] / (1 - ab[i])).epsilon(1e-12));
    }
  }
}

TEST_CASE("cosine schedule in float64 equals the Nichol & Dhariwal formula", "[schedule]") {
  NoiseSchedule sch(NoiseScheduleOptions().beta_schedule(BetaSchedule::SquaredCosCapV2)
                        .num_train_timesteps(10).dtype(torch::kFloat64));
  const double pi = std::acos(-1.0);
  auto f = [&](double t) { double c = std::cos((t + 0.008) / 1.008 * pi / 2); return c * c; };
  for (int i = 0; i < 10; ++i) {
    const double expect = std::min(1 - f((i + 1) / 10.0) / f(i / 10.0), 0.999);
    CHECK(sch.betas()[i].item<double>() == Approx(expect).epsilon(1e-14));
  }
  CHECK(sch.betas()[9].item<double>() == 0.999);  // capped
}

TEST_CASE("trained_betas replace the schedule; to() moves and casts", "[schedule]") {
  NoiseSchedule sch(NoiseScheduleOptions().num_train_timesteps(3).trained_betas({0.1, 0.2, 0.5}));
  CHECK(sch.betas()[1].item<float>() == 0.2f);
  CHECK(sch.alphas_cumprod()[2].item<double>() == Approx(0.9 * 0.8 * 0.5).epsilon(1e-6));
  auto s64 = sch.to(torch::kCPU, torch::kFloat64);
  CHECK(s64.snr().scalar_type() == torch::kFloat64);
  CHECK(s64.num_train_timesteps() == 3);
}

TEST_CASE("NoiseScheduleOptions JSON round trip and diffusers key names", "[schedule][json]") {
  NoiseScheduleOptions o;
  o.num_train_timesteps(77).beta_schedule(BetaSchedule::ScaledLinear).beta_start(0.00085)
      .beta_end(0.012).rescale_betas_zero_snr(true).dtype(torch::kFloat64);
  nlohmann::json j = o;
  CHECK(j.at("beta_schedule") == "scaled_linear");
  CHECK(j.at("dtype") == "float64");
  CHECK(j.at("trained_betas").is_null());
  auto back = j.get<NoiseScheduleOptions>();
  CHECK(back.num_train_timesteps() == 77);
  CHECK(back.beta_schedule() == BetaSchedule::ScaledLinear);
  CHECK(back.beta_start() == 0.00085);
  CHECK(back.beta_end() == 0.012);
  CHECK(back.rescale_betas_zero_snr());
  CHECK(back.dtype() == torch::kFloat64);
  CHECK(nlohmann::json(back) == j);

  o.trained_betas({0.1, 0.2});
  CHECK(nlohmann::json(o).get<NoiseScheduleOptions>().trained_betas() ==
        std::vector<double>{0.1, 0.2});
  for (auto [e, name] : std::vector<std::pair<BetaSchedule, std::string>>{
           {BetaSchedule::Linear, "linear"}, {BetaSchedule::ScaledLinear, "scaled_linear"},
           {BetaSchedule::SquaredCosCapV2, "squaredcos_cap_v2"}, {BetaSchedule::Sigmoid, "sigmoid"}}) {
    CHECK(nlohmann::json(e) == name);
    CHECK(nlohmann::json(name).get<BetaSchedule>() == e);
  }
}

TEST_CASE("schedule errors name the value at fault", "[schedule][errors]") {
  using Catch::Matchers::Contains;
  CHECK_THROWS_WITH(nlohmann::json::parse(R"({"beta_schedule": "cosine"})").get<NoiseScheduleOptions>(),
                    Contains("cosine") && Contains("squaredcos_cap_v2") && Contains("scaled_linear"));
  CHECK_THROWS_WITH(nlohmann::json::parse(R"({"bta_start": 0.1})").get<NoiseScheduleOptions>(),
                    Contains("bta_start"));
  CHECK_THROWS_WITH(nlohmann::json::parse(R"({"dtype": "float16"})").get<NoiseScheduleOptions>(),
                    Contains("float16") && Contains("float64"));
  CHECK_THROWS_WITH(nlohmann::json::parse(R"({"beta_start": "x"})").get<NoiseScheduleOptions>(),
                    Contains("beta_start"));
  CHECK_THROWS_WITH(NoiseSchedule(NoiseScheduleOptions().num_train_timesteps(0)),
                    Contains("num_train_timesteps") && Contains("0"));
  const double nan = std::numeric_limits<double>::quiet_NaN();
  CHECK_THROWS_WITH(NoiseSchedule(NoiseScheduleOptions().num_train_timesteps(4).trained_betas(
                        {0.1, 0.2, nan, 0.3})),
                    Contains("betas[2]") && Contains("nan"));
  CHECK_THROWS_WITH(NoiseSchedule(NoiseScheduleOptions().num_train_timesteps(3).trained_betas(
                        {0.1, 1.5, 0.3})),
                    Contains("betas[1]"));
  CHECK_THROWS_WITH(NoiseSchedule(NoiseScheduleOptions().beta_start(0.0)), Contains("betas[0]"));
  CHECK_THROWS_WITH(NoiseSchedule(NoiseScheduleOptions().beta_end(nan)), Contains("finite"));
  CHECK_THROWS_WITH(NoiseSchedule(NoiseScheduleOptions().num_train_timesteps(5).trained_betas({0.1})),
                    Contains("trained_betas") && Contains("5"));
}
