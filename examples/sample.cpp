// sample: draws images from a trained model.
//
//   sample --checkpoint runs/fashion --out grid.png   (newest checkpoint of a run)
//   sample --diffusers path/to/pipeline --sampler ddim --steps 50 --out grid.png
//
// --checkpoint reads a train_cifar10 checkpoint (its EMA weights, schedule and
// prediction type). --diffusers reads a diffusers folder: a pipeline folder
// (model_index.json, unet/, scheduler/scheduler_config.json) or a flat one
// (config.json, diffusion_pytorch_model.safetensors, scheduler_config.json); its
// scheduler config governs the sampler, as diffusers' from_config does.
//
// Class-conditional models (num_class_embeds; train_cifar10 with num_classes):
//   sample --checkpoint runs/fmnist-cond --class sneaker --guidance-scale 3 --out sneakers.png
//   sample --checkpoint runs/fmnist-cond --class 0,2,4 --num-samples 3
// --class takes an index, a class name recorded in the checkpoint, or one label per image;
// without it the grid shows one class per row. --guidance-scale defaults to the run's
// guidance_scale for checkpoints, 1 (no guidance) for diffusers folders; --guidance-interval MIN MAX
// (guide only timesteps t in [MIN * T, MAX * T]) to the run's guidance_interval_min / _max.
// Exit status: 0 ok, 2 bad flags / paths / files, 3 an output that cannot be written, 1 other
// failures.
#include <ddpm/runtime.hpp>
#include <ddpm/guidance.hpp>
#include <ddpm/io/png.hpp>
#include <ddpm/io/safetensors.hpp>
#include <ddpm/pipeline.hpp>
#include <ddpm/train/progress.hpp>
#include <ddpm/train/checkpoint.hpp>

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Parallel.h>
#include <CLI/CLI.hpp>

#include "cli_checks.hpp"
#include <torch/cuda.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>

namespace fs = std::filesystem;

namespace {

int fail(const std::string& msg, int code = 2) {
  std::fprintf(stderr, "sample: error: %s\n", msg.c_str());
  return code;
}

}  // namespace

