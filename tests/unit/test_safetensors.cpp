// safetensors reader/writer: round trips of every dtype, the diffusers fixture files, and one
// malformed file per validation rule (each must raise ddpm::Error naming the file and tensor).
#include <ddpm/io/safetensors.hpp>

#include <catch2/catch.hpp>
#include <torch/torch.h>

#include <unistd.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>

namespace fs = std::filesystem;

#include "fixture_util.hpp"
#include "test_util.hpp"

using ddpm_test::require_error;
using ddpm_test::TempDir;

namespace {

using ddpm_test::fixture;

/// Writes [u64 N][header][data] by hand (no padding unless the header carries it).
void write_raw(const std::string& path, const std::string& header, const std::string& data,
               uint64_t declared_len) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  for (int i = 0; i < 8; ++i) out.put(static_cast<char>((declared_len >> (8 * i)) & 0xff));
  out << header << data;
}
void write_raw(const std::string& path, const std::string& header, const std::string& data) {
  write_raw(path, header, data, header.size());
}


}  // namespace

TEST_CASE("safetensors: round trip of every dtype, metadata and alignment", "[safetensors]") {
  TempDir dir("st_roundtrip");
  torch::manual_seed(0);
  std::map<std::string, torch::Tensor> in;
  in["f32"] = torch::randn({3, 4});
  in["f64"] = torch::randn({2, 5}, torch::kFloat64);
  in["f16"] = torch::randn({7}).to(torch::kFloat16);
  in["bf16"] = torch::randn({2, 3}).to(torch::kBFloat16);
  in["i64"] = torch::arange(-5, 7, torch::kInt64).reshape({3, 4});
  in["i32"] = torch::tensor({-2147483647 - 1, 0, 2147483647}, torch::kInt32);
  in["u8"] = torch::tensor({0, 1, 200, 255}, torch::kInt64).to(torch::kUInt8);
  in["bool"] = torch::tensor({1, 0, 1}, torch::kInt64).to(torch::kBool);
  in["scalar"] = torch::tensor(3.5f);                       // 0-dim
  in["empty"] = torch::zeros({0, 3});                      // zero elements
  in["strided"] = torch::arange(12, torch::kFloat32).reshape({3, 4}).t();  // non-contiguous
  const std::map<std::string, std::string> meta = {{"format", "pt"}, {"note", "x y"}};
  const std::string path = dir.file("all.safetensors");
  ddpm::save_safetensors(path, in, meta);

  // Header length word: 8 + N is a multiple of 8, and N + data fits the file exactly.
  std::ifstream raw(path, std::ios::binary);
  unsigned char len[8];
  raw.read(reinterpret_cast<char*>(len), 8);
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | len[i];
  CHECK((8 + n) % 8 == 0);
  uint64_t data_bytes = 0;
  for (const auto& [k, t] : in) data_bytes += t.numel() * t.element_size();
  CHECK(fs::file_size(path) == 8 + n + data_bytes);
  CHECK_FALSE(fs::exists(path + ".tmp"));

  const auto out = ddpm::load_safetensors_file(path);
  CHECK(out.metadata == meta);
  REQUIRE(out.tensors.size() == in.size());
  for (const auto& [k, t] : in) {
    INFO(k);
    const auto& r = out.tensors.at(k);
    CHECK(r.scalar_type() == t.scalar_type());
    CHECK(r.sizes() == t.sizes());
    CHECK(r.is_contiguous());
    CHECK(torch::equal(r, t));
  }
  // Specific values that must survive bit-exactly.
  CHECK(out.tensors.at("i32")[0].item<int32_t>() == -2147483647 - 1);
  CHECK(out.tensors.at("u8")[3].item<int64_t>() == 255);
  CHECK(out.tensors.at("strided")[0][1].item<float>() == 4.0f);

  // The reference byte layout: an F32 tensor [2] = {1, -2} is 00 00 80 3f 00 00 00 c0.
  const std::string small = dir.file("small.safetensors");
  ddpm::save_safetensors(small, {{"a", torch::tensor({1.0f, -2.0f})}});
  std::ifstream s(small, std::ios::binary);
  std::string bytes((std::istreambuf_iterator<char>(s)), std::istreambuf_iterator<char>());
  REQUIRE(bytes.size() >= 8);
  CHECK(bytes.substr(bytes.size() - 8) == std::string("\x00\x00\x80\x3f\x00\x00\x00\xc0", 8));
  CHECK(bytes.find("{\"a\":{\"data_offsets\":[0,8],\"dtype\":\"F32\",\"shape\":[2]}}") == 8);
}

TEST_CASE("safetensors: reads the diffusers fixtures", "[safetensors]") {
  const auto io = ddpm::load_safetensors_file(fixture("unet_tiny/io.safetensors"));
  REQUIRE(io.tensors.count("sample") == 1);
  CHECK(io.tensors.at("sample").sizes() == torch::IntArrayRef({2, 3, 16, 16}));
  CHECK(io.tensors.at("timestep").scalar_type() == torch::kInt64);
  CHECK(io.tensors.at("timestep_scalar").sizes() == torch::IntArrayRef({1}));
  CHECK(io.metadata.count("expected") == 1);
  // sample is torch.randn: mean ~0, std ~1 over 1536 values (a garbled read would not be).
  const auto sample = io.tensors.at("sample");
  CHECK(std::abs(sample.mean().item<double>()) < 0.15);
  CHECK(std::abs(sample.std().item<double>() - 1.0) < 0.1);

  const auto model = ddpm::load_safetensors(fixture("unet_tiny/model.safetensors"));
  CHECK(model.size() == 144);
  int64_t params = 0;
  for (const auto& [k, t] : model) params += t.numel();
  CHECK(params == 177427);  // fixture_meta.json num_parameters
  CHECK(model.at("conv_out.weight").sizes() == torch::IntArrayRef({3, 16, 3, 3}));
}

