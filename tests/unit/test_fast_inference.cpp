// The fast inference path (UNet::set_fast_inference: pre-packed oneDNN convolutions, channel-major
// attention with fused projections): diffusers' outputs kept within the exact path's tolerances,
// the packed path really taken, weights changed after packing used, every call it does not cover
// (training, autograd, float64) bit-identical to the exact path, and switching off exact.
#include <ddpm/io/diffusers.hpp>
#include <ddpm/io/safetensors.hpp>
#include <ddpm/nn/unet.hpp>
#include <ddpm/pipeline.hpp>

#include <ATen/Context.h>
#include <catch2/catch.hpp>
#include <torch/torch.h>

#include <string>

#include "fixture_util.hpp"

using ddpm_test::max_rel_err;

namespace {

using ddpm_test::fixture;

/// Debian's LibTorch and the PyPI wheels have oneDNN; a build without it runs the exact path.
bool no_onednn() {
  if (at::hasMKLDNN()) return false;
  WARN("this LibTorch has no oneDNN: set_fast_inference keeps the exact path; nothing to test");
  return true;
}

using ddpm_test::load_fixture_unet;

torch::Tensor labels_of(const std::map<std::string, torch::Tensor>& io) {
  return io.count("class_labels") ? io.at("class_labels") : torch::Tensor();
}

/// Every ddpm::Conv2d of the model holds a packed weight, and every attention block is switched on.
void require_all_packed(ddpm::UNet& unet) {
  int convs = 0;
  for (const auto& m : unet->modules(false)) {
    if (auto* conv = m->as<ddpm::Conv2dImpl>()) {
      ++convs;
      CHECK(conv->fast_inference());
      CHECK(conv->has_packed_weight());
    }
    if (auto* attn = m->as<ddpm::AttentionBlockImpl>()) CHECK(attn->fast_inference());
  }
  CHECK(convs > 5);
}

}  // namespace

TEST_CASE("fast inference: one forward keeps diffusers' outputs on every UNet fixture; off is exact", "[unet][fast]") {
  if (no_onednn()) return;
  for (const std::string name : {"unet_tiny", "unet_tiny_cifarstyle", "unet_tiny_cond"}) {
    INFO(name);
    const auto io = ddpm::load_safetensors(fixture(name + "/io.safetensors"));
    const auto& x = io.at("sample");
    const auto& t = io.at("timestep");
    ddpm::UNet unet = load_fixture_unet(name);
    torch::InferenceMode inference;
    const torch::Tensor exact = unet->forward(x, t, labels_of(io));
    CHECK(max_rel_err(exact, io.at("expected")) < 1e-4);

    unet->set_fast_inference(true);
    CHECK(unet->fast_inference());
    const torch::Tensor fast = unet->forward(x, t, labels_of(io));
    require_all_packed(unet);
    INFO("fast vs diffusers " << max_rel_err(fast, io.at("expected")) << ", vs exact " << max_rel_err(fast, exact));
    CHECK(fast.is_contiguous());
    CHECK(max_rel_err(fast, io.at("expected")) < 1e-4);
    CHECK(max_rel_err(fast, exact) < 1e-4);
    // A second call reuses the packed weights and gives the same numbers.
    CHECK(torch::equal(unet->forward(x, t, labels_of(io)), fast));

    unet->set_fast_inference(false);
    for (const auto& m : unet->modules(false)) {
      if (auto* conv = m->as<ddpm::Conv2dImpl>()) CHECK_FALSE(conv->has_packed_weight());
    }
    CHECK(torch::equal(unet->forward(x, t, labels_of(io)), exact));
  }
}

TEST_CASE("fast inference: weights changed after packing are the weights used", "[unet][fast]") {
  if (no_onednn()) return;
  const auto io = ddpm::load_safetensors(fixture("unet_tiny/io.safetensors"));
  const auto& x = io.at("sample");
  const auto& t = io.at("timestep");
  ddpm::UNet unet = load_fixture_unet("unet_tiny");
  ddpm::UNet plain = load_fixture_unet("unet_tiny");
  unet->set_fast_inference(true);
  torch::Tensor before;
  {
    torch::InferenceMode inference;
    before = unet->forward(x, t);
  }
  // An in-place change of every weight (as an optimizer step makes), in both models.
  {
    torch::NoGradGuard no_grad;
    for (auto* m : {&unet, &plain}) {
      int64_t i = 0;
      for (auto& p : (*m)->parameters()) p.mul_(1.0 + 0.05 * static_cast<double>(i++ % 7 - 3));
    }
  }
  torch::InferenceMode inference;
  const torch::Tensor want = plain->forward(x, t);
  const torch::Tensor got = unet->forward(x, t);
  INFO("vs exact " << max_rel_err(got, want) << ", vs before " << max_rel_err(got, before));
  CHECK(max_rel_err(want, before) > 1e-2);
  CHECK(max_rel_err(got, want) < 1e-4);
  // Loading the original weights back (load_unet_state copies into the parameters) is seen too.
  ddpm::load_unet_state(unet, ddpm::load_safetensors(fixture("unet_tiny/model.safetensors")), "unet_tiny");
  CHECK(max_rel_err(unet->forward(x, t), io.at("expected")) < 1e-4);
}

