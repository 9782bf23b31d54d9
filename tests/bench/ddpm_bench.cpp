// ddpm_bench: how close a UNet training step or sampling step (no-grad forward) comes to this
// machine's own float32 matrix-multiply throughput, measured in the same run.
//
//   ddpm_bench --model seed|ddpm-cifar10|FILE.json --mode train|forward|sample --batch-size B
//              --threads T --iters N --warmup W [--image-size S] [--channels C]
//              [--device cpu|cuda] [--autocast-bf16] [--grad-mode inference|no-grad]
//              [--channels-last] [--fast] [--num-samples N --steps S --sampler NAME --guidance-scale G]
//
// Prints ONE JSON object (see usage()). CLI errors exit 2.
#include <ddpm/device.hpp>
#include <ddpm/nn/flops.hpp>
#include <ddpm/forward_diffuser.hpp>
#include <ddpm/nn/unet.hpp>
#include <ddpm/pipeline.hpp>
#include <ddpm/sampler.hpp>
#include <ddpm/runtime.hpp>
#include <ddpm/schedule.hpp>

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Parallel.h>
#include <c10/core/InferenceMode.h>
#include <nlohmann/json.hpp>
#include <torch/cuda.h>
#include <torch/optim/adamw.h>
#include <torch/types.h>
#include <torch/utils.h>
#include <torch/version.h>
#include <torch/csrc/autograd/profiler_legacy.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <iomanip>
#include <iostream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

namespace {

constexpr int kUsageError = 2;

struct Args {
  std::string model = "seed";
  std::string mode = "forward";
  std::string device = "cpu";
  std::string grad_mode = "inference";
  int64_t batch_size = 1;
  int64_t threads = 2;
  /// OpenBLAS threads while the model runs (-1 = same as threads). The sgemm reference always
  /// uses `threads`.
  int64_t blas_threads = -1;
  int64_t iters = 5;
  int64_t warmup = 1;
  int64_t image_size = 32;
  int64_t channels = 3;
  int64_t sgemm_size = 2048;
  int64_t sgemm_reps = 5;
  bool autocast_bf16 = false;
  /// The channels-last inference layout (UNet::set_channels_last).
  bool channels_last = false;
  /// The fast inference path (UNet::set_fast_inference: pre-packed oneDNN weights).
  bool fast = false;
  /// --mode sample: a whole sampling run through ddpm::Pipeline (batches of batch_size).
  int64_t num_samples = 1000;
  int64_t steps = 20;
  std::string sampler = "dpmpp_2m";
  /// > 1 (or 0): classifier-free guidance; the model then gets an 11-row class table (10 classes
  /// and the null class) unless its config has one, as the Fashion-MNIST demo model.
  double guidance_scale = 1.0;
  /// "tuned": re-exec with ddpm::recommended_cpu_env() (vars the user set are kept);
  /// "as-is": run in the environment given.
  std::string env = "tuned";
  /// > 0: after timing, profile this many more iterations and print the top ops to stderr.
  int64_t profile = 0;
};

const char* usage() {
  return "usage: ddpm_bench [options]\n"
         "  --model seed|ddpm-cifar10|FILE.json   UNet preset or diffusers config.json (default seed)\n"
         "  --mode train|forward|sample           train: forward + loss + backward + AdamW step;\n"
         "                                        forward: no-grad forward = one sampling step (default);\n"
         "                                        sample: a whole sampling run of --num-samples images\n"
         "                                        (ddpm::Pipeline, batches of --batch-size), with peak RSS\n"
         "  --num-samples N, --steps S            sample mode: images and sampler steps (default 1000, 20)\n"
         "  --sampler NAME                        sample mode: any ddpm::sampler_names() (default dpmpp_2m)\n"
         "  --guidance-scale G                    sample mode: classifier-free guidance (default 1 = none;\n"
         "                                        the model gets 10 classes + the null class if it has none)\n"
         "  --batch-size B                        images per step (default 1)\n"
         "  --threads T                           intra-op threads, also given to OpenBLAS (default 2)\n"
         "  --blas-threads N                      OpenBLAS threads during the model run (default = --threads;\n"
         "                                        the sgemm reference always uses --threads)\n"
         "  --iters N                             timed iterations (default 5)\n"
         "  --warmup W                            untimed iterations first (default 1)\n"
         "  --image-size S                        square input size (default 32)\n"
         "  --channels C                          image channels = UNet in/out channels (default 3)\n"
         "  --device cpu|cuda                     (default cpu; cuda only with a CUDA LibTorch)\n"
         "  --autocast-bf16                       CUDA only: bf16 autocast around the model\n"
         "  --channels-last                       the channels-last layout (UNet::set_channels_last)\n"
         "  --fast                                the fast inference path (UNet::set_fast_inference)\n"
         "  --grad-mode inference|no-grad         forward mode guard (default inference)\n"
         "  --env tuned|as-is                     tuned (default): restart with ddpm::recommended_cpu_env()\n"
         "                                        (OMP_WAIT_POLICY=PASSIVE unless already set); as-is: don't\n"
         "  --profile N                           profile N more iterations, print top ops to stderr\n"
         "  --sgemm-size N, --sgemm-reps R        the reference matmul (default 2048, 5 before + 5 after)\n"
         "Prints one JSON object: median_s, min_s, images_per_s, gflop_per_image, gflops_per_s,\n"
         "sgemm_gflops_per_s, share_of_sgemm, ...\n";
}

/// Peak resident set size of this process in KiB (VmHWM), after resetting it to the current
/// RSS when `reset` (Linux: /proc/self/clear_refs). -1 where /proc is not there.
int64_t peak_rss_kb(bool reset) {
  if (reset) std::ofstream("/proc/self/clear_refs") << "5";
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("VmHWM:", 0) == 0) return std::stoll(line.substr(6));
  }
  return -1;
}