int main(int argc, char** argv) {
  // OpenMP must not spin against OpenBLAS (20x slower on small machines): see runtime.hpp.
  ddpm::reexec_with_env(argv, ddpm::recommended_cpu_env());
  CLI::App app{
      "Sample images from a diffusion model: a train_cifar10 checkpoint or a diffusers folder.\n"
      "Writes a PNG grid (--out), optionally every image as its own PNG (--save-images) and the\n"
      "final samples in model space as safetensors (--output-tensor).",
      "sample"};
  std::string checkpoint, diffusers, sampler_name, out = "samples.png", images_dir, latents_path, output_tensor,
                                                    device_name = "auto", class_spec;
  int64_t steps = 50, num_samples = 16, nrow = 0, batch_size = 0;
  uint64_t seed = 0;
  double eta = 0.0, guidance_scale = 1.0, guidance_rescale = 0.0;
  std::vector<double> guidance_interval = {0.0, 1.0};
  int threads = 0;
  bool channels_last = false;
  bool fast = true;
  auto* ckpt_opt = app.add_option("--checkpoint", checkpoint, "train_cifar10 checkpoint file (ckpt-N.pt), or a run directory (its newest checkpoint); samples its EMA weights")
                       ->check(CLI::ExistingPath);
  auto* diff_opt = app.add_option("--diffusers", diffusers,
                                  "diffusers folder: pipeline (model_index.json, unet/, scheduler/) or flat "
                                  "(config.json, weights, scheduler_config.json)")
                       ->check(CLI::ExistingDirectory);
  ckpt_opt->excludes(diff_opt);
  app.add_option("--sampler", sampler_name,
                 "sampler name (`--sampler list` prints them all; default: the folder's scheduler class, "
                 "for a checkpoint the sampler of its run's grids); the scheduler config's schedule, prediction type, "
                 "clipping and spacing apply")
      ->check([](const std::string& name) -> std::string {
        if (name == "list") return {};
        try {
          ddpm::resolve_sampler_name(name);
          return {};
        } catch (const ddpm::Error& e) {
          return e.what();
        }
      });
  app.add_option("--batch-size", batch_size, "images per batch: bounds memory whatever --num-samples is (default 16 on a CPU, fastest there; 128 on a GPU)")
      ->check(ddpm_examples::positive);
  app.add_option("--steps", steps,
                 "number of denoising steps (default 50; for a checkpoint the steps of its run's grids)")
      ->check(ddpm_examples::positive);
  app.add_option("--seed", seed, "seed of the initial noise and of stochastic samplers (default 0)");
  app.add_option("--num-samples", num_samples, "images to draw (default 16; with --latents: their batch size)")
      ->check(ddpm_examples::positive);
  app.add_option("--out", out, "PNG grid to write (default samples.png)");
  app.add_option("--nrow", nrow, "images per grid row (default: square grid)")->check(ddpm_examples::non_negative);
  app.add_option("--save-images", images_dir, "also write each image as DIR/sample-NNNN.png");
  app.add_option("--latents", latents_path,
                 "start from this noise: safetensors file with tensor \"latents\" [B, C, H, W]")
      ->check(CLI::ExistingFile);
  app.add_option("--output-tensor", output_tensor,
                 "write the final samples in model space (before mapping to [0, 1]) as safetensors tensor \"images\"");
  app.add_option("--eta", eta, "DDIM stochasticity: 0 deterministic (default), 1 DDPM-like")->check(CLI::Range(0.0, 10.0));
  app.add_option("--device", device_name, "auto (CUDA when available), cpu or cuda")
      ->check(CLI::IsMember({"auto", "cpu", "cuda"}));
  app.add_option("--class", class_spec,
                 "class-conditional models: a class index or name (names from the checkpoint) for every image, or a "
                 "comma-separated list with one per image (default: one class per grid row)");
  app.add_option("--guidance-scale", guidance_scale,
                 "classifier-free guidance scale (1 = none; default: the run's guidance_scale for a checkpoint, 1 "
                 "otherwise)")
      ->check(ddpm_examples::non_negative);
  app.add_option("--guidance-rescale", guidance_rescale, "guidance rescale phi of diffusers' rescale_noise_cfg (default 0)")
      ->check(CLI::Range(0.0, 1.0));
  app.add_option("--guidance-interval", guidance_interval,
                 "guide only model calls at timesteps t with MIN * T <= t <= MAX * T (T = num_train_timesteps; default: "
                 "the run's guidance_interval_min/max for a checkpoint, 0 1 otherwise)")
      ->expected(2)
      ->check(CLI::Range(0.0, 1.0));
  app.add_option("--threads", threads, "CPU threads (0 = all cores)")->check(ddpm_examples::non_negative);
  app.add_flag("--channels-last", channels_last,
               "run the UNet in the channels-last (NHWC) inference layout: results within float rounding of the "
               "default exact path; not faster on a 2-core AVX2 CPU (docs/performance.md), meant for GPUs");
  app.add_flag("--fast,!--exact", fast,
               "--fast (default): on a CPU, convolutions on oneDNN with weights packed once and attention without "
               "transposed copies (UNet::set_fast_inference), within float rounding of the exact path; --exact: "
               "LibTorch's own kernels, the path that is bit-exact to diffusers' math");

  if (const int rc = ddpm_examples::parse_args(app, argc, argv); rc >= 0) return rc;
  if (sampler_name == "list") {
    for (const auto& i : ddpm::registered_samplers()) {
      std::string names = i.name;
      for (const auto& a : i.aliases) names += ", " + a;
      std::printf("%-28s %s [%s]\n", names.c_str(), i.help.c_str(), i.class_name.c_str());
    }
    for (const auto& p : ddpm::sampler_presets()) {
      std::printf("%-28s %s [%s + %s]\n", p.name.c_str(), p.help.c_str(),
                  ddpm::sampler_info(p.kind).class_name.c_str(), p.overrides.dump().c_str());
    }
    return 0;
  }
  if (checkpoint.empty() && diffusers.empty()) return fail("give --checkpoint FILE or --diffusers DIR (see --help)");
  for (const std::string& path : {out, output_tensor}) {
    if (path.empty()) continue;
    const auto parent = fs::path(path).parent_path();
    if (!parent.empty() && !fs::is_directory(parent)) return fail("output folder '" + parent.string() + "' does not exist");
  }

  ddpm::set_num_threads(threads > 0 ? threads : static_cast<int>(std::max(1u, std::thread::hardware_concurrency())));
  const bool cuda = torch::cuda::is_available();
  if (device_name == "cuda" && !cuda) return fail("--device cuda: CUDA is not available");
  const torch::Device device = (device_name == "cuda" || (device_name == "auto" && cuda)) ? torch::Device(torch::kCUDA)
                                                                                          : torch::Device(torch::kCPU);
  if (batch_size == 0) batch_size = ddpm::default_sampling_batch(device);
  try {
    ddpm::UNet unet{nullptr};
    nlohmann::json scheduler_config;
    std::vector<std::string> class_names;
    bool run_scale = false;  // guidance_scale taken from the checkpoint's run
    if (!checkpoint.empty()) {
      auto loaded = ddpm::load_training_checkpoint(checkpoint, device, [](const std::string& p, const std::string& why) {
        std::fprintf(stderr, "sample: warning: skipping checkpoint %s: %s\n", p.c_str(), why.c_str());
      });
      unet = loaded.ema_model;
      scheduler_config = loaded.scheduler_config;
      class_names = loaded.class_names;
      const ddpm::RunGuidance run = ddpm::run_guidance_of(loaded.train_config);
      if (!app.count("--guidance-scale") && run.conditional) {
        guidance_scale = run.scale;
        run_scale = true;
      }
      if (!app.count("--guidance-interval") && run.conditional) guidance_interval = {run.interval_min, run.interval_max};
      // Unless given, sample as the run drew its grids (its "sampler" and "sample_steps").
      if (sampler_name.empty()) sampler_name = loaded.train_config.value("sampler", std::string("ddim"));
      if (!app.count("--steps")) steps = loaded.train_config.value("sample_steps", int64_t{50});
      std::fprintf(stderr, "sample: checkpoint %s (step %lld)\n", loaded.path.c_str(),
                   static_cast<long long>(loaded.step));
    } else {
      const auto folder = ddpm::locate_diffusers_folder(diffusers);
      unet = ddpm::load_diffusers_unet(folder.unet_dir);
      scheduler_config = ddpm::read_scheduler_config(folder.scheduler_config);
    }
    if (app.count("--eta")) scheduler_config["eta"] = eta;
    auto sampler = sampler_name.empty() ? ddpm::make_sampler(scheduler_config)
                                        : ddpm::make_sampler(scheduler_config, sampler_name);
    if (app.count("--eta") && sampler.kind() != ddpm::SamplerKind::DDIM) {
      return fail("--eta applies to the DDIM sampler only");
    }
    std::fprintf(stderr, "sample: %s sampler, %lld steps\n", sampler.info().name.c_str(), static_cast<long long>(steps));
    ddpm::Pipeline pipe(unet, std::move(sampler), device);
    pipe.unet()->set_channels_last(channels_last);
    pipe.unet()->set_fast_inference(fast);

    auto gen = at::detail::createCPUGenerator(seed);
    auto opts = ddpm::GenerateOptions().num_inference_steps(steps).batch_size(batch_size).clamp(false);
    const int64_t num_classes = ddpm::guidance_num_classes(pipe.unet()->options);
    if (num_classes == 0 && !class_spec.empty()) {
      return fail("--class " + class_spec + ": the model is not class-conditional (its UNet has no num_class_embeds)");
    }
    if (num_classes == 0 && app.count("--guidance-scale") && guidance_scale != 1.0) {
      return fail("--guidance-scale needs a class-conditional model (its UNet has no num_class_embeds)");
    }
    if (num_classes == 0 && app.count("--guidance-interval")) {
      return fail("--guidance-interval needs a class-conditional model (its UNet has no num_class_embeds)");
    }
    if (guidance_interval[0] > guidance_interval[1]) {
      return fail("--guidance-interval " + ddpm::detail::format_number(guidance_interval[0]) + " " +
                  ddpm::detail::format_number(guidance_interval[1]) + ": MIN must not be above MAX");
    }
    torch::Tensor latents;
    if (!latents_path.empty()) {
      const auto tensors = ddpm::load_safetensors(latents_path);
      auto it = tensors.find("latents");
      if (it == tensors.end()) return fail("--latents: '" + latents_path + "' has no tensor named \"latents\"");
      latents = it->second.to(torch::kFloat32);
      const int64_t c = pipe.unet()->options.in_channels();
      if (latents.dim() != 4 || latents.size(1) != c) {
        return fail("--latents: tensor \"latents\" in '" + latents_path + "' must be [B, " + std::to_string(c) +
                    ", H, W], got " + c10::str(latents.sizes()));
      }
      if (app.count("--num-samples") && latents.size(0) != num_samples) {
        return fail("--num-samples " + std::to_string(num_samples) + " disagrees with the " +
                    std::to_string(latents.size(0)) + " latents in '" + latents_path + "'");
      }
      num_samples = latents.size(0);
    }
    opts.class_labels(ddpm::sample_class_labels(class_spec, class_names, num_classes, num_samples, nrow));
    if (num_classes > 0) {
      opts.guidance_scale(guidance_scale)
          .guidance_rescale(guidance_rescale)
          .guidance_interval_min(guidance_interval[0])
          .guidance_interval_max(guidance_interval[1]);
      const bool interval = guidance_interval[0] > 0.0 || guidance_interval[1] < 1.0;
      std::fprintf(stderr, "sample: %s, guidance scale %g%s%s%s\n",
                   class_spec.empty() ? "one class per row" : ("--class " + class_spec).c_str(), guidance_scale,
                   run_scale ? " (the run's)" : "",
                   guidance_rescale > 0 ? (", rescale " + ddpm::detail::format_number(guidance_rescale)).c_str() : "",
                   interval ? (", in [" + ddpm::detail::format_number(guidance_interval[0]) + ", " +
                               ddpm::detail::format_number(guidance_interval[1]) + "] of the timesteps")
                                  .c_str()
                            : "");
    }
    ddpm::ProgressBar bar(num_samples, 0, "sample");
    const auto progress = [&](const ddpm::GenerateProgress& p) {
      bar.update(p.images_done + (p.step * std::min(batch_size, p.num_images - p.images_done)) / p.num_steps);
      return true;
    };
    torch::Tensor images = latents.defined() ? pipe.generate_from(latents, gen, opts, progress)
                                             : pipe.generate(num_samples, gen, opts, progress);
    bar.finish();
    if (!output_tensor.empty()) {
      ddpm::save_safetensors(output_tensor, {{"images", images.contiguous()}}, {{"format", "pt"}});
      std::fprintf(stderr, "sample: wrote %s (tensor \"images\" %s)\n", output_tensor.c_str(),
                   c10::str(images.sizes()).c_str());
    }
    ddpm::save_image_grid(out, images, ddpm::ImageRange::MinusOneToOne, nrow);
    std::fprintf(stderr, "sample: wrote %s (%lld images)\n", out.c_str(), static_cast<long long>(images.size(0)));
    if (!images_dir.empty()) {
      fs::create_directories(images_dir);
      for (int64_t i = 0; i < images.size(0); ++i) {
        char name[32];
        std::snprintf(name, sizeof name, "sample-%04lld.png", static_cast<long long>(i));
        ddpm::write_png((fs::path(images_dir) / name).string(), images[i], ddpm::ImageRange::MinusOneToOne);
      }
      std::fprintf(stderr, "sample: wrote %lld images to %s/\n", static_cast<long long>(images.size(0)),
                   images_dir.c_str());
    }
    return 0;
  } catch (const ddpm::IoError& e) {
    return fail(e.what(), 3);
  } catch (const ddpm::Error& e) {
    return fail(e.what());
  } catch (const c10::Error& e) {
    return fail(e.what_without_backtrace(), 1);
  } catch (const std::exception& e) {
    return fail(e.what(), 1);
  }
}
