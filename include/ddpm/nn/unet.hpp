#pragma once
/// The denoising UNet of Ho et al. 2020, parameter-for-parameter compatible with diffusers'
/// `UNet2DModel` (v0.31): same module tree, same state_dict names and shapes, same numerics.
#include <ddpm/detail/fields.hpp>
#include <ddpm/detail/json_enum.hpp>
#include <ddpm/detail/json_util.hpp>
#include <ddpm/error.hpp>
#include <ddpm/nn/blocks.hpp>
#include <ddpm/nn/conv.hpp>
#include <ddpm/nn/resnet.hpp>
#include <ddpm/nn/time_embedding.hpp>

#include <nlohmann/json.hpp>
#include <torch/arg.h>
#include <torch/nn/cloneable.h>
#include <torch/nn/functional/activation.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/embedding.h>
#include <torch/nn/modules/normalization.h>
#include <torch/nn/pimpl.h>
#include <torch/types.h>
#include <torch/utils.h>

#include <c10/util/Optional.h>

#include <cmath>
#include <cstdio>
#include <map>
#include <string>
#include <vector>

namespace ddpm {

/// Limits UNetOptions::validate() enforces before a model is built, so a tiny hostile or
/// mistyped config.json cannot start a runaway allocation (the largest diffusers UNet2DModels
/// use 3-4 input channels, widths up to 1280 and ~1e9 parameters).
constexpr int64_t kMaxUNetIOChannels = 1024;
constexpr int64_t kMaxUNetChannels = 16384;
constexpr int64_t kMaxUNetLayersPerBlock = 64;
constexpr int64_t kMaxUNetSampleSize = 16384;
constexpr int64_t kMaxUNetClassEmbeds = 1000000;
/// Estimated parameters (detail::estimated_unet_parameters): 8 GB of float32 weights.
constexpr double kMaxUNetParameters = 2e9;

/// Every UNet2DModel config key used by DDPM-style folders (diffusers v0.31 names and defaults;
/// a key missing from a config.json takes the diffusers default). Unsupported features
/// (fourier/learned time embeddings, scale_shift, resnet resampling) are rejected by validate().
struct UNetOptions {
  /// Nominal image size (informative only; 0 = unspecified, written as null).
  TORCH_ARG(int64_t, sample_size) = 0;
  TORCH_ARG(int64_t, in_channels) = 3;
  TORCH_ARG(int64_t, out_channels) = 3;
  /// Maps the input x -> 2x - 1 first.
  TORCH_ARG(bool, center_input_sample) = false;
  /// Only "positional" (sinusoidal) is supported.
  TORCH_ARG(std::string, time_embedding_type) = "positional";
  TORCH_ARG(double, freq_shift) = 0.0;
  TORCH_ARG(bool, flip_sin_to_cos) = true;
  /// "DownBlock2D" or "AttnDownBlock2D", one per level.
  TORCH_ARG(std::vector<std::string>, down_block_types) = {"DownBlock2D", "AttnDownBlock2D",
                                                           "AttnDownBlock2D", "AttnDownBlock2D"};
  /// "UpBlock2D" or "AttnUpBlock2D", one per level, deepest first.
  TORCH_ARG(std::vector<std::string>, up_block_types) = {"AttnUpBlock2D", "AttnUpBlock2D",
                                                         "AttnUpBlock2D", "UpBlock2D"};
  TORCH_ARG(std::vector<int64_t>, block_out_channels) = {224, 448, 672, 896};
  TORCH_ARG(int64_t, layers_per_block) = 2;
  TORCH_ARG(double, mid_block_scale_factor) = 1.0;
  /// 1: conv padding 1; 0: pad right/bottom by one, conv padding 0 (original DDPM).
  TORCH_ARG(int64_t, downsample_padding) = 1;
  TORCH_ARG(std::string, downsample_type) = "conv";
  TORCH_ARG(std::string, upsample_type) = "conv";
  TORCH_ARG(double, dropout) = 0.0;
  TORCH_ARG(std::string, act_fn) = "silu";
  /// Channels per attention head; nullopt = a single head of all channels.
  TORCH_ARG(c10::optional<int64_t>, attention_head_dim) = 8;
  TORCH_ARG(int64_t, norm_num_groups) = 32;
  /// GroupNorm groups of the mid-block attention; nullopt = norm_num_groups.
  TORCH_ARG(c10::optional<int64_t>, attn_norm_num_groups) = c10::nullopt;
  TORCH_ARG(double, norm_eps) = 1e-5;
  TORCH_ARG(std::string, resnet_time_scale_shift) = "default";
  /// Attention in the mid block.
  TORCH_ARG(bool, add_attention) = true;
  /// Class conditioning, as diffusers: nullopt with num_class_embeds set = a learned
  /// Embedding(num_class_embeds, time_embed_dim); "timestep" = labels go through the sinusoidal
  /// projection and their own MLP; "identity" = labels are already [B, time_embed_dim] vectors.
  /// The class embedding is added to the time embedding.
  TORCH_ARG(c10::optional<std::string>, class_embed_type) = c10::nullopt;
  /// Embedding rows (class_embed_type nullopt). Classifier-free guidance convention: the null
  /// (unconditional) class is the last row, num_class_embeds - 1, so K classes need K + 1.
  TORCH_ARG(c10::optional<int64_t>, num_class_embeds) = c10::nullopt;
  /// Only used by "learned" time embeddings in diffusers; kept for round trips.
  TORCH_ARG(c10::optional<int64_t>, num_train_timesteps) = c10::nullopt;

