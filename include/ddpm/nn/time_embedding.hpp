#pragma once
/// Sinusoidal timestep embedding + MLP, as diffusers' `Timesteps` + `TimestepEmbedding`
/// (Ho et al. 2020, after the Transformer's positional encoding, Vaswani et al. 2017).
#include <torch/arg.h>
#include <torch/nn/cloneable.h>
#include <torch/nn/functional/activation.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/pimpl.h>
#include <torch/types.h>

#include <cmath>
#include <cstdint>

namespace ddpm {

namespace detail {

/// Timesteps as a float32 [B] tensor: accepts an int or float tensor of shape [] , [1] or [B];
/// [] and [1] are broadcast to `batch` (when batch >= 0). The float cast happens after the
/// broadcast, as diffusers does (`timesteps * ones(B)` then `.float()`).
inline torch::Tensor broadcast_timesteps(const torch::Tensor& t, int64_t batch) {
  TORCH_CHECK(t.defined(), "timesteps: undefined tensor");
  TORCH_CHECK(t.dim() <= 1, "timesteps must have shape [], [1] or [B], got ", t.sizes());
  TORCH_CHECK(!t.is_complex() && t.scalar_type() != torch::kBool,
              "timesteps must be an integer or floating tensor, got ", t.scalar_type());
  torch::Tensor ts = t.dim() == 0 ? t.reshape({1}) : t;
  if (batch >= 0) {
    if (ts.size(0) == 1 && batch != 1) {
      ts = ts.expand({batch});
    } else {
      TORCH_CHECK(ts.size(0) == batch, "timesteps have shape ", t.sizes(),
                  " but the batch has ", batch, " samples (expected [], [1] or [", batch, "])");
    }
  }
  return ts.to(torch::kFloat32);
}

}  // namespace detail

/// Sinusoidal embedding of timesteps t [B] -> [B, dim] (diffusers `get_timestep_embedding`):
///   f_i = exp(-ln(max_period) * i / (dim/2 - freq_shift)),  i = 0 .. dim/2 - 1
///   emb = [sin(t f), cos(t f)]   ([cos, sin] when flip_sin_to_cos), zero-padded if dim is odd.
/// Computed in float32 in the same operation order as diffusers (bit-exact on CPU).
inline torch::Tensor timestep_embedding(const torch::Tensor& t, int64_t dim, bool flip_sin_to_cos,
                                        double freq_shift, double max_period = 10000.0) {
  TORCH_CHECK(dim >= 2, "timestep_embedding: dim must be >= 2, got ", dim);
  const int64_t half = dim / 2;
  TORCH_CHECK(static_cast<double>(half) != freq_shift,
              "timestep_embedding: dim/2 == freq_shift (", freq_shift, ") divides by zero");
  const torch::Tensor ts = detail::broadcast_timesteps(t, -1);
  torch::Tensor exponent =
      torch::arange(0, half, torch::TensorOptions().dtype(torch::kFloat32).device(ts.device())) *
      (-std::log(max_period));
  exponent = exponent / (static_cast<double>(half) - freq_shift);
  const torch::Tensor freqs = torch::exp(exponent);
  const torch::Tensor args = ts.unsqueeze(1) * freqs.unsqueeze(0);
  torch::Tensor emb = flip_sin_to_cos ? torch::cat({torch::cos(args), torch::sin(args)}, -1)
                                      : torch::cat({torch::sin(args), torch::cos(args)}, -1);
  if (dim % 2 == 1) emb = torch::cat({emb, torch::zeros({emb.size(0), 1}, emb.options())}, -1);
  return emb;
}

/// Options of TimeEmbedding. diffusers' UNet2DModel uses channels = block_out_channels[0]
/// and embed_dim = 4 * channels.
struct TimeEmbeddingOptions {
  TimeEmbeddingOptions(int64_t channels, int64_t embed_dim)
      : channels_(channels), embed_dim_(embed_dim) {}
  /// Width of the sinusoidal projection (input of linear_1).
  TORCH_ARG(int64_t, channels);
  /// Width of the embedding (output of linear_1 and linear_2).
  TORCH_ARG(int64_t, embed_dim);
  TORCH_ARG(bool, flip_sin_to_cos) = true;
  TORCH_ARG(double, freq_shift) = 0.0;
  TORCH_ARG(double, max_period) = 10000.0;
};

/// t [B] (or [] / [1], broadcast to `batch`) -> emb [B, embed_dim]:
///   linear_2(SiLU(linear_1(timestep_embedding(t)))).
/// Parameter names match diffusers: linear_1.{weight,bias}, linear_2.{weight,bias}.
class TimeEmbeddingImpl : public torch::nn::Cloneable<TimeEmbeddingImpl> {
 public:
  explicit TimeEmbeddingImpl(TimeEmbeddingOptions opts) : options(std::move(opts)) { reset(); }

  void reset() override {
    TORCH_CHECK(options.channels() >= 2 && options.embed_dim() >= 1,
                "TimeEmbedding: bad sizes channels=", options.channels(),
                " embed_dim=", options.embed_dim());
    linear_1 = register_module(
        "linear_1", torch::nn::Linear(options.channels(), options.embed_dim()));
    linear_2 = register_module(
        "linear_2", torch::nn::Linear(options.embed_dim(), options.embed_dim()));
  }

  /// The parameter-free sinusoidal projection alone: [B] -> [B, channels] float32.
  torch::Tensor time_proj(const torch::Tensor& t, int64_t batch = -1) const {
    return timestep_embedding(detail::broadcast_timesteps(t, batch), options.channels(),
                              options.flip_sin_to_cos(), options.freq_shift(),
                              options.max_period());
  }

  /// The MLP on an already projected embedding: [B, channels] -> [B, embed_dim].
  torch::Tensor mlp(const torch::Tensor& proj) {
    return linear_2(torch::silu(linear_1(proj.to(linear_1->weight.dtype()))));
  }

  /// t -> [B, embed_dim]; `batch` >= 0 broadcasts a [] / [1] timestep to that many rows.
  torch::Tensor forward(const torch::Tensor& t, int64_t batch = -1) {
    return mlp(time_proj(t.to(linear_1->weight.device()), batch));
  }

  TimeEmbeddingOptions options;
  torch::nn::Linear linear_1{nullptr};
  torch::nn::Linear linear_2{nullptr};
};
TORCH_MODULE(TimeEmbedding);

}  // namespace ddpm
