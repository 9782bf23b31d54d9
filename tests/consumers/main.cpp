// A downstream program, built by every consumer project in tests/consumers/ (one per way
// of taking ddpm in: add_subdirectory, FetchContent, find_package, the .deb). Its body is
// the README's minimal example, so that example is compiled and run by CTest.
// Projects that link ddpm::distributed define DDPM_CONSUMER_DISTRIBUTED: the program then
// also includes <ddpm/distributed.hpp> and links its c10d code.
// `app --quick` runs the same code with 2 training and 2 sampling steps instead of 10 and 50:
// the find_package test runs the example as printed, the other ways run it quick (each full
// run takes over a minute on a loaded 2-core machine).
#include <ddpm/ddpm.hpp>
#include <torch/torch.h>
#ifdef DDPM_CONSUMER_DISTRIBUTED
#include <ddpm/distributed.hpp>
#endif

#include <iostream>
#include <string>

int main(int argc, char** argv) {
  const bool quick = argc > 1 && std::string(argv[1]) == "--quick";
  torch::manual_seed(0);
  ddpm::UNet unet(ddpm::UNetOptions::seed().in_channels(1).out_channels(1));
  ddpm::NoiseSchedule schedule(ddpm::NoiseScheduleOptions().num_train_timesteps(1000));
  ddpm::ForwardDiffuser diffuser(schedule);
  torch::optim::AdamW opt(unet->parameters(), torch::optim::AdamWOptions(2e-4));
  auto gen = at::make_generator<at::CPUGeneratorImpl>(42);

  torch::Tensor x0 = torch::rand({8, 1, 32, 32}) * 2 - 1;  // your data in [-1, 1]
  float first = 0, last = 0;
  for (int step = 0, steps = quick ? 2 : 10; step < steps; ++step) {
    auto out = diffuser.loss(unet, x0, gen);  // MSE on the noise
    opt.zero_grad();
    out.loss.backward();
    opt.step();
    (step == 0 ? first : last) = out.loss.item<float>();
  }

  ddpm::DDIMSampler sampler;
  sampler.set_timesteps(quick ? 2 : 50);
  unet->eval();
  torch::Tensor images = ddpm::sample(unet, sampler, {4, 1, 32, 32}, gen);  // [4, 1, 32, 32]

  std::cout << "ddpm " << ddpm::version() << ": loss " << first << " -> " << last
            << ", samples " << images.sizes() << "\n";
  if (images.sizes() != torch::IntArrayRef({4, 1, 32, 32}) || !torch::isfinite(images).all().item<bool>()) {
    std::cerr << "unexpected samples\n";
    return 1;
  }
#ifdef DDPM_CONSUMER_DISTRIBUTED
  // Without torchrun's WORLD_SIZE this is a single process (nullopt); the call still
  // instantiates the c10d process-group code, so linking proves ddpm::distributed works.
  if (ddpm::Distributed::from_env()) {
    std::cerr << "expected a single process (WORLD_SIZE unset)\n";
    return 1;
  }
  std::cout << "ddpm::distributed linked\n";
#endif
  std::cout << "ddpm consumer OK\n";
  return 0;
}
