// Forward process: diffusers add_noise/get_velocity fixtures, statistics of q_sample,
// posterior vs float64 formulas, prediction-type conversions, loss and Min-SNR weights.
#include "fixture_util.hpp"

#include <ddpm/forward_diffuser.hpp>

#include <catch2/catch.hpp>
#include <torch/torch.h>

#include <cmath>

using ddpm::ForwardDiffuser;
using ddpm::ForwardDiffuserOptions;
using ddpm::LossWeighting;
using ddpm::NoiseSchedule;
using ddpm::NoiseScheduleOptions;
using ddpm::PredictionType;
using ddpm_test::diffusers_fixture;
using ddpm_test::abar64;
using ddpm_test::cpu_gen;
using ddpm_test::max_rel_err;
using ddpm_test::tensor_from_json;

TEST_CASE("q_sample and velocity match diffusers add_noise / get_velocity", "[forward]") {
  const auto& fx = diffusers_fixture("ddpm_steps.json").at("add_noise");
  const auto x0 = tensor_from_json(fx.at("original_samples"));
  const auto noise = tensor_from_json(fx.at("noise"));
  const auto t = tensor_from_json(fx.at("timesteps"));
  REQUIRE(t.scalar_type() == torch::kLong);
  ForwardDiffuser fd{NoiseSchedule{}};
  CHECK(max_rel_err(fd.q_sample(x0, t, noise), tensor_from_json(fx.at("noisy_samples"))) < 1e-6);
  CHECK(max_rel_err(fd.velocity(x0, noise, t), tensor_from_json(fx.at("velocity"))) < 1e-6);
  ForwardDiffuser fv{NoiseSchedule{}, ForwardDiffuserOptions().prediction_type(PredictionType::VPrediction)};
  CHECK(max_rel_err(fv.target(x0, noise, t), tensor_from_json(fx.at("velocity"))) < 1e-6);
}

TEST_CASE("q_sample has mean sqrt(abar) x0 and variance 1 - abar over many draws", "[forward]") {
  ForwardDiffuser fd{NoiseSchedule{}};
  const int64_t n = 200000;
  for (int64_t tt : {10L, 500L, 990L}) {
    INFO("t=" << tt);
    const auto x0 = torch::full({n, 1}, 0.7);
    const auto t = torch::full({n}, tt, torch::kLong);
    auto gen = cpu_gen(1234 + tt);
    const auto noise = torch::randn({n, 1}, gen, torch::kFloat32);
    const auto xt = fd.q_sample(x0, t, noise).to(torch::kFloat64);
    const double ab = abar64(tt);
    // standard error of the mean ~ sqrt((1-ab)/n) <= 0.0023; use 5 sigma
    CHECK(xt.mean().item<double>() == Approx(std::sqrt(ab) * 0.7).margin(5 * std::sqrt((1 - ab) / n)));
    CHECK(xt.var().item<double>() == Approx(1 - ab).epsilon(0.02));
  }
}

TEST_CASE("q_posterior matches float64 formulas and is the Gaussian conditional", "[forward]") {
  ForwardDiffuser fd{NoiseSchedule{NoiseScheduleOptions().dtype(torch::kFloat64)}};
  auto gen = cpu_gen(7);
  const auto x0 = torch::randn({3, 2, 2}, gen, torch::kFloat64);
  const auto xt = torch::randn({3, 2, 2}, gen, torch::kFloat64);
  const auto t = torch::tensor({0L, 1L, 750L});
  const auto post = fd.q_posterior(x0, xt, t);
  REQUIRE(post.mean.sizes() == x0.sizes());
  REQUIRE(post.variance.sizes() == torch::IntArrayRef({3, 1, 1}));
  for (int64_t b = 0; b < 3; ++b) {
    const int64_t tt = t[b].item<int64_t>();
    const double beta = 1e-4 + (0.02 - 1e-4) * tt / 999.0;
    const double ab = abar64(tt), abp = tt == 0 ? 1.0 : abar64(tt - 1);
    const double c1 = beta * std::sqrt(abp) / (1 - ab);
    const double c2 = (1 - abp) * std::sqrt(1 - beta) / (1 - ab);
    const double var = beta * (1 - abp) / (1 - ab);
    INFO("t=" << tt);
    const auto expect_mean = c1 * x0[b] + c2 * xt[b];
    CHECK(max_rel_err(post.mean[b], expect_mean) < 1e-9);
    CHECK(post.variance[b].item<double>() == Approx(var).margin(1e-15).epsilon(1e-9));
    const double b1 = 1e-4 + (0.02 - 1e-4) / 999.0;
    const double var1 = b1 * (1 - abar64(0)) / (1 - abar64(1));
    CHECK(post.log_variance_clipped[b].item<double>() ==
          Approx(std::log(tt == 0 ? var1 : var)).epsilon(1e-9));
  }
  // t = 0: the posterior collapses onto x0.
  CHECK(max_rel_err(post.mean[0], x0[0]) < 1e-12);
}

