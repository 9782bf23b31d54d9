// Trains ddpm's compact feature classifier (<ddpm/eval/classifier.hpp>) on Fashion-MNIST (or
// MNIST), reports its test accuracy, and writes the weights plus the reference statistics of the
// test split — the files committed under share/ddpm/eval/ that `evaluate` uses for FD-fmnist.
//
//   train_classifier [--data-dir /usr/share/datasets/fashion-mnist] [--dataset fashion-mnist]
//                    [--epochs 4] [--out share/ddpm/eval/fmnist_classifier.safetensors]
//                    [--stats-out share/ddpm/eval/fashion-mnist-test.fmnist-classifier.safetensors]
#include <ddpm/data/idx.hpp>
#include <ddpm/data/transforms.hpp>
#include <ddpm/eval/classifier.hpp>
#include <ddpm/eval/evaluate.hpp>
#include <ddpm/runtime.hpp>

#include "cli_checks.hpp"

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Parallel.h>
#include <torch/optim/adam.h>
#include <torch/optim/schedulers/step_lr.h>

#include <chrono>
#include <cstdio>
#include <iostream>

int main(int argc, char** argv) {
  // OpenMP must not spin against OpenBLAS on small machines (see runtime.hpp).
  ddpm::reexec_with_env(argv, ddpm::recommended_cpu_env());
  std::string data_dir = "/usr/share/datasets/fashion-mnist", dataset = "fashion-mnist";
  std::string out = "fmnist_classifier.safetensors", stats_out;
  int64_t epochs = 4, batch_size = 128, seed = 0, threads = 0, width = 16, feature_dim = 128, stats_rows = 2000;
  double lr = 2e-3;
  bool no_flip = false;
  CLI::App app{"Train ddpm's feature classifier on Fashion-MNIST / MNIST and write its weights and test-split statistics"};
  app.add_option("--data-dir", data_dir, "directory with {train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]");
  app.add_option("--dataset", dataset, "dataset name stored in the weights (fashion-mnist, mnist)");
  app.add_option("--epochs", epochs, "training epochs (default 4)")->check(ddpm_examples::positive);
  app.add_option("--batch-size", batch_size, "batch size (default 128)")->check(ddpm_examples::positive);
  app.add_option("--lr", lr, "Adam learning rate (default 2e-3, halved every epoch)")->check(ddpm_examples::positive);
  app.add_option("--width", width, "base channel width (default 16)")->check(ddpm_examples::positive);
  app.add_option("--feature-dim", feature_dim, "feature dimension (default 128)")->check(ddpm_examples::positive);
  app.add_option("--seed", seed, "seed (default 0)");
  app.add_option("--threads", threads, "CPU threads (0 = all cores)")->check(ddpm_examples::non_negative);
  app.add_flag("--no-flip", no_flip, "no random horizontal flips (use for MNIST digits)");
  app.add_option("--out", out, "weights file to write");
  app.add_option("--stats-out", stats_out, "also write the test split's reference statistics here");
  app.add_option("--stats-rows", stats_rows, "feature rows kept in the stats file for KID (default 2000)")
      ->check(ddpm_examples::non_negative);
  if (const int rc = ddpm_examples::parse_args(app, argc, argv); rc >= 0) return rc;
  try {
    if (threads > 0) at::set_num_threads(static_cast<int>(threads));
    torch::manual_seed(static_cast<uint64_t>(seed));
    const ddpm::ImageData train = ddpm::load_mnist_dir(data_dir, true, dataset);
    const ddpm::ImageData test = ddpm::load_mnist_dir(data_dir, false, dataset);
    const torch::Tensor xtr = ddpm::to_model_range(train.images), ytr = train.labels;
    const torch::Tensor xte = ddpm::to_model_range(test.images), yte = test.labels;
    std::printf("%s: %lld train / %lld test images %lldx%lld\n", dataset.c_str(), (long long)train.size(),
                (long long)test.size(), (long long)xtr.size(2), (long long)xtr.size(3));

    ddpm::Classifier model(ddpm::ClassifierOptions().width(width).feature_dim(feature_dim));
    torch::optim::Adam opt(model->parameters(), torch::optim::AdamOptions(lr));
    torch::optim::StepLR sched(opt, 1, 0.5);
    auto gen = at::detail::createCPUGenerator(static_cast<uint64_t>(seed));
    const auto t0 = std::chrono::steady_clock::now();
    double acc = 0;
    for (int64_t e = 0; e < epochs; ++e) {
      const torch::Tensor perm = torch::randperm(xtr.size(0), gen, torch::kLong);
      double loss_sum = 0;
      int64_t steps = 0;
      for (int64_t i = 0; i + batch_size <= xtr.size(0); i += batch_size) {
        const torch::Tensor idx = perm.slice(0, i, i + batch_size);
        torch::Tensor x = xtr.index_select(0, idx);
        if (!no_flip) x = ddpm::random_hflip(x, gen);
        loss_sum += ddpm::classifier_train_step(model, opt, x, ytr.index_select(0, idx));
        ++steps;
      }
      sched.step();
      acc = ddpm::classifier_accuracy(model, xte, yte);
      const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      std::printf("epoch %lld  loss %.4f  test accuracy %.4f  (%.0f s)\n", (long long)(e + 1), loss_sum / steps, acc,
                  secs);
      std::fflush(stdout);
    }
    const bool fashion = dataset == "fashion-mnist";
    std::map<std::string, std::string> meta{
        {"dataset", dataset},
        {"test_accuracy", c10::str(acc)},
        {"feature_name", fashion ? "fmnist-classifier" : dataset + "-classifier"},
        {"metric", fashion ? "FD-fmnist" : "FD-" + dataset},
        {"class_names", fashion ? "T-shirt/top,Trouser,Pullover,Dress,Coat,Sandal,Shirt,Sneaker,Bag,Ankle boot"
                                : "0,1,2,3,4,5,6,7,8,9"},
        {"trained_by", "examples/train_classifier.cpp --epochs " + std::to_string(epochs) + " --seed " +
                           std::to_string(seed)}};
    model->eval();
    ddpm::save_classifier(out, model, meta);
    std::printf("wrote %s (test accuracy %.4f)\n", out.c_str(), acc);
    if (!stats_out.empty()) {
      ddpm::ClassifierFeatures net(ddpm::load_classifier(out));
      const ddpm::GaussianStats g = ddpm::reference_stats(net, xte, stats_rows);
      ddpm::save_feature_stats(stats_out, g, {{"dataset", dataset}, {"split", "test"}});
      std::printf("wrote %s (n=%lld, D=%lld, %lld feature rows for KID)\n", stats_out.c_str(), (long long)g.n,
                  (long long)g.dim(), (long long)(g.samples.defined() ? g.samples.size(0) : 0));
    }
  } catch (const std::exception& e) {
    std::cerr << "train_classifier: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
