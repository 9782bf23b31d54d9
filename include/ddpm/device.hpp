#pragma once
/// Devices, mixed precision and host->device transfer: what training and sampling on a GPU need,
/// written once for LibTorch 1.13 and 2.x (CPU-only or CUDA builds alike; the CUDA paths compile
/// everywhere and fail at run time with a clear message where no GPU is visible).
///
///  - select_device("auto" | "cpu" | "cuda" | "cuda:N", local_rank): the device a process uses.
///  - AutocastGuard: autocast (bf16 / fp16) on one device type for a scope, nested correctly,
///    over the 1.13 API (set_enabled / set_autocast_gpu_dtype) and the 2.4+ one (per device type).
///  - LossScaler: dynamic loss scaling for fp16 (torch.cuda.amp.GradScaler's rule).
///  - to_device(batch, device): page-locked staging + asynchronous copy for CPU->CUDA batches.
///  - make_generator(device, seed): a fresh generator on `device` seeded with `seed`; the same
///    seed gives the same numbers on the same device (CUDA: Philox, CPU: mt19937).
#include <ddpm/error.hpp>

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Context.h>
#include <ATen/autocast_mode.h>
#include <ATen/core/Generator.h>
#include <c10/util/Optional.h>
#include <torch/arg.h>
#include <torch/cuda.h>
#include <torch/types.h>
#include <torch/version.h>

#include <algorithm>
#include <cstdint>
#include <exception>
#include <string>
#include <vector>

namespace ddpm {

/// True when this LibTorch has CUDA and a GPU is visible.
inline bool cuda_available() { return torch::cuda::is_available(); }

/// The device named by `name`: "cpu"; "cuda" (GPU local_rank % device count, so each process of
/// a multi-process run on one machine gets its own GPU); "cuda:N"; "auto" (as "cuda" when CUDA is
/// available, else "cpu"). Throws ddpm::Error for an unknown name, CUDA requested without CUDA,
/// or an index past the visible GPUs.
inline torch::Device select_device(const std::string& name, int64_t local_rank = 0) {
  if (name == "cpu") return torch::Device(torch::kCPU);
  const bool is_cuda = name == "cuda" || name.rfind("cuda:", 0) == 0;
  if (name == "auto" && !cuda_available()) return torch::Device(torch::kCPU);
  if (name != "auto" && !is_cuda) {
    throw Error("device \"" + name + "\": unknown device; valid values are \"auto\", \"cpu\", \"cuda\", \"cuda:N\"");
  }
  if (!cuda_available()) {
    throw Error("device \"" + name +
                "\" requested but CUDA is not available (this LibTorch has no CUDA or no GPU is visible)");
  }
  const auto count = static_cast<int64_t>(torch::cuda::device_count());
  int64_t index = count > 0 ? std::max<int64_t>(local_rank, 0) % count : 0;
  if (name.size() > 5) {
    const std::string digits = name.substr(5);
    if (digits.empty() || digits.find_first_not_of("0123456789") != std::string::npos || digits.size() > 4) {
      throw Error("device \"" + name + "\": expected cuda:N with N a GPU index");
    }
    index = std::stoll(digits);
    if (index >= count) {
      throw Error("device \"" + name + "\": only " + std::to_string(count) + " GPU(s) visible");
    }
  }
  return torch::Device(torch::kCUDA, static_cast<c10::DeviceIndex>(index));
}

/// Whether `device` computes in bfloat16: always on the CPU; on CUDA probed with a tiny bf16
/// matmul (GPUs before compute capability 8.0 reject it or emulate it slowly).
inline bool bf16_supported(const torch::Device& device) {
  if (device.is_cpu()) return true;
  try {
    auto probe = torch::ones({2, 2}, torch::TensorOptions().device(device).dtype(torch::kBFloat16));
    return torch::matmul(probe, probe).sum().item<float>() == 8.0f;
  } catch (const std::exception&) {
    return false;
  }
}

namespace detail {

// Autocast state per device type. LibTorch 2.4 replaced the CUDA-only / CPU-only functions
// (still present but deprecated) by ones taking a device type.
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 4)
inline bool autocast_enabled(c10::DeviceType t) { return at::autocast::is_autocast_enabled(t); }
inline void set_autocast_enabled(c10::DeviceType t, bool on) { at::autocast::set_autocast_enabled(t, on); }
inline torch::ScalarType autocast_dtype(c10::DeviceType t) { return at::autocast::get_autocast_dtype(t); }
inline void set_autocast_dtype(c10::DeviceType t, torch::ScalarType d) { at::autocast::set_autocast_dtype(t, d); }
#else
inline bool autocast_enabled(c10::DeviceType t) {
  return t == c10::DeviceType::CUDA ? at::autocast::is_enabled() : at::autocast::is_cpu_enabled();
}
inline void set_autocast_enabled(c10::DeviceType t, bool on) {
  if (t == c10::DeviceType::CUDA) at::autocast::set_enabled(on);
  else at::autocast::set_cpu_enabled(on);
}
inline torch::ScalarType autocast_dtype(c10::DeviceType t) {
  return t == c10::DeviceType::CUDA ? at::autocast::get_autocast_gpu_dtype() : at::autocast::get_autocast_cpu_dtype();
}
inline void set_autocast_dtype(c10::DeviceType t, torch::ScalarType d) {
  if (t == c10::DeviceType::CUDA) at::autocast::set_autocast_gpu_dtype(d);
  else at::autocast::set_autocast_cpu_dtype(d);
}
#endif

}  // namespace detail

