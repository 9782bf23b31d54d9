// evaluate: scores image samples (or a model, by sampling it) against reference statistics and
// prints ONE JSON object on stdout: {"n", "metric", "features", "fd", "kid", "kid_std",
// "reference", "reference_n", ["class_histogram", "class_names", "mean_confidence"],
// ["class_accuracy", "mean_class_accuracy"], "wall_seconds"}.
//
//   evaluate --samples DIR|GRID.png|SAMPLES.safetensors [--reference fashion-mnist|STATS|DIR]
//            [--features classifier|inception]
//   evaluate --model RUN_DIR|CKPT|DIFFUSERS_DIR --num-samples N [--guidance-scale S]
//            [--guidance-interval MIN MAX] [...]
//   evaluate --reference DIR --features ... --save-stats OUT.safetensors   (precompute a reference)
//
// A class-conditional model draws class i mod K for image i, guided (the run's guidance_scale,
// or --guidance-scale); when its classes are the classifier's (a Fashion-MNIST run), the JSON
// also has the class accuracy: per class k, the share of the images drawn for k that the
// classifier assigns to k, and its mean over the classes.
//
// Features "classifier" (default) are ddpm's Fashion-MNIST CNN (metric "FD-fmnist", not FID;
// 1-channel 28x28/32x32 images); "inception" is pytorch-fid's Inception (metric "FID"; weights
// via --inception-weights, converted by tools/convert_fid_inception.py). The reference defaults to
// the committed Fashion-MNIST test-split statistics (classifier features). Exit status: 0 ok,
// 2 bad flags / inputs / files, 3 an output that cannot be written, 1 other failures.
#include <ddpm/data/idx.hpp>
#include <ddpm/data/transforms.hpp>
#include <ddpm/eval/evaluate.hpp>
#include <ddpm/eval/sample_io.hpp>
#include <ddpm/io/diffusers.hpp>
#include <ddpm/pipeline.hpp>
#include <ddpm/runtime.hpp>
#include <ddpm/sample.hpp>
#include <ddpm/sampler.hpp>
#include <ddpm/train/trainer.hpp>

#include <ATen/CPUGeneratorImpl.h>
#include <CLI/CLI.hpp>
#include <torch/cuda.h>

#include "cli_checks.hpp"

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <string>
#include <thread>

namespace fs = std::filesystem;

