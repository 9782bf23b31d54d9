#pragma once
/// The reverse-process loop of the Sampler protocol (samplers/protocol.hpp):
/// x_T ~ N(0, I) * init_noise_sigma, then for each model-call timestep t:
///   x = sampler.step(model(sampler.scale_model_input(x, t), t), t, x).prev_sample.
#include <ddpm/samplers/protocol.hpp>

#include <ATen/core/Generator.h>
#include <c10/util/Optional.h>
#include <torch/types.h>
#include <torch/utils.h>

#include <cstdint>
#include <functional>
#include <vector>

namespace ddpm {

/// What a sampling callback sees after each step. `sample` is x after the step [B, ...],
/// `pred_original_sample` the x0 estimate of that step [B, ...].
struct SampleStep {
  int64_t index;      ///< 0-based step number
  int64_t num_steps;  ///< total number of steps
  double t;           ///< the timestep just processed
  const torch::Tensor& sample;
  const torch::Tensor& pred_original_sample;
};

/// Called after every step; return false to stop early (the current sample is returned).
using SampleCallback = std::function<bool(const SampleStep&)>;

/// The timestep batch a model is called with: int64 [B] when t is an integer (DDPM, DDIM,
/// DPM-Solver), float32 [B] otherwise (Euler, Heun with interpolated sigmas), on `device`.
inline torch::Tensor timestep_batch(double t, int64_t batch, torch::Device device) {
  if (t == static_cast<double>(static_cast<int64_t>(t))) {
    return torch::full({batch}, static_cast<int64_t>(t), torch::TensorOptions().dtype(torch::kLong).device(device));
  }
  return torch::full({batch}, t, torch::TensorOptions().dtype(torch::kFloat32).device(device));
}

/// Runs the reverse process from a given x_T [B, ...] (already scaled by init_noise_sigma)
/// over sampler.timesteps(). `model` is any callable (x_t [B, ...], t [B] on x's device, int64
/// or float32, see timestep_batch) -> model output [B, ...] (a ModuleHolder, a lambda...).
/// Runs under torch::NoGradGuard (not InferenceMode, so the result stays an ordinary tensor).
/// Resets the sampler's history first. Stochastic samplers draw their noise on CPU from `gen`
/// (an undefined generator means the default one; a CUDA generator draws on its GPU).
/// Throws if the sampler has no timesteps (set_timesteps never called for DDIM / DPM-Solver;
/// DDPMSampler uses all T steps by default).
template <class Model, class Sampler>
torch::Tensor sample_from(Model&& model, Sampler& sampler, torch::Tensor x_T, torch::Generator gen,
                          const SampleCallback& on_step = {}) {
  TORCH_CHECK(x_T.defined() && x_T.dim() >= 1, "sample: x_T must be a batched tensor [B, ...]");
  const std::vector<double> timesteps = sampler.timesteps();
  TORCH_CHECK(!timesteps.empty(),
              "sample: the sampler has no timesteps; call set_timesteps(num_inference_steps) first");
  torch::NoGradGuard no_grad;
  sampler.reset();
  c10::optional<torch::Generator> g;
  if (gen.defined()) g = gen;
  const int64_t n = static_cast<int64_t>(timesteps.size());
  const int64_t batch = x_T.size(0);
  torch::Tensor x = x_T;
  for (int64_t i = 0; i < n; ++i) {
    const double t = timesteps[static_cast<size_t>(i)];
    const torch::Tensor model_input = sampler.scale_model_input(x, t);
    torch::Tensor out = model(model_input, timestep_batch(t, batch, x.device()));
    TORCH_CHECK(out.defined() && out.sizes() == x.sizes(), "sample: model output has shape ",
                out.defined() ? out.sizes() : at::IntArrayRef{}, " but the sample has shape ", x.sizes(),
                " (t = ", t, ")");
    SamplerStepOutput step = sampler.step(out, t, x, g);
    x = std::move(step.prev_sample);
    if (on_step && !on_step(SampleStep{i, n, t, x, step.pred_original_sample})) break;
  }
  return x;
}

/// Draws x_T ~ N(0, I) of `shape` on `gen`'s device (CPU unless a CUDA generator) from `gen` (in opts' dtype, float32 by default),
/// moves it to opts' device, scales it by init_noise_sigma, and runs sample_from.
template <class Model, class Sampler>
torch::Tensor sample(Model&& model, Sampler& sampler, at::IntArrayRef shape, torch::Generator gen,
                     const SampleCallback& on_step = {}, torch::TensorOptions opts = {}) {
  c10::optional<torch::Generator> g;
  if (gen.defined()) g = gen;
  const auto dtype = opts.has_dtype() ? c10::typeMetaToScalarType(opts.dtype()) : torch::kFloat32;
  const auto draw = dtype == torch::kFloat64 ? torch::kFloat64 : torch::kFloat32;
  const torch::Device on = g.has_value() ? g->device() : torch::Device(torch::kCPU);  // CUDA generator: draw there
  auto x = torch::randn(shape, g, torch::TensorOptions().dtype(draw).device(on)).to(opts.device(), dtype);
  const double sigma = sampler.init_noise_sigma();
  if (sigma != 1.0) x = x * sigma;
  return sample_from(std::forward<Model>(model), sampler, x, gen, on_step);
}

}  // namespace ddpm
