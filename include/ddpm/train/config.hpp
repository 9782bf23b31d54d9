#pragma once
/// The training configuration: one JSON object whose keys are declared once, in
/// TrainConfig::fields() (key, help, range, choices, flag). JSON read/write, the strict
/// known-key check, validation and the example's command-line flags all come from that
/// list; docs/training.md describes each key.
#include <ddpm/data/loader.hpp>
#include <ddpm/data/registry.hpp>
#include <ddpm/detail/fields.hpp>
#include <ddpm/detail/json_enum.hpp>
#include <ddpm/detail/json_util.hpp>
#include <ddpm/error.hpp>
#include <ddpm/forward_diffuser.hpp>
#include <ddpm/nn/unet.hpp>
#include <ddpm/sampler.hpp>
#include <ddpm/schedule.hpp>
#include <ddpm/train/device.hpp>

#include <nlohmann/json.hpp>

#include <cstdint>
#include <string>
#include <vector>

namespace ddpm {

/// Optimizer.
enum class OptimizerKind { AdamW, Adam };
/// Learning-rate schedule after warmup.
enum class LrSchedule { Constant, Cosine };

namespace detail {
inline const EnumNames<OptimizerKind>& optimizer_kind_names() {
  static const EnumNames<OptimizerKind> n = {{OptimizerKind::AdamW, "adamw"}, {OptimizerKind::Adam, "adam"}};
  return n;
}
inline const EnumNames<LrSchedule>& lr_schedule_names() {
  static const EnumNames<LrSchedule> n = {{LrSchedule::Constant, "constant"}, {LrSchedule::Cosine, "cosine"}};
  return n;
}
/// The samplers the trainer's sample grids can use: every name the sampler registry accepts.
inline std::vector<std::string> grid_sampler_choices() { return sampler_names(); }
/// The evaluation samplers: the registry's names, or "" for the grid sampler.
inline std::vector<std::string> eval_sampler_choices() {
  auto names = sampler_names();
  names.insert(names.begin(), "");
  return names;
}
}  // namespace detail

DDPM_JSON_ENUM(OptimizerKind, detail::optimizer_kind_names, "optimizer")
DDPM_JSON_ENUM(LrSchedule, detail::lr_schedule_names, "lr_schedule")

/// Everything a training run is configured by (defaults below; every key is listed once,
/// in fields()). Unknown keys are rejected.
struct TrainConfig {
  // --- data
  std::string dataset = "auto";
  std::string data_dir = kDefaultDataDir;
  int64_t image_size = 32;
  bool random_flip = true;
  int prefetch = 2;
  int loader_threads = 4;
  ColorMode color_mode = ColorMode::Auto;
  FolderLabels folder_labels = FolderLabels::Auto;
  CropMode folder_crop = CropMode::Center;
  BadImagePolicy on_bad_image = BadImagePolicy::Fail;
  // --- model
  nlohmann::json model = "seed";
  NoiseScheduleOptions schedule{};
  ForwardDiffuserOptions objective{};
  // --- class conditioning and classifier-free guidance (guidance.hpp)
  int64_t num_classes = 0;
  double p_uncond = 0.1;
  double guidance_scale = 1.0;
  double guidance_interval_min = 0.0;
  double guidance_interval_max = 1.0;
  // --- optimization
  int64_t steps = 10000;
  double time_limit_minutes = 0;
  int64_t batch_size = 64;
  OptimizerKind optimizer = OptimizerKind::AdamW;
  double lr = 2e-4;
  int64_t warmup_steps = 500;
  LrSchedule lr_schedule = LrSchedule::Constant;
  double weight_decay = 0.0;
  double adam_beta1 = 0.9;
  double adam_beta2 = 0.999;
  double adam_eps = 1e-8;
  double grad_clip = 1.0;
  double ema_decay = 0.9999;
  bool ema_warmup = true;
  // --- runtime
  uint64_t seed = 0;
  DeviceKind device = DeviceKind::Auto;
  MixedPrecision mixed_precision = MixedPrecision::Auto;
  int num_threads = 0;
  // --- outputs
  std::string out_dir = "runs/default";
  int64_t log_every = 10;
  int64_t sample_every = 1000;
  int64_t sample_count = 64;
  std::string sampler = "ddim";
  int64_t sample_steps = 50;
  int64_t checkpoint_every = 1000;
  int keep_checkpoints = 3;
  // --- evaluation during training (train/trainer.hpp; docs/evaluation.md)
  int64_t eval_every = 0;
  int64_t eval_samples = 1000;
  int64_t eval_steps = 20;
  std::string eval_sampler = "dpmpp_2m";
  int64_t eval_batch_size = 0;

