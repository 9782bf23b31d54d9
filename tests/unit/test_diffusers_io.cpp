// diffusers UNet2DModel folders: loading the fixture folders, save/load round trips,
// deprecated attention names, and key/shape errors.
#include <ddpm/io/diffusers.hpp>
#include <ddpm/io/safetensors.hpp>

#include <catch2/catch.hpp>
#include <torch/torch.h>

#include <unistd.h>

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


using ddpm_test::max_abs_diff;

}  // namespace

TEST_CASE("diffusers io: fixture folders load and reproduce diffusers", "[diffusers_io]") {
  torch::NoGradGuard no_grad;
  // unet_tiny/ uses model.safetensors; e2e/ddim_tiny/unet/ diffusion_pytorch_model.safetensors
  // (the same weights).
  ddpm::UNet a = ddpm::load_diffusers_unet(fixture("unet_tiny"));
  ddpm::UNet b = ddpm::load_diffusers_unet(fixture("e2e/ddim_tiny/unet"));
  a->eval();
  b->eval();
  const auto io = ddpm::load_safetensors(fixture("unet_tiny/io.safetensors"));
  CHECK(max_abs_diff(a->forward(io.at("sample"), io.at("timestep")), io.at("expected")) < 1e-4);
  CHECK(max_abs_diff(b->forward(io.at("sample"), io.at("timestep")), io.at("expected")) < 1e-4);
  CHECK(b->options.block_out_channels() == std::vector<int64_t>{16, 32});

  ddpm::UNet c = ddpm::load_diffusers_unet(fixture("unet_tiny_cifarstyle"));
  c->eval();
  const auto io2 = ddpm::load_safetensors(fixture("unet_tiny_cifarstyle/io.safetensors"));
  CHECK(max_abs_diff(c->forward(io2.at("sample"), io2.at("timestep")), io2.at("expected")) < 1e-4);
}

TEST_CASE("diffusers io: save then load round-trips bit-exactly", "[diffusers_io]") {
  TempDir dir("diffusers_rt");
  const ddpm::UNet src = ddpm::load_diffusers_unet(fixture("unet_tiny_cifarstyle"));
  const std::string out = dir.file("nested/unet");
  ddpm::save_diffusers_unet(src, out);
  REQUIRE(fs::exists(out + "/config.json"));
  REQUIRE(fs::exists(out + "/diffusion_pytorch_model.safetensors"));

  // config.json is what diffusers wrote for the same model.
  CHECK(ddpm::detail::read_json_file(out + "/config.json") ==
        ddpm::detail::read_json_file(fixture("unet_tiny_cifarstyle/config.json")));
  // The weights file holds diffusers' key set (same names/shapes/values as the fixture).
  const auto saved = ddpm::load_safetensors_file(out + "/diffusion_pytorch_model.safetensors");
  CHECK(saved.metadata.at("format") == "pt");
  const auto ref = ddpm::load_safetensors(fixture("unet_tiny_cifarstyle/model.safetensors"));
  REQUIRE(saved.tensors.size() == ref.size());
  for (const auto& [k, t] : ref) {
    INFO(k);
    REQUIRE(saved.tensors.count(k) == 1);
    CHECK(torch::equal(saved.tensors.at(k), t));
  }

  const ddpm::UNet back = ddpm::load_diffusers_unet(out);
  auto p0 = src->named_parameters();
  auto p1 = back->named_parameters();
  REQUIRE(p0.size() == p1.size());
  for (const auto& item : p0) CHECK(torch::equal(item.value(), p1[item.key()]));

  // A freshly initialised seed model too (different config path through to_json).
  torch::manual_seed(3);
  ddpm::UNet seed(ddpm::UNetOptions::seed().in_channels(1).out_channels(1));
  ddpm::save_diffusers_unet(seed, dir.file("seed"));
  const ddpm::UNet seed_back = ddpm::load_diffusers_unet(dir.file("seed"));
  CHECK(seed_back->options.in_channels() == 1);
  CHECK(seed_back->options.norm_num_groups() == 8);
  auto s0 = seed->named_parameters();
  auto s1 = seed_back->named_parameters();
  for (const auto& item : s0) CHECK(torch::equal(item.value(), s1[item.key()]));
}

TEST_CASE("diffusers io: deprecated attention names are mapped", "[diffusers_io]") {
  const auto state = ddpm::load_safetensors(fixture("unet_tiny/model.safetensors"));
  std::map<std::string, torch::Tensor> old;
  int renamed = 0;
  for (const auto& [k, t] : state) {
    std::string n = k;
    for (const auto& [from, to] : std::vector<std::pair<std::string, std::string>>{
             {".to_q.", ".query."}, {".to_k.", ".key."}, {".to_v.", ".value."}, {".to_out.0.", ".proj_attn."}}) {
      const auto pos = n.find(from);
      if (pos != std::string::npos) {
        n = n.substr(0, pos) + to + n.substr(pos + from.size());
        ++renamed;
      }
    }
    old[n] = t;
  }
  CHECK(renamed == 32);  // 4 attention blocks x 4 linears x (weight, bias)
  CHECK(old.count("mid_block.attentions.0.proj_attn.weight") == 1);
  ddpm::UNet unet(ddpm::load_unet_config(fixture("unet_tiny/config.json")));
  ddpm::load_unet_state(unet, old, "old-names");
  CHECK(torch::equal(unet->named_parameters()["mid_block.attentions.0.to_out.0.weight"],
                     state.at("mid_block.attentions.0.to_out.0.weight")));
  CHECK(torch::equal(unet->named_parameters()["down_blocks.1.attentions.0.to_k.bias"],
                     state.at("down_blocks.1.attentions.0.to_k.bias")));
}

