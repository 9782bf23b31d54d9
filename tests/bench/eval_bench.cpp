// eval_bench: times the evaluation feature networks on the CPU (not a test; see docs/evaluation.md).
//   eval_bench [--n 10000] [--inception-n 8] [--threads 2]
// - the committed Fashion-MNIST classifier: evaluate_samples() of n 28x28 images (features,
//   statistics, FD, KID) end to end;
// - pytorch-fid's Inception-v3 (random weights: the speed does not depend on them): seconds per
//   image at 299x299, batch 8.
#include <ddpm/eval/evaluate.hpp>
#include <ddpm/runtime.hpp>

#include <ATen/Parallel.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

int main(int argc, char** argv) {
  ddpm::reexec_with_env(argv, ddpm::recommended_cpu_env());
  int64_t n = 10000, inception_n = 8;
  int threads = 2;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!std::strcmp(argv[i], "--n")) n = std::atoll(argv[i + 1]);
    else if (!std::strcmp(argv[i], "--inception-n")) inception_n = std::atoll(argv[i + 1]);
    else if (!std::strcmp(argv[i], "--threads")) threads = std::atoi(argv[i + 1]);
    else {
      std::fprintf(stderr, "usage: eval_bench [--n N] [--inception-n N] [--threads T]\n");
      return 2;
    }
  }
  at::set_num_threads(threads);
  using clock = std::chrono::steady_clock;
  try {
    auto ev = ddpm::make_fmnist_evaluator();
    const torch::Tensor x = torch::rand({n, 1, 28, 28}) * 2 - 1;
    auto t0 = clock::now();
    const auto r = ev(x);
    const double secs = std::chrono::duration<double>(clock::now() - t0).count();
    std::printf("classifier features: %lld images in %.2f s (%.0f images/s, %d threads), FD %.1f\n",
                static_cast<long long>(n), secs, n / secs, threads, r.fd);
  } catch (const std::exception& e) {
    std::printf("classifier features: skipped (%s)\n", e.what());
  }
  if (inception_n > 0) {
    ddpm::FidInception net;
    net->eval();
    torch::NoGradGuard no_grad;
    const torch::Tensor x = torch::rand({inception_n, 3, 32, 32}) * 2 - 1;
    net->forward(x.slice(0, 0, 1));  // warm-up
    auto t0 = clock::now();
    for (int64_t i = 0; i < inception_n; i += 8) net->forward(x.slice(0, i, i + 8));
    const double secs = std::chrono::duration<double>(clock::now() - t0).count();
    std::printf("inception features: %lld images in %.2f s (%.3f s/image at 299x299, %d threads)\n",
                static_cast<long long>(inception_n), secs, secs / inception_n, threads);
  }
  return 0;
}
