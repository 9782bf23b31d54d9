#pragma once
/// Helpers shared by the trainer tests (test_train_*.cpp, test_guidance.cpp,
/// test_data_folder.cpp): a tiny training config, a quiet Trainer, the logged losses. Apart from
/// test_util.hpp so that the other test files do not compile the training headers.
#include <ddpm/train/config.hpp>
#include <ddpm/train/trainer.hpp>

#include <nlohmann/json.hpp>

#include <cstdint>
#include <fstream>
#include <string>
#include <utility>
#include <vector>

namespace ddpm_test {

/// A CPU training config for `image_size` images and a two-level UNet without attention
/// (block_out_channels {channels, 2 channels}, channels / 2 norm groups) writing to `out`: no
/// periodic sample grids or checkpoints (only the final ones), one thread. Each test sets its
/// batch size, steps, seed and the rest.
inline ddpm::TrainConfig tiny_train_config(const std::string& out, int64_t image_size, int64_t channels = 16) {
  ddpm::TrainConfig c;
  c.image_size = image_size;
  c.model = {{"block_out_channels", {channels, 2 * channels}},
             {"down_block_types", {"DownBlock2D", "DownBlock2D"}},
             {"up_block_types", {"UpBlock2D", "UpBlock2D"}},
             {"layers_per_block", 1},
             {"norm_num_groups", channels / 2},
             {"add_attention", false}};
  c.num_threads = 1;
  c.out_dir = out;
  c.sample_every = 0;
  c.checkpoint_every = 0;
  c.device = ddpm::DeviceKind::Cpu;
  return c;
}

/// A Trainer that draws no progress bar and logs nothing (unless given a log).
struct QuietTrainer : ddpm::Trainer {
  QuietTrainer(ddpm::TrainConfig c, ddpm::ImageData d, ddpm::TrainerHooks h = {},
               ddpm::Trainer::Log l = [](const std::string&) {})
      : ddpm::Trainer(std::move(c), std::move(d), std::move(h), std::move(l)) {
    set_show_progress(false);
  }
};

/// The "loss" of every metrics.jsonl line of run directory `dir` (eval lines are skipped).
inline std::vector<double> metric_losses(const std::string& dir) {
  std::ifstream in(dir + "/metrics.jsonl");
  std::vector<double> out;
  std::string line;
  while (std::getline(in, line)) {
    const auto j = nlohmann::json::parse(line);
    if (j.contains("loss")) out.push_back(j.at("loss").get<double>());
  }
  return out;
}

}  // namespace ddpm_test