TEST_CASE("pred_x0 / pred_epsilon invert every prediction type", "[forward]") {
  auto gen = cpu_gen(3);
  const auto x0 = torch::randn({4, 3, 2, 2}, gen, torch::kFloat64);
  const auto eps = torch::randn({4, 3, 2, 2}, gen, torch::kFloat64);
  const auto t = torch::tensor({0L, 100L, 500L, 999L});
  for (auto pt : {PredictionType::Epsilon, PredictionType::Sample, PredictionType::VPrediction}) {
    INFO("prediction " << nlohmann::json(pt).dump());
    ForwardDiffuser fd{NoiseSchedule{NoiseScheduleOptions().dtype(torch::kFloat64)},
                       ForwardDiffuserOptions().prediction_type(pt)};
    const auto xt = fd.q_sample(x0, t, eps);
    const auto out = fd.target(x0, eps, t);
    // Independent: target by hand
    for (int64_t b = 0; b < 4; ++b) {
      const double ab = abar64(t[b].item<int64_t>());
      torch::Tensor expect = pt == PredictionType::Epsilon ? eps[b]
                             : pt == PredictionType::Sample ? x0[b]
                                                            : std::sqrt(ab) * eps[b] - std::sqrt(1 - ab) * x0[b];
      CHECK(max_rel_err(out[b], expect) < 1e-9);
    }
    CHECK(max_rel_err(fd.pred_x0(out, xt, t), x0) < 1e-7);
    CHECK(max_rel_err(fd.pred_epsilon(out, xt, t).slice(0, 1), eps.slice(0, 1)) < 1e-7);
  }
}

TEST_CASE("loss: perfect model gives 0, a wrong model the expected MSE, Min-SNR weights", "[forward]") {
  auto gen = cpu_gen(11);
  const auto x0 = torch::randn({8, 1, 4, 4}, gen);
  for (auto pt : {PredictionType::Epsilon, PredictionType::Sample, PredictionType::VPrediction}) {
    ForwardDiffuser fd{NoiseSchedule{}, ForwardDiffuserOptions().prediction_type(pt)};
    // A model that knows x0 answers exactly: pred from (x_t, t) via the known x0.
    auto perfect = [&](const torch::Tensor& xt, const torch::Tensor& t) {
      const auto eps = (xt - fd.schedule().sqrt_alphas_cumprod().index_select(0, t).view({-1, 1, 1, 1}) * x0) /
                       fd.schedule().sqrt_one_minus_alphas_cumprod().index_select(0, t).view({-1, 1, 1, 1});
      return fd.target(x0, eps, t);
    };
    auto g = cpu_gen(5);
    const auto out = fd.loss(perfect, x0, g);
    CHECK(out.loss.item<double>() < 1e-8);
    CHECK(out.t.sizes() == torch::IntArrayRef({8}));
    CHECK(out.t.scalar_type() == torch::kLong);
  }
  // Zero model, epsilon: loss = mean(noise^2); identical draws for the same seed.
  ForwardDiffuser fd{NoiseSchedule{}};
  auto zero = [](const torch::Tensor& xt, const torch::Tensor&) { return torch::zeros_like(xt); };
  auto g1 = cpu_gen(99), g2 = cpu_gen(99);
  const auto a = fd.loss(zero, x0, g1);
  const auto b = fd.loss(zero, x0, g2);
  CHECK(torch::equal(a.t, b.t));
  CHECK(torch::equal(a.noise, b.noise));
  CHECK(a.loss.item<double>() == Approx(a.noise.pow(2).mean().item<double>()).epsilon(1e-6));

  // Min-SNR-5 weights vs direct formulas.
  const auto t = torch::tensor({0L, 300L, 999L});
  for (auto pt : {PredictionType::Epsilon, PredictionType::Sample, PredictionType::VPrediction}) {
    ForwardDiffuser w{NoiseSchedule{NoiseScheduleOptions().dtype(torch::kFloat64)},
                      ForwardDiffuserOptions().prediction_type(pt).loss_weighting(LossWeighting::MinSnr)};
    const auto wt = w.loss_weights(t);
    for (int64_t i = 0; i < 3; ++i) {
      const double ab = abar64(t[i].item<int64_t>());
      const double snr = ab / (1 - ab), m = std::min(snr, 5.0);
      const double expect = pt == PredictionType::Epsilon ? m / snr
                            : pt == PredictionType::VPrediction ? m / (snr + 1) : m;
      CHECK(wt[i].item<double>() == Approx(expect).epsilon(1e-5));
    }
  }
  // Weighted loss = mean_b w_b * mse_b.
  ForwardDiffuser w{NoiseSchedule{}, ForwardDiffuserOptions().loss_weighting(LossWeighting::MinSnr)};
  auto g3 = cpu_gen(42);
  const auto lw = w.loss(zero, x0, g3);
  const auto per = lw.noise.pow(2).reshape({8, -1}).mean(1);
  CHECK(lw.loss.item<double>() == Approx((per * w.loss_weights(lw.t)).mean().item<double>()).epsilon(1e-6));
  // Gradients flow.
  auto p = torch::zeros({1}, torch::requires_grad());
  auto lin = [&](const torch::Tensor& xt, const torch::Tensor&) { return xt * p; };
  auto g4 = cpu_gen(1);
  auto lo = fd.loss(lin, x0, g4);
  lo.loss.backward();
  CHECK(p.grad().defined());
  CHECK(p.grad().abs().item<double>() > 0);
}

