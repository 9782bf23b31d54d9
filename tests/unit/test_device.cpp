// ddpm/device.hpp on any machine: device names, autocast nesting (CPU autocast, which both
// LibTorch 1.13 and 2.x have), the fp16 loss-scaling rule, host->device copies and seeded
// generators. The CUDA halves of these are in test_gpu.cpp.
#include <ddpm/device.hpp>

#include <catch2/catch.hpp>
#include <torch/torch.h>

#include <limits>
#include <string>

namespace {
std::string error_of(const std::string& name) {
  try {
    ddpm::select_device(name);
  } catch (const ddpm::Error& e) {
    return e.what();
  }
  return "no error";
}
}  // namespace

TEST_CASE("select_device: names, and clear errors for unknown names or missing CUDA", "[device]") {
  CHECK(ddpm::select_device("cpu") == torch::Device(torch::kCPU));
  CHECK(ddpm::select_device("cpu", 3) == torch::Device(torch::kCPU));
  CHECK_THAT(error_of("gpu"), Catch::Contains("device \"gpu\": unknown device") && Catch::Contains("cuda:N"));
  CHECK_THAT(error_of("cuda:x"), Catch::Contains("\"cuda:x\""));
  if (!ddpm::cuda_available()) {
    CHECK(ddpm::select_device("auto") == torch::Device(torch::kCPU));
    CHECK_THAT(error_of("cuda"), Catch::Contains("\"cuda\" requested but CUDA is not available"));
    CHECK_THAT(error_of("cuda:0"), Catch::Contains("CUDA is not available"));
  } else {
    const auto n = static_cast<int64_t>(torch::cuda::device_count());
    CHECK(ddpm::select_device("auto").is_cuda());
    CHECK(ddpm::select_device("cuda", n + 1).index() == (n + 1) % n);  // one GPU per local rank
    CHECK(ddpm::select_device("cuda:0").index() == 0);
    CHECK_THAT(error_of("cuda:" + std::to_string(n)), Catch::Contains("GPU(s) visible"));
  }
}

TEST_CASE("AutocastGuard: bf16 matmuls inside, float32 after, nesting restores the outer state", "[device]") {
  const auto a = torch::randn({4, 8});
  const auto b = torch::randn({8, 3});
  CHECK(torch::mm(a, b).scalar_type() == torch::kFloat32);
  {
    ddpm::AutocastGuard none(torch::Device(torch::kCPU), c10::nullopt);  // no-op guard
    CHECK(torch::mm(a, b).scalar_type() == torch::kFloat32);
  }
  {
    ddpm::AutocastGuard outer(torch::kCPU, torch::kBFloat16);
    const auto y = torch::mm(a, b);
    CHECK(y.scalar_type() == torch::kBFloat16);
    // bf16 keeps 8 mantissa bits: the product agrees with float32 to ~1e-2 relative.
    CHECK(torch::allclose(y.to(torch::kFloat32), torch::mm(a.to(torch::kFloat64), b.to(torch::kFloat64)).to(torch::kFloat32),
                          /*rtol=*/3e-2, /*atol=*/3e-2));
    {
      ddpm::AutocastGuard inner(torch::kCPU, torch::kBFloat16);
      CHECK(torch::mm(a, b).scalar_type() == torch::kBFloat16);
    }
    CHECK(ddpm::detail::autocast_enabled(torch::kCPU));  // inner exit keeps the outer guard on
    CHECK(torch::mm(a, b).scalar_type() == torch::kBFloat16);
  }
  CHECK_FALSE(ddpm::detail::autocast_enabled(torch::kCPU));
  CHECK(torch::mm(a, b).scalar_type() == torch::kFloat32);
  CHECK_THROWS_WITH(ddpm::AutocastGuard(torch::kCPU, torch::kFloat64), Catch::Contains("bfloat16 or float16"));
  CHECK_FALSE(ddpm::detail::autocast_enabled(torch::kCPU));
}

TEST_CASE("LossScaler: GradScaler's backoff and growth rule, unscale reports non-finite gradients", "[device]") {
  ddpm::LossScaler s(ddpm::LossScalerOptions().init_scale(1024).growth_interval(3));
  CHECK(s.scale_value() == 1024);
  CHECK(s.scale(torch::tensor(0.5)).item<double>() == 512);

  auto p = torch::zeros({3}, torch::requires_grad());
  auto q = torch::zeros({2}, torch::requires_grad());  // no gradient: ignored
  (s.scale((p * torch::tensor({1.0f, 2.0f, 3.0f})).sum())).backward();
  CHECK(s.unscale_({p, q}));
  CHECK(torch::allclose(p.grad(), torch::tensor({1.0f, 2.0f, 3.0f})));

  // 3 finite steps -> x2 (growth_interval 3), an overflow -> x0.5 and the count restarts.
  s.update(false);
  s.update(false);
  CHECK(s.scale_value() == 1024);
  s.update(false);
  CHECK(s.scale_value() == 2048);
  CHECK(s.good_steps() == 3);
  p.mutable_grad().fill_(std::numeric_limits<float>::infinity());
  CHECK_FALSE(s.unscale_({p}));
  s.update(true);
  CHECK(s.scale_value() == 1024);
  CHECK(s.good_steps() == 0);
  p.mutable_grad().fill_(std::numeric_limits<float>::quiet_NaN());
  CHECK_FALSE(s.unscale_({p}));

  ddpm::LossScaler floor(ddpm::LossScalerOptions().init_scale(2).min_scale(1));
  floor.update(true);
  floor.update(true);
  CHECK(floor.scale_value() == 1);  // never below min_scale
  floor.load(8, 5);
  CHECK(floor.scale_value() == 8);
  CHECK(floor.good_steps() == 5);
  CHECK_THROWS_WITH(floor.load(0, 1), Catch::Contains("scale > 0"));
  CHECK_THROWS_WITH(ddpm::LossScaler(ddpm::LossScalerOptions().backoff_factor(2)), Catch::Contains("backoff_factor"));
}

TEST_CASE("to_device and make_generator on the CPU", "[device]") {
  const auto x = torch::arange(6).reshape({2, 3});
  const auto y = ddpm::to_device(x, torch::Device(torch::kCPU));
  CHECK(torch::equal(x, y));

  auto g1 = ddpm::make_generator(torch::Device(torch::kCPU), 42);
  auto g2 = ddpm::make_generator(torch::Device(torch::kCPU), 42);
  auto g3 = ddpm::make_generator(torch::Device(torch::kCPU), 43);
  const auto a = torch::randn({16}, g1);
  CHECK(torch::equal(a, torch::randn({16}, g2)));
  CHECK_FALSE(torch::equal(a, torch::randn({16}, g3)));
  // The same numbers as torch::manual_seed(42) gives the default CPU generator.
  torch::manual_seed(42);
  CHECK(torch::equal(a, torch::randn({16})));
  if (!ddpm::cuda_available()) {
    CHECK_THROWS_WITH(ddpm::make_generator(torch::Device(torch::kCUDA), 1), Catch::Contains("CUDA is not available"));
  }
}