 public:

  /// Width of the time embedding: 4 * block_out_channels[0].
  int64_t time_embed_dim() const { return 4 * block_out_channels_.at(0); }
  /// Number of resolution levels (= block_out_channels.size()).
  int64_t num_levels() const { return static_cast<int64_t>(block_out_channels_.size()); }
  /// H and W must be multiples of this: 2^(levels - 1).
  int64_t size_multiple() const { return int64_t{1} << (num_levels() - 1); }
  /// Which class embedding the model has: "none", "embedding" (a learned table of
  /// num_class_embeds rows), "timestep" or "identity" (diffusers' precedence: class_embed_type
  /// first, then num_class_embeds).
  std::string class_conditioning() const {
    if (class_embed_type_.has_value()) return *class_embed_type_;
    return num_class_embeds_.has_value() ? "embedding" : "none";
  }
  /// The classifier-free-guidance null label, num_class_embeds - 1 (only for "embedding").
  int64_t null_class_label() const {
    TORCH_CHECK(class_conditioning() == "embedding",
                "UNetOptions: null_class_label() needs num_class_embeds (a class-embedding table)");
    return *num_class_embeds_ - 1;
  }

  /// google/ddpm-cifar10-32 (its unet/config.json): 35,746,307 parameters.
  static UNetOptions ddpm_cifar10() {
    UNetOptions o;
    o.sample_size(32)
        .attention_head_dim(c10::nullopt)
        .block_out_channels({128, 256, 256, 256})
        .down_block_types({"DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"})
        .up_block_types({"UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"})
        .downsample_padding(0)
        .flip_sin_to_cos(false)
        .freq_shift(1)
        .layers_per_block(2)
        .norm_eps(1e-6)
        .norm_num_groups(32);
    return o;
  }

  /// The project's small CPU model: 3 levels of 64/128/256 channels, 2 resnets per down level
  /// (3 per up level), GroupNorm(8), SiLU, no attention, time embedding width 256.
  /// 14,142,851 parameters at in/out_channels 3 (9,863,107 with layers_per_block(1)). Works at any H, W divisible by 4.
  static UNetOptions seed() {
    UNetOptions o;
    o.sample_size(32)
        .block_out_channels({64, 128, 256})
        .down_block_types({"DownBlock2D", "DownBlock2D", "DownBlock2D"})
        .up_block_types({"UpBlock2D", "UpBlock2D", "UpBlock2D"})
        .layers_per_block(2)
        .norm_num_groups(8)
        .add_attention(false);
    return o;
  }

  /// Throws ddpm::Error naming `context` and the offending key/value if the options are
  /// inconsistent or use an unsupported feature.
  void validate(const std::string& context = "UNetOptions") const;

  /// JSON form of sample_size: 0 <-> null; reads an integer or a square [h, w].
  struct SampleSizeCodec {
    nlohmann::json to(int64_t v) const { return v > 0 ? nlohmann::json(v) : nlohmann::json(nullptr); }
    void from(const nlohmann::json& j, int64_t& v) const {
      if (j.is_array() && j.size() == 2 && j[0] == j[1] && j[0].is_number_integer()) {
        v = detail::json_integer<int64_t>(j[0]);
      } else if (j.is_number_integer()) {
        v = detail::json_integer<int64_t>(j);
      } else {
        throw Error("expected an integer or a square [h, w], got " + detail::truncated_dump(j));
      }
    }
  };