TEST_CASE("diffusers io: missing, extra and misshapen tensors are rejected", "[diffusers_io]") {
  const auto state = ddpm::load_safetensors(fixture("unet_tiny/model.safetensors"));
  ddpm::UNet unet(ddpm::load_unet_config(fixture("unet_tiny/config.json")));

  auto missing = state;
  missing.erase("up_blocks.1.resnets.1.conv_shortcut.bias");
  require_error([&] { ddpm::load_unet_state(unet, missing, "src.safetensors"); },
                {"src.safetensors", "missing", "up_blocks.1.resnets.1.conv_shortcut.bias"});

  auto extra = state;
  extra["class_embedding.weight"] = torch::zeros({10, 64});
  require_error([&] { ddpm::load_unet_state(unet, extra, "src"); },
                {"unexpected", "class_embedding.weight", "[10, 64]"});

  auto wrong = state;
  wrong["conv_in.weight"] = torch::zeros({16, 1, 3, 3});
  require_error([&] { ddpm::load_unet_state(unet, wrong, "src"); },
                {"conv_in.weight", "[16, 1, 3, 3]", "[16, 3, 3, 3]"});

  // The model was left untouched by the failed loads... and a good load still works.
  ddpm::load_unet_state(unet, state, "src");
  CHECK(torch::equal(unet->named_parameters()["conv_in.weight"], state.at("conv_in.weight")));

  // F16 weights are converted to the model's float32.
  auto half = state;
  for (auto& [k, t] : half) t = t.to(torch::kFloat16);
  ddpm::load_unet_state(unet, half, "half");
  CHECK(unet->named_parameters()["conv_out.bias"].scalar_type() == torch::kFloat32);
  CHECK(torch::allclose(unet->named_parameters()["conv_out.bias"], state.at("conv_out.bias"), 0, 1e-3));

  TempDir dir("diffusers_bad");
  require_error([&] { ddpm::load_diffusers_unet(dir.file("absent")); }, {"absent", "does not exist"});
  fs::create_directories(dir.file("noweights"));
  fs::copy_file(fixture("unet_tiny/config.json"), dir.file("noweights/config.json"));
  require_error([&] { ddpm::load_diffusers_unet(dir.file("noweights")); },
                {"noweights", "diffusion_pytorch_model.safetensors"});
  // Weights of another config: first mismatching key is named with both shapes.
  fs::create_directories(dir.file("mismatch"));
  fs::copy_file(fixture("unet_tiny/config.json"), dir.file("mismatch/config.json"));
  fs::copy_file(fixture("unet_tiny_cifarstyle/model.safetensors"),
                dir.file("mismatch/diffusion_pytorch_model.safetensors"));
  require_error([&] { ddpm::load_diffusers_unet(dir.file("mismatch")); },
                {"mismatch/diffusion_pytorch_model.safetensors", "but the model expects"});
}

TEST_CASE("diffusers: pipeline and flat folders are located, bad ones named", "[diffusers]") {
  const auto pipe = ddpm::locate_diffusers_folder(fixture("e2e/ddim_tiny"));
  CHECK(pipe.unet_dir == fixture("e2e/ddim_tiny") + "/unet");
  CHECK(pipe.scheduler_config == fixture("e2e/ddim_tiny") + "/scheduler/scheduler_config.json");

  TempDir dir("diffusers_locate");
  const std::string flat = dir.file("flat");
  fs::create_directories(flat);
  fs::copy_file(fixture("e2e/ddim_tiny/unet/config.json"), flat + "/config.json");
  require_error([&] { ddpm::locate_diffusers_folder(flat); }, {flat, "scheduler_config.json", "missing"});
  fs::copy_file(fixture("e2e/ddim_tiny/scheduler/scheduler_config.json"), flat + "/scheduler_config.json");
  const auto f = ddpm::locate_diffusers_folder(flat);
  CHECK(f.unet_dir == flat);
  CHECK(f.scheduler_config == flat + "/scheduler_config.json");

  require_error([&] { ddpm::locate_diffusers_folder(dir.file("absent")); }, {"absent", "not a folder"});
  fs::create_directories(dir.file("empty"));
  require_error([&] { ddpm::locate_diffusers_folder(dir.file("empty")); },
                {"empty", "neither a diffusers pipeline folder"});
  fs::create_directories(dir.file("pipe/scheduler"));
  std::ofstream(dir.file("pipe/model_index.json")) << "{}";
  require_error([&] { ddpm::locate_diffusers_folder(dir.file("pipe")); }, {"pipe", "no unet/"});
}
