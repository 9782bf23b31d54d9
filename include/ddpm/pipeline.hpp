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
///
/// Class-conditional UNets (num_class_embeds): GenerateOptions::class_labels gives one label for
/// every image or one per image; guidance_scale != 1 turns on classifier-free guidance (the
/// conditional and unconditional outputs of a batch come from ONE UNet call on a doubled batch,
/// so a guided batch of batch_size images runs the UNet on 2 x batch_size; see guidance.hpp).
///
///   pipe.generate(16, gen, GenerateOptions().class_labels({7}).guidance_scale(3));
#include <ddpm/error.hpp>
#include <ddpm/guidance.hpp>
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

/// A sampling batch size for `device` when the user gives none: 16 images on a CPU, 128 on a GPU.
/// On a CPU small batches keep activations in cache: a guided 20-step DPM++ 2M run of the
/// Fashion-MNIST demo model drew 3.54 images/s at 16 (peak RSS 343 MB), 3.32 at 8 and 2.79 at 64
/// (746 MB) on 2 cores (docs/performance.md); a GPU wants large batches to fill it.
inline int64_t default_sampling_batch(const torch::Device& device) { return device.is_cuda() ? 128 : 16; }

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
  /// Class labels of a class-conditional UNet: one for every image, or one per image (n
  /// entries); empty for an unconditional UNet. Labels index the class-embedding table; its
  /// last row, num_class_embeds - 1, is the null (unconditional) class.
  TORCH_ARG(std::vector<int64_t>, class_labels) = {};
  /// Classifier-free guidance scale s: out = u + s (c - u). 1 = no guidance (the conditional
  /// output, one UNet call of the batch); 0 = the unconditional output.
  TORCH_ARG(double, guidance_scale) = 1.0;
  /// diffusers' guidance_rescale phi (rescale_noise_cfg), in [0, 1]; applied only when guiding.
  TORCH_ARG(double, guidance_rescale) = 0.0;
  /// The guidance interval (guidance.hpp), as fractions of num_train_timesteps T: model calls at a
  /// timestep t with min * T <= t <= max * T are guided, the others take the conditional output
  /// alone (one UNet call of the batch). [0, 1], the default, guides every call.
  TORCH_ARG(double, guidance_interval_min) = 0.0;
  TORCH_ARG(double, guidance_interval_max) = 1.0;
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
    check_guidance(opts.guidance_scale(), opts.guidance_rescale(), "Pipeline");
    check_guidance_interval(opts.guidance_interval_min(), opts.guidance_interval_max(), "Pipeline");
  }

  /// The labels of n images (int64 [n], CPU), or an undefined tensor for an unconditional UNet;
  /// throws ddpm::Error when they do not suit the UNet.
  torch::Tensor resolve_labels(int64_t n, const GenerateOptions& opts) const {
    const auto& o = unet_->options;
    const std::string kind = o.class_conditioning();
    const auto& l = opts.class_labels();
    const bool guided = opts.guidance_scale() != 1.0;
    if (kind == "none") {
      if (!l.empty()) {
        throw Error("Pipeline: class labels were given but the UNet is not class-conditional (no num_class_embeds)");
      }
      if (guided) {
        throw Error("Pipeline: guidance_scale " + detail::format_number(opts.guidance_scale()) +
                    " needs a class-conditional UNet (num_class_embeds); this one is unconditional");
      }
      return {};
    }
    if (kind == "identity") {
      throw Error("Pipeline: class_embed_type \"identity\" takes embedding vectors, not class labels; call the UNet directly");
    }
    if (guided && kind != "embedding") {
      throw Error("Pipeline: classifier-free guidance needs a class-embedding table (num_class_embeds) with a null class; "
                  "this UNet has class_embed_type \"" + kind + "\"");
    }
    if (l.empty()) {
      throw Error("Pipeline: the UNet is class-conditional" +
                  (kind == "embedding" ? " (num_class_embeds " + std::to_string(*o.num_class_embeds()) + ", null class " +
                                             std::to_string(o.null_class_label()) + ")"
                                       : std::string()) +
                  ": give class labels (GenerateOptions::class_labels)");
    }
    if (l.size() != 1 && static_cast<int64_t>(l.size()) != n) {
      throw Error("Pipeline: " + std::to_string(l.size()) + " class labels for " + std::to_string(n) +
                  " images; give one label for all or one per image");
    }
    if (kind == "embedding") {
      for (const int64_t v : l) {
        if (v < 0 || v >= *o.num_class_embeds()) {
          throw Error("Pipeline: class label " + std::to_string(v) + " is out of range [0, " +
                      std::to_string(*o.num_class_embeds()) + ") (num_class_embeds; the null class is " +
                      std::to_string(o.null_class_label()) + ")");
        }
      }
    }
    auto t = torch::tensor(l, torch::TensorOptions().dtype(torch::kLong));
    return l.size() == 1 ? t.expand({n}).contiguous() : t;
  }

  template <class DrawNoise>
  torch::Tensor run_batches(int64_t n, const GenerateOptions& opts, const GenerateCallback& on_progress,
                            DrawNoise&& draw_noise, torch::Generator gen) {
    const torch::Tensor labels = resolve_labels(n, opts);
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
      const auto on_step = [&](const SampleStep& s) {
        if (on_progress && !on_progress(GenerateProgress{images_done, n, bi, num_batches, s.index + 1, num_steps})) {
          stop = true;
          return false;
        }
        return true;
      };
      if (labels.defined()) {
        const int64_t null_label = unet_->options.class_conditioning() == "embedding" ? unet_->options.null_class_label() : 0;
        GuidedModel model{unet_, labels.narrow(0, images_done, b).to(device_), null_label, opts.guidance_scale(),
                          opts.guidance_rescale()};
        if (opts.guidance_interval_min() > 0.0 || opts.guidance_interval_max() < 1.0) {
          const auto T = static_cast<double>(sampler_.schedule().options().num_train_timesteps());
          model.t_min = opts.guidance_interval_min() * T;
          model.t_max = opts.guidance_interval_max() * T;
        }
        x = sample_from(model, sampler_, x, gen, on_step);
      } else {
        auto model = [this](const torch::Tensor& xt, const torch::Tensor& t) { return unet_->forward(xt, t); };
        x = sample_from(model, sampler_, x, gen, on_step);
      }
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