  /// The one list of the config keys (diffusers' names; detail/fields.hpp). Optional
  /// fields read null as "none", not as the default.
  template <typename Self, typename V>
  static void fields(Self& o, V& f) {
    using S = detail::FieldSpec;
    f(S{"sample_size"}, o.sample_size(), SampleSizeCodec{});
    f(S{"in_channels"}, o.in_channels());
    f(S{"out_channels"}, o.out_channels());
    f(S{"center_input_sample"}, o.center_input_sample());
    f(S{"time_embedding_type"}, o.time_embedding_type());
    f(S{"freq_shift"}, o.freq_shift(), detail::IntegralNumberCodec{});
    f(S{"flip_sin_to_cos"}, o.flip_sin_to_cos());
    f(S{"down_block_types"}, o.down_block_types());
    f(S{"up_block_types"}, o.up_block_types());
    f(S{"block_out_channels"}, o.block_out_channels());
    f(S{"layers_per_block"}, o.layers_per_block());
    f(S{"mid_block_scale_factor"}, o.mid_block_scale_factor(), detail::IntegralNumberCodec{});
    f(S{"downsample_padding"}, o.downsample_padding());
    f(S{"downsample_type"}, o.downsample_type());
    f(S{"upsample_type"}, o.upsample_type());
    f(S{"dropout"}, o.dropout());
    f(S{"act_fn"}, o.act_fn());
    f(S{"attention_head_dim"}, o.attention_head_dim());
    f(S{"norm_num_groups"}, o.norm_num_groups());
    f(S{"attn_norm_num_groups"}, o.attn_norm_num_groups());
    f(S{"norm_eps"}, o.norm_eps());
    f(S{"resnet_time_scale_shift"}, o.resnet_time_scale_shift());
    f(S{"add_attention"}, o.add_attention());
    f(S{"class_embed_type"}, o.class_embed_type());
    f(S{"num_class_embeds"}, o.num_class_embeds());
    f(S{"num_train_timesteps"}, o.num_train_timesteps());
  }
};

namespace detail {

inline std::string quoted_list(const std::vector<std::string>& names) {
  std::string out;
  for (const auto& n : names) out += (out.empty() ? "\"" : ", \"") + n + "\"";
  return out;
}

inline void check_choice(const std::string& value, const std::vector<std::string>& valid,
                         const std::string& key, const std::string& context) {
  for (const auto& v : valid) {
    if (v == value) return;
  }
  throw Error(context + ": unknown " + key + " \"" + value + "\"; valid values are " +
              quoted_list(valid));
}

inline std::string int_list(const std::vector<int64_t>& v) {
  std::string out = "[";
  for (size_t i = 0; i < v.size(); ++i) out += (i ? ", " : "") + std::to_string(v[i]);
  return out + "]";
}

}  // namespace detail

namespace detail {

/// About how many parameters a UNet of `o` has (within ~2x for any layout): the two 3x3
/// convolutions of each of the 3 * layers_per_block + 1 ResNet blocks per level (down, up, and
/// the level's share of the mid block) at that level's width, in floating point (no overflow).
inline double estimated_unet_parameters(const UNetOptions& o) {
  double total = 0;
  for (const int64_t c : o.block_out_channels()) {
    total += (3.0 * static_cast<double>(o.layers_per_block()) + 1.0) * 18.0 * static_cast<double>(c) * static_cast<double>(c);
  }
  if (o.num_class_embeds().has_value() && !o.block_out_channels().empty()) {
    total += static_cast<double>(*o.num_class_embeds()) * 4.0 * static_cast<double>(o.block_out_channels()[0]);
  }
  return total;
}

}  // namespace detail

inline void UNetOptions::validate(const std::string& context) const {
  const auto& ch = block_out_channels_;
  auto fail = [&](const std::string& what) { throw Error(context + ": " + what); };
  if (ch.empty()) fail("block_out_channels must not be empty");
  if (down_block_types_.size() != ch.size() || up_block_types_.size() != ch.size()) {
    fail("down_block_types (" + std::to_string(down_block_types_.size()) + "), up_block_types (" +
         std::to_string(up_block_types_.size()) + ") and block_out_channels (" +
         std::to_string(ch.size()) + ") must have the same length");
  }
  for (const auto& t : down_block_types_) {
    detail::check_choice(t, {"DownBlock2D", "AttnDownBlock2D"}, "down_block_types entry", context);
  }
  for (const auto& t : up_block_types_) {
    detail::check_choice(t, {"UpBlock2D", "AttnUpBlock2D"}, "up_block_types entry", context);
  }
  detail::check_choice(time_embedding_type_, {"positional"}, "time_embedding_type", context);
  detail::check_choice(resnet_time_scale_shift_, {"default"}, "resnet_time_scale_shift", context);
  detail::check_choice(downsample_type_, {"conv"}, "downsample_type", context);
  detail::check_choice(upsample_type_, {"conv"}, "upsample_type", context);
  detail::check_activation(act_fn_, context);
  if (class_embed_type_.has_value()) {
    detail::check_choice(*class_embed_type_, {"timestep", "identity"}, "class_embed_type", context);
  }
  if (num_class_embeds_.has_value() && *num_class_embeds_ < 1) {
    fail("num_class_embeds must be >= 1 (or null), got " + std::to_string(*num_class_embeds_));
  }
  if (in_channels_ <= 0 || out_channels_ <= 0) {
    fail("in_channels and out_channels must be positive, got " + std::to_string(in_channels_) +
         " and " + std::to_string(out_channels_));
  }
  if (layers_per_block_ < 1) fail("layers_per_block must be >= 1, got " + std::to_string(layers_per_block_));
  // Limits checked before anything is allocated (a config is a few hundred bytes; the model it
  // describes must fit a machine): see kMaxUNetChannels and friends.
  auto limit = [&](const char* key, int64_t v, int64_t max) {
    if (v > max) fail(std::string(key) + " = " + std::to_string(v) + " exceeds the limit " + std::to_string(max));
  };
  limit("in_channels", in_channels_, kMaxUNetIOChannels);
  limit("out_channels", out_channels_, kMaxUNetIOChannels);
  limit("layers_per_block", layers_per_block_, kMaxUNetLayersPerBlock);
  limit("sample_size", sample_size_, kMaxUNetSampleSize);
  if (num_class_embeds_.has_value()) limit("num_class_embeds", *num_class_embeds_, kMaxUNetClassEmbeds);
  for (int64_t c : ch) limit("block_out_channels entry", c, kMaxUNetChannels);
  if (norm_num_groups_ < 1) fail("norm_num_groups must be >= 1, got " + std::to_string(norm_num_groups_));
  if (num_levels() > 16) fail("too many levels (" + std::to_string(num_levels()) + ")");
  for (int64_t c : ch) {
    if (c <= 0 || c % norm_num_groups_ != 0) {
      fail("every block_out_channels entry must be a positive multiple of norm_num_groups " +
           std::to_string(norm_num_groups_) + ", got " + detail::int_list(ch));
    }
  }
  if (ch[0] < 2) fail("block_out_channels[0] must be >= 2 for the time embedding");
  if (static_cast<double>(ch[0] / 2) == freq_shift_) {
    fail("freq_shift " + std::to_string(freq_shift_) + " equals block_out_channels[0]/2");
  }
  if (!(norm_eps_ > 0)) fail("norm_eps must be > 0");
  if (!(dropout_ >= 0 && dropout_ < 1)) fail("dropout must be in [0, 1), got " + std::to_string(dropout_));
  if (!(mid_block_scale_factor_ > 0)) fail("mid_block_scale_factor must be > 0");
  if (downsample_padding_ < 0) fail("downsample_padding must be >= 0");
  if (attn_norm_num_groups_.has_value() &&
      (*attn_norm_num_groups_ < 1 || ch.back() % *attn_norm_num_groups_ != 0)) {
    fail("attn_norm_num_groups " + std::to_string(*attn_norm_num_groups_) +
         " must divide block_out_channels[-1] = " + std::to_string(ch.back()));
  }
  // Attention head layout: heads = C / attention_head_dim must be exact wherever attention is.
  auto check_heads = [&](int64_t c, const std::string& where) {
    if (attention_head_dim_.has_value() &&
        (*attention_head_dim_ < 1 || c % *attention_head_dim_ != 0)) {
      fail("attention_head_dim " + std::to_string(*attention_head_dim_) +
           " must divide the " + std::to_string(c) + " channels of " + where);
    }
  };
  for (size_t i = 0; i < ch.size(); ++i) {
    if (down_block_types_[i] == "AttnDownBlock2D") check_heads(ch[i], "down_blocks." + std::to_string(i));
    if (up_block_types_[i] == "AttnUpBlock2D") check_heads(ch[ch.size() - 1 - i], "up_blocks." + std::to_string(i));
  }
  if (add_attention_) check_heads(ch.back(), "mid_block");
  const double params = detail::estimated_unet_parameters(*this);
  if (params > kMaxUNetParameters) {
    char buf[160];
    std::snprintf(buf, sizeof buf, "the UNet would have about %.3g parameters (%.3g GB of float32), above the limit %.3g",
                  params, params * 4 / 1e9, kMaxUNetParameters);
    fail(buf);
  }
}

/// Writes the diffusers config.json form (all v0.31 keys plus "_class_name": "UNet2DModel").
inline void to_json(nlohmann::json& j, const UNetOptions& o) {
  j = detail::fields_to_json(o);
  j["_class_name"] = "UNet2DModel";
  j["_diffusers_version"] = "0.31.0";
}

/// Parses a diffusers UNet2DModel config; `context` (e.g. the file path) prefixes errors.
/// Unknown keys, unknown block types / act_fn / time_embedding_type and inconsistent
/// settings throw ddpm::Error. Keys starting with '_' are ignored.
inline UNetOptions unet_options_from_json(const nlohmann::json& j, const std::string& context) {
  UNetOptions o;
  detail::fields_from_json(j, o, context);
  o.validate(context);
  return o;
}

/// nlohmann from_json (see unet_options_from_json).
inline void from_json(const nlohmann::json& j, UNetOptions& o) {
  o = unet_options_from_json(j, "UNet config");
}

/// Reads a diffusers UNet2DModel config.json.
inline UNetOptions load_unet_config(const std::string& path) {
  return unet_options_from_json(detail::read_json_file(path), "UNet config '" + path + "'");
}

/// The UNet's output plus its named intermediate activations (debugging aid). Names follow
/// diffusers' debug fixture: time_proj, time_embedding, conv_in, down_blocks.i, mid_block,
/// up_blocks.i, conv_norm_out (GroupNorm only, before SiLU and conv_out).
struct UNetDebugOutput {
  torch::Tensor output;
  std::map<std::string, torch::Tensor> activations;
};

/// eps_theta(x_t, t): x [B, in_channels, H, W], t [B] / [1] / [] (int or float) ->
/// [B, out_channels, H, W]. Module tree and parameter names are diffusers' UNet2DModel:
/// conv_in, time_embedding.linear_{1,2}, down_blocks.i.{resnets,attentions,downsamplers},
/// up_blocks.i.{...,upsamplers}, mid_block.{attentions,resnets}, conv_norm_out, conv_out.
class UNetImpl : public torch::nn::Cloneable<UNetImpl> {
 public:
  explicit UNetImpl(UNetOptions opts) : options(std::move(opts)) { reset(); }

