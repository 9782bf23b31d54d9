// GPU checks (tag [gpu]): the CUDA paths agree with the CPU. On a machine without a CUDA GPU
// every test here prints "ddpm-test-skipped: no CUDA GPU" and returns; CTest reports those as
// skipped (SKIP_REGULAR_EXPRESSION in tests/CMakeLists.txt). tools/gpu-check.sh runs them.
//
// Tolerances (float32 unless stated; TF32 is switched off so the GPU computes true float32):
//  - UNet forward: |gpu - cpu| <= 1e-4 + 1e-4 |cpu| (different summation order only).
//  - 10 DDIM / DPM-Solver++ steps from the same x_T: <= 1e-3 + 1e-3 |cpu|.
//  - one training step: loss to 1e-4 relative, every gradient to 1e-3 of its max |cpu| value.
//  - bf16 autocast training loss within 2% of the float32 loss (8-bit mantissa).
#include <ddpm/device.hpp>
#include <ddpm/forward_diffuser.hpp>
#include <ddpm/nn/unet.hpp>
#include <ddpm/sample.hpp>
#include <ddpm/samplers/ddim.hpp>
#include <ddpm/samplers/ddpm.hpp>
#include <ddpm/samplers/dpm_solver.hpp>
#include <ddpm/schedule.hpp>

#include <catch2/catch.hpp>
#include <torch/torch.h>

#include <iostream>

#define DDPM_REQUIRE_GPU()                                                       \
  do {                                                                           \
    if (!ddpm::cuda_available()) {                                               \
      std::cout << "ddpm-test-skipped: no CUDA GPU (this LibTorch has no CUDA " \
                   "or no GPU is visible)\n";                                    \
      WARN("ddpm-test-skipped: no CUDA GPU");                                    \
      return;                                                                    \
    }                                                                            \
    at::globalContext().setAllowTF32CuBLAS(false);                               \
    at::globalContext().setAllowTF32CuDNN(false);                                \
  } while (0)

namespace {

/// A small UNet with attention (both block kinds, GroupNorm, SiLU) for the comparisons.
ddpm::UNetOptions tiny_options() {
  ddpm::UNetOptions o;
  o.sample_size(16)
      .block_out_channels({32, 64})
      .down_block_types({"DownBlock2D", "AttnDownBlock2D"})
      .up_block_types({"AttnUpBlock2D", "UpBlock2D"})
      .layers_per_block(1)
      .norm_num_groups(8);
  return o;
}

/// A CPU UNet and an exact copy of it on `device`.
std::pair<ddpm::UNet, ddpm::UNet> cpu_and_gpu(const torch::Device& device) {
  torch::manual_seed(3);
  ddpm::UNet cpu(tiny_options());
  ddpm::UNet gpu(std::dynamic_pointer_cast<ddpm::UNetImpl>(cpu->clone(device)));
  return {cpu, gpu};
}

bool close(const torch::Tensor& gpu, const torch::Tensor& cpu, double rtol, double atol) {
  const auto g = gpu.to(torch::kCPU, torch::kFloat64);
  const auto c = cpu.to(torch::kFloat64);
  const double err = (g - c).abs().max().item<double>();
  INFO("max |gpu - cpu| = " << err << ", max |cpu| = " << c.abs().max().item<double>());
  const bool ok = torch::allclose(g, c, rtol, atol);
  CHECK(ok);
  return ok;
}

}  // namespace

TEST_CASE("gpu: UNet forward on CUDA matches the CPU", "[gpu]") {
  DDPM_REQUIRE_GPU();
  const auto dev = ddpm::select_device("cuda");
  auto [cpu, gpu] = cpu_and_gpu(dev);
  cpu->eval();
  gpu->eval();
  torch::NoGradGuard no_grad;
  const auto x = torch::randn({3, 3, 16, 16});
  const auto t = torch::tensor({0, 500, 999});
  close(gpu->forward(ddpm::to_device(x, dev), t.to(dev)), cpu->forward(x, t), 1e-4, 1e-4);
}

TEST_CASE("gpu: DDIM and DPM-Solver++ sampling on CUDA match the CPU", "[gpu]") {
  DDPM_REQUIRE_GPU();
  const auto dev = ddpm::select_device("cuda");
  auto [cpu, gpu] = cpu_and_gpu(dev);
  cpu->eval();
  gpu->eval();
  const auto x_T = torch::randn({2, 3, 16, 16});
  {
    ddpm::DDIMSampler s;
    s.set_timesteps(10);
    const auto a = ddpm::sample_from(cpu, s, x_T, torch::Generator());
    const auto b = ddpm::sample_from(gpu, s, x_T.to(dev), torch::Generator());
    CHECK(b.device().is_cuda());
    close(b, a, 1e-3, 1e-3);
  }
  {
    ddpm::DPMSolverSampler s;
    s.set_timesteps(10);
    close(ddpm::sample_from(gpu, s, x_T.to(dev), torch::Generator()), ddpm::sample_from(cpu, s, x_T, torch::Generator()),
          1e-3, 1e-3);
  }
  {
    // Stochastic DDPM steps with noise from the same CPU generator seed: same result on both.
    ddpm::DDPMSampler s;
    s.set_timesteps(10);
    auto g1 = ddpm::make_generator(torch::Device(torch::kCPU), 11);
    auto g2 = ddpm::make_generator(torch::Device(torch::kCPU), 11);
    close(ddpm::sample_from(gpu, s, x_T.to(dev), g1), ddpm::sample_from(cpu, s, x_T, g2), 1e-3, 1e-3);
  }
}