  /// The one list of the fields: JSON key, help, range / choices and command-line flag.
  template <typename Self, typename V>
  static void fields(Self& c, V& f) {
    using detail::above;
    using detail::at_least;
    using detail::between;
    using S = detail::FieldSpec;
    f(S{"dataset", "dataset format; \"auto\" detects it from the files", {}, &dataset_choices}, c.dataset);
    f(S{"data_dir", "dataset folder (or a cifar-10-binary.tar.gz)", {}, nullptr, "data"}, c.data_dir);
    f(S{"image_size",
        "training resolution: smaller in-memory images are padded (with the background value); folder images are "
        "resized (short side, antialiased) and cropped to it",
        between(4, 16384)},
      c.image_size);
    f(S{"random_flip", "random horizontal flips (p = 0.5)"}, c.random_flip);
    f(S{"prefetch", "batches prepared ahead by the loader (0 = load in the training thread)", between(0, 1024)},
      c.prefetch);
    f(S{"loader_threads", "worker threads decoding a streamed dataset (folder) ahead of training", between(1, 1024)},
      c.loader_threads);
    f(S{"color_mode",
        "channels: auto (as stored; a folder is grayscale when every file is), rgb, or grayscale (ITU-R 601 luma)"},
      c.color_mode);
    f(S{"folder_labels",
        "folder dataset: classes from the immediate subfolders (subfolders), none, or auto (subfolders when all "
        "images are in 2+ subfolders)"},
      c.folder_labels);
    f(S{"folder_crop", "folder dataset: square cut after the short-side resize: center or random (seeded)"},
      c.folder_crop);
    f(S{"on_bad_image", "folder dataset: a file that cannot be decoded stops training (fail) or is skipped with a "
        "warning (skip)"},
      c.on_bad_image);
    f(S{"model",
        "UNet: \"seed\" (14.1M params), \"ddpm-cifar10\" (35.7M, Ho et al.), a UNet config .json (diffusers "
        "config.json format) or an inline UNet config object; channels follow the data"},
      c.model);
    f(S{"schedule", "noise schedule (num_train_timesteps, beta_schedule, ...)", {}, nullptr, ""}, c.schedule);
    f(S{"objective", "training objective (prediction_type, loss_weighting, min_snr_gamma)", {}, nullptr, ""},
      c.objective);
    f(S{"num_classes",
        "class-conditional training on the data's labels: the number of classes (0 = unconditional); the UNet "
        "gets num_class_embeds = num_classes + 1, the last being the null class",
        between(0, 100000)},
      c.num_classes);
    f(S{"p_uncond", "probability that a training label is replaced by the null class (classifier-free guidance)",
        between(0, 1)},
      c.p_uncond);
    f(S{"guidance_scale", "classifier-free guidance scale of the sample grids and evaluation (1 = none)", at_least(0)},
      c.guidance_scale);
    f(S{"guidance_interval_min",
        "guide only model calls at t >= this fraction of num_train_timesteps (guidance interval, Kynkaanniemi et "
        "al. 2024); the others take the conditional output alone",
        between(0, 1)},
      c.guidance_interval_min);
    f(S{"guidance_interval_max", "guide only model calls at t <= this fraction of num_train_timesteps", between(0, 1)},
      c.guidance_interval_max);
    f(S{"steps", "total optimizer steps of the run", between(0, 1e12)}, c.steps);
    f(S{"time_limit_minutes", "stop (checkpoint + final sample grid) after this many minutes; 0 = no limit",
        between(0, 1e7), nullptr, "time-limit"},
      c.time_limit_minutes);
    f(S{"batch_size", "images per step per process (global batch = world size x batch size)", between(1, 65536)},
      c.batch_size);
    f(S{"optimizer", "optimizer"}, c.optimizer);
    f(S{"lr", "peak learning rate", above(0)}, c.lr);
    f(S{"warmup_steps", "linear LR warmup steps", between(0, 1e12)}, c.warmup_steps);
    f(S{"lr_schedule", "LR after warmup: constant, or cosine decay to 0 at steps (with a time limit: at the step the limit will allow, if that comes first)"}, c.lr_schedule);
    f(S{"weight_decay", "weight decay (decoupled for AdamW, L2 for Adam)", at_least(0)}, c.weight_decay);
    f(S{"adam_beta1", "Adam beta1", between(0, 1)}, c.adam_beta1);
    f(S{"adam_beta2", "Adam beta2", between(0, 1)}, c.adam_beta2);
    f(S{"adam_eps", "Adam epsilon", above(0)}, c.adam_eps);
    f(S{"grad_clip", "clip the global gradient norm to this (0 = off)", at_least(0)}, c.grad_clip);
    f(S{"ema_decay", "EMA decay of the sampling weights", between(0, 1)}, c.ema_decay);
    f(S{"ema_warmup", "EMA decay warmup min(decay, (1 + n) / (10 + n))"}, c.ema_warmup);
    f(S{"seed", "seed of model init, data order, flips, timesteps and noise"}, c.seed);
    f(S{"device", "auto (CUDA when available), cpu or cuda"}, c.device);
    f(S{"mixed_precision", "CUDA autocast: auto (bf16 where supported), none, bf16, fp16 (with loss scaling)"},
      c.mixed_precision);
    f(S{"num_threads", "CPU threads (0 = all cores)", between(0, 4096), nullptr, "threads"}, c.num_threads);
    f(S{"out_dir", "output folder; rerun with the same folder to resume", {}, nullptr, "out"}, c.out_dir);
    f(S{"log_every", "metrics.jsonl line (mean loss of the interval) every N steps", between(1, 1e12)}, c.log_every);
    f(S{"sample_every", "sample grid from the EMA model every N steps (0 = only at the end)", between(0, 1e12)},
      c.sample_every);
    f(S{"sample_count", "images per sample grid", between(1, 65536)}, c.sample_count);
    f(S{"sampler", "sampler for the grids", {}, &detail::grid_sampler_choices}, c.sampler);
    f(S{"sample_steps", "denoising steps for the grids", between(1, 100000)}, c.sample_steps);
    f(S{"checkpoint_every", "checkpoint every N steps (0 = only at the end / on interruption)", between(0, 1e12)},
      c.checkpoint_every);
    f(S{"keep_checkpoints", "how many checkpoints to keep", between(1, 1000000)}, c.keep_checkpoints);
    f(S{"eval_every",
        "score EMA samples (FD-fmnist, KID; needs 1-channel 28/32 px images) every N steps and at the end, "
        "keeping best.pt (0 = off)",
        between(0, 1e12)},
      c.eval_every);
    f(S{"eval_samples", "images generated per evaluation (over all ranks; the FD wants > 10x its 128 feature dims)",
        between(2, 10000000)},
      c.eval_samples);
    f(S{"eval_steps", "denoising steps for the evaluation samples", between(1, 100000)}, c.eval_steps);
    f(S{"eval_sampler", "sampler for the evaluation samples (\"\" = the grid sampler)", {},
        &detail::eval_sampler_choices},
      c.eval_sampler);
    f(S{"eval_batch_size", "images per generation batch during evaluation (0: 16 on a CPU, 128 on a GPU)", between(0, 65536)},
      c.eval_batch_size);
  }
};

/// Checks every field's range and choices; throws ddpm::Error naming the key and value.
inline void validate(const TrainConfig& c, const std::string& context = "training config") {
  detail::validate_fields(c, context);
  if (c.out_dir.empty()) throw Error(context + ": \"out_dir\" must not be empty");
  if (c.guidance_interval_min > c.guidance_interval_max) {
    throw Error(context + ": \"guidance_interval_min\" " + detail::format_number(c.guidance_interval_min) +
                " is above \"guidance_interval_max\" " + detail::format_number(c.guidance_interval_max));
  }
  if (!c.model.is_string() && !c.model.is_object()) {
    throw Error(context + ": \"model\" must be a preset name, a path to a UNet config JSON or a UNet config object");
  }
}

inline void to_json(nlohmann::json& j, const TrainConfig& c) { j = detail::fields_to_json(c); }

inline void from_json(const nlohmann::json& j, TrainConfig& c) {
  const std::string ctx = "training config";
  detail::fields_from_json(j, c, ctx);
  validate(c, ctx);
}

/// The diffusers-style scheduler config of a run: the schedule plus the prediction type
/// (what sampling from its checkpoints needs).
inline nlohmann::json scheduler_config_of(const TrainConfig& c) {
  nlohmann::json j = c.schedule;
  j.erase("dtype");
  j["prediction_type"] = c.objective.prediction_type();
  return j;
}

/// Resolves TrainConfig::model to UNetOptions (before in/out channels are set from the data).
inline UNetOptions resolve_model_config(const nlohmann::json& model) {
  if (model.is_object()) {
    return unet_options_from_json(model, "training config \"model\"");
  }
  if (!model.is_string()) throw Error("training config \"model\" must be a string or an object");
  const std::string name = model.get<std::string>();
  if (name == "seed") return UNetOptions::seed();
  if (name == "ddpm-cifar10") return UNetOptions::ddpm_cifar10();
  if (name.size() > 5 && name.substr(name.size() - 5) == ".json") return load_unet_config(name);
  throw Error("unknown model \"" + name + "\"; use \"seed\", \"ddpm-cifar10\" or a path to a UNet config .json file");
}

/// The UNet a run trains: config.model resolved, with `channels` in/out channels and
/// image_size as sample size; throws ddpm::Error when image_size does not suit its levels.
inline UNetOptions model_options_of(const TrainConfig& c, int64_t channels) {
  UNetOptions o = resolve_model_config(c.model);
  o.in_channels(channels).out_channels(channels).sample_size(c.image_size);
  if (c.num_classes > 0) {
    if (o.class_embed_type().has_value()) {
      throw Error("training config: \"num_classes\" = " + std::to_string(c.num_classes) +
                  " adds a class-embedding table, but the model config sets class_embed_type \"" +
                  *o.class_embed_type() + "\"; remove it");
    }
    o.num_class_embeds(c.num_classes + 1);  // the last row is the null class
  } else if (o.class_conditioning() != "none") {
    throw Error("training config: the model config is class-conditional (" +
                (o.num_class_embeds().has_value() ? "num_class_embeds " + std::to_string(*o.num_class_embeds())
                                                  : "class_embed_type \"" + o.class_embed_type().value_or("") + "\"") +
                ") but \"num_classes\" is 0; set num_classes to the number of classes of the data");
  }
  o.validate("model config");
  if (c.image_size % o.size_multiple() != 0) {
    throw Error("image_size " + std::to_string(c.image_size) + " is not a multiple of " +
                std::to_string(o.size_multiple()) + " as the UNet's " + std::to_string(o.num_levels()) +
                " levels require");
  }
  return o;
}

/// The batch loader settings of a run on `rank` of `world_size`.
inline BatchLoaderOptions loader_options_of(const TrainConfig& c, int rank, int world_size) {
  BatchLoaderOptions lo;
  lo.batch_size = c.batch_size;
  lo.seed = c.seed;
  lo.rank = rank;
  lo.world_size = world_size;
  lo.random_flip = c.random_flip;
  lo.prefetch = c.prefetch;
  lo.threads = c.loader_threads;
  return lo;
}

/// What the dataset reader of a run is asked for (the folder dataset's size, crop, colour,
/// labels and bad-file policy).
inline DatasetOptions dataset_options_of(const TrainConfig& c) {
  DatasetOptions o;
  o.image_size = c.image_size;
  o.labels = c.folder_labels;
  o.crop = c.folder_crop;
  o.color = c.color_mode;
  o.on_bad_image = c.on_bad_image;
  return o;
}

}  // namespace ddpm