  void reset() override {
    const auto& o = options;
    o.validate();
    const auto& ch = o.block_out_channels();
    const int64_t levels = o.num_levels();
    const int64_t temb = o.time_embed_dim();
    conv_in = register_module(
        "conv_in", ddpm::Conv2d(torch::nn::Conv2dOptions(o.in_channels(), ch[0], 3).padding(1)));
    const auto temb_options =
        TimeEmbeddingOptions(ch[0], temb).flip_sin_to_cos(o.flip_sin_to_cos()).freq_shift(o.freq_shift());
    time_embedding = register_module("time_embedding", TimeEmbedding(temb_options));
    const std::string cond = o.class_conditioning();
    if (cond == "embedding") {
      class_embedding = register_module(
          "class_embedding", torch::nn::Embedding(*o.num_class_embeds(), temb));
    } else if (cond == "timestep") {
      class_timestep_embedding = register_module("class_embedding", TimeEmbedding(temb_options));
    }
    down_blocks = register_module("down_blocks", torch::nn::ModuleList());
    int64_t out_ch = ch[0];
    for (int64_t i = 0; i < levels; ++i) {
      const int64_t in_ch = out_ch;
      out_ch = ch[i];
      down_blocks->push_back(DownBlock(DownBlockOptions(in_ch, out_ch, temb)
                                           .num_layers(o.layers_per_block())
                                           .attention(o.down_block_types()[i] == "AttnDownBlock2D")
                                           .attention_head_dim(o.attention_head_dim().has_value()
                                                                   ? o.attention_head_dim()
                                                                   : c10::optional<int64_t>(out_ch))
                                           .add_downsample(i != levels - 1)
                                           .downsample_padding(o.downsample_padding())
                                           .groups(o.norm_num_groups())
                                           .eps(o.norm_eps())
                                           .dropout(o.dropout())
                                           .act_fn(o.act_fn())));
    }
    up_blocks = register_module("up_blocks", torch::nn::ModuleList());
    out_ch = ch.back();
    for (int64_t i = 0; i < levels; ++i) {
      const int64_t prev = out_ch;
      out_ch = ch[levels - 1 - i];
      const int64_t in_ch = ch[std::max<int64_t>(levels - 2 - i, 0)];
      up_blocks->push_back(UpBlock(UpBlockOptions(in_ch, prev, out_ch, temb)
                                       .num_layers(o.layers_per_block() + 1)
                                       .attention(o.up_block_types()[i] == "AttnUpBlock2D")
                                       .attention_head_dim(o.attention_head_dim().has_value()
                                                               ? o.attention_head_dim()
                                                               : c10::optional<int64_t>(out_ch))
                                       .add_upsample(i != levels - 1)
                                       .groups(o.norm_num_groups())
                                       .eps(o.norm_eps())
                                       .dropout(o.dropout())
                                       .act_fn(o.act_fn())));
    }
    mid_block = register_module(
        "mid_block", MidBlock(MidBlockOptions(ch.back(), temb)
                                  .add_attention(o.add_attention())
                                  .attention_head_dim(o.attention_head_dim().has_value()
                                                          ? o.attention_head_dim()
                                                          : c10::optional<int64_t>(ch.back()))
                                  .groups(o.norm_num_groups())
                                  .attn_groups(o.attn_norm_num_groups())
                                  .eps(o.norm_eps())
                                  .dropout(o.dropout())
                                  .act_fn(o.act_fn())
                                  .output_scale_factor(o.mid_block_scale_factor())));
    conv_norm_out = register_module(
        "conv_norm_out",
        torch::nn::GroupNorm(torch::nn::GroupNormOptions(o.norm_num_groups(), ch[0]).eps(o.norm_eps())));
    conv_out = register_module(
        "conv_out", ddpm::Conv2d(torch::nn::Conv2dOptions(ch[0], o.out_channels(), 3).padding(1)));
  }

