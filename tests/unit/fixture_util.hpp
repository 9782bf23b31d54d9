#pragma once
/// Test helpers for the diffusers fixtures in tests/data/diffusers (see its README.md).
#include <ddpm/detail/json_util.hpp>
#include <ddpm/io/diffusers.hpp>
#include <ddpm/io/safetensors.hpp>
#include <ddpm/nn/unet.hpp>

#include <torch/torch.h>

#include <nlohmann/json.hpp>

#include <cstdint>
#include <cstring>
#include <map>
#include <stdexcept>
#include <string>
#include <vector>

namespace ddpm_test {

/// Path of a file under tests/data/diffusers.
inline std::string diffusers_fixture_path(const std::string& name) {
  return std::string(DDPM_TEST_DATA_DIR) + "/diffusers/" + name;
}

/// Short name of diffusers_fixture_path, for the test files' `using ddpm_test::fixture;`.
inline std::string fixture(const std::string& name) { return diffusers_fixture_path(name); }

/// The UNet of fixture `name` (its config.json and model.safetensors), in eval mode.
inline ddpm::UNet load_fixture_unet(const std::string& name) {
  ddpm::UNet unet(ddpm::load_unet_config(fixture(name + "/config.json")));
  ddpm::load_unet_state(unet, ddpm::load_safetensors(fixture(name + "/model.safetensors")), name);
  unet->eval();
  return unet;
}

/// max |a - b|, computed in float64. a and b must have the same shape.
inline double max_abs_diff(const torch::Tensor& a, const torch::Tensor& b) {
  TORCH_CHECK(a.sizes() == b.sizes(), "max_abs_diff: shapes ", a.sizes(), " and ", b.sizes(), " differ");
  return (a.to(torch::kFloat64) - b.to(torch::kFloat64)).abs().max().item<double>();
}

/// Parses tests/data/diffusers/<name> (cached per name: the files are read-only).
inline const nlohmann::json& diffusers_fixture(const std::string& name) {
  static std::map<std::string, nlohmann::json> cache;
  auto it = cache.find(name);
  if (it == cache.end()) {
    it = cache.emplace(name, ddpm::detail::read_json_file(diffusers_fixture_path(name))).first;
  }
  return it->second;
}

/// {shape, dtype, data} -> tensor. float32 data (written with %.9g) is parsed as double and
/// cast to float32, which reproduces the exact float32 bits; int64 stays int64.
inline torch::Tensor tensor_from_json(const nlohmann::json& j) {
  std::vector<int64_t> shape = j.at("shape").get<std::vector<int64_t>>();
  const std::string dtype = j.at("dtype").get<std::string>();
  const auto& data = j.at("data");
  if (dtype == "int64") {
    std::vector<int64_t> v = data.get<std::vector<int64_t>>();
    return torch::tensor(v, torch::kInt64).reshape(shape);
  }
  std::vector<double> v = data.get<std::vector<double>>();
  auto t = torch::tensor(v, torch::kFloat64).reshape(shape);
  if (dtype == "float32") return t.to(torch::kFloat32);
  if (dtype == "float64") return t;
  throw std::runtime_error("tensor_from_json: unsupported dtype " + dtype);
}

/// A JSON list of numbers -> float32 1-D tensor (parse as double, cast to float32).
inline torch::Tensor float32_list(const nlohmann::json& j) {
  return torch::tensor(j.get<std::vector<double>>(), torch::kFloat64).to(torch::kFloat32);
}

/// Number of entries whose float32 bit patterns differ.
inline int64_t count_bit_mismatches(const torch::Tensor& a, const torch::Tensor& b) {
  auto x = a.to(torch::kFloat32).contiguous();
  auto y = b.to(torch::kFloat32).contiguous();
  if (x.numel() != y.numel()) return -1;
  int64_t bad = 0;
  const float* px = x.data_ptr<float>();
  const float* py = y.data_ptr<float>();
  for (int64_t i = 0; i < x.numel(); ++i) {
    uint32_t bx, by;
    std::memcpy(&bx, px + i, 4);
    std::memcpy(&by, py + i, 4);
    if (bx != by) ++bad;
  }
  return bad;
}

/// max |a - b| / max(max |b|, floor): a relative error against the expected tensor's scale.
inline double max_rel_err(const torch::Tensor& actual, const torch::Tensor& expected,
                          double floor = 1e-12) {
  auto a = actual.to(torch::kFloat64).cpu();
  auto e = expected.to(torch::kFloat64).cpu();
  if (a.sizes() != e.sizes()) return 1e300;
  const double scale = std::max(e.abs().max().item<double>(), floor);
  return (a - e).abs().max().item<double>() / scale;
}

/// max over elements of |a - b| / max(|b|, floor): elementwise relative error.
inline double max_elementwise_rel_err(const torch::Tensor& actual, const torch::Tensor& expected,
                                      double floor) {
  auto a = actual.to(torch::kFloat64).cpu();
  auto e = expected.to(torch::kFloat64).cpu();
  if (a.sizes() != e.sizes()) return 1e300;
  return ((a - e).abs() / e.abs().clamp_min(floor)).max().item<double>();
}


/// A CPU generator seeded with `seed`.
inline torch::Generator cpu_gen(uint64_t seed) { return at::detail::createCPUGenerator(seed); }

/// Independent float64 abar_t = prod_{i<=t} (1 - beta_i) of the default linear schedule
/// (T = 1000, betas 1e-4 .. 0.02), computed directly, not through NoiseSchedule.
inline double abar64(int64_t t) {
  double p = 1.0;
  for (int64_t i = 0; i <= t; ++i) p *= 1.0 - (1e-4 + (0.02 - 1e-4) * i / 999.0);
  return p;
}

}  // namespace ddpm_test