TEST_CASE("zero-SNR epsilon Min-SNR weight is 1 at the last step (no NaN)", "[forward]") {
  ForwardDiffuser w{NoiseSchedule{NoiseScheduleOptions().rescale_betas_zero_snr(true)},
                    ForwardDiffuserOptions().loss_weighting(LossWeighting::MinSnr)};
  CHECK(w.loss_weights(torch::tensor({999L}))[0].item<float>() == 1.0f);
}

TEST_CASE("ForwardDiffuserOptions JSON round trip", "[forward][json]") {
  ForwardDiffuserOptions o;
  o.prediction_type(PredictionType::VPrediction).loss_weighting(LossWeighting::MinSnr).min_snr_gamma(3.5);
  nlohmann::json j = o;
  CHECK(j == nlohmann::json::parse(R"({"prediction_type":"v_prediction","loss_weighting":"min_snr","min_snr_gamma":3.5})"));
  const auto back = j.get<ForwardDiffuserOptions>();
  CHECK(back.prediction_type() == PredictionType::VPrediction);
  CHECK(back.loss_weighting() == LossWeighting::MinSnr);
  CHECK(back.min_snr_gamma() == 3.5);
  CHECK(nlohmann::json(PredictionType::Sample) == "sample");
  CHECK(nlohmann::json(PredictionType::Epsilon) == "epsilon");
  CHECK(nlohmann::json(LossWeighting::None) == "none");
}

TEST_CASE("forward diffuser errors name the value or shape at fault", "[forward][errors]") {
  using Catch::Matchers::Contains;
  ForwardDiffuser fd{NoiseSchedule{}};
  const auto x0 = torch::zeros({2, 3});
  CHECK_THROWS_WITH(fd.q_sample(x0, torch::tensor({0L, 1000L}), x0), Contains("1000") && Contains("[0, 1000)"));
  CHECK_THROWS_WITH(fd.q_sample(x0, torch::tensor({-1L, 3L}), x0), Contains("-1"));
  CHECK_THROWS_WITH(fd.q_sample(x0, torch::tensor({1L, 2L, 3L}), x0), Contains("[3]") && Contains("[2, 3]"));
  CHECK_THROWS_WITH(fd.q_sample(x0, torch::tensor({1L, 2L}), torch::zeros({2, 4})), Contains("[2, 4]"));
  CHECK_THROWS_WITH(fd.q_sample(x0, torch::tensor({1.0, 2.0}), x0), Contains("integer"));
  auto bad = [](const torch::Tensor& xt, const torch::Tensor&) { return xt.sum(1); };
  auto g = cpu_gen(0);
  CHECK_THROWS_WITH(fd.loss(bad, x0, g), Contains("model output has shape [2]"));
  CHECK_THROWS_WITH(nlohmann::json::parse(R"({"prediction_type":"eps"})").get<ForwardDiffuserOptions>(),
                    Contains("eps") && Contains("v_prediction"));
  CHECK_THROWS_WITH(nlohmann::json::parse(R"({"loss_weighting":"snr"})").get<ForwardDiffuserOptions>(),
                    Contains("min_snr"));
  CHECK_THROWS_WITH(nlohmann::json::parse(R"({"gamma":5})").get<ForwardDiffuserOptions>(), Contains("gamma"));
}