TEST_CASE("gpu: CUDA generators are reproducible per seed, also through sample()", "[gpu]") {
  DDPM_REQUIRE_GPU();
  const auto dev = ddpm::select_device("cuda");
  auto g1 = ddpm::make_generator(dev, 5);
  auto g2 = ddpm::make_generator(dev, 5);
  auto g3 = ddpm::make_generator(dev, 6);
  const auto opts = torch::TensorOptions().device(dev);
  const auto a = torch::randn({1000}, g1, opts);
  CHECK(a.device().is_cuda());
  CHECK(torch::equal(a, torch::randn({1000}, g2, opts)));
  CHECK_FALSE(torch::equal(a, torch::randn({1000}, g3, opts)));
  const double mean = a.mean().item<double>(), sd = a.std().item<double>();
  CHECK(std::abs(mean) < 0.15);  // 1000 N(0,1) draws: sd of the mean ~0.03
  CHECK(std::abs(sd - 1) < 0.1);

  ddpm::UNet gpu = cpu_and_gpu(dev).second;  // (a structured binding cannot be captured in C++17)
  gpu->eval();
  ddpm::DDPMSampler s;
  s.set_timesteps(5);
  const auto run = [&](uint64_t seed) {
    return ddpm::sample(gpu, s, {2, 3, 16, 16}, ddpm::make_generator(dev, seed), {},
                        torch::TensorOptions().device(dev));
  };
  const auto x = run(9);
  CHECK(x.device().is_cuda());
  CHECK(torch::equal(x, run(9)));
  CHECK_FALSE(torch::equal(x, run(10)));
}

TEST_CASE("gpu: a training step on CUDA matches the CPU, and bf16 autocast loss is within 2% of float32", "[gpu]") {
  DDPM_REQUIRE_GPU();
  const auto dev = ddpm::select_device("cuda");
  auto [cpu, gpu] = cpu_and_gpu(dev);
  cpu->train();
  gpu->train();
  const ddpm::ForwardDiffuser fd_cpu(ddpm::NoiseSchedule{});
  const ddpm::ForwardDiffuser fd_gpu(ddpm::NoiseSchedule{}.to(dev));
  const auto x0 = torch::rand({4, 3, 16, 16}) * 2 - 1;
  // Noise and timesteps come from a CPU generator in both runs, so the inputs are identical.
  const auto l_cpu = fd_cpu.loss(cpu, x0, ddpm::make_generator(torch::Device(torch::kCPU), 1)).loss;
  const auto l_gpu = fd_gpu.loss(gpu, ddpm::to_device(x0, dev), ddpm::make_generator(torch::Device(torch::kCPU), 1)).loss;
  CHECK(l_gpu.item<double>() == Approx(l_cpu.item<double>()).epsilon(1e-4));
  l_cpu.backward();
  l_gpu.backward();
  const auto pc = cpu->named_parameters();
  const auto pg = gpu->named_parameters();
  REQUIRE(pc.size() == pg.size());
  for (size_t i = 0; i < pc.size(); ++i) {
    INFO(pc[i].key());
    const auto gc = pc[i].value().grad();
    REQUIRE(gc.defined());
    const double scale = gc.abs().max().item<double>();
    close(pg[i].value().grad(), gc, 0.0, 1e-3 * scale + 1e-8);
  }

  // bf16 autocast (what the trainer uses on Ampere+ GPUs) against float32 on the same GPU.
  if (!ddpm::bf16_supported(dev)) {
    WARN("ddpm-test-note: this GPU has no bf16; autocast comparison skipped");
    return;
  }
  const double fp32 = fd_gpu.loss(gpu, x0.to(dev), ddpm::make_generator(torch::Device(torch::kCPU), 2)).loss.item<double>();
  double bf16 = 0;
  {
    ddpm::AutocastGuard amp(dev, torch::kBFloat16);
    const auto lo = fd_gpu.loss(gpu, x0.to(dev), ddpm::make_generator(torch::Device(torch::kCPU), 2));
    CHECK(lo.model_output.scalar_type() == torch::kBFloat16);  // the UNet really ran in bf16
    bf16 = lo.loss.item<double>();
    CHECK(lo.loss.scalar_type() == torch::kFloat32);  // the loss is reduced in float32
  }
  CHECK(bf16 == Approx(fp32).epsilon(0.02));

  // fp16 with loss scaling: finite unscaled gradients close to the float32 ones.
  gpu->zero_grad();
  ddpm::LossScaler scaler;
  {
    ddpm::AutocastGuard amp(dev, torch::kHalf);
    scaler.scale(fd_gpu.loss(gpu, x0.to(dev), ddpm::make_generator(torch::Device(torch::kCPU), 1)).loss).backward();
  }
  CHECK(scaler.unscale_(gpu->parameters()));
  const torch::Tensor g16 = gpu->named_parameters()[0].value().grad();
  const torch::Tensor g32 = pc[0].value().grad();
  CHECK(torch::allclose(g16.to(torch::kCPU, torch::kFloat64), g32.to(torch::kFloat64), 0.0,
                        0.05 * g32.abs().max().item<double>()));
}
