// train_cifar10: trains a DDPM UNet on CIFAR-10, Fashion-MNIST or MNIST.
//
//   train_cifar10 --config examples/configs/fashion_mnist.json --out runs/fashion
//   train_cifar10 --data ~/data/cifar-10-batches-bin --model ddpm-cifar10 --out runs/cifar
//
// Rerunning with the same --out resumes from the newest checkpoint there. Every
// key of the JSON config is described in docs/training.md; flags override it.
//
// Data-parallel on N processes (docs/distributed.md): launch with
//   torchrun --no-python --nproc_per_node=N ./train_cifar10 ...
// or set RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT by hand. --batch-size
// is per process (global batch = N x batch size); only rank 0 prints progress and
// the summary and writes files.
//
// Exit status: 0 done (also after a time limit or SIGINT/SIGTERM, with a checkpoint
// saved), 1 training failure (e.g. NaN loss, a lost peer), 2 bad flags, paths,
// config, data or distributed environment, 3 a file that cannot be written (disk full,
// permissions; earlier checkpoints are kept).
#include <ddpm/distributed.hpp>
#include <ddpm/runtime.hpp>
#include <ddpm/train/trainer.hpp>

#include <CLI/CLI.hpp>

#include "cli_checks.hpp"
#include "config_flags.hpp"

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <string>

namespace {

// "" in a single process, " (rank R/N)" when data-parallel: errors come from every rank.
std::string g_rank_tag;

int fail(const std::string& msg, int code = 2) {
  std::fprintf(stderr, "train_cifar10%s: error: %s\n", g_rank_tag.c_str(), msg.c_str());
  return code;
}

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

}  // namespace