/// Autocast for one scope (torch.autocast(device_type, dtype) in Python): inside it, matmuls and
/// convolutions on `device_type` run in `dtype` (bf16 or fp16) and precision-sensitive ops stay in
/// float32. No dtype (c10::nullopt) = a guard that does nothing, so callers need no branch.
/// Restores the previous state on exit and frees the cast-weight cache when the outermost guard
/// ends (autocast nesting). Only CPU and CUDA are supported (CPU autocast: bf16 only in 1.13).
class AutocastGuard {
 public:
  AutocastGuard(c10::DeviceType device_type, c10::optional<torch::ScalarType> dtype)
      : type_(device_type), active_(dtype.has_value()) {
    if (!active_) return;
    TORCH_CHECK(device_type == c10::DeviceType::CPU || device_type == c10::DeviceType::CUDA,
                "AutocastGuard: autocast supports the cpu and cuda device types, got ", device_type);
    TORCH_CHECK(*dtype == torch::kBFloat16 || *dtype == torch::kHalf,
                "AutocastGuard: autocast dtype must be bfloat16 or float16, got ", *dtype);
    prev_enabled_ = detail::autocast_enabled(type_);
    prev_dtype_ = detail::autocast_dtype(type_);
    detail::set_autocast_enabled(type_, true);
    detail::set_autocast_dtype(type_, *dtype);
    at::autocast::increment_nesting();
  }
  AutocastGuard(const torch::Device& device, c10::optional<torch::ScalarType> dtype)
      : AutocastGuard(device.type(), dtype) {}
  ~AutocastGuard() {
    if (!active_) return;
    detail::set_autocast_enabled(type_, prev_enabled_);
    detail::set_autocast_dtype(type_, prev_dtype_);
    if (at::autocast::decrement_nesting() == 0) at::autocast::clear_cache();
  }
  AutocastGuard(const AutocastGuard&) = delete;
  AutocastGuard& operator=(const AutocastGuard&) = delete;

 private:
  c10::DeviceType type_;
  bool active_;
  bool prev_enabled_ = false;
  torch::ScalarType prev_dtype_ = torch::kFloat32;
};

/// Options of LossScaler (defaults are torch.cuda.amp.GradScaler's).
struct LossScalerOptions {
  /// Scale of the first step.
  TORCH_ARG(double, init_scale) = 65536.0;
  /// Multiplier after growth_interval consecutive finite steps.
  TORCH_ARG(double, growth_factor) = 2.0;
  /// Multiplier after a step with a non-finite gradient.
  TORCH_ARG(double, backoff_factor) = 0.5;
  /// Finite steps between two growths.
  TORCH_ARG(int64_t, growth_interval) = 2000;
  /// The scale never drops below this (GradScaler has no floor; 1 keeps fp16 gradients unscaled at worst).
  TORCH_ARG(double, min_scale) = 1.0;
};

