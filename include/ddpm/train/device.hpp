#pragma once
/// Where training runs: the device choice (CPU / CUDA, one GPU per process when
/// data-parallel) and CUDA autocast (mixed precision). All of the trainer's device and
/// AMP code is here, in one place.
#include <ddpm/detail/json_enum.hpp>
#include <ddpm/device.hpp>
#include <ddpm/error.hpp>

#include <torch/cuda.h>
#include <torch/types.h>
#include <torch/version.h>

#include <c10/util/Optional.h>

#include <algorithm>
#include <cstdint>
#include <exception>
#include <functional>
#include <string>
#include <vector>

namespace ddpm {

/// Compute device.
enum class DeviceKind { Auto, Cpu, Cuda };
/// Autocast precision (CUDA only; the CPU always trains in float32).
enum class MixedPrecision { Auto, None, BF16, FP16 };

namespace detail {
inline const EnumNames<DeviceKind>& device_kind_names() {
  static const EnumNames<DeviceKind> n = {{DeviceKind::Auto, "auto"}, {DeviceKind::Cpu, "cpu"}, {DeviceKind::Cuda, "cuda"}};
  return n;
}
inline const EnumNames<MixedPrecision>& mixed_precision_names() {
  static const EnumNames<MixedPrecision> n = {{MixedPrecision::Auto, "auto"},
                                              {MixedPrecision::None, "none"},
                                              {MixedPrecision::BF16, "bf16"},
                                              {MixedPrecision::FP16, "fp16"}};
  return n;
}
}  // namespace detail

DDPM_JSON_ENUM(DeviceKind, detail::device_kind_names, "device")
DDPM_JSON_ENUM(MixedPrecision, detail::mixed_precision_names, "mixed_precision")

/// The training device: CUDA for Cuda (ddpm::Error when unavailable) and for Auto when
/// available, else the CPU. With world_size > 1 on CUDA, cuda:(local_rank % device count)
/// (NCCL needs one distinct GPU per process on a machine).
inline torch::Device resolve_training_device(DeviceKind kind, int world_size = 1, int local_rank = 0) {
  const bool cuda = torch::cuda::is_available();
  if (kind == DeviceKind::Cuda && !cuda) {
    throw Error("device \"cuda\" requested but CUDA is not available (this LibTorch has no CUDA or no GPU is visible)");
  }
  if (!(kind == DeviceKind::Cuda || (kind == DeviceKind::Auto && cuda))) return torch::Device(torch::kCPU);
  if (world_size > 1) {
    const auto n = static_cast<int>(torch::cuda::device_count());
    return torch::Device(torch::kCUDA, static_cast<c10::DeviceIndex>(n > 0 ? local_rank % n : 0));
  }
  return torch::Device(torch::kCUDA);
}

/// The autocast dtype on `device` (nullopt: float32). Auto picks bf16 where the GPU runs it
/// (probed with a tiny matmul; compute capability >= 8.0), else none. On the CPU bf16/fp16
/// are ignored with a note through `note`.
inline c10::optional<torch::ScalarType> resolve_autocast_dtype(MixedPrecision mp, torch::Device device,
                                                                 const std::function<void(const std::string&)>& note = {}) {
  if (!device.is_cuda()) {
    if ((mp == MixedPrecision::BF16 || mp == MixedPrecision::FP16) && note) {
      note("note: mixed_precision applies to CUDA only; training in float32 on the CPU");
    }
    return c10::nullopt;
  }
  switch (mp) {
    case MixedPrecision::BF16: return torch::kBFloat16;
    case MixedPrecision::FP16: return torch::kHalf;
    case MixedPrecision::Auto:
      if (bf16_supported(device)) return torch::kBFloat16;
      return c10::nullopt;
    case MixedPrecision::None: return c10::nullopt;
  }
  return c10::nullopt;
}

// Autocast (AutocastGuard), fp16 loss scaling (LossScaler), pinned host->device copies
// (to_device) and generators live in <ddpm/device.hpp>, shared with sampling and the benchmark.

}  // namespace ddpm