  /// A deep copy (Cloneable), with the fast inference path set as here.
  std::shared_ptr<torch::nn::Module> clone(const c10::optional<torch::Device>& device = c10::nullopt) const override {
    auto copy = torch::nn::Cloneable<UNetImpl>::clone(device);
    std::dynamic_pointer_cast<UNetImpl>(copy)->set_fast_inference(fast_inference_);
    return copy;
  }

  /// x [B, in_channels, H, W] (H, W multiples of 2^(levels-1)), t [B] / [1] / [] int or float
  /// -> predicted noise (or whatever the model was trained on) [B, out_channels, H, W].
  /// class_labels (required by a class-conditional model, rejected otherwise):
  ///   "embedding": integer [B] in [0, num_class_embeds) (null_class_label() for CFG's null class);
  ///   "timestep": int or float [B], embedded like timesteps; "identity": float [B, time_embed_dim].
  /// emb = time_embedding(t) + class_embedding(class_labels), as diffusers' UNet2DModel.
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& t,
                        const torch::Tensor& class_labels = {}) {
    return run(x, t, class_labels, nullptr);
  }

  /// forward() plus the intermediate activations (see UNetDebugOutput).
  UNetDebugOutput forward_debug(const torch::Tensor& x, const torch::Tensor& t,
                                const torch::Tensor& class_labels = {}) {
    UNetDebugOutput out;
    out.output = run(x, t, class_labels, &out.activations);
    return out;
  }

