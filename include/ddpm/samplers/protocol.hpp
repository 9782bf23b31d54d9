#pragma once
/// The Sampler protocol: what every sampler (DDPM, DDIM, DPM-Solver++, Euler, ...) offers, as
/// diffusers' schedulers do, so that one loop (sample.hpp, pipeline.hpp) drives all of them:
///
///   sampler.set_timesteps(n);
///   x = noise * sampler.init_noise_sigma();
///   for (double t : sampler.timesteps()) {            // one entry per model call
///     auto in = sampler.scale_model_input(x, t);
///     x = sampler.step(model(in, t), t, x, gen).prev_sample;
///   }
///
/// A type S is a Sampler when it has (checked at compile time by is_sampler_v / DDPM_CHECK_SAMPLER):
///   using Options = ...;                                 options struct (TORCH_ARG style) with
///                                                        nlohmann to_json / from_json in
///                                                        scheduler_config form
///   explicit S(Options);  const Options& options() const;
///   static constexpr const char* kClassName;             diffusers class, e.g. "DDIMScheduler"
///   static const std::vector<const char*>& config_keys(); the scheduler_config keys it reads
///   void set_timesteps(int64_t n);                       throws ddpm::Error unless 0 < n <= T
///   const std::vector<double>& timesteps() const;        model-call timesteps in order (floats for
///                                                        Euler/Heun; Heun repeats entries)
///   torch::Tensor sigmas() const;                        [n+1] sigmas (k-diffusion sense,
///                                                        sqrt((1-abar)/abar)) where the method has
///                                                        them, else an undefined tensor
///   double init_noise_sigma() const;                     std of x_T
///   torch::Tensor scale_model_input(x, double t);        what the model sees at t (x itself for
///                                                        VP samplers; x / sqrt(sigma^2+1) for Euler)
///   SamplerStepOutput step(model_output, double t, x,    one update; stochastic samplers draw their
///       optional<Generator>, optional<Tensor> noise);    noise from the generator (on CPU) unless
///                                                        `noise` supplies it
///   int64_t order() const;                               model calls per step (Heun: 2)
///   int64_t num_inference_steps() const;
///   void reset();                                        forget multistep history / step index
///   const NoiseSchedule& schedule() const;
///   PredictionType prediction_type() const;
#include <ddpm/prediction.hpp>
#include <ddpm/schedule.hpp>

#include <ATen/core/Generator.h>
#include <c10/util/Optional.h>
#include <torch/types.h>

#include <nlohmann/json.hpp>

#include <cstdint>
#include <type_traits>
#include <utility>
#include <vector>

namespace ddpm {

/// Result of one reverse step: x after the step [B, ...] and the x0 estimate used for it [B, ...].
struct SamplerStepOutput {
  torch::Tensor prev_sample;
  torch::Tensor pred_original_sample;
};

namespace detail {
template <class S>
using step_result_t = decltype(std::declval<S&>().step(
    std::declval<const torch::Tensor&>(), double{}, std::declval<const torch::Tensor&>(),
    std::declval<c10::optional<at::Generator>>(), std::declval<c10::optional<torch::Tensor>>()));
template <class S>
using sampler_members_t = std::void_t<
    typename S::Options, decltype(S::kClassName), decltype(S::config_keys()),
    decltype(std::declval<S&>().set_timesteps(int64_t{})),
    decltype(std::declval<const S&>().timesteps()), decltype(std::declval<const S&>().sigmas()),
    decltype(std::declval<const S&>().init_noise_sigma()),
    decltype(std::declval<S&>().scale_model_input(std::declval<const torch::Tensor&>(), double{})),
    step_result_t<S>, decltype(std::declval<const S&>().order()),
    decltype(std::declval<const S&>().num_inference_steps()), decltype(std::declval<S&>().reset()),
    decltype(std::declval<const S&>().schedule()), decltype(std::declval<const S&>().prediction_type()),
    decltype(std::declval<const S&>().options()),
    decltype(nlohmann::json(std::declval<const typename S::Options&>())),
    decltype(std::declval<const nlohmann::json&>().template get<typename S::Options>())>;

template <class S, class = void>
struct has_sampler_members : std::false_type {};
template <class S>
struct has_sampler_members<S, sampler_members_t<S>> : std::true_type {};

template <class S, bool = has_sampler_members<S>::value>
struct sampler_types_ok : std::false_type {};
template <class S>
struct sampler_types_ok<S, true>
    : std::bool_constant<
          std::is_convertible_v<decltype(S::kClassName), const char*> &&
          std::is_same_v<std::decay_t<decltype(S::config_keys())>, std::vector<const char*>> &&
          std::is_same_v<std::decay_t<decltype(std::declval<const S&>().timesteps())>, std::vector<double>> &&
          std::is_same_v<decltype(std::declval<const S&>().sigmas()), torch::Tensor> &&
          std::is_same_v<decltype(std::declval<const S&>().init_noise_sigma()), double> &&
          std::is_same_v<decltype(std::declval<S&>().scale_model_input(std::declval<const torch::Tensor&>(), double{})),
                         torch::Tensor> &&
          std::is_same_v<step_result_t<S>, SamplerStepOutput> &&
          std::is_same_v<decltype(std::declval<const S&>().order()), int64_t> &&
          std::is_same_v<decltype(std::declval<const S&>().num_inference_steps()), int64_t> &&
          std::is_same_v<std::decay_t<decltype(std::declval<const S&>().schedule())>, NoiseSchedule> &&
          std::is_same_v<decltype(std::declval<const S&>().prediction_type()), PredictionType> &&
          std::is_constructible_v<S, typename S::Options>> {};
}  // namespace detail

/// True when S satisfies the Sampler protocol above.
template <class S>
inline constexpr bool is_sampler_v = detail::sampler_types_ok<S>::value;

/// Put after a sampler's definition: fails to compile, naming the type, if it breaks the protocol.
#define DDPM_CHECK_SAMPLER(S) \
  static_assert(::ddpm::is_sampler_v<S>, #S " does not satisfy the Sampler protocol (ddpm/samplers/protocol.hpp)")

}  // namespace ddpm