[[noreturn]] void usage_error(const std::string& msg) {
  std::cerr << "ddpm_bench: " << msg << "\n" << usage();
  std::exit(kUsageError);
}

int64_t parse_int(const std::string& flag, const std::string& value, int64_t min_value) {
  size_t pos = 0;
  int64_t v = 0;
  try {
    v = std::stoll(value, &pos);
  } catch (const std::exception&) {
    pos = 0;
  }
  if (pos == 0 || pos != value.size()) usage_error(flag + ": expected an integer, got \"" + value + "\"");
  if (v < min_value) usage_error(flag + ": must be >= " + std::to_string(min_value) + ", got " + value);
  return v;
}

Args parse_args(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    const std::string flag = argv[i];
    if (flag == "--help" || flag == "-h") {
      std::cout << usage();
      std::exit(0);
    }
    if (flag == "--autocast-bf16") {
      a.autocast_bf16 = true;
      continue;
    }
    if (flag == "--fast") {
      a.fast = true;
      continue;
    }
    if (flag == "--channels-last") {
      a.channels_last = true;
      continue;
    }
    if (i + 1 >= argc) usage_error("missing value after " + flag);
    const std::string value = argv[++i];
    if (flag == "--model") a.model = value;
    else if (flag == "--mode") a.mode = value;
    else if (flag == "--device") a.device = value;
    else if (flag == "--grad-mode") a.grad_mode = value;
    else if (flag == "--env") a.env = value;
    else if (flag == "--batch-size") a.batch_size = parse_int(flag, value, 1);
    else if (flag == "--threads") a.threads = parse_int(flag, value, 1);
    else if (flag == "--blas-threads") a.blas_threads = parse_int(flag, value, 1);
    else if (flag == "--iters") a.iters = parse_int(flag, value, 1);
    else if (flag == "--warmup") a.warmup = parse_int(flag, value, 0);
    else if (flag == "--image-size") a.image_size = parse_int(flag, value, 1);
    else if (flag == "--channels") a.channels = parse_int(flag, value, 1);
    else if (flag == "--sgemm-size") a.sgemm_size = parse_int(flag, value, 16);
    else if (flag == "--sgemm-reps") a.sgemm_reps = parse_int(flag, value, 1);
    else if (flag == "--profile") a.profile = parse_int(flag, value, 0);
    else if (flag == "--num-samples") a.num_samples = parse_int(flag, value, 1);
    else if (flag == "--steps") a.steps = parse_int(flag, value, 1);
    else if (flag == "--sampler") a.sampler = value;
    else if (flag == "--guidance-scale") {
      try {
        a.guidance_scale = std::stod(value);
      } catch (const std::exception&) {
        usage_error("--guidance-scale: expected a number, got \"" + value + "\"");
      }
    }
    else usage_error("unknown option \"" + flag + "\"");
  }
  if (a.mode != "train" && a.mode != "forward" && a.mode != "sample") {
    usage_error("--mode: unknown value \"" + a.mode + "\"; valid values are \"train\", \"forward\", \"sample\"");
  }
  if (a.device != "cpu" && a.device != "cuda") {
    usage_error("--device: unknown value \"" + a.device + "\"; valid values are \"cpu\", \"cuda\"");
  }
  if (a.grad_mode != "inference" && a.grad_mode != "no-grad") {
    usage_error("--grad-mode: unknown value \"" + a.grad_mode +
                "\"; valid values are \"inference\", \"no-grad\"");
  }
  if (a.env != "tuned" && a.env != "as-is") {
    usage_error("--env: unknown value \"" + a.env + "\"; valid values are \"tuned\", \"as-is\"");
  }
  if (a.device == "cuda" && !torch::cuda::is_available()) {
    usage_error("--device cuda: CUDA is not available in this LibTorch build / machine");
  }
  if (a.autocast_bf16 && a.device != "cuda") {
    usage_error("--autocast-bf16 needs --device cuda (bf16 on this CPU is 8-30x slower)");
  }
  return a;
}