  /// The class embedding [B, time_embed_dim] of `class_labels` (see forward()), after checking
  /// their shape, dtype and range against a batch of `batch` samples.
  torch::Tensor embed_classes(const torch::Tensor& class_labels, int64_t batch) {
    const auto& o = options;
    const std::string cond = o.class_conditioning();
    TORCH_CHECK(cond != "none" || !class_labels.defined(),
                "UNet: class_labels were given but the model is not class-conditional "
                "(num_class_embeds and class_embed_type are null)");
    TORCH_CHECK(class_labels.defined(), "UNet: this model is class-conditional (",
                cond == "embedding" ? "num_class_embeds " + std::to_string(*o.num_class_embeds())
                                    : "class_embed_type \"" + cond + "\"",
                "): class_labels are required");
    const torch::Device device = conv_in->weight.device();
    if (cond == "identity") {
      TORCH_CHECK(class_labels.dim() == 2 && class_labels.size(0) == batch &&
                      class_labels.size(1) == o.time_embed_dim() && class_labels.is_floating_point(),
                  "UNet: class_embed_type \"identity\" needs float class_labels [", batch, ", ",
                  o.time_embed_dim(), "], got ", class_labels.scalar_type(), " ", class_labels.sizes());
      return class_labels.to(device, conv_in->weight.scalar_type());
    }
    TORCH_CHECK(class_labels.dim() == 1 && class_labels.size(0) == batch, "UNet: class_labels must have shape [",
                batch, "] (one label per sample), got ", class_labels.sizes());
    if (cond == "timestep") {
      TORCH_CHECK(!class_labels.is_complex() && class_labels.scalar_type() != torch::kBool,
                  "UNet: class_labels must be an integer or floating tensor, got ", class_labels.scalar_type());
      return class_timestep_embedding(class_labels.to(device));
    }
    TORCH_CHECK(!class_labels.is_floating_point() && !class_labels.is_complex() &&
                    class_labels.scalar_type() != torch::kBool,
                "UNet: class_labels must be an integer tensor (int64 class indices), got ",
                class_labels.scalar_type());
    const int64_t n = *o.num_class_embeds();
    if (class_labels.numel() > 0) {
      const int64_t lo = class_labels.min().item<int64_t>();
      const int64_t hi = class_labels.max().item<int64_t>();
      TORCH_CHECK(lo >= 0 && hi < n, "UNet: class label ", lo < 0 ? lo : hi, " is out of range [0, ", n,
                  ") (num_class_embeds ", n, "; the null class for guidance is ", n - 1, ")");
    }
    return class_embedding(class_labels.to(device, torch::kLong));
  }