/// Dynamic loss scaling for fp16 training (Micikevicius et al. 2018, "Mixed Precision Training"):
/// backward() on scale(loss) so small fp16 gradients do not flush to zero; unscale_() divides the
/// gradients back and reports whether all are finite; update(found_inf) halves the scale after an
/// overflow (the caller skips that optimizer step) and doubles it after growth_interval good steps.
class LossScaler {
 public:
  explicit LossScaler(LossScalerOptions options = {}) : options_(options), scale_(options.init_scale()) {
    TORCH_CHECK(options.init_scale() > 0 && options.growth_factor() >= 1 && options.backoff_factor() > 0 &&
                    options.backoff_factor() <= 1 && options.growth_interval() >= 1,
                "LossScaler: need init_scale > 0, growth_factor >= 1, 0 < backoff_factor <= 1, growth_interval >= 1");
  }

  /// loss * scale (a new tensor; the loss itself is unchanged).
  torch::Tensor scale(const torch::Tensor& loss) const { return loss * scale_; }

  /// Divides every defined gradient of `params` by the scale in place; true when all are finite.
  bool unscale_(const std::vector<torch::Tensor>& params) const {
    torch::NoGradGuard no_grad;
    std::vector<torch::Tensor> finite;
    for (const auto& p : params) {
      if (!p.grad().defined()) continue;
      p.grad().div_(scale_);
      finite.push_back(torch::isfinite(p.grad()).all());
    }
    // One device->host sync for all parameters instead of one per parameter.
    return finite.empty() || torch::stack(finite).all().item<bool>();
  }

  /// Adjusts the scale after a step: backoff on overflow, growth after growth_interval finite steps.
  void update(bool found_inf) {
    if (found_inf) {
      scale_ = std::max(options_.min_scale(), scale_ * options_.backoff_factor());
      good_steps_ = 0;
    } else if (++good_steps_ % options_.growth_interval() == 0) {
      scale_ *= options_.growth_factor();
    }
  }

  double scale_value() const { return scale_; }
  int64_t good_steps() const { return good_steps_; }
  /// Restores a saved state (checkpoints).
  void load(double scale, int64_t good_steps) {
    TORCH_CHECK(scale > 0 && good_steps >= 0, "LossScaler::load: need scale > 0 and good_steps >= 0, got ", scale,
                " and ", good_steps);
    scale_ = scale;
    good_steps_ = good_steps;
  }
  const LossScalerOptions& options() const { return options_; }

 private:
  LossScalerOptions options_;
  double scale_;
  int64_t good_steps_ = 0;
};

/// `t` on `device`. A CPU tensor bound for a CUDA device goes through page-locked (pinned) memory
/// and an asynchronous copy on the current stream, so the copy overlaps with queued GPU work;
/// LibTorch's caching host allocator keeps the staging buffer alive until the copy has run.
/// Anything else is a plain .to(device).
inline torch::Tensor to_device(const torch::Tensor& t, const torch::Device& device) {
  if (device.is_cuda() && t.device().is_cpu()) {
    return (t.is_pinned() ? t : t.pin_memory()).to(device, /*non_blocking=*/true);
  }
  return t.to(device);
}

/// A new generator on `device` whose state is a function of `seed` alone: CPU -> mt19937 (what
/// torch::manual_seed seeds), CUDA -> Philox with offset 0. The library draws its noise on the
/// CPU by default (identical samples on every device); a CUDA generator passed to sample() or a
/// sampler's step() draws on the GPU instead: faster for large batches, reproducible per seed on
/// the same GPU type, but not equal to the CPU draws.
inline at::Generator make_generator(const torch::Device& device, uint64_t seed) {
  if (device.is_cpu()) return at::detail::createCPUGenerator(seed);
  TORCH_CHECK(device.is_cuda(), "make_generator: cpu or cuda device expected, got ", device);
  TORCH_CHECK(cuda_available(), "make_generator: device ", device, " requested but CUDA is not available");
  at::Generator g = at::globalContext().defaultGenerator(device).clone();
  g.set_current_seed(seed);
  return g;
}

}  // namespace ddpm