int main(int argc, char** argv) {
  // OpenMP must not spin against OpenBLAS (20x slower on small machines): see runtime.hpp.
  ddpm::reexec_with_env(argv, ddpm::recommended_cpu_env());
  CLI::App app{
      "Train a denoising diffusion model (DDPM, Ho et al. 2020) on CIFAR-10, Fashion-MNIST or MNIST.\n"
      "Writes config.json, metrics.jsonl, loss.png, samples/step-N.png and checkpoints to --out;\n"
      "rerunning with the same --out resumes. Without --data, Debian's Fashion-MNIST\n"
      "(/usr/share/datasets/fashion-mnist) is used. Config keys: docs/training.md.",
      "train_cifar10"};
  std::string config_path, prediction;
  double dist_timeout = 60;
  std::string dist_backend = "auto";

  app.add_option("--config", config_path, "JSON training config (every key: docs/training.md); flags override it")
      ->check(CLI::ExistingFile);
  // One flag per TrainConfig key (train/config.hpp lists them), e.g. --data, --steps, --lr.
  ddpm_examples::ConfigFlags<ddpm::TrainConfig> flags;
  flags.add_to(app);
  app.add_option("--prediction-type", prediction, "what the model predicts (objective.prediction_type)")
      ->check(CLI::IsMember({"epsilon", "sample", "v_prediction"}));
  app.add_option("--dist-timeout", dist_timeout,
                 "multi-process runs: seconds to wait for the store, the other ranks and each collective "
                 "before failing (default 60)")
      ->check(CLI::Range(0.001, 86400.0));
  app.add_option("--dist-backend", dist_backend,
                 "multi-process runs: auto (NCCL on CUDA when compiled in, else Gloo), gloo or nccl")
      ->check(CLI::IsMember({"auto", "gloo", "nccl"}));

  if (const int rc = ddpm_examples::parse_args(app, argc, argv); rc >= 0) return rc;

  // The torchrun environment (RANK, WORLD_SIZE, ...): checked before anything else.
  c10::optional<ddpm::DistributedEnv> dist_env;
  try {
    dist_env = ddpm::distributed_env_from_environment();
  } catch (const ddpm::Error& e) {
    return fail(e.what());
  }
  const bool is_main = !dist_env || dist_env->rank == 0;
  if (dist_env) {
    g_rank_tag = " (rank " + std::to_string(dist_env->rank) + "/" + std::to_string(dist_env->world_size) + ")";
  }

  ddpm::TrainConfig cfg;
  try {
    nlohmann::json base = nlohmann::json::object();
    const nlohmann::json overrides = flags.overrides();
    const std::string out_flag = overrides.value("out_dir", std::string());
    if (!config_path.empty()) {
      base = ddpm::detail::read_json_file(config_path);
    } else if (!out_flag.empty() && std::filesystem::exists(out_flag + "/config.json")) {
      base = ddpm::detail::read_json_file(out_flag + "/config.json");
      if (is_main) {
        std::fprintf(stderr, "train_cifar10: using the saved config %s/config.json (resuming)\n", out_flag.c_str());
      }
    }
    if (!base.is_object()) return fail("config '" + config_path + "' must be a JSON object");
    base.update(overrides);  // flags override the file
    if (app.count("--prediction-type")) {
      if (!base.contains("objective") || !base["objective"].is_object()) base["objective"] = nlohmann::json::object();
      base["objective"]["prediction_type"] = prediction;
    }
    if (const std::string* model = flags.given("model")) {
      if (ends_with(*model, ".json") && !std::filesystem::exists(*model)) {
        return fail("--model: UNet config file '" + *model + "' does not exist");
      }
    }
    cfg = base.get<ddpm::TrainConfig>();
  } catch (const ddpm::Error& e) {
    return fail(std::string(e.what()) + (config_path.empty() ? "" : " (config: " + config_path + ")"));
  } catch (const nlohmann::json::exception& e) {
    return fail(std::string("bad config: ") + e.what());
  }

  if (!std::filesystem::exists(cfg.data_dir)) {
    std::string msg = "data path '" + cfg.data_dir + "' does not exist.";
    for (const auto& name : ddpm::dataset_registry().names()) {
      const auto& d = ddpm::dataset_registry().get(name);
      if ((cfg.dataset == "auto" || ddpm::dataset_registry().find(cfg.dataset) == &d) && !d.hint.empty()) {
        msg += " " + d.name + ": " + d.hint + ".";
      }
    }
    if (cfg.data_dir == ddpm::kDefaultDataDir) {
      msg += " The default data is Fashion-MNIST from Debian: apt install dataset-fashion-mnist.";
    }
    return fail(msg);
  }

  // Join the process group (after the config is known to be good, so that a bad flag
  // fails at once on every rank instead of leaving the others waiting for it).
  c10::optional<ddpm::Distributed> dist;
  ddpm::TrainerHooks hooks;
  if (dist_env) {
    ddpm::DistributedOptions dopt;
    dopt.timeout = std::chrono::milliseconds(static_cast<int64_t>(dist_timeout * 1000.0 + 0.5));
    dopt.backend = nlohmann::json(dist_backend).get<ddpm::DistributedBackend>();
    try {
      dist.emplace(*dist_env, dopt);
    } catch (const ddpm::Error& e) {
      return fail(e.what(), 1);
    }
    hooks = dist->hooks<ddpm::TrainerHooks>();
  }

  try {
    ddpm::Trainer trainer(cfg, hooks);
    if (!is_main) trainer.set_show_progress(false);
    const auto res = trainer.run();
    const std::string out_dir = trainer.config().out_dir;
    if (res.status == ddpm::RunStatus::NonFiniteLoss) return fail(res.message, 1);
    if (!is_main) return 0;  // the summary, like every file, comes from rank 0
    switch (res.status) {
      case ddpm::RunStatus::NonFiniteLoss:
        return fail(res.message, 1);
      case ddpm::RunStatus::Interrupted:
        std::fprintf(stderr,
                     "train_cifar10: %s at step %lld; checkpoint saved to %s. Rerun the same command to resume.\n",
                     res.message.c_str(), static_cast<long long>(res.step), res.checkpoint.c_str());
        return 0;
      case ddpm::RunStatus::TimeLimit:
        std::fprintf(stderr, "train_cifar10: %s at step %lld of %lld; rerun the same command to continue.\n",
                     res.message.c_str(), static_cast<long long>(res.step),
                     static_cast<long long>(trainer.config().steps));
        break;
      case ddpm::RunStatus::Completed:
        std::fprintf(stderr, "train_cifar10: %s\n", res.message.c_str());
        break;
    }
    if (!res.sample_grid.empty()) std::fprintf(stderr, "  samples:    %s\n", res.sample_grid.c_str());
    std::fprintf(stderr, "  loss curve: %s/loss.png\n  metrics:    %s/metrics.jsonl\n", out_dir.c_str(),
                 out_dir.c_str());
    if (!res.checkpoint.empty()) {
      std::fprintf(stderr, "  checkpoint: %s\n  sample more: sample --checkpoint %s --out more.png\n",
                   res.checkpoint.c_str(), res.checkpoint.c_str());
    }
    if (trainer.best_eval_step() >= 0) {
      std::fprintf(stderr, "  best:       %s/best.pt (step %lld, FD %.4g; eval curve %s/eval.png)\n", out_dir.c_str(),
                   static_cast<long long>(trainer.best_eval_step()), trainer.best_eval_distance(), out_dir.c_str());
    }
    return 0;
  } catch (const ddpm::IoError& e) {
    return fail(e.what(), 3);
  } catch (const ddpm::Error& e) {
    return fail(e.what());
  } catch (const c10::Error& e) {
    return fail(e.what_without_backtrace(), 1);
  } catch (const std::exception& e) {
    return fail(e.what(), 1);
  }
}
