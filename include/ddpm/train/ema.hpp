#pragma once
/// Exponential moving average (EMA) of a model's weights, the model DDPM samples
/// from (Ho et al. 2020 use decay 0.9999).
///
/// Update n (n = 0, 1, ...):  shadow <- d_n * shadow + (1 - d_n) * param, with
///   d_n = min(decay, (1 + n) / (10 + n))   when warmup is on (diffusers' EMAModel
///   default warmup; the first updates follow the model closely),
///   d_n = decay                            otherwise.
/// Buffers (e.g. running statistics) are copied, not averaged.
#include <ddpm/detail/json_util.hpp>

#include <torch/arg.h>
#include <torch/nn/module.h>
#include <torch/serialize/archive.h>
#include <torch/types.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstdint>
#include <memory>

namespace ddpm {

/// Options of EMA.
struct EMAOptions {
  /// Target decay (0.9999 in DDPM).
  TORCH_ARG(double, decay) = 0.9999;
  /// Use d_n = min(decay, (1 + n) / (10 + n)).
  TORCH_ARG(bool, warmup) = true;
};

/// EMA of a module held by a torch ModuleHolder type `M` (e.g. ddpm::UNet): the
/// shadow copy is made with clone(), so it has the same type and device.
template <class M>
class EMA {
 public:
  EMA(const M& model, EMAOptions opts = {})
      : shadow_(std::dynamic_pointer_cast<typename M::ContainedType>(model->clone())), opts_(opts) {
    TORCH_CHECK(opts_.decay() >= 0.0 && opts_.decay() <= 1.0, "EMA: decay must be in [0, 1], got ",
                opts_.decay());
    for (auto& p : shadow_->parameters()) p.set_requires_grad(false);
    shadow_->eval();
  }

  /// The decay the next update() will use.
  double current_decay() const {
    if (!opts_.warmup()) return opts_.decay();
    const double n = static_cast<double>(num_updates_);
    return std::min(opts_.decay(), (1.0 + n) / (10.0 + n));
  }

  /// shadow <- d * shadow + (1 - d) * model (parameters), buffers copied.
  void update(const M& model) {
    torch::NoGradGuard no_grad;
    const double d = current_decay();
    auto src = model->named_parameters(true);
    auto dst = shadow_->named_parameters(true);
    TORCH_CHECK(src.size() == dst.size(), "EMA::update: model has ", src.size(),
                " parameters, the EMA copy ", dst.size());
    for (const auto& item : src) {
      auto* t = dst.find(item.key());
      TORCH_CHECK(t != nullptr, "EMA::update: parameter '", item.key(), "' missing from the EMA copy");
      t->mul_(d).add_(item.value().detach().to(t->dtype()), 1.0 - d);
    }
    auto sbuf = model->named_buffers(true);
    auto dbuf = shadow_->named_buffers(true);
    for (const auto& item : sbuf) {
      if (auto* t = dbuf.find(item.key())) t->copy_(item.value());
    }
    ++num_updates_;
  }

  /// Copies the model's weights into the shadow and resets the update count.
  void reset_to(const M& model) {
    torch::NoGradGuard no_grad;
    auto dst = shadow_->named_parameters(true);
    for (const auto& item : model->named_parameters(true)) dst[item.key()].copy_(item.value());
    auto dbuf = shadow_->named_buffers(true);
    for (const auto& item : model->named_buffers(true)) dbuf[item.key()].copy_(item.value());
    num_updates_ = 0;
  }

  /// The averaged model (eval mode, no gradients).
  M& model() { return shadow_; }
  const M& model() const { return shadow_; }
  int64_t num_updates() const { return num_updates_; }
  const EMAOptions& options() const { return opts_; }

  /// Stores the shadow weights and the update count under `archive`.
  void save(torch::serialize::OutputArchive& archive) const {
    torch::serialize::OutputArchive weights;
    shadow_->save(weights);
    archive.write("weights", weights);
    archive.write("num_updates", torch::tensor(num_updates_, torch::kInt64));
  }
  /// Restores what save() stored.
  void load(torch::serialize::InputArchive& archive) {
    torch::serialize::InputArchive weights;
    archive.read("weights", weights);
    shadow_->load(weights);
    torch::Tensor n;
    archive.read("num_updates", n);
    num_updates_ = n.item<int64_t>();
    for (auto& p : shadow_->parameters()) p.set_requires_grad(false);
  }

 private:
  M shadow_;
  EMAOptions opts_;
  int64_t num_updates_ = 0;
};

/// JSON: {"decay": 0.9999, "warmup": true}; unknown keys are rejected.
inline void to_json(nlohmann::json& j, const EMAOptions& o) {
  j = nlohmann::json{{"decay", o.decay()}, {"warmup", o.warmup()}};
}
inline void from_json(const nlohmann::json& j, EMAOptions& o) {
  detail::check_known_keys(j, {"decay", "warmup"}, "EMA options");
  double decay = o.decay();
  bool warmup = o.warmup();
  detail::get_optional(j, "decay", decay, "EMA options");
  detail::get_optional(j, "warmup", warmup, "EMA options");
  o.decay(decay).warmup(warmup);
}

}  // namespace ddpm
