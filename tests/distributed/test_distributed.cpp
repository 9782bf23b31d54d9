// Multi-process tests of <ddpm/distributed.hpp> on 127.0.0.1 with Gloo.
//
//   ddpm_distributed_test launch N SCENARIO [ARGS]  spawn N ranks of SCENARIO (free port)
//   ddpm_distributed_test train|train_buckets|bench one rank (needs the torchrun variables)
//   ddpm_distributed_test sampler|env_errors|unreachable|missing_peer   single process
//
// Every scenario prints "ddpm distributed OK" on success (CTest's pass expression) and
// exits non-zero with a message on failure.
#include <ddpm/distributed.hpp>

#include <torch/torch.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <functional>
#include <iostream>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

namespace {

int g_rank = -1;

[[noreturn]] void fail(const std::string& msg) {
  std::cerr << "FAIL";
  if (g_rank >= 0) std::cerr << " (rank " << g_rank << ")";
  std::cerr << ": " << msg << std::endl;
  std::exit(1);
}

#define EXPECT(cond, msg)                                                      \
  do {                                                                         \
    if (!(cond)) {                                                             \
      std::ostringstream os_;                                                  \
      os_ << __LINE__ << ": " #cond ": " << msg;                               \
      fail(os_.str());                                                         \
    }                                                                          \
  } while (0)

/// A TCP port on 127.0.0.1 that was free a moment ago (bind to 0, read it, close).
int free_port() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) fail("socket() failed");
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) fail("bind() failed");
  socklen_t len = sizeof(addr);
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  const int port = ntohs(addr.sin_port);
  ::close(fd);
  return port;
}

void set_env(int rank, int world, int port) {
  ::setenv("RANK", std::to_string(rank).c_str(), 1);
  ::setenv("LOCAL_RANK", std::to_string(rank).c_str(), 1);
  ::setenv("WORLD_SIZE", std::to_string(world).c_str(), 1);
  ::setenv("MASTER_ADDR", "127.0.0.1", 1);
  ::setenv("MASTER_PORT", std::to_string(port).c_str(), 1);
}

void clear_env() {
  for (const char* v : {"RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"}) {
    ::unsetenv(v);
  }
}