TEST_CASE("safetensors: malformed files raise ddpm::Error naming file and tensor",
          "[safetensors]") {
  TempDir dir("st_bad");
  const std::string eight_bytes(8, '\0');

  SECTION("missing file") {
    const auto p = dir.file("nope.safetensors");
    require_error([&] { ddpm::load_safetensors(p); }, {p, "cannot open"});
  }
  SECTION("shorter than the length word") {
    const auto p = dir.file("short.safetensors");
    std::ofstream(p, std::ios::binary) << "abc";
    require_error([&] { ddpm::load_safetensors(p); }, {p, "truncated"});
  }
  SECTION("header length past EOF") {
    const auto p = dir.file("hdr_eof.safetensors");
    write_raw(p, "{}", "", 1000);
    require_error([&] { ddpm::load_safetensors(p); }, {p, "header length 1000"});
  }
  SECTION("bad JSON") {
    const auto p = dir.file("badjson.safetensors");
    write_raw(p, "{\"a\": {\"dtype\": \"F32\",", "");
    require_error([&] { ddpm::load_safetensors(p); }, {p, "not valid JSON"});
  }
  SECTION("header is not an object") {
    const auto p = dir.file("array.safetensors");
    write_raw(p, "[1, 2]", "");
    require_error([&] { ddpm::load_safetensors(p); }, {p, "JSON object"});
  }
  SECTION("overlapping offsets") {
    const auto p = dir.file("overlap.safetensors");
    write_raw(p,
              R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
              R"("b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
              std::string(12, '\0'));
    require_error([&] { ddpm::load_safetensors(p); }, {p, "\"a\"", "\"b\"", "overlap"});
  }
  SECTION("offsets out of bounds") {
    const auto p = dir.file("oob.safetensors");
    write_raw(p, R"({"w":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}})", eight_bytes);
    require_error([&] { ddpm::load_safetensors(p); }, {p, "\"w\"", "past the end"});
  }
  SECTION("file truncated inside the data") {
    const auto good = dir.file("good.safetensors");
    ddpm::save_safetensors(good, {{"weight", torch::ones({64})}});
    const auto size = fs::file_size(good);
    fs::resize_file(good, size - 10);
    require_error([&] { ddpm::load_safetensors(good); }, {good, "\"weight\"", "past the end"});
  }
  SECTION("begin > end") {
    const auto p = dir.file("reversed.safetensors");
    write_raw(p, R"({"w":{"dtype":"U8","shape":[0],"data_offsets":[8,4]}})", eight_bytes);
    require_error([&] { ddpm::load_safetensors(p); }, {p, "\"w\"", "begin > end"});
  }
  SECTION("size does not match dtype x shape") {
    const auto p = dir.file("size.safetensors");
    write_raw(p, R"({"w":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", eight_bytes);
    require_error([&] { ddpm::load_safetensors(p); }, {p, "\"w\"", "needs 12 bytes"});
  }
  SECTION("duplicate names") {
    const auto p = dir.file("dup.safetensors");
    write_raw(p,
              R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
              R"("w":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})",
              eight_bytes);
    require_error([&] { ddpm::load_safetensors(p); }, {p, "duplicate", "\"w\""});
  }
  SECTION("unknown dtype") {
    const auto p = dir.file("dtype.safetensors");
    write_raw(p, R"({"w":{"dtype":"F8_E4M3","shape":[8],"data_offsets":[0,8]}})", eight_bytes);
    require_error([&] { ddpm::load_safetensors(p); }, {p, "\"w\"", "F8_E4M3", "F32"});
  }
  SECTION("negative dimension") {
    const auto p = dir.file("neg.safetensors");
    write_raw(p, R"({"w":{"dtype":"U8","shape":[-8],"data_offsets":[0,8]}})", eight_bytes);
    require_error([&] { ddpm::load_safetensors(p); }, {p, "\"w\"", "bad dimension"});
  }
  SECTION("metadata value not a string") {
    const auto p = dir.file("meta.safetensors");
    write_raw(p, R"({"__metadata__":{"k":1}})", "");
    require_error([&] { ddpm::load_safetensors(p); }, {p, "__metadata__", "\"k\""});
  }
  SECTION("writing a reserved name or unsupported dtype") {
    const auto p = dir.file("w.safetensors");
    require_error([&] { ddpm::save_safetensors(p, {{"__metadata__", torch::ones({1})}}); },
                  {p, "reserved"});
    require_error(
        [&] { ddpm::save_safetensors(p, {{"c", torch::ones({1}, torch::kComplexFloat)}}); },
        {p, "\"c\"", "dtype"});
    CHECK_FALSE(fs::exists(p));
  }
}