  /// The channels-last inference layout: NHWC activations and 4-d (convolution) weights, kept
  /// NHWC end to end, so convolutions need no reorder of NCHW activations in and out of each call
  /// (isolated 1x1 and 32-channel convolutions ran 2-5x faster so). GroupNorm, SiLU, the adds, cat
  /// and nearest upsampling have NHWC kernels; the attention's output keeps its input's layout.
  /// Whole demo UNet, sampling on 2 CPU cores: 0.79x on LibTorch 1.13, 1.03x on 2.15
  /// (docs/performance.md), so it is off by default; cuDNN's NHWC kernels are its case (unmeasured).
  /// Inputs may be in either layout; outputs are NCHW-contiguous either way. Results differ from
  /// the default NCHW path by float rounding only (tests/unit/test_unet.cpp: within 1e-4 of the
  /// diffusers fixtures); set_channels_last(false) restores the exact path bit for bit.
  /// Weights loaded later (load_state_dict, safetensors) keep the layout (they are copied in).
  void set_channels_last(bool on) {
    channels_last_ = on;
    const auto format = on ? torch::MemoryFormat::ChannelsLast : torch::MemoryFormat::Contiguous;
    torch::NoGradGuard no_grad;
    for (auto& p : parameters()) {
      if (p.dim() == 4) p.set_data(p.contiguous(format));
    }
  }
  /// Whether set_channels_last(true) is in effect.
  bool channels_last() const { return channels_last_; }

  /// The fast inference path, for sampling: every convolution runs on oneDNN with its weight
  /// pre-packed once (ddpm::Conv2d), and attention works channel-major with fused, pre-packed
  /// q/k/v and output projections and no transposed copies (AttentionBlock). It applies to
  /// no-grad calls in eval mode on float32 NCHW CPU input when LibTorch has oneDNN; any other call
  /// (training, autograd, CUDA, bf16, channels-last) takes the exact path. Packed weights are
  /// rebuilt after the weights change (optimizer step, load_state_dict). Results differ from the
  /// exact path by float rounding: within 1e-4 of the diffusers fixtures for one forward and
  /// 1e-3 after whole sampling runs (tests/unit/test_fast_inference.cpp); speed in
  /// docs/performance.md. set_fast_inference(false) restores the exact path bit for bit.
  void set_fast_inference(bool on) {
    fast_inference_ = on;
    for (const auto& m : modules(/*include_self=*/false)) {
      if (auto* conv = m->as<Conv2dImpl>()) conv->set_fast_inference(on);
      if (auto* attn = m->as<AttentionBlockImpl>()) attn->set_fast_inference(on);
    }
  }
  /// Whether set_fast_inference(true) is in effect.
  bool fast_inference() const { return fast_inference_; }

  /// Total number of parameter elements.
  int64_t num_parameters() const {
    int64_t n = 0;
    for (const auto& p : parameters()) n += p.numel();
    return n;
  }