ddpm::UNetOptions model_options(const Args& a) {
  ddpm::UNetOptions o;
  if (a.model == "seed") o = ddpm::UNetOptions::seed();
  else if (a.model == "ddpm-cifar10" || a.model == "ddpm_cifar10") o = ddpm::UNetOptions::ddpm_cifar10();
  else if (a.model.size() > 5 && a.model.compare(a.model.size() - 5, 5, ".json") == 0) {
    try {
      o = ddpm::load_unet_config(a.model);
    } catch (const std::exception& e) {
      usage_error(std::string("--model: ") + e.what());
    }
  } else {
    usage_error("--model: unknown value \"" + a.model +
                "\"; valid values are \"seed\", \"ddpm-cifar10\" or a path ending in .json");
  }
  o.in_channels(a.channels).out_channels(a.channels);
  try {
    o.validate("--model " + a.model);
  } catch (const std::exception& e) {
    usage_error(e.what());
  }
  if (a.image_size % o.size_multiple() != 0) {
    usage_error("--image-size " + std::to_string(a.image_size) + " must be a multiple of " +
                std::to_string(o.size_multiple()) + " for this model (" +
                std::to_string(o.num_levels()) + " levels)");
  }
  return o;
}

double load_average() {
  std::ifstream f("/proc/loadavg");
  double v = -1;
  if (f) f >> v;
  return v;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

void sync(const torch::Device& device) {
  if (device.is_cuda()) torch::cuda::synchronize();
}

/// Times `fn` (warmup untimed calls, then iters timed calls); seconds per call.
std::vector<double> time_calls(const std::function<void()>& fn, int64_t warmup, int64_t iters,
                               const torch::Device& device) {
  for (int64_t i = 0; i < warmup; ++i) fn();
  sync(device);
  std::vector<double> out;
  for (int64_t i = 0; i < iters; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    fn();
    sync(device);
    out.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  return out;
}

/// GFLOP/s of an n x n float32 matmul (2 n^3 FLOPs), one sample per rep, into `out`.
void sgemm_gflops(int64_t n, int64_t reps, const torch::Device& device, std::vector<double>& out) {
  torch::NoGradGuard no_grad;
  const auto opts = torch::TensorOptions().dtype(torch::kFloat32).device(device);
  const torch::Tensor a = torch::randn({n, n}, opts);
  const torch::Tensor b = torch::randn({n, n}, opts);
  torch::Tensor c = torch::empty({n, n}, opts);
  const double flop = 2.0 * static_cast<double>(n) * static_cast<double>(n) * static_cast<double>(n);
  for (double s : time_calls([&] { torch::mm_out(c, a, b); }, 1, reps, device)) {
    out.push_back(flop / s * 1e-9);
  }
}

/// Runs `fn` `iters` times under the autograd profiler and prints, to stderr, the ops ranked
/// by self time and the ops+input shapes ranked by total time.
void profile_calls(const std::function<void()>& fn, int64_t iters) {
  namespace prof = torch::autograd::profiler;
  prof::enableProfilerLegacy(
      torch::profiler::impl::ProfilerConfig(torch::profiler::impl::ProfilerState::CPU, true));
  for (int64_t i = 0; i < iters; ++i) fn();
  const prof::thread_event_lists lists = prof::disableProfilerLegacy();
  struct Stat {
    double total_us = 0, self_us = 0;
    int64_t calls = 0;
  };
  std::map<std::string, Stat> by_name, by_shape;
  double wall_us = 0;
  for (const auto& events : lists) {
    struct Open {
      const prof::LegacyEvent* ev;
      double child_us;
    };
    std::vector<Open> stack;
    for (const auto& ev : events) {
      if (ev.kind() == prof::EventKind::PushRange) {
        stack.push_back({&ev, 0.0});
      } else if (ev.kind() == prof::EventKind::PopRange && !stack.empty()) {
        const Open open = stack.back();
        stack.pop_back();
        const double us = open.ev->cpuElapsedUs(ev);
        std::string name = open.ev->name();
        std::ostringstream shapes;
        for (const auto& sh : open.ev->shapes()) {
          shapes << "[";
          for (size_t k = 0; k < sh.size(); ++k) shapes << (k ? "," : "") << sh[k];
          shapes << "]";
        }
        auto& a = by_name[name];
        a.total_us += us;
        a.self_us += us - open.child_us;
        a.calls += 1;
        auto& b = by_shape[name + " " + shapes.str()];
        b.total_us += us;
        b.self_us += us - open.child_us;
        b.calls += 1;
        if (!stack.empty()) stack.back().child_us += us;
        else wall_us += us;
      }
    }
  }
  auto print = [&](const std::map<std::string, Stat>& m, bool by_self, size_t top, const char* title) {
    std::vector<std::pair<std::string, Stat>> v(m.begin(), m.end());
    std::sort(v.begin(), v.end(), [&](const auto& x, const auto& y) {
      return by_self ? x.second.self_us > y.second.self_us : x.second.total_us > y.second.total_us;
    });
    std::cerr << title << " (per iteration; top-level ops total " << std::fixed << std::setprecision(1)
              << wall_us / 1e3 / iters << " ms)\n";
    for (size_t i = 0; i < std::min(top, v.size()); ++i) {
      const auto& s = v[i].second;
      std::cerr << std::setw(10) << std::setprecision(2) << s.self_us / 1e3 / iters << " ms self "
                << std::setw(10) << s.total_us / 1e3 / iters << " ms total " << std::setw(6)
                << s.calls / iters << "x  " << v[i].first << "\n";
    }
  };
  print(by_name, true, 25, "== ops by self time");
  print(by_shape, true, 30, "== ops+input shapes by self time");
}

}  // namespace

int main(int argc, char** argv) {
  const Args args = parse_args(argc, argv);
  if (args.env == "tuned") ddpm::reexec_with_env(argv, ddpm::recommended_cpu_env());
  const ddpm::UNetOptions options = model_options(args);
  const torch::Device device = ddpm::select_device(args.device);
  const c10::optional<torch::ScalarType> autocast_dtype =
      args.autocast_bf16 ? c10::optional<torch::ScalarType>(torch::kBFloat16) : c10::nullopt;

  at::set_num_threads(static_cast<int>(args.threads));  // LibTorch 1.13 defaults to half the cores
  const bool blas_threads_set = ddpm::set_blas_num_threads(static_cast<int>(args.threads));
  const double load_before = load_average();

  torch::manual_seed(0);
  ddpm::UNetOptions model_opts = options;
  if (args.mode == "sample" && args.guidance_scale != 1.0 && !model_opts.num_class_embeds().has_value()) {
    model_opts.num_class_embeds(11);
  }
  ddpm::UNet unet(model_opts);
  unet->to(device);
  unet->set_channels_last(args.channels_last);
  unet->set_fast_inference(args.fast);
  const ddpm::UNetFlops flops = unet_forward_flops(*unet, args.image_size, args.image_size);
  const bool train = args.mode == "train";
  // Forward + backward: the backward pass computes input and weight gradients of every matmul.
  const double flop_factor = train ? 3.0 : 1.0;
  const double flop_per_image = flops.matmul() * flop_factor;

  std::vector<double> sgemm;
  sgemm_gflops(args.sgemm_size, args.sgemm_reps, device, sgemm);

  const int64_t blas_threads = args.blas_threads > 0 ? args.blas_threads : args.threads;
  ddpm::set_blas_num_threads(static_cast<int>(blas_threads));
  const int64_t B = args.batch_size;
  const auto fopts = torch::TensorOptions().dtype(torch::kFloat32).device(device);
  auto x = torch::rand({B, args.channels, args.image_size, args.image_size}, fopts) * 2 - 1;
  std::vector<double> times;
  nlohmann::ordered_json sample_info;
  int64_t forward_images_per_run = 0;
  if (args.mode == "sample") {
    // One timed iteration = a whole run of num_samples images; the forward FLOPs per run are
    // counted from the UNet calls the run makes.
    nlohmann::ordered_json schedule = {{"num_train_timesteps", 1000}, {"beta_schedule", "linear"},
                                       {"beta_start", 0.0001}, {"beta_end", 0.02}};
    auto make = [&] {
      try {
        return ddpm::make_sampler(schedule, args.sampler);
      } catch (const std::exception& e) {
        usage_error(std::string("--sampler: ") + e.what());
      }
    };
    ddpm::Pipeline pipe(unet, make(), device);
    auto gopts = ddpm::GenerateOptions()
                     .num_inference_steps(args.steps)
                     .batch_size(B)
                     .sample_size(args.image_size)
                     .guidance_scale(args.guidance_scale);
    if (model_opts.num_class_embeds().has_value()) {  // class i % classes for image i
      const int64_t classes = ddpm::guidance_num_classes(model_opts);
      std::vector<int64_t> labels(static_cast<size_t>(args.num_samples));
      for (size_t i = 0; i < labels.size(); ++i) labels[i] = static_cast<int64_t>(i) % classes;
      gopts.class_labels(labels);
    }
    // UNet calls per batch: one per timestep of the schedule (Heun's list holds its second-order
    // points too), each on 2x the images when guiding.
    pipe.sampler().set_timesteps(args.steps);
    const auto calls = static_cast<int64_t>(pipe.sampler().timesteps().size());
    const int64_t guided = args.guidance_scale != 1.0 ? 2 : 1;
    forward_images_per_run = args.num_samples * calls * guided;
    auto body = [&] { pipe.generate(args.num_samples, at::detail::createCPUGenerator(0), gopts); };
    const int64_t rss_before = peak_rss_kb(/*reset=*/true);
    times = time_calls(body, args.warmup, args.iters, device);
    sample_info["num_samples"] = args.num_samples;
    sample_info["steps"] = args.steps;
    sample_info["sampler"] = args.sampler;
    sample_info["guidance_scale"] = args.guidance_scale;
    sample_info["unet_calls_per_batch"] = calls;
    sample_info["forward_images_per_run"] = forward_images_per_run;
    sample_info["rss_before_mb"] = static_cast<double>(rss_before) / 1024.0;
    sample_info["peak_rss_mb"] = static_cast<double>(peak_rss_kb(false)) / 1024.0;
  } else if (train) {
    unet->train();
    torch::optim::AdamW opt(unet->parameters(), torch::optim::AdamWOptions(1e-4));
    const ddpm::ForwardDiffuser diffuser(ddpm::NoiseSchedule{}.to(device));
    at::Generator gen = at::detail::createCPUGenerator(1234);
    auto model = [&](const torch::Tensor& xt, const torch::Tensor& t) { return unet->forward(xt, t); };
    auto train_step = [&] {
      opt.zero_grad();
      torch::Tensor loss;
      {
        ddpm::AutocastGuard amp(device, autocast_dtype);
        loss = diffuser.loss(model, x, gen).loss;
      }
      loss.backward();
      opt.step();
    };
    times = time_calls(train_step, args.warmup, args.iters, device);
    if (args.profile > 0) profile_calls(train_step, args.profile);
  } else {
    unet->eval();
    const auto t = torch::randint(0, 1000, {B}, torch::TensorOptions().dtype(torch::kLong).device(device));
    auto body = [&] {
      ddpm::AutocastGuard amp(device, autocast_dtype);
      torch::Tensor out = unet->forward(x, t);
    };
    if (args.grad_mode == "inference") {
      c10::InferenceMode guard;
      times = time_calls(body, args.warmup, args.iters, device);
      if (args.profile > 0) profile_calls(body, args.profile);
    } else {
      torch::NoGradGuard guard;
      times = time_calls(body, args.warmup, args.iters, device);
      if (args.profile > 0) profile_calls(body, args.profile);
    }
  }

  ddpm::set_blas_num_threads(static_cast<int>(args.threads));
  sgemm_gflops(args.sgemm_size, args.sgemm_reps, device, sgemm);
  const double load_after = load_average();

  const double med = median(times);
  const double mn = *std::min_element(times.begin(), times.end());
  const double sgemm_med = median(sgemm);
  const bool sample = args.mode == "sample";
  const double images_per_iter = sample ? static_cast<double>(args.num_samples) : static_cast<double>(B);
  const double flop_per_iter =
      sample ? flop_per_image * static_cast<double>(forward_images_per_run) : flop_per_image * static_cast<double>(B);
  const double gflops = flop_per_iter / med * 1e-9;

  nlohmann::ordered_json j;
  j["model"] = args.model;
  j["mode"] = args.mode;
  j["device"] = args.device;
  j["autocast_bf16"] = args.autocast_bf16;
  j["channels_last"] = args.channels_last;
  j["fast_inference"] = args.fast;
  if (!train) j["grad_mode"] = sample ? std::string("inference (ddpm::Pipeline)") : args.grad_mode;
  j["batch_size"] = B;
  j["image_size"] = args.image_size;
  j["channels"] = args.channels;
  j["threads"] = at::get_num_threads();
  j["blas_threads"] = blas_threads_set ? nlohmann::ordered_json(blas_threads) : nlohmann::ordered_json("not set (no OpenBLAS)");
  j["iters"] = args.iters;
  j["warmup"] = args.warmup;
  j["median_s"] = med;
  j["min_s"] = mn;
  j["times_s"] = times;
  j["images_per_s"] = images_per_iter / med;
  if (sample) j["sample"] = sample_info;
  j["gflop_per_image"] = flop_per_image * 1e-9;
  j["gflop_per_image_forward"] = flops.matmul() * 1e-9;
  j["flop_count"] = train ? "3 x forward (forward + input-gradient + weight-gradient matmuls); "
                            "conv + linear + attention matmuls, multiply-add = 2 FLOPs; "
                            "GroupNorm/activations/adds/softmax/optimizer not counted"
                          : "conv + linear + attention matmuls, multiply-add = 2 FLOPs; "
                            "GroupNorm/activations/adds/softmax not counted";
  j["gflop_breakdown_forward"] = {{"conv", flops.conv * 1e-9},
                                  {"linear", flops.linear * 1e-9},
                                  {"attention", flops.attention * 1e-9}};
  j["gflops_per_s"] = gflops;
  j["sgemm_gflops_per_s"] = sgemm_med;
  j["sgemm_size"] = args.sgemm_size;
  j["sgemm_samples_gflops_per_s"] = sgemm;
  j["share_of_sgemm"] = gflops / sgemm_med;
  j["parameters"] = unet->num_parameters();
  j["torch_version"] = std::to_string(TORCH_VERSION_MAJOR) + "." + std::to_string(TORCH_VERSION_MINOR) +
                       "." + std::to_string(TORCH_VERSION_PATCH);
  j["blas"] = ddpm::blas_info();
  if (device.is_cuda()) {
    // LibTorch's defaults: cuDNN convolutions may use TF32 tensor cores, cuBLAS matmuls (and so
    // the sgemm reference) may not; both matter when reading share_of_sgemm on a GPU.
    j["tf32_cudnn"] = at::globalContext().allowTF32CuDNN();
    j["tf32_cublas"] = at::globalContext().allowTF32CuBLAS();
  }
  {
    nlohmann::ordered_json env;
    for (const char* name : {"OMP_WAIT_POLICY", "OPENBLAS_CORETYPE", "OMP_NUM_THREADS", "GOMP_SPINCOUNT"}) {
      const char* v = std::getenv(name);
      env[name] = v ? nlohmann::ordered_json(v) : nlohmann::ordered_json(nullptr);
    }
    j["env_mode"] = args.env;
    j["env"] = env;
  }
  j["load_average_before"] = load_before;
  j["load_average_after"] = load_after;
  std::cout << j.dump() << std::endl;
  return 0;
}
