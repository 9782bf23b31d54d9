#pragma once
/// The reverse-process loop: x_T ~ N(0, I) * init_noise_sigma, then for each inference
/// timestep t: x = sampler.step(model(x, t), t, x).prev_sample.
#include <ddpm/samplers/common.hpp>

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
  int64_t t;          ///< the timestep just processed
  const torch::Tensor& sample;
  const torch::Tensor& pred_original_sample;
};

/// Called after every step; return false to stop early (the current sample is returned).
using SampleCallback = std::function<bool(const SampleStep&)>;

/// Runs the reverse process from a given x_T [B, ...] over sampler.timesteps(). `model` is any
/// callable (x_t [B, ...], t int64 [B] on x's device) -> model output [B, ...] (a ModuleHolder,
/// a lambda...). Runs under torch::NoGradGuard (not InferenceMode, so the result stays an
/// ordinary tensor). Resets the sampler's history first. Stochastic samplers draw their noise
/// on CPU from `gen` (an undefined generator means the default one; a CUDA generator draws on its GPU).
/// Throws if the sampler has no timesteps (set_timesteps never called for DDIM / DPM-Solver;
/// DDPMSampler uses all T steps by default).
template <class Model, class Sampler>
torch::Tensor sample_from(Model&& model, Sampler& sampler, torch::Tensor x_T, torch::Generator gen,
                          const SampleCallback& on_step = {}) {
  TORCH_CHECK(x_T.defined() && x_T.dim() >= 1, "sample: x_T must be a batched tensor [B, ...]");
  const std::vector<int64_t> timesteps = sampler.timesteps();
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
    const int64_t t = timesteps[static_cast<size_t>(i)];
    const auto t_batch = torch::full({batch}, t, torch::TensorOptions().dtype(torch::kLong).device(x.device()));
    torch::Tensor out = model(x, t_batch);
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
