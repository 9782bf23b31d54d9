#pragma once
/// Umbrella header: all of ddpm except <ddpm/distributed.hpp>, which needs the
/// c10d/Gloo headers and the ddpm::distributed target.
#include <ddpm/version.hpp>
#include <ddpm/error.hpp>
#include <ddpm/runtime.hpp>
#include <ddpm/device.hpp>

// Core math: schedules, the forward process and its losses.
#include <ddpm/schedule.hpp>
#include <ddpm/prediction.hpp>
#include <ddpm/forward_diffuser.hpp>
#include <ddpm/samplers/protocol.hpp>

// Samplers and the sampling loop.
#include <ddpm/samplers/common.hpp>
#include <ddpm/samplers/ddpm.hpp>
#include <ddpm/samplers/ddim.hpp>
#include <ddpm/samplers/dpm_solver.hpp>
#include <ddpm/sampler.hpp>
#include <ddpm/sample.hpp>
#include <ddpm/guidance.hpp>
#include <ddpm/pipeline.hpp>

// Networks (diffusers UNet2DModel-compatible).
#include <ddpm/nn/time_embedding.hpp>
#include <ddpm/nn/resnet.hpp>
#include <ddpm/nn/attention.hpp>
#include <ddpm/nn/resample.hpp>
#include <ddpm/nn/blocks.hpp>
#include <ddpm/nn/unet.hpp>
#include <ddpm/nn/flops.hpp>

// Files: safetensors, diffusers folders, PNG images.
#include <ddpm/io/safetensors.hpp>
#include <ddpm/io/diffusers.hpp>
#include <ddpm/io/png.hpp>

// Data sets and training.
#include <ddpm/data/dataset.hpp>
#include <ddpm/data/idx.hpp>
#include <ddpm/data/cifar10.hpp>
#include <ddpm/data/transforms.hpp>
#include <ddpm/data/loader.hpp>
#include <ddpm/data/registry.hpp>
#include <ddpm/train/ema.hpp>
#include <ddpm/train/config.hpp>
#include <ddpm/train/device.hpp>
#include <ddpm/train/optim.hpp>
#include <ddpm/train/metrics.hpp>
#include <ddpm/train/collective.hpp>
#include <ddpm/train/signals.hpp>
#include <ddpm/train/checkpoint.hpp>
#include <ddpm/train/progress.hpp>
#include <ddpm/train/run_dir.hpp>
#include <ddpm/train/run_result.hpp>
#include <ddpm/train/state.hpp>
#include <ddpm/train/evaluation.hpp>
#include <ddpm/train/trainer.hpp>

// Evaluation: feature statistics, Fréchet distance, KID, feature networks (sample_io.hpp, which
// reads PNGs with stb_image, is optional and not included here).
#include <ddpm/eval/feature_stats.hpp>
#include <ddpm/eval/frechet.hpp>
#include <ddpm/eval/kid.hpp>
#include <ddpm/eval/class_accuracy.hpp>
#include <ddpm/eval/classifier.hpp>
#include <ddpm/eval/inception.hpp>
#include <ddpm/eval/evaluate.hpp>