/// Spawns `n` copies of this program running `args` as ranks 0..n-1 and waits (at most
/// 100 s, then kills them) for all of them to exit 0.
int launch(int n, const std::vector<std::string>& args) {
  const int port = free_port();
  std::vector<pid_t> pids;
  for (int r = 0; r < n; ++r) {
    const pid_t pid = ::fork();
    if (pid < 0) fail("fork() failed");
    if (pid == 0) {
      set_env(r, n, port);
      std::vector<char*> argv;
      static std::string self = "ddpm_distributed_test";
      argv.push_back(self.data());
      for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
      argv.push_back(nullptr);
      ::execv("/proc/self/exe", argv.data());
      std::perror("execv");
      ::_exit(127);
    }
    pids.push_back(pid);
  }
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(100);
  std::vector<int> status(static_cast<size_t>(n), -1);
  size_t done = 0;
  bool ok = true;
  while (done < pids.size()) {
    for (size_t i = 0; i < pids.size(); ++i) {
      if (status[i] != -1) continue;
      int st = 0;
      if (::waitpid(pids[i], &st, WNOHANG) == pids[i]) {
        status[i] = st;
        ++done;
        if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) ok = false;
      }
    }
    if (std::chrono::steady_clock::now() > deadline) {
      for (size_t i = 0; i < pids.size(); ++i) {
        if (status[i] == -1) ::kill(pids[i], SIGKILL);
      }
      for (size_t i = 0; i < pids.size(); ++i) {
        if (status[i] == -1) ::waitpid(pids[i], nullptr, 0);
      }
      fail("ranks did not finish within 100 s");
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  if (!ok) fail("a rank failed (see its output above)");
  std::cout << "all " << n << " ranks passed on port " << port << "\nddpm distributed OK"
            << std::endl;
  return 0;
}

// ---------------------------------------------------------------------------------------
// train: data-parallel training == one process training on the union of the batches.

struct NetImpl : torch::nn::Module {
  NetImpl() {
    conv1 = register_module("conv1", torch::nn::Conv2d(torch::nn::Conv2dOptions(3, 8, 3).padding(1)));
    norm = register_module("norm", torch::nn::GroupNorm(4, 8));
    conv2 = register_module("conv2",
                            torch::nn::Conv2d(torch::nn::Conv2dOptions(8, 8, 3).stride(2).padding(1)));
    fc = register_module("fc", torch::nn::Linear(8 * 4 * 4, 5));
    unused = register_module("unused", torch::nn::Linear(3, 3));  // never gets a gradient
    stat = register_buffer("stat", torch::randn({4}));
    frozen = register_parameter("frozen", torch::randn({2}), /*requires_grad=*/false);
  }
  torch::Tensor forward(const torch::Tensor& x) {
    auto h = torch::silu(norm(conv1(x)));
    h = torch::silu(conv2(h));
    return fc(h.flatten(1));
  }
  torch::nn::Conv2d conv1{nullptr}, conv2{nullptr};
  torch::nn::GroupNorm norm{nullptr};
  torch::nn::Linear fc{nullptr}, unused{nullptr};
  torch::Tensor stat, frozen;
};
TORCH_MODULE(Net);

torch::Tensor flat_state(torch::nn::Module& m) {
  std::vector<torch::Tensor> v;
  for (const auto& p : m.parameters()) v.push_back(p.detach().reshape({-1}));
  for (const auto& b : m.buffers()) v.push_back(b.detach().reshape({-1}));
  return torch::cat(v);
}

/// max |x - x_on_rank_0| (rank 0's copy fetched with a plain c10d broadcast).
double diff_to_root(ddpm::Distributed& d, const torch::Tensor& x) {
  torch::Tensor root = x.clone();
  d.broadcast_(root, 0);
  return (x - root).abs().max().item<double>();
}

int scenario_train(double bucket_size_mb) {
  torch::set_num_threads(1);
  ddpm::DistributedOptions opts;
  opts.timeout = std::chrono::seconds(30);
  opts.bucket_size_mb = bucket_size_mb;
  auto dist = ddpm::Distributed::from_env(opts);
  EXPECT(dist.has_value(), "from_env returned nullopt although WORLD_SIZE is set");
  ddpm::Distributed& d = *dist;
  g_rank = d.rank();
  const int W = d.world_size();
  EXPECT(d.backend() == ddpm::DistributedBackend::Gloo, "expected gloo");
  EXPECT(d.is_main() == (d.rank() == 0), "is_main");

  // Collective scalars.
  const double mean = d.allreduce_mean(d.rank() + 1.0);
  EXPECT(std::abs(mean - (W + 1) / 2.0) < 1e-12, "allreduce_mean gave " << mean);
  d.barrier();

  // Differently initialised models (seed per rank) become rank 0's after broadcast.
  torch::manual_seed(1000 + static_cast<uint64_t>(d.rank()));
  Net model;
  const double before = diff_to_root(d, flat_state(*model));
  if (d.rank() != 0) EXPECT(before > 1e-3, "models should differ before broadcast, diff " << before);
  // Through a hooks struct shaped like ddpm::TrainerHooks, as the trainer uses it.
  struct Hooks {
    int rank = 0;
    int world_size = 1;
    std::function<void(torch::nn::Module&)> broadcast_parameters;
    std::function<void(torch::nn::Module&)> average_gradients;
    std::function<void()> barrier;
  };
  const Hooks hooks = d.hooks<Hooks>();
  EXPECT(hooks.rank == d.rank() && hooks.world_size == W, "hooks rank/world_size");
  hooks.broadcast_parameters(*model);
  const double after = diff_to_root(d, flat_state(*model));
  EXPECT(after == 0.0, "parameters/buffers differ from rank 0 after broadcast by " << after);

  // The single-process reference starts from the same (broadcast) weights.
  Net ref;
  {
    torch::NoGradGuard ng;
    auto src = model->parameters();
    auto dst = ref->parameters();
    for (size_t i = 0; i < src.size(); ++i) dst[i].copy_(src[i]);
  }
  const torch::Tensor init = flat_state(*ref).clone();
  const torch::Tensor unused_init = model->unused->weight.detach().clone();

  // Global batches, identical on every rank; rank r trains on rows [r B, (r+1) B).
  // K steps of SGD with momentum (linear in the gradient: catches a wrong scale, which
  // Adam would hide), then K steps of Adam (the trainer's optimizer).
  const int64_t B = 3, K = 4;
  torch::manual_seed(7);
  const torch::Tensor X = torch::randn({2 * K, W * B, 3, 8, 8});
  const torch::Tensor Y = torch::randn({2 * K, W * B, 5});

  torch::optim::SGD sgd(model->parameters(), torch::optim::SGDOptions(0.05).momentum(0.9));
  torch::optim::SGD ref_sgd(ref->parameters(), torch::optim::SGDOptions(0.05).momentum(0.9));
  torch::optim::Adam adam(model->parameters(), torch::optim::AdamOptions(1e-2));
  torch::optim::Adam ref_adam(ref->parameters(), torch::optim::AdamOptions(1e-2));
  for (int64_t k = 0; k < 2 * K; ++k) {
    torch::optim::Optimizer& opt = k < K ? static_cast<torch::optim::Optimizer&>(sgd) : adam;
    torch::optim::Optimizer& ref_opt = k < K ? static_cast<torch::optim::Optimizer&>(ref_sgd) : ref_adam;
    opt.zero_grad();
    auto x = X[k].narrow(0, d.rank() * B, B);
    auto y = Y[k].narrow(0, d.rank() * B, B);
    torch::mse_loss(model->forward(x), y).backward();
    hooks.average_gradients(*model);
    opt.step();

    ref_opt.zero_grad();
    torch::mse_loss(ref->forward(X[k]), Y[k]).backward();
    ref_opt.step();
  }

  const torch::Tensor mine = flat_state(*model);
  const double cross = diff_to_root(d, mine);
  EXPECT(cross == 0.0, "ranks hold different parameters after training: max diff " << cross);
  std::vector<torch::Tensor> mp, rp;
  for (const auto& p : model->parameters()) mp.push_back(p.detach().reshape({-1}));
  for (const auto& p : ref->parameters()) rp.push_back(p.detach().reshape({-1}));
  const double vs_ref = (torch::cat(mp) - torch::cat(rp)).abs().max().item<double>();
  const double moved = (flat_state(*ref) - init).abs().max().item<double>();
  std::cout << "rank " << d.rank() << ": max |data-parallel - single-process| = " << vs_ref
            << " (parameters moved by up to " << moved << ")" << std::endl;
  EXPECT(moved > 1e-2, "training did not change the parameters (vacuous test)");
  EXPECT(vs_ref <= 1e-5, "data-parallel differs from single-process training by " << vs_ref);
  EXPECT(!model->unused->weight.grad().defined(), "an unused parameter got a gradient");
  EXPECT(torch::equal(model->unused->weight.detach(), unused_init), "unused parameter moved");
  hooks.barrier();
  std::cout << "ddpm distributed OK" << std::endl;
  return 0;
}

// ---------------------------------------------------------------------------------------
// bench: average_gradients() time per step for a parameter set of the seed preset's size.

int scenario_bench(int64_t n_params, int steps, double bucket_mb) {
  torch::set_num_threads(1);
  ddpm::DistributedOptions opts;
  opts.bucket_size_mb = bucket_mb;
  auto dist = ddpm::Distributed::from_env(opts);
  EXPECT(dist.has_value(), "needs the torchrun variables (use: launch 2 bench)");
  ddpm::Distributed& d = *dist;
  g_rank = d.rank();
  // Parameter shapes like a conv net: many 3x3 kernels of 64..256 channels + biases.
  std::vector<torch::Tensor> params;
  int64_t total = 0;
  const int64_t shapes[][2] = {{64, 64}, {128, 128}, {256, 256}, {256, 512}, {128, 256}};
  for (int i = 0; total < n_params; ++i) {
    const auto& s = shapes[i % 5];
    int64_t n = std::min<int64_t>(s[0] * s[1] * 9, n_params - total);
    params.push_back(torch::randn({n}).requires_grad_(true));
    total += n;
    if (total < n_params) {
      params.push_back(torch::randn({s[0]}).requires_grad_(true));
      total += s[0];
    }
  }
  std::vector<double> times;
  for (int s = 0; s < steps + 3; ++s) {
    for (auto& p : params) p.mutable_grad() = torch::randn_like(p);
    d.barrier();
    const auto t0 = std::chrono::steady_clock::now();
    d.average_gradients(params);
    const auto t1 = std::chrono::steady_clock::now();
    if (s >= 3) times.push_back(std::chrono::duration<double, std::milli>(t1 - t0).count());
  }
  // The bare collective on one flat buffer of the same size, for comparison.
  std::vector<double> bare;
  std::vector<torch::Tensor> flat{torch::randn({total})};
  for (int s = 0; s < steps + 3; ++s) {
    d.barrier();
    const auto t0 = std::chrono::steady_clock::now();
    d.allreduce_sum_(flat);
    const auto t1 = std::chrono::steady_clock::now();
    if (s >= 3) bare.push_back(std::chrono::duration<double, std::milli>(t1 - t0).count());
  }
  std::sort(bare.begin(), bare.end());
  std::sort(times.begin(), times.end());
  if (d.rank() == 0) {
    std::cout << "bare allreduce of one " << total << "-float buffer: median "
              << bare[bare.size() / 2] << " ms" << std::endl;
    std::cout << "average_gradients: " << total << " params in " << params.size() << " tensors, "
              << d.world_size() << " ranks, bucket " << d.options().bucket_size_mb
              << " MiB: median " << times[times.size() / 2] << " ms, min " << times.front()
              << " ms, max " << times.back() << " ms over " << times.size() << " steps"
              << std::endl;
  }
  d.barrier();
  std::cout << "ddpm distributed OK" << std::endl;
  return 0;
}

// ---------------------------------------------------------------------------------------
// sampler: disjoint shards covering each epoch.

int scenario_sampler() {
  for (int64_t n : {10, 11, 7, 1000}) {
    for (int w : {1, 2, 3, 4}) {
      for (bool drop_last : {false, true}) {
        ddpm::DistributedSampler s0(n, 0, w, 42, true, drop_last);
        std::vector<int64_t> first_epoch;
        for (int64_t epoch : {0, 1}) {
          std::multiset<int64_t> all;
          for (int r = 0; r < w; ++r) {
            ddpm::DistributedSampler s(n, r, w, 42, true, drop_last);
            auto idx = s.indices(epoch);
            EXPECT(idx == s.indices(epoch), "not deterministic");
            EXPECT(static_cast<int64_t>(idx.size()) == s0.num_samples(),
                   "rank " << r << " got " << idx.size() << " indices, expected " << s0.num_samples());
            for (int64_t i : idx) {
              EXPECT(i >= 0 && i < n, "index " << i << " out of range");
              all.insert(i);
            }
            if (r == 0 && epoch == 0) first_epoch = idx;
            if (r == 0 && epoch == 1 && n >= 10 && w < n / 2) {
              EXPECT(idx != first_epoch, "epochs 0 and 1 give the same shard");
            }
          }
          const std::set<int64_t> distinct(all.begin(), all.end());
          if (drop_last) {
            EXPECT(static_cast<int64_t>(all.size()) == (n / w) * w, "drop_last total");
            EXPECT(distinct.size() == all.size(), "shards overlap with drop_last (n=" << n << ", w=" << w << ")");
          } else {
            EXPECT(static_cast<int64_t>(all.size()) == (n + w - 1) / w * w, "padded total");
            EXPECT(static_cast<int64_t>(distinct.size()) == n,
                   "shards do not cover the epoch (n=" << n << ", w=" << w << ")");
            if (n % w == 0) EXPECT(distinct.size() == all.size(), "shards overlap");
          }
        }
      }
    }
  }
  // The permutation is a permutation, and roughly uniform: position of element 0 over
  // many epochs hits every slot of a 4-element set.
  {
    ddpm::DistributedSampler s(4, 0, 1, 3);
    std::set<int64_t> pos;
    for (int64_t e = 0; e < 200; ++e) {
      auto p = s.permutation(e);
      std::vector<int64_t> sorted = p;
      std::sort(sorted.begin(), sorted.end());
      EXPECT((sorted == std::vector<int64_t>{0, 1, 2, 3}), "not a permutation");
      pos.insert(std::find(p.begin(), p.end(), 0) - p.begin());
    }
    EXPECT(pos.size() == 4, "shuffle never moves element 0 to some positions");
  }
  // shuffle = false: rank r takes r, r + w, ...
  {
    ddpm::DistributedSampler s(7, 1, 3, 0, /*shuffle=*/false);
    EXPECT((s.indices(5) == std::vector<int64_t>{1, 4, 0}), "unshuffled shard of rank 1");
  }
  bool threw = false;
  try {
    ddpm::DistributedSampler bad(10, 2, 2);
  } catch (const ddpm::Error& e) {
    threw = std::string(e.what()).find("rank 2") != std::string::npos;
  }
  EXPECT(threw, "invalid rank accepted");
  std::cout << "ddpm distributed OK" << std::endl;
  return 0;
}

// ---------------------------------------------------------------------------------------
// env_errors: the environment is validated with messages naming the variable.

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const ddpm::Error& e) {
    return e.what();
  }
  return "";
}