  UNetOptions options;
  Conv2d conv_in{nullptr};
  TimeEmbedding time_embedding{nullptr};
  /// "class_embedding" (diffusers' name) when class_conditioning() == "embedding": weight
  /// [num_class_embeds, time_embed_dim].
  torch::nn::Embedding class_embedding{nullptr};
  /// "class_embedding" when class_conditioning() == "timestep": linear_{1,2} like time_embedding.
  TimeEmbedding class_timestep_embedding{nullptr};
  /// DownBlock modules (access with down_blocks->at<DownBlockImpl>(i)).
  torch::nn::ModuleList down_blocks{nullptr};
  /// UpBlock modules, deepest first (access with up_blocks->at<UpBlockImpl>(i)).
  torch::nn::ModuleList up_blocks{nullptr};
  MidBlock mid_block{nullptr};
  torch::nn::GroupNorm conv_norm_out{nullptr};
  Conv2d conv_out{nullptr};

 private:
  bool channels_last_ = false;
  bool fast_inference_ = false;

  torch::Tensor run(const torch::Tensor& x_in, const torch::Tensor& t, const torch::Tensor& class_labels,
                    std::map<std::string, torch::Tensor>* acts) {
    const auto& o = options;
    TORCH_CHECK(x_in.defined() && x_in.dim() == 4, "UNet: expected input [B, ", o.in_channels(),
                ", H, W], got ", x_in.defined() ? x_in.sizes() : torch::IntArrayRef{});
    TORCH_CHECK(x_in.size(1) == o.in_channels(), "UNet: input has ", x_in.size(1),
                " channels but the model expects ", o.in_channels(), " (input shape ",
                x_in.sizes(), ")");
    TORCH_CHECK(x_in.is_floating_point(), "UNet: input must be floating point, got ",
                x_in.scalar_type());
    const int64_t m = o.size_multiple();
    TORCH_CHECK(x_in.size(2) > 0 && x_in.size(3) > 0 && x_in.size(2) % m == 0 &&
                    x_in.size(3) % m == 0,
                "UNet: input shape ", x_in.sizes(), ": H and W must be positive multiples of ", m,
                " (2^(levels-1) with ", o.num_levels(), " levels)");
    auto record = [&](const char* name, const torch::Tensor& v) {
      if (acts) (*acts)[name] = v;
    };
    const int64_t batch = x_in.size(0);
    torch::Tensor x = o.center_input_sample() ? 2 * x_in - 1.0 : x_in;
    if (channels_last_) x = x.contiguous(torch::MemoryFormat::ChannelsLast);

    const torch::Tensor proj = time_embedding->time_proj(t.to(x.device()), batch);
    record("time_proj", proj);
    torch::Tensor emb = time_embedding->mlp(proj.to(x.scalar_type()));
    record("time_embedding", emb);
    if (o.class_conditioning() != "none" || class_labels.defined()) {
      const torch::Tensor class_emb = embed_classes(class_labels, batch).to(emb.scalar_type());
      record("class_embedding", class_emb);
      emb = emb + class_emb;
    }

    torch::Tensor h = conv_in(x);
    record("conv_in", h);
    std::vector<torch::Tensor> skips{h};
    for (size_t i = 0; i < down_blocks->size(); ++i) {
      DownBlockOutput out = down_blocks->at<DownBlockImpl>(i).forward(h, emb);
      h = out.hidden;
      skips.insert(skips.end(), out.skips.begin(), out.skips.end());
      if (acts) (*acts)["down_blocks." + std::to_string(i)] = h;
    }
    h = mid_block(h, emb);
    record("mid_block", h);
    for (size_t i = 0; i < up_blocks->size(); ++i) {
      auto& block = up_blocks->at<UpBlockImpl>(i);
      const size_t n = block.resnets->size();
      TORCH_CHECK(skips.size() >= n, "UNet: internal error, ran out of skip connections");
      std::vector<torch::Tensor> mine(skips.end() - static_cast<std::ptrdiff_t>(n), skips.end());
      skips.resize(skips.size() - n);
      h = block.forward(h, mine, emb);
      if (acts) (*acts)["up_blocks." + std::to_string(i)] = h;
    }
    h = conv_norm_out(h);
    record("conv_norm_out", h);
    const torch::Tensor out = conv_out(torch::silu(h));
    return channels_last_ ? out.contiguous() : out;
  }
};
TORCH_MODULE(UNet);

}  // namespace ddpm