namespace {

int fail(const std::string& msg, int code = 2) {
  std::fprintf(stderr, "evaluate: error: %s\n", msg.c_str());
  return code;
}

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

/// Samples from a folder of PNGs, a PNG grid or a safetensors tensor.
torch::Tensor load_samples(const std::string& path, int64_t image_size, int64_t padding, int64_t count,
                           const std::string& key) {
  if (fs::is_directory(path)) return ddpm::read_png_folder(path);
  if (!fs::exists(path)) throw ddpm::Error("--samples: '" + path + "' does not exist");
  if (ends_with(path, ".png") || ends_with(path, ".PNG")) return ddpm::read_png_grid(path, image_size, padding, count);
  if (ends_with(path, ".safetensors")) return ddpm::read_samples_tensor(path, key);
  throw ddpm::Error("--samples: '" + path + "' is neither a folder of PNGs, a .png grid nor a .safetensors tensor");
}

/// What generate() made.
struct Generated {
  torch::Tensor images;                  ///< [n, C, H, W] in [-1, 1]
  std::vector<int64_t> labels;           ///< class-conditional models: the class of each image
  std::vector<std::string> class_names;  ///< the run's class names by label (none for diffusers folders)
};

/// Generates `n` images from a train run / checkpoint (its EMA weights) or a diffusers folder
/// through the Pipeline, in batches of `batch`; a class-conditional model with guidance
/// `guidance` (< 0: the run's guidance_scale, 1 for a diffusers folder) in the guidance interval
/// `interval` ({min, max}, fractions of num_train_timesteps; empty: the run's, [0, 1] for a folder).
Generated generate(const std::string& model, int64_t n, int64_t batch, const std::string& sampler_name, int64_t steps,
                   uint64_t seed, double guidance, std::vector<double> interval, torch::Device device, bool fast) {
  // steps <= 0: the run's grid steps (train runs), 50 (diffusers folders).
  Generated out;
  // A train run also holds a config.json (the training config): recognise diffusers folders by
  // their pipeline index or weight file.
  const fs::path m(model);
  const bool diffusers = fs::exists(m / "model_index.json") || fs::exists(m / "diffusion_pytorch_model.safetensors") ||
                         fs::exists(m / "unet" / "config.json");
  double guidance_scale = 1.0;  // class-conditional runs: the run's guidance_scale
  const bool interval_given = !interval.empty();
  auto make_pipeline = [&]() {
    if (diffusers) {
      if (steps <= 0) steps = 50;
      return ddpm::Pipeline::from_diffusers(model, sampler_name, device);
    }
    auto loaded = ddpm::load_training_checkpoint(model, device, [](const std::string& p, const std::string& why) {
      std::fprintf(stderr, "evaluate: warning: skipping checkpoint %s: %s\n", p.c_str(), why.c_str());
    });
    const ddpm::RunGuidance run = ddpm::run_guidance_of(loaded.train_config);
    guidance_scale = run.scale;
    if (interval.empty()) interval = {run.interval_min, run.interval_max};
    out.class_names = loaded.class_names;
    std::fprintf(stderr, "evaluate: checkpoint %s (step %lld, EMA weights)\n", loaded.path.c_str(),
                 static_cast<long long>(loaded.step));
    // Unless given, sample as the run drew its grids (its "sampler" and "sample_steps").
    if (steps <= 0) steps = loaded.train_config.value("sample_steps", int64_t{50});
    const std::string name =
        sampler_name.empty() ? loaded.train_config.value("sampler", std::string("ddim")) : sampler_name;
    return ddpm::Pipeline(loaded.ema_model, ddpm::make_sampler(loaded.scheduler_config, name), device);
  };
  ddpm::Pipeline pipe = make_pipeline();
  pipe.unet()->set_fast_inference(fast);
  auto gen = at::detail::createCPUGenerator(seed);
  int64_t reported = -1;
  auto opts = ddpm::GenerateOptions().num_inference_steps(steps).batch_size(batch);
  // A class-conditional model draws every class equally often (image i: class i mod K), guided.
  if (const int64_t k = ddpm::guidance_num_classes(pipe.unet()->options); k > 0) {
    const std::vector<int64_t> labels = ddpm::cyclic_class_labels(n, k);
    if (guidance >= 0) guidance_scale = guidance;
    if (interval.empty()) interval = {0.0, 1.0};
    opts.class_labels(labels)
        .guidance_scale(guidance_scale)
        .guidance_interval_min(interval[0])
        .guidance_interval_max(interval[1]);
    out.labels = labels;
    std::fprintf(stderr, "evaluate: class-conditional model: %lld classes in turn, guidance scale %g, guidance interval "
                 "[%g, %g] of the timesteps\n",
                 static_cast<long long>(k), guidance_scale, interval[0], interval[1]);
  } else if (guidance >= 0 || interval_given) {
    throw ddpm::Error(std::string(guidance >= 0 ? "--guidance-scale" : "--guidance-interval") + ": '" + model +
                      "' is not a class-conditional model");
  }
  out.images = pipe.generate(n, gen, opts,
                       [&](const ddpm::GenerateProgress& p) {
                         if (p.step == p.num_steps && p.batch_index != reported) {
                           reported = p.batch_index;
                           std::fprintf(stderr, "evaluate: generated %lld / %lld\n",
                                        static_cast<long long>(std::min(n, p.images_done + batch)),
                                        static_cast<long long>(n));
                         }
                         return true;
                       });
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  ddpm::reexec_with_env(argv, ddpm::recommended_cpu_env());
  CLI::App app{"Score image samples, or a model by sampling it, against reference statistics (FD, KID).\n"
               "Prints one JSON object on stdout.",
               "evaluate"};
  std::string samples, model, reference = "fashion-mnist", features = "classifier", inception_weights, classifier,
                           save_stats, tensor_key, sampler_name, device_name = "cpu";
  int64_t num_samples = 0, image_size = 32, grid_padding = 2, grid_count = 0, batch_size = 250, kid_subsets = 100,
          kid_subset_size = 1000, steps = 0, gen_batch = 0, keep_rows = 2000;
  uint64_t seed = 0;
  int threads = 0;
  double guidance = -1;
  std::vector<double> guidance_interval;  // empty: the run's
  bool fast = true;
  auto* samples_opt = app.add_option("--samples", samples, "folder of PNGs, PNG grid, or safetensors tensor [N, C, H, W] in [-1, 1]");
  auto* model_opt = app.add_option("--model", model, "train run directory / checkpoint, or diffusers folder, to sample");
  samples_opt->excludes(model_opt);
  app.add_option("--num-samples", num_samples, "with --model: images to generate")->check(ddpm_examples::positive);
  app.add_option("--reference", reference,
                 "fashion-mnist (committed test-split stats), a stats .safetensors file, a folder of PNGs, or an "
                 "MNIST-layout folder (its test split) (default fashion-mnist)");
  app.add_option("--features", features, "classifier (FD-fmnist, default) or inception (FID)")
      ->check(CLI::IsMember({"classifier", "inception"}));
  app.add_option("--inception-weights", inception_weights, "pytorch-fid Inception weights as safetensors");
  app.add_option("--classifier", classifier, "classifier weights (default: the committed Fashion-MNIST one)");
  app.add_option("--image-size", image_size, "tile size of a PNG grid (default 32)")->check(ddpm_examples::positive);
  app.add_option("--grid-padding", grid_padding, "padding of a PNG grid (default 2)")->check(ddpm_examples::non_negative);
  app.add_option("--grid-count", grid_count, "images in a PNG grid (default: all non-empty tiles)")
      ->check(ddpm_examples::non_negative);
  app.add_option("--tensor", tensor_key, "tensor name in a samples .safetensors file (default: its only tensor)");
  app.add_option("--save-stats", save_stats, "write the statistics of the scored images (or of --reference) here");
  app.add_option("--stats-rows", keep_rows, "feature rows kept in --save-stats for KID (default 2000)")
      ->check(ddpm_examples::non_negative);
  app.add_option("--batch-size", batch_size, "feature batch size (default 250)")->check(ddpm_examples::positive);
  app.add_option("--kid-subsets", kid_subsets, "KID subsets (default 100)")->check(ddpm_examples::positive);
  app.add_option("--kid-subset-size", kid_subset_size, "KID subset size (default 1000)")->check(ddpm_examples::positive);
  app.add_option("--sampler", sampler_name,
                 "with --model: any name `sample --sampler list` prints (default: the folder's scheduler; for a "
                 "train run the sampler of its grids)");
  app.add_option("--steps", steps, "with --model: sampling steps (default 50; for a train run the steps of its grids)")
      ->check(ddpm_examples::positive);
  app.add_option("--gen-batch", gen_batch, "with --model: images per sampling batch (default 16 on a CPU, fastest there; 128 on a GPU)")
      ->check(ddpm_examples::positive);
  app.add_option("--seed", seed, "with --model: seed (default 0)");
  auto* guidance_opt = app.add_option("--guidance-scale", guidance,
                                      "with a class-conditional --model: classifier-free guidance scale (default: the run's "
                                      "guidance_scale; 1 = none)")
                           ->check(CLI::NonNegativeNumber);
  auto* interval_opt =
      app.add_option("--guidance-interval", guidance_interval,
                     "with a class-conditional --model: guide only model calls at timesteps t with MIN * T <= t <= "
                     "MAX * T (T = num_train_timesteps; default: the run's guidance_interval_min/max, else 0 1)")
          ->expected(2)
          ->check(CLI::Range(0.0, 1.0));
  app.add_flag("--fast,!--exact", fast,
               "with --model: the fast inference path (default; UNet::set_fast_inference) or LibTorch's exact kernels");
  app.add_option("--device", device_name, "cpu (default), cuda or auto")->check(CLI::IsMember({"auto", "cpu", "cuda"}));
  app.add_option("--threads", threads, "CPU threads (0 = all cores)")->check(ddpm_examples::non_negative);
  if (const int rc = ddpm_examples::parse_args(app, argc, argv); rc >= 0) return rc;
  if (!model.empty() && num_samples == 0) return fail("--model needs --num-samples N");
  if (model.empty() && guidance_opt->count() > 0) return fail("--guidance-scale needs a class-conditional --model");
  if (model.empty() && interval_opt->count() > 0) return fail("--guidance-interval needs a class-conditional --model");
  if (guidance_interval.size() == 2 && guidance_interval[0] > guidance_interval[1]) {
    return fail("--guidance-interval " + ddpm::detail::format_number(guidance_interval[0]) + " " +
                ddpm::detail::format_number(guidance_interval[1]) + ": MIN must not be above MAX");
  }
  if (samples.empty() && model.empty() && save_stats.empty()) {
    return fail("give --samples PATH or --model DIR --num-samples N (or --reference ... --save-stats OUT)");
  }
  ddpm::set_num_threads(threads > 0 ? threads : static_cast<int>(std::max(1u, std::thread::hardware_concurrency())));
  const bool cuda = torch::cuda::is_available();
  if (device_name == "cuda" && !cuda) return fail("--device cuda: CUDA is not available");
  const torch::Device device =
      (device_name == "cuda" || (device_name == "auto" && cuda)) ? torch::Device(torch::kCUDA) : torch::Device(torch::kCPU);
  if (gen_batch == 0) gen_batch = ddpm::default_sampling_batch(device);
  const auto t0 = std::chrono::steady_clock::now();
  try {
    std::unique_ptr<ddpm::FeatureNetwork> net;
    if (features == "inception") {
      if (inception_weights.empty()) {
        inception_weights = ddpm::eval_data_dirs().empty() ? "pt_inception-fid.safetensors"
                                                           : ddpm::eval_data_dirs().front() + "/eval/pt_inception-fid.safetensors";
      }
      net = std::make_unique<ddpm::InceptionFeatures>(ddpm::load_fid_inception(inception_weights));
    } else {
      net = ddpm::load_fmnist_classifier_features(classifier);
    }
    net->to(device);

    // Reference statistics.
    ddpm::GaussianStats ref;
    std::string ref_name = reference;
    if (reference == "fashion-mnist" && features == "classifier" && classifier.empty()) {
      ref = ddpm::load_feature_stats(ddpm::find_eval_data(ddpm::kFmnistTestStatsFile));
    } else if (ends_with(reference, ".safetensors")) {
      ref = ddpm::load_feature_stats(reference);
    } else {
      torch::Tensor real;
      std::string dir = reference == "fashion-mnist" ? "/usr/share/datasets/fashion-mnist" : reference;
      if (ddpm::has_idx_dataset(dir)) {
        real = ddpm::to_model_range(ddpm::load_mnist_dir(dir, /*train=*/false).images);
      } else if (fs::is_directory(dir)) {
        real = ddpm::read_png_folder(dir);
      } else {
        return fail("--reference '" + reference + "' is neither fashion-mnist, a .safetensors stats file nor a folder");
      }
      std::fprintf(stderr, "evaluate: computing reference statistics of %lld images from %s\n",
                   static_cast<long long>(real.size(0)), dir.c_str());
      ref = ddpm::reference_stats(*net, real, keep_rows, batch_size);
      if (samples.empty() && model.empty()) {
        ddpm::save_feature_stats(save_stats, ref, {{"source", dir}});
        std::fprintf(stderr, "evaluate: wrote %s\n", save_stats.c_str());
        nlohmann::ordered_json j{{"reference", dir}, {"features", net->name()}, {"n", ref.n}, {"stats", save_stats}};
        std::cout << j.dump() << std::endl;
        return 0;
      }
    }

    torch::Tensor images;
    auto kid = ddpm::KidOptions().num_subsets(kid_subsets).subset_size(kid_subset_size);
    auto eval_opts = ddpm::EvalOptions().batch_size(batch_size).kid(kid);
    if (!samples.empty()) {
      images = load_samples(samples, image_size, grid_padding, grid_count, tensor_key);
    } else {
      Generated g = generate(model, num_samples, gen_batch, sampler_name, steps, seed, guidance, guidance_interval, device, fast);
      images = g.images;
      if (!g.labels.empty() && !g.class_names.empty() && g.class_names == net->class_names()) {
        eval_opts.intended_classes(g.labels);
      } else if (!g.labels.empty()) {
        std::fprintf(stderr, "evaluate: no class accuracy: the model's classes are not known to be the classifier's\n");
      }
    }
    ddpm::EvalResult r = ddpm::evaluate_samples(images, ref, *net, eval_opts);
    if (!save_stats.empty()) {
      ddpm::save_feature_stats(save_stats, ddpm::reference_stats(*net, images, keep_rows, batch_size),
                               {{"source", samples.empty() ? model : samples}});
    }
    nlohmann::ordered_json j = r.to_json();
    j["reference"] = ref_name;
    j["wall_seconds"] = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::cout << j.dump() << std::endl;
    return 0;
  } catch (const ddpm::IoError& e) {
    return fail(e.what(), 3);
  } catch (const ddpm::Error& e) {
    return fail(e.what());
  } catch (const c10::Error& e) {
    return fail(e.what_without_backtrace());
  } catch (const std::exception& e) {
    return fail(e.what(), 1);
  }
}