void expect_env_error(const std::string& contains) {
  const std::string msg = error_of([] { ddpm::Distributed::from_env(); });
  EXPECT(msg.find(contains) != std::string::npos,
         "expected an error containing '" << contains << "', got '" << msg << "'");
  std::cout << "  ok: " << msg << "\n";
}

int scenario_env_errors() {
  clear_env();
  EXPECT(!ddpm::Distributed::from_env().has_value(), "no WORLD_SIZE must mean single process");
  ::setenv("WORLD_SIZE", "1", 1);
  EXPECT(!ddpm::Distributed::from_env().has_value(), "WORLD_SIZE=1 must mean single process");
  ::setenv("WORLD_SIZE", "2", 1);
  expect_env_error("RANK is not set");
  ::setenv("RANK", "abc", 1);
  expect_env_error("RANK=\"abc\"");
  ::setenv("RANK", "2", 1);
  expect_env_error("RANK=\"2\" is not an integer in [0, 1]");
  ::setenv("RANK", "1", 1);
  expect_env_error("MASTER_ADDR");
  ::setenv("MASTER_ADDR", "127.0.0.1", 1);
  expect_env_error("MASTER_PORT is not set");
  ::setenv("MASTER_PORT", "70000", 1);
  expect_env_error("MASTER_PORT=\"70000\"");
  ::setenv("WORLD_SIZE", "two", 1);
  expect_env_error("WORLD_SIZE=\"two\"");

  // Options JSON.
  ddpm::DistributedOptions o;
  o.backend = ddpm::DistributedBackend::Gloo;
  o.timeout = std::chrono::milliseconds(2500);
  o.bucket_size_mb = 4;
  const nlohmann::json j = o;
  EXPECT(j.at("backend") == "gloo" && j.at("timeout_s") == 2.5 && j.at("bucket_size_mb") == 4.0,
         j.dump());
  const auto back = j.get<ddpm::DistributedOptions>();
  EXPECT(back.backend == o.backend && back.timeout == o.timeout && back.bucket_size_mb == 4.0,
         "round trip");
  std::string msg = error_of([] { nlohmann::json{{"backend", "mpi"}}.get<ddpm::DistributedOptions>(); });
  EXPECT(msg.find("\"mpi\"") != std::string::npos && msg.find("\"gloo\"") != std::string::npos, msg);
  msg = error_of([] { nlohmann::json{{"timeout", 3}}.get<ddpm::DistributedOptions>(); });
  EXPECT(msg.find("\"timeout\"") != std::string::npos, msg);
  msg = error_of([] { nlohmann::json{{"timeout_s", -1}}.get<ddpm::DistributedOptions>(); });
  EXPECT(msg.find("timeout_s") != std::string::npos, msg);
#ifndef USE_C10D_NCCL
  set_env(1, 2, 1);
  msg = error_of([] {
    ddpm::DistributedOptions nccl;
    nccl.backend = ddpm::DistributedBackend::NCCL;
    ddpm::Distributed::from_env(nccl);
  });
  EXPECT(msg.find("USE_C10D_NCCL") != std::string::npos, msg);
#endif
  std::cout << "ddpm distributed OK" << std::endl;
  return 0;
}

