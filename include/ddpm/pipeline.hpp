#pragma once
/// The Pipeline: a UNet, a sampler (any registered one) and the device they run on; what users
/// call to turn noise into images (diffusers' DiffusionPipeline). Loadable from a diffusers folder
/// (pipeline or flat layout); the trainer's grids and the `sample` CLI both generate through it.
///
///   auto pipe = ddpm::Pipeline::from_diffusers("google-ddpm-cifar10-32", "dpmpp_2m");
///   auto gen = at::detail::createCPUGenerator(0);
///   torch::Tensor images = pipe.generate(1000, gen, GenerateOptions().num_inference_steps(20)
///                                                       .batch_size(100));   // [1000, 3, 32, 32]
///
/// generate() draws x_T ~ N(0, I) * init_noise_sigma on the CPU from the generator (so a seed
/// gives the same images on every device), batch after batch: memory is bounded by batch_size
/// whatever n is, and the images (on the CPU) are the only thing that grows with n. The images
/// depend on the seed and on batch_size (stochastic samplers draw their step noise between
/// batches' initial noise).
#include <ddpm/error.hpp>
#include <ddpm/io/diffusers.hpp>
#include <ddpm/nn/unet.hpp>
#include <ddpm/sample.hpp>
#include <ddpm/sampler.hpp>

#include <ATen/core/Generator.h>
#include <c10/util/Optional.h>
#include <torch/arg.h>
#include <torch/types.h>
#include <torch/utils.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstdint>
#include <functional>
#include <string>
#include <utility>

namespace ddpm {

/// The value range generate() returns images in.
enum class OutputRange {
  MinusOneToOne,  ///< model space: [-1, 1]
  ZeroToOne       ///< (x + 1) / 2, for images
};

/// How Pipeline::generate draws.
struct GenerateOptions {
  /// Sampler steps (set_timesteps(n)); model calls are this times the sampler's order.
  TORCH_ARG(int64_t, num_inference_steps) = 50;
  /// Images per batch: bounds memory (activations grow with it), not the results.
  TORCH_ARG(int64_t, batch_size) = 64;
  TORCH_ARG(OutputRange, output_range) = OutputRange::MinusOneToOne;
  /// Clamp the result to its range (as diffusers' pipelines do); off returns the raw samples.
  TORCH_ARG(bool, clamp) = true;
  /// Spatial size H = W of the images; 0 takes the UNet's sample_size (32 if it has none).
  TORCH_ARG(int64_t, sample_size) = 0;
};

/// What a progress callback sees after every sampler step.
struct GenerateProgress {
  int64_t images_done;  ///< images finished before the current batch
  int64_t num_images;   ///< n
  int64_t batch_index;  ///< 0-based batch number
  int64_t num_batches;
  int64_t step;         ///< steps done in the current batch (1-based after the first)
  int64_t num_steps;    ///< model calls per batch (timesteps().size())
};
/// Return false to stop: generate() then returns the images finished so far (whole batches).
using GenerateCallback = std::function<bool(const GenerateProgress&)>;

/// A UNet + sampler on a device.
class Pipeline {
 public:
  Pipeline(UNet unet, AnySampler sampler, torch::Device device = torch::kCPU)
      : unet_(std::move(unet)), sampler_(std::move(sampler)), device_(device) {
    if (!unet_) throw Error("Pipeline: the UNet is empty");
    unet_->to(device_);
    unet_->eval();
  }

  /// Loads a diffusers folder (pipeline: model_index.json, unet/, scheduler/; or flat:
  /// config.json, weights, scheduler_config.json). The sampler is the folder's scheduler class,
  /// or `sampler_name` (any name sampler_names() lists; the folder's schedule, prediction type
  /// and spacing still apply, as diffusers' from_config does).
  static Pipeline from_diffusers(const std::string& dir, const std::string& sampler_name = "",
                                 torch::Device device = torch::kCPU) {
    const auto folder = locate_diffusers_folder(dir);
    UNet unet = load_diffusers_unet(folder.unet_dir);
    const nlohmann::json cfg = read_scheduler_config(folder.scheduler_config);
    AnySampler sampler = sampler_name.empty() ? make_sampler(cfg) : make_sampler(cfg, sampler_name);
    return Pipeline(std::move(unet), std::move(sampler), device);
  }

  UNet& unet() { return unet_; }
  const UNet& unet() const { return unet_; }
  AnySampler& sampler() { return sampler_; }
  const AnySampler& sampler() const { return sampler_; }
  void set_sampler(AnySampler sampler) { sampler_ = std::move(sampler); }
  torch::Device device() const { return device_; }
  /// Moves the UNet to `device`; generation runs there from now on.
  void to(torch::Device device) {
    device_ = device;
    unet_->to(device_);
  }