TEST_CASE("fast inference: training, autograd and float64 calls take the exact path bit for bit", "[unet][fast]") {
  const auto io = ddpm::load_safetensors(fixture("unet_tiny/io.safetensors"));
  const auto& x = io.at("sample");
  const auto& t = io.at("timestep");
  ddpm::UNet fast = load_fixture_unet("unet_tiny");
  ddpm::UNet plain = load_fixture_unet("unet_tiny");
  fast->set_fast_inference(true);
  // eval mode with autograd on: the exact path, with a graph.
  const auto g_fast = fast->forward(x, t);
  CHECK(g_fast.requires_grad());
  CHECK(torch::equal(g_fast, plain->forward(x, t)));
  // training mode, even without autograd.
  fast->train();
  plain->train();
  {
    torch::NoGradGuard no_grad;
    CHECK(torch::equal(fast->forward(x, t), plain->forward(x, t)));
  }
  // float64 (oneDNN's path is float32 only).
  fast->eval();
  plain->eval();
  fast->to(torch::kFloat64);
  plain->to(torch::kFloat64);
  torch::InferenceMode inference;
  const auto x64 = x.to(torch::kFloat64);
  CHECK(torch::equal(fast->forward(x64, t), plain->forward(x64, t)));
  for (const auto& m : fast->modules(false)) {
    if (auto* conv = m->as<ddpm::Conv2dImpl>()) CHECK_FALSE(conv->has_packed_weight());
  }
}

TEST_CASE("fast inference: a clone keeps the setting and its own packed weights", "[unet][fast]") {
  if (no_onednn()) return;
  const auto io = ddpm::load_safetensors(fixture("unet_tiny/io.safetensors"));
  ddpm::UNet unet = load_fixture_unet("unet_tiny");
  unet->set_fast_inference(true);
  auto copy = std::dynamic_pointer_cast<ddpm::UNetImpl>(unet->clone());
  REQUIRE(copy != nullptr);
  ddpm::UNet cloned(copy);
  CHECK(cloned->fast_inference());
  torch::InferenceMode inference;
  const auto out = cloned->forward(io.at("sample"), io.at("timestep"));
  require_all_packed(cloned);
  CHECK(max_rel_err(out, io.at("expected")) < 1e-4);
  for (const auto& m : unet->modules(false)) {  // the original packed nothing yet
    if (auto* conv = m->as<ddpm::Conv2dImpl>()) CHECK_FALSE(conv->has_packed_weight());
  }
}

TEST_CASE("fast inference: whole sampling runs stay within 1e-3 of the exact path and of diffusers", "[pipeline][fast][e2e]") {
  if (no_onednn()) return;
  for (const std::string name : {"ddim_tiny", "dpmpp_tiny"}) {
    INFO(name);
    const std::string dir = std::string(DDPM_TEST_DATA_DIR) + "/diffusers/e2e/" + name;
    ddpm::Pipeline pipe = ddpm::Pipeline::from_diffusers(dir);
    const auto latents = ddpm::load_safetensors(dir + "/latents.safetensors").at("latents");
    const auto expected = ddpm::load_safetensors(dir + "/expected.safetensors").at("images").to(torch::kFloat32);
    const auto opts = ddpm::GenerateOptions().num_inference_steps(10).clamp(false).batch_size(1);
    const auto exact = pipe.generate_from(latents, {}, opts);
    pipe.unet()->set_fast_inference(true);
    const auto fast = pipe.generate_from(latents, {}, opts);
    require_all_packed(pipe.unet());
    INFO("max |fast - exact| / max |exact| = " << max_rel_err(fast, exact));
    CHECK(max_rel_err(fast, exact) < 1e-3);
    CHECK(torch::allclose(fast, expected, 1e-3, 1e-3));
    pipe.unet()->set_fast_inference(false);
    CHECK(torch::equal(pipe.generate_from(latents, {}, opts), exact));
  }
}
