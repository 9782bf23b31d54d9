// A downstream program built against the INSTALLED package only (find_package(ddpm)).
// Its body is the README's minimal example, so that example is compiled and run by CTest.
#include <ddpm/ddpm.hpp>
#include <torch/torch.h>

#include <iostream>

int main() {
  torch::manual_seed(0);
  ddpm::UNet unet(ddpm::UNetOptions::seed().in_channels(1).out_channels(1));
  ddpm::NoiseSchedule schedule(ddpm::NoiseScheduleOptions().num_train_timesteps(1000));
  ddpm::ForwardDiffuser diffuser(schedule);
  torch::optim::AdamW opt(unet->parameters(), torch::optim::AdamWOptions(2e-4));
  auto gen = at::make_generator<at::CPUGeneratorImpl>(42);

  torch::Tensor x0 = torch::rand({8, 1, 32, 32}) * 2 - 1;  // your data in [-1, 1]
  float first = 0, last = 0;
  for (int step = 0; step < 10; ++step) {
    auto out = diffuser.loss(unet, x0, gen);  // MSE on the noise
    opt.zero_grad();
    out.loss.backward();
    opt.step();
    (step == 0 ? first : last) = out.loss.item<float>();
  }

  ddpm::DDIMSampler sampler;
  sampler.set_timesteps(50);
  unet->eval();
  torch::Tensor images = ddpm::sample(unet, sampler, {4, 1, 32, 32}, gen);  // [4, 1, 32, 32]

  std::cout << "ddpm " << ddpm::version() << ": loss " << first << " -> " << last
            << ", samples " << images.sizes() << "\n";
  if (images.sizes() != torch::IntArrayRef({4, 1, 32, 32}) || !torch::isfinite(images).all().item<bool>()) {
    std::cerr << "unexpected samples\n";
    return 1;
  }
  std::cout << "ddpm consumer OK\n";
  return 0;
}