  /// The image shape [C, H, W] generate() produces with these options.
  std::vector<int64_t> image_shape(const GenerateOptions& opts = {}) const {
    const auto& o = unet_->options;
    const int64_t size = opts.sample_size() > 0 ? opts.sample_size() : (o.sample_size() > 0 ? o.sample_size() : 32);
    return {o.in_channels(), size, size};
  }

  /// n images [n, C, H, W] (float32, CPU) in opts.output_range(). Noise from `gen` (CPU; an
  /// undefined generator means the default one). Throws ddpm::Error for n < 1 or bad options.
  torch::Tensor generate(int64_t n, torch::Generator gen, const GenerateOptions& opts = {},
                         const GenerateCallback& on_progress = {}) {
    if (n < 1) throw Error("Pipeline::generate: number of images must be >= 1, got " + std::to_string(n));
    check_options(opts);
    const auto shape = image_shape(opts);
    c10::optional<torch::Generator> g;
    if (gen.defined()) g = gen;
    return run_batches(n, opts, on_progress, [&](int64_t b) {
      return torch::randn({b, shape[0], shape[1], shape[2]}, g, torch::TensorOptions().dtype(torch::kFloat32));
    }, gen);
  }

  /// Like generate(), from given noise `latents` [B, C, H, W] ~ N(0, I) (scaled by the sampler's
  /// init_noise_sigma here, as diffusers' prepare_latents does), in batches of opts.batch_size().
  torch::Tensor generate_from(const torch::Tensor& latents, torch::Generator gen, const GenerateOptions& opts = {},
                              const GenerateCallback& on_progress = {}) {
    check_options(opts);
    const auto& o = unet_->options;
    if (!latents.defined() || latents.dim() != 4 || latents.size(1) != o.in_channels() || latents.size(0) < 1) {
      throw Error("Pipeline::generate_from: latents must be [B, " + std::to_string(o.in_channels()) +
                  ", H, W] with B >= 1, got " + (latents.defined() ? c10::str(latents.sizes()) : std::string("none")));
    }
    const auto cpu = latents.to(torch::kCPU, torch::kFloat32);
    int64_t offset = 0;
    return run_batches(latents.size(0), opts, on_progress, [&](int64_t b) {
      auto x = cpu.narrow(0, offset, b);
      offset += b;
      return x;
    }, gen);
  }

 private:
  void check_options(const GenerateOptions& opts) const {
    if (opts.batch_size() < 1) {
      throw Error("Pipeline: batch_size must be >= 1, got " + std::to_string(opts.batch_size()));
    }
    if (opts.num_inference_steps() < 1) {
      throw Error("Pipeline: num_inference_steps must be >= 1, got " + std::to_string(opts.num_inference_steps()));
    }
    if (opts.sample_size() < 0) {
      throw Error("Pipeline: sample_size must be >= 0, got " + std::to_string(opts.sample_size()));
    }
  }

  template <class DrawNoise>
  torch::Tensor run_batches(int64_t n, const GenerateOptions& opts, const GenerateCallback& on_progress,
                            DrawNoise&& draw_noise, torch::Generator gen) {
    sampler_.set_timesteps(opts.num_inference_steps());
    unet_->eval();
    torch::NoGradGuard no_grad;
    const int64_t num_batches = (n + opts.batch_size() - 1) / opts.batch_size();
    const int64_t num_steps = static_cast<int64_t>(sampler_.timesteps().size());
    std::vector<torch::Tensor> done;
    int64_t images_done = 0;
    bool stop = false;
    for (int64_t bi = 0; bi < num_batches && !stop; ++bi) {
      const int64_t b = std::min(opts.batch_size(), n - images_done);
      torch::Tensor x = draw_noise(b);
      const double sigma = sampler_.init_noise_sigma();
      if (sigma != 1.0) x = x * sigma;
      x = x.to(device_);
      auto model = [this](const torch::Tensor& xt, const torch::Tensor& t) { return unet_->forward(xt, t); };
      x = sample_from(model, sampler_, x, gen, [&](const SampleStep& s) {
        if (on_progress && !on_progress(GenerateProgress{images_done, n, bi, num_batches, s.index + 1, num_steps})) {
          stop = true;
          return false;
        }
        return true;
      });
      if (stop) break;
      x = x.to(torch::kCPU, torch::kFloat32);
      if (opts.output_range() == OutputRange::ZeroToOne) x = (x + 1) / 2;
      if (opts.clamp()) x = opts.output_range() == OutputRange::ZeroToOne ? x.clamp(0, 1) : x.clamp(-1, 1);
      done.push_back(x);
      images_done += b;
    }
    if (done.empty()) {
      const auto shape = image_shape(opts);
      return torch::empty({0, shape[0], shape[1], shape[2]});
    }
    return done.size() == 1 ? done.front() : torch::cat(done);
  }

  UNet unet_;
  AnySampler sampler_;
  torch::Device device_;
};

}  // namespace ddpm