// ---------------------------------------------------------------------------------------
// unreachable / missing_peer: failures arrive within the timeout, naming address:port.

int expect_store_failure(int rank) {
  const int port = free_port();  // nothing listens there
  set_env(rank, 2, port);
  ddpm::DistributedOptions o;
  o.timeout = std::chrono::seconds(2);
  const auto t0 = std::chrono::steady_clock::now();
  const std::string msg = error_of([&] { ddpm::Distributed::from_env(o); });
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::cout << "rank " << rank << " failed after " << s << " s: " << msg << std::endl;
  const std::string where = "127.0.0.1:" + std::to_string(port);
  EXPECT(!msg.empty(), "no ddpm::Error");
  EXPECT(msg.find(where) != std::string::npos, "message does not name " << where);
  // Not a timing assertion: a bound far above the 2 s timeout that tells a honoured
  // timeout from the 60 s default or a hang.
  EXPECT(s < 30.0, "took " << s << " s with a 2 s timeout");
  std::cout << "ddpm distributed OK" << std::endl;
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    const std::string mode = argc > 1 ? argv[1] : "";
    if (mode == "launch" && argc > 3) {
      return launch(std::stoi(argv[2]), std::vector<std::string>(argv + 3, argv + argc));
    }
    if (mode == "train") return scenario_train(8.0);
    if (mode == "train_buckets") return scenario_train(0.0005);  // ~131 floats: many buckets
    if (mode == "bench") {
      return scenario_bench(argc > 2 ? std::stoll(argv[2]) : 14000000, argc > 3 ? std::stoi(argv[3]) : 20,
                            argc > 4 ? std::stod(argv[4]) : 8.0);
    }
    if (mode == "sampler") return scenario_sampler();
    if (mode == "env_errors") return scenario_env_errors();
    if (mode == "unreachable") return expect_store_failure(1);
    if (mode == "missing_peer") return expect_store_failure(0);
  } catch (const std::exception& e) {
    fail(std::string("exception: ") + e.what());
  }
  std::cerr << "usage: " << argv[0]
            << " launch N SCENARIO | train | train_buckets | bench [N_PARAMS [STEPS [BUCKET_MB]]] | sampler |"
               " env_errors | unreachable | missing_peer\n";
  return 2;
}
