// FID Inception-v3 against pytorch-fid 0.3.0 with formula weights (tools/fixtures/eval_inception.py):
// same tensor names and shapes as pytorch-fid's weight file, features within 1e-4 relative.
#include <ddpm/eval/inception.hpp>
#include <ddpm/eval/module_state.hpp>
#include <ddpm/io/safetensors.hpp>

#include "test_util.hpp"

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include <cmath>

namespace {

const ddpm::SafetensorsFile& inception_fixture() {
  static const auto f = ddpm::load_safetensors_file(std::string(DDPM_TEST_DATA_DIR) + "/eval/inception.safetensors");
  return f;
}

/// The fixture's formula: u(t, k) = 2 * (splitmix64((t << 32) + k) >> 11) * 2^-53 - 1.
torch::Tensor formula_tensor(const std::string& name, uint64_t t, torch::IntArrayRef shape) {
  const int64_t n = c10::multiply_integers(shape);
  double a = 0, b = 0;
  auto ends = [&](const char* s) { return ddpm::detail::has_suffix(name, s); };
  if (ends("conv.weight")) {
    a = 0;
    b = std::sqrt(3.0) * std::sqrt(2.0 / static_cast<double>(n / shape[0]));
  } else if (ends("bn.weight")) {
    a = 1.0, b = 0.2;
  } else if (ends("bn.bias") || ends("bn.running_mean")) {
    a = 0.0, b = 0.1;
  } else if (ends("bn.running_var")) {
    a = 1.5, b = 0.5;
  } else {
    FAIL("unexpected tensor " << name);
  }
  torch::Tensor out = torch::empty(shape, torch::kFloat32);
  float* p = out.data_ptr<float>();
  for (int64_t k = 0; k < n; ++k) {
    uint64_t z = (t << 32) + static_cast<uint64_t>(k) + 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z = z ^ (z >> 31);
    const double u = static_cast<double>(z >> 11) * std::ldexp(1.0, -53) * 2.0 - 1.0;
    p[k] = static_cast<float>(a + b * u);
  }
  return out;
}

}  // namespace

TEST_CASE("eval: FID Inception matches pytorch-fid's names, shapes and features", "[eval][inception]") {
  const auto& fix = inception_fixture();
  const auto names = nlohmann::json::parse(fix.metadata.at("tensors"));
  ddpm::FidInception net;
  const auto own = ddpm::detail::module_tensors(*net);
  // The same set of tensors (pytorch-fid's keys, minus fc.* and num_batches_tracked).
  REQUIRE(own.size() == names.size());
  for (const auto& [name, t] : own) {
    INFO(name);
    REQUIRE(names.contains(name));
    CHECK(t.sizes().vec() == names.at(name).get<std::vector<int64_t>>());
  }
  // Formula weights, written and read back through the weight-file path (with an fc head and
  // num_batches_tracked as in pytorch-fid's file, both ignored).
  std::map<std::string, torch::Tensor> state;
  uint64_t t = 0;
  for (auto it = names.begin(); it != names.end(); ++it, ++t) {  // nlohmann keeps keys sorted
    state[it.key()] = formula_tensor(it.key(), t, it.value().get<std::vector<int64_t>>());
  }
  state["fc.weight"] = torch::zeros({1008, 2048});
  state["fc.bias"] = torch::zeros({1008});
  state["Conv2d_1a_3x3.bn.num_batches_tracked"] = torch::zeros({}, torch::kInt64);
  ddpm_test::TempDir dir("inception");
  const std::string path = (dir.path / "w.safetensors").string();
  ddpm::save_safetensors(path, state);
  net = ddpm::load_fid_inception(path);

  torch::NoGradGuard no_grad;
  std::vector<torch::Tensor> all;
  for (const std::string key : {"rgb40", "rgb64x48", "ramp32", "gray28"}) {
    const torch::Tensor x = fix.tensors.at(key + ".input");
    const torch::Tensor want = fix.tensors.at(key + ".features");
    const torch::Tensor got = net->forward(x);
    REQUIRE(got.sizes() == want.sizes());
    const double rel = ((got - want).abs().max() / want.abs().max()).item<double>();
    INFO(key << ": max relative difference " << rel);
    CHECK(rel < 1e-4);
    all.push_back(want);
  }
  // The check has power: different inputs differ by far more than the tolerance.
  const torch::Tensor a = all[0][0], b = all[0][1], c = all[2][0];
  CHECK(((a - b).abs().max() / a.abs().max()).item<double>() > 5e-3);
  CHECK(((a - c).abs().max() / a.abs().max()).item<double>() > 5e-3);
}

TEST_CASE("eval: FID Inception weight-file errors say what to do", "[eval][inception]") {
  ddpm_test::TempDir dir("inception_err");
  const std::string missing = (dir.path / "nope.safetensors").string();
  CHECK_THROWS_WITH(ddpm::load_fid_inception(missing),
                    Catch::Contains("nope.safetensors") && Catch::Contains("pt_inception-2015-12-05-6726825d.pth") &&
                        Catch::Contains("convert_fid_inception.py"));
  const std::string partial = (dir.path / "partial.safetensors").string();
  ddpm::save_safetensors(partial, {{"Conv2d_1a_3x3.conv.weight", torch::zeros({32, 3, 3, 3})}});
  CHECK_THROWS_WITH(ddpm::load_fid_inception(partial), Catch::Contains("missing tensor(s)"));
  ddpm::FidInception net;
  CHECK_THROWS_WITH(net->forward(torch::zeros({1, 2, 8, 8})), Catch::Contains("[B, 3, H, W]"));
}
