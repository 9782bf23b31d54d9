// Writes the seed of fuzz_checkpoint: the archive of a complete ddpm training checkpoint of a tiny
// UNet (the records load_training_checkpoint reads), without the DDPMCKPT header (the harness adds
// it). Usage: make_checkpoint_seed OUT_FILE
#include <ddpm/train/checkpoint.hpp>

#include <cstdio>
#include <fstream>
#include <iterator>
#include <vector>

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: make_checkpoint_seed OUT_FILE\n");
    return 2;
  }
  const nlohmann::json unet = {{"sample_size", 8},          {"in_channels", 1},
                               {"out_channels", 1},         {"block_out_channels", {4, 8}},
                               {"layers_per_block", 1},     {"norm_num_groups", 2},
                               {"attention_head_dim", 4},   {"num_class_embeds", 3},
                               {"down_block_types", {"DownBlock2D", "AttnDownBlock2D"}},
                               {"up_block_types", {"AttnUpBlock2D", "UpBlock2D"}}};
  const ddpm::UNetOptions o = ddpm::unet_options_from_json(unet, "seed UNet");
  ddpm::UNet net(o);
  torch::serialize::OutputArchive a, ema, weights;
  net->save(weights);
  ema.write("weights", weights);
  a.write("ema", ema);
  a.write("step", torch::tensor(int64_t{7}), true);
  ddpm::archive_write_string(a, "config", nlohmann::json{{"model", unet}, {"num_classes", 2}}.dump());
  ddpm::archive_write_string(a, "unet_config", nlohmann::json(o).dump());
  ddpm::archive_write_string(a, "scheduler_config",
                             nlohmann::json{{"_class_name", "DDPMScheduler"}, {"num_train_timesteps", 10}}.dump());
  ddpm::archive_write_string(a, "class_names", nlohmann::json{"cat", "dog"}.dump());
  {
    std::ofstream out(argv[1], std::ios::binary);
    a.save_to(out);
    if (!out) return 1;
  }
  // The seed must be a checkpoint the loader accepts, or the fuzzer starts from a rejected input.
  const std::string file = std::string(argv[1]) + ".pt";
  {
    std::ifstream in(argv[1], std::ios::binary);
    const std::vector<uint8_t> payload((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    std::vector<uint8_t> bytes(ddpm::detail::kCheckpointMagic, ddpm::detail::kCheckpointMagic + 8);
    ddpm::detail::put_le(bytes, ddpm::detail::kCheckpointVersion, 4);
    ddpm::detail::put_le(bytes, payload.size(), 8);
    ddpm::detail::put_le(bytes, ddpm::detail::crc32_of(payload.data(), payload.size()), 4);
    bytes.insert(bytes.end(), payload.begin(), payload.end());
    std::ofstream(file, std::ios::binary).write(reinterpret_cast<const char*>(bytes.data()),
                                                static_cast<std::streamsize>(bytes.size()));
  }
  const auto loaded = ddpm::load_training_checkpoint(file);
  std::remove(file.c_str());
  std::printf("make_checkpoint_seed: %s loads (step %lld, %zu class names)\n", argv[1],
              static_cast<long long>(loaded.step), loaded.class_names.size());
  return 0;
}
