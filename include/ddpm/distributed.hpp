#pragma once
/// Multi-process data-parallel training on PyTorch's own distributed engine, c10d.
///
/// OPTIONAL header: only code that includes it needs the c10d headers (shipped with
/// LibTorch) and Gloo's headers (Debian: libgloo-dev). Link the CMake target
/// `ddpm::distributed` instead of `ddpm::ddpm`. ProcessGroupGloo and TCPStore are compiled
/// into libtorch_cpu, so nothing beyond LibTorch has to be linked.
///
/// The process group is set up from the environment that `torchrun` exports
/// (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT): rank 0 hosts a c10d
/// TCPStore at MASTER_ADDR:MASTER_PORT, every rank connects to it, and the store is used
/// for the Gloo (CPU) or NCCL (CUDA) rendezvous. On top of it:
///  - broadcast_parameters(): rank 0's parameters and buffers to every rank (call once
///    after construction / checkpoint loading, before the first step);
///  - average_gradients(): after backward(), replaces every gradient by its mean over the
///    ranks, using few large allreduces (gradients are flattened into buckets; Gloo has
///    no AVG, so it is SUM followed by a division by world_size);
///  - DistributedSampler: each rank's disjoint shard of an epoch's permutation.
/// With equal per-rank batch sizes, averaged gradients equal the gradient of the mean loss
/// over the global batch (world_size x batch_size), so every rank takes the same optimizer
/// step that ONE process would take on the union of the batches.
///
/// NCCL is compiled in when USE_C10D_NCCL is defined (CMake: -DDDPM_DISTRIBUTED_NCCL=ON
/// with a CUDA LibTorch built with NCCL).

// ProcessGroupGloo.hpp is empty unless USE_C10D_GLOO is defined (PyTorch's own build
// defines it); every LibTorch with c10d ships Gloo.
#ifndef USE_C10D_GLOO
#define USE_C10D_GLOO
#endif

#include <ddpm/detail/json_enum.hpp>
#include <ddpm/detail/json_util.hpp>
#include <ddpm/error.hpp>

#if !__has_include(<torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>)
#error "<ddpm/distributed.hpp> needs LibTorch's c10d headers (torch/csrc/distributed/c10d/): use a LibTorch built with USE_DISTRIBUTED (Debian's libtorch-dev, PyTorch's own builds)"
#endif
#if !__has_include(<gloo/config.h>)
#error "<ddpm/distributed.hpp> needs Gloo's headers (gloo/config.h): install libgloo-dev (Debian/Ubuntu) and link ddpm::distributed, or set CMake's DDPM_GLOO_INCLUDE_DIR to the directory that holds gloo/"
#endif
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#ifdef USE_C10D_NCCL
#include <c10/cuda/CUDAFunctions.h>
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#include <torch/cuda.h>
#endif
#include <torch/nn/module.h>
#include <torch/types.h>
#include <torch/version.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <functional>
#include <map>
#include <random>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

namespace ddpm {

/// Which c10d backend carries the collectives.
enum class DistributedBackend {
  Auto,  ///< NCCL when compiled in (USE_C10D_NCCL) and CUDA is available, else Gloo
  Gloo,  ///< CPU tensors over TCP
  NCCL,  ///< CUDA tensors; needs USE_C10D_NCCL at compile time
};

inline const detail::EnumNames<DistributedBackend>& distributed_backend_names() {
  static const detail::EnumNames<DistributedBackend> names = {
      {DistributedBackend::Auto, "auto"},
      {DistributedBackend::Gloo, "gloo"},
      {DistributedBackend::NCCL, "nccl"}};
  return names;
}
DDPM_JSON_ENUM(DistributedBackend, distributed_backend_names, "distributed backend")

/// Options of the process group. JSON: {"backend": "auto", "timeout_s": 60,
/// "bucket_size_mb": 8}.
struct DistributedOptions {
  DistributedBackend backend = DistributedBackend::Auto;
  /// Bound on connecting to the store, on the rendezvous (rank 0 waits this long for every
  /// rank to connect) and on each collective: a rank that cannot reach MASTER_ADDR:PORT
  /// fails with a ddpm::Error after this time instead of hanging.
  std::chrono::milliseconds timeout{60000};
  /// Gradients / parameters are flattened into buckets of at most this many MiB (a single
  /// tensor larger than that gets a bucket of its own); one collective per bucket.
  double bucket_size_mb = 8.0;
};

inline void to_json(nlohmann::json& j, const DistributedOptions& o) {
  j = nlohmann::json{{"backend", o.backend},
                     {"timeout_s", static_cast<double>(o.timeout.count()) / 1000.0},
                     {"bucket_size_mb", o.bucket_size_mb}};
}

inline void from_json(const nlohmann::json& j, DistributedOptions& o) {
  const std::string ctx = "distributed options";
  detail::check_known_keys(j, {"backend", "timeout_s", "bucket_size_mb"}, ctx);
  detail::get_optional(j, "backend", o.backend, ctx);
  double timeout_s = static_cast<double>(o.timeout.count()) / 1000.0;
  detail::get_optional(j, "timeout_s", timeout_s, ctx);
  if (!(timeout_s > 0.0) || timeout_s > 86400.0) {
    throw Error(ctx + ": \"timeout_s\" must be in (0, 86400], got " + std::to_string(timeout_s));
  }
  o.timeout = std::chrono::milliseconds(static_cast<int64_t>(timeout_s * 1000.0 + 0.5));
  detail::get_optional(j, "bucket_size_mb", o.bucket_size_mb, ctx);
  if (!(o.bucket_size_mb > 0.0)) {
    throw Error(ctx + ": \"bucket_size_mb\" must be > 0, got " + std::to_string(o.bucket_size_mb));
  }
}

/// The torchrun environment of one process.
struct DistributedEnv {
  int rank = 0;
  int world_size = 1;
  int local_rank = 0;  ///< defaults to RANK when LOCAL_RANK is unset
  std::string master_addr;
  int master_port = 0;
};

namespace detail {

inline const char* dist_getenv(const char* name) {
  const char* v = std::getenv(name);
  return (v != nullptr && *v != '\0') ? v : nullptr;
}

/// Parses environment variable `name` as an integer in [lo, hi]; ddpm::Error naming the
/// variable and its value otherwise.
inline int dist_env_int(const char* name, const char* value, int64_t lo, int64_t hi) {
  if (value == nullptr) {
    throw Error(std::string("environment variable ") + name +
                " is not set (needed for multi-process training; torchrun sets RANK, "
                "WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT)");
  }
  char* end = nullptr;
  errno = 0;
  const long long v = std::strtoll(value, &end, 10);
  if (end == value || *end != '\0' || errno != 0 || v < lo || v > hi) {
    throw Error(std::string("environment variable ") + name + "=\"" + value +
                "\" is not an integer in [" + std::to_string(lo) + ", " + std::to_string(hi) +
                "]");
  }
  return static_cast<int>(v);
}

/// c10::Error::what() carries a C++ backtrace; keep the message only.
inline std::string dist_message(const std::exception& e) {
  if (const auto* ce = dynamic_cast<const c10::Error*>(&e)) return ce->what_without_backtrace();
  return e.what();
}

inline std::string dist_seconds(std::chrono::milliseconds t) {
  const double s = static_cast<double>(t.count()) / 1000.0;
  std::string out = std::to_string(s);
  out.erase(out.find_last_not_of('0') + 1);
  if (!out.empty() && out.back() == '.') out.pop_back();
  return out + " s";
}

/// Whether a hooks struct has the optional members that Distributed::hooks<H>() fills.
template <typename H, typename = void>
struct dist_has_local_rank : std::false_type {};
template <typename H>
struct dist_has_local_rank<H, std::void_t<decltype(std::declval<H&>().local_rank)>> : std::true_type {};
template <typename H, typename = void>
struct dist_has_allreduce_sum : std::false_type {};
template <typename H>
struct dist_has_allreduce_sum<H, std::void_t<decltype(std::declval<H&>().allreduce_sum)>> : std::true_type {};
template <typename H, typename = void>
struct dist_has_allreduce_sum_tensor : std::false_type {};
template <typename H>
struct dist_has_allreduce_sum_tensor<H, std::void_t<decltype(std::declval<H&>().allreduce_sum_tensor)>>
    : std::true_type {};

inline bool dist_is_loopback(const std::string& addr) {
  return addr == "localhost" || addr == "::1" || addr.rfind("127.", 0) == 0;
}

}  // namespace detail

/// Reads the torchrun variables. Returns nullopt when WORLD_SIZE is unset or 1 (single
/// process); otherwise every variable must be valid (ddpm::Error naming the variable).
inline c10::optional<DistributedEnv> distributed_env_from_environment() {
  const char* ws = detail::dist_getenv("WORLD_SIZE");
  if (ws == nullptr) return c10::nullopt;
  DistributedEnv env;
  env.world_size = detail::dist_env_int("WORLD_SIZE", ws, 1, 1 << 20);
  if (env.world_size == 1) return c10::nullopt;
  env.rank = detail::dist_env_int("RANK", detail::dist_getenv("RANK"), 0, env.world_size - 1);
  const char* lr = detail::dist_getenv("LOCAL_RANK");
  env.local_rank = lr ? detail::dist_env_int("LOCAL_RANK", lr, 0, env.world_size - 1) : env.rank;
  const char* addr = detail::dist_getenv("MASTER_ADDR");
  if (addr == nullptr) {
    throw Error("environment variable MASTER_ADDR is not set (address of the rank-0 host, "
                "e.g. 127.0.0.1 on one machine)");
  }
  env.master_addr = addr;
  env.master_port = detail::dist_env_int("MASTER_PORT", detail::dist_getenv("MASTER_PORT"), 1, 65535);
  return env;
}

/// A c10d process group (Gloo or NCCL) over a TCPStore, with the collectives that
/// data-parallel training needs. Every rank must call the collectives in the same order
/// with the same shapes (the same model on every rank). Movable, not copyable.
class Distributed {
 public:
#if TORCH_VERSION_MAJOR >= 2
  using BackendPtr = c10::intrusive_ptr<c10d::Backend>;
#else
  using BackendPtr = c10::intrusive_ptr<c10d::ProcessGroup>;
#endif
  /// What a c10d collective returns (c10d::Work / ProcessGroup::Work across versions).
  using WorkPtr = decltype(std::declval<BackendPtr&>()->barrier());

  /// Joins the group described by the torchrun environment; nullopt when WORLD_SIZE is
  /// unset or 1. Throws ddpm::Error for invalid variables, an unreachable store (after
  /// options.timeout, naming MASTER_ADDR:MASTER_PORT) or a failed rendezvous.
  static c10::optional<Distributed> from_env(DistributedOptions options = {}) {
    auto env = distributed_env_from_environment();
    if (!env) return c10::nullopt;
    return Distributed(*env, options);
  }

  /// Joins the group described by `env` (world_size >= 1).
  Distributed(const DistributedEnv& env, DistributedOptions options = {})
      : env_(env), options_(options) {
    if (env.world_size < 1 || env.rank < 0 || env.rank >= env.world_size) {
      throw Error("invalid rank " + std::to_string(env.rank) + " for world size " +
                  std::to_string(env.world_size));
    }
    if (env.master_port < 1 || env.master_port > 65535) {
      throw Error("invalid MASTER_PORT " + std::to_string(env.master_port));
    }
    if (!(options.bucket_size_mb > 0.0)) throw Error("bucket_size_mb must be > 0");
    if (options.timeout.count() <= 0) throw Error("distributed timeout must be > 0");
    const std::string where = env.master_addr + ":" + std::to_string(env.master_port);
    const std::string who = "rank " + std::to_string(env.rank) + "/" + std::to_string(env.world_size);

#ifndef USE_C10D_NCCL
    if (options.backend == DistributedBackend::NCCL) {
      throw Error("distributed backend \"nccl\" is not compiled in: define USE_C10D_NCCL "
                  "(CMake -DDDPM_DISTRIBUTED_NCCL=ON) with a CUDA LibTorch built with NCCL");
    }
#endif

    // 1. The store: rank 0 serves, every rank (rank 0 included) connects; the server's
    //    constructor waits until all world_size clients have connected.
    c10d::TCPStoreOptions so;
    so.port = static_cast<std::uint16_t>(env.master_port);
    so.isServer = env.rank == 0;
    so.numWorkers = static_cast<std::size_t>(env.world_size);
    so.waitWorkers = true;
    so.timeout = options.timeout;
    try {
      store_ = c10::make_intrusive<c10d::TCPStore>(env.master_addr, so);
    } catch (const std::exception& e) {
      if (env.rank == 0) {
        throw Error(who + ": c10d TCPStore server at " + where +
                    " failed (port in use, or not every rank connected within " +
                    detail::dist_seconds(options.timeout) + "): " + detail::dist_message(e));
      }
      throw Error(who + ": cannot reach the c10d TCPStore at " + where + " (MASTER_ADDR:MASTER_PORT) within " +
                  detail::dist_seconds(options.timeout) + ": " + detail::dist_message(e));
    }

    // 2. The backend.
    DistributedBackend backend = options.backend;
#ifdef USE_C10D_NCCL
    if (backend == DistributedBackend::Auto) {
      backend = torch::cuda::is_available() ? DistributedBackend::NCCL : DistributedBackend::Gloo;
    }
#else
    if (backend == DistributedBackend::Auto) backend = DistributedBackend::Gloo;
#endif
    backend_ = backend;
    try {
      if (backend == DistributedBackend::Gloo) {
        auto go = c10d::ProcessGroupGloo::Options::create(options.timeout);
        if (const char* ifname = detail::dist_getenv("GLOO_SOCKET_IFNAME")) {
          go->devices.push_back(c10d::ProcessGroupGloo::createDeviceForInterface(ifname));
        } else if (detail::dist_is_loopback(env.master_addr)) {
          go->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1"));
        } else {
          go->devices.push_back(c10d::ProcessGroupGloo::createDefaultDevice());
        }
        pg_ = c10::make_intrusive<c10d::ProcessGroupGloo>(store_, env.rank, env.world_size, go);
        device_ = torch::Device(torch::kCPU);
      }
#ifdef USE_C10D_NCCL
      else {
        // One GPU per process: LOCAL_RANK modulo the visible GPUs (as the trainer picks it), made
        // this process's current device before NCCL creates its communicator on it.
        const auto gpus = static_cast<int>(torch::cuda::device_count());
        if (gpus < 1) throw Error(who + ": nccl backend requested but no CUDA GPU is visible");
        device_ = torch::Device(torch::kCUDA, static_cast<c10::DeviceIndex>(env.local_rank % gpus));
        c10::cuda::set_device(device_.index());
        auto no = c10d::ProcessGroupNCCL::Options::create();
        no->timeout = options.timeout;
        pg_ = c10::make_intrusive<c10d::ProcessGroupNCCL>(store_, env.rank, env.world_size, no);
      }
#endif
    } catch (const ddpm::Error&) {
      throw;
    } catch (const std::exception& e) {
      throw Error(who + ": " + std::string(backend == DistributedBackend::Gloo ? "gloo" : "nccl") +
                  " rendezvous through the store at " + where +
                  " failed (did all " + std::to_string(env.world_size) +
                  " ranks start, with the same WORLD_SIZE, MASTER_ADDR and MASTER_PORT, within " +
                  detail::dist_seconds(options.timeout) + "?): " + detail::dist_message(e));
    }
  }

  int rank() const { return env_.rank; }
  int world_size() const { return env_.world_size; }
  int local_rank() const { return env_.local_rank; }
  /// True on rank 0, the rank that writes checkpoints, samples, metrics and progress.
  bool is_main() const { return env_.rank == 0; }
  const DistributedEnv& env() const { return env_; }
  const DistributedOptions& options() const { return options_; }
  /// The backend actually in use (never Auto).
  DistributedBackend backend() const { return backend_; }
  /// Where tensors handed to the collectives must live: CPU for Gloo, cuda:(LOCAL_RANK % GPUs) for NCCL.
  torch::Device device() const { return device_; }
  /// The c10d objects, for collectives this class does not wrap.
  const BackendPtr& process_group() const { return pg_; }
  const c10::intrusive_ptr<c10d::Store>& store() const { return store_; }

  /// A hooks struct with members `rank`, `world_size` and the std::function members
  /// `broadcast_parameters(Module&)`, `average_gradients(Module&)`, `barrier()` — e.g.
  /// ddpm::TrainerHooks — bound to this object. When the struct also has them,
  /// `local_rank`, `allreduce_sum` (std::function<double(double)>) and `allreduce_sum_tensor`
  /// (std::function<torch::Tensor(const torch::Tensor&)>) are filled too:
  ///   auto dist = ddpm::Distributed::from_env();
  ///   ddpm::TrainerHooks hooks;                        // single process by default
  ///   if (dist) hooks = dist->hooks<ddpm::TrainerHooks>();
  /// The lambdas hold `this`: keep this object alive and in place while they are used.
  template <typename Hooks>
  Hooks hooks() {
    Hooks h;
    h.rank = rank();
    h.world_size = world_size();
    h.broadcast_parameters = [this](torch::nn::Module& m) { broadcast_parameters(m); };
    h.average_gradients = [this](torch::nn::Module& m) { average_gradients(m); };
    h.barrier = [this] { barrier(); };
    if constexpr (detail::dist_has_local_rank<Hooks>::value) h.local_rank = local_rank();
    if constexpr (detail::dist_has_allreduce_sum<Hooks>::value) {
      h.allreduce_sum = [this](double v) { return allreduce_sum(v); };
    }
    if constexpr (detail::dist_has_allreduce_sum_tensor<Hooks>::value) {
      h.allreduce_sum_tensor = [this](const torch::Tensor& t) {
        std::vector<torch::Tensor> v{t.to(device_, torch::kFloat64).contiguous().clone()};
        allreduce_sum_(v);
        return v[0].to(torch::kCPU);
      };
    }
    return h;
  }

  /// Blocks until every rank has reached the barrier.
  void barrier() {
    if (backend_ == DistributedBackend::Gloo) {
      wait(pg_->barrier(), "barrier");
    } else {
      // ProcessGroupNCCL::barrier guesses the device from the rank; an allreduce on our
      // device is an equally good synchronisation point.
      std::vector<torch::Tensor> t{torch::zeros({1}, torch::TensorOptions().device(device_))};
      wait(pg_->allreduce(t), "barrier");
    }
  }

  /// In-place SUM over the ranks of each tensor in `tensors` (contiguous, on device()).
  void allreduce_sum_(std::vector<torch::Tensor>& tensors) {
    c10d::AllreduceOptions o;
    o.reduceOp = c10d::ReduceOp::SUM;
    wait(pg_->allreduce(tensors, o), "allreduce");
  }

  /// In-place broadcast of `tensor` (contiguous, on device()) from `root`.
  void broadcast_(torch::Tensor& tensor, int root = 0) {
    std::vector<torch::Tensor> t{tensor};
    c10d::BroadcastOptions o;
    o.rootRank = root;
    wait(pg_->broadcast(t, o), "broadcast");
  }

  /// Mean of `value` over the ranks (e.g. a loss for logging). Collective.
  double allreduce_mean(double value) { return allreduce_sum(value) / world_size(); }

  /// Sum of `value` over the ranks. Collective.
  double allreduce_sum(double value) {
    std::vector<torch::Tensor> t{
        torch::full({1}, value, torch::TensorOptions().dtype(torch::kFloat64).device(device_))};
    allreduce_sum_(t);
    return t[0].to(torch::kCPU).item<double>();
  }

  /// Copies rank `root`'s parameters AND buffers into every rank's `module` (bucketed
  /// broadcasts). Call after constructing the model (and after loading a checkpoint on
  /// rank 0) so every rank starts from the same weights.
  void broadcast_parameters(torch::nn::Module& module, int root = 0) {
    std::vector<torch::Tensor> tensors = module.parameters(/*recurse=*/true);
    for (const auto& b : module.buffers(/*recurse=*/true)) tensors.push_back(b);
    torch::NoGradGuard no_grad;
    for (const auto& bucket : make_buckets(tensors)) {
      std::vector<torch::Tensor> pieces;
      pieces.reserve(bucket.size());
      for (size_t i : bucket) pieces.push_back(as_comm(tensors[i]).reshape({-1}));
      torch::Tensor flat = torch::cat(pieces);
      broadcast_(flat, root);
      int64_t offset = 0;
      for (size_t i : bucket) {
        torch::Tensor& t = tensors[i];
        const int64_t n = t.numel();
        t.copy_(flat.narrow(0, offset, n).view(t.sizes()));
        offset += n;
      }
    }
  }

  /// Replaces every parameter's gradient by its mean over the ranks: gradients are
  /// flattened into buckets of <= bucket_size_mb, ONE allreduce(SUM) per bucket, divided
  /// by world_size and copied back. Call after backward(), before optimizer.step().
  /// Parameters with requires_grad=false are skipped; a parameter whose gradient is
  /// undefined on some ranks counts as zero there (as in PyTorch DDP) and stays undefined
  /// only if it is undefined on every rank.
  void average_gradients(torch::nn::Module& module) {
    average_gradients(module.parameters(/*recurse=*/true));
  }

  /// average_gradients() for an explicit parameter list (same order on every rank).
  void average_gradients(const std::vector<torch::Tensor>& parameters) {
    std::vector<torch::Tensor> params;
    for (const auto& p : parameters) {
      if (p.requires_grad()) params.push_back(p);
    }
    torch::NoGradGuard no_grad;
    const auto buckets = make_buckets(params);
    // Phase 1: flatten each bucket and start its allreduce right away, so that flattening
    // the next bucket overlaps the communication of the previous one.
    std::vector<std::vector<torch::Tensor>> flats(buckets.size());
    std::vector<WorkPtr> works;
    works.reserve(buckets.size());
    c10d::AllreduceOptions sum;
    sum.reduceOp = c10d::ReduceOp::SUM;
    for (size_t b = 0; b < buckets.size(); ++b) {
      const auto& bucket = buckets[b];
      const auto opts = params[bucket.front()].options();
      std::vector<torch::Tensor> pieces;
      pieces.reserve(bucket.size() + 1);
      // One flag per parameter ("gradient defined here") travels in the same buffer, so
      // undefined gradients need no extra collective.
      auto flags = torch::zeros({static_cast<int64_t>(bucket.size())}, opts.device(torch::kCPU));
      for (size_t k = 0; k < bucket.size(); ++k) {
        const auto& p = params[bucket[k]];
        const auto& g = p.grad();
        TORCH_CHECK(!g.defined() || g.layout() == torch::kStrided,
                    "average_gradients: sparse gradients are not supported");
        if (g.defined()) {
          pieces.push_back(g.reshape({-1}));
          flags[static_cast<int64_t>(k)] = 1;
        } else {
          pieces.push_back(torch::zeros({p.numel()}, opts));
        }
      }
      pieces.push_back(flags.to(opts.device()));
      flats[b].push_back(torch::cat(pieces));
      try {
        works.push_back(pg_->allreduce(flats[b], sum));
      } catch (const std::exception& e) {
        for (auto& w : works) wait(w, "gradient allreduce");
        throw Error("rank " + std::to_string(rank()) + ": gradient allreduce failed: " +
                    detail::dist_message(e));
      }
    }
    // Phase 2: wait in order, divide by world_size, copy back.
    for (size_t b = 0; b < buckets.size(); ++b) {
      const auto& bucket = buckets[b];
      wait(works[b], "gradient allreduce");
      torch::Tensor flat = flats[b][0];
      flat.div_(static_cast<double>(world_size()));
      const int64_t nb = static_cast<int64_t>(bucket.size());
      const torch::Tensor defined = flat.narrow(0, flat.numel() - nb, nb).gt(0).to(torch::kCPU);
      const bool* any = defined.data_ptr<bool>();
      int64_t offset = 0;
      for (size_t k = 0; k < bucket.size(); ++k) {
        torch::Tensor p = params[bucket[k]];
        const int64_t n = p.numel();
        torch::Tensor avg = flat.narrow(0, offset, n).view(p.sizes());
        offset += n;
        if (!any[k]) continue;
        if (p.grad().defined()) {
          p.mutable_grad().copy_(avg);
        } else {
          p.mutable_grad() = avg.clone();
        }
      }
    }
  }

 private:
  /// The dtype a tensor travels in (Gloo has no bool).
  static torch::Tensor as_comm(const torch::Tensor& t) {
    return t.scalar_type() == torch::kBool ? t.to(torch::kUInt8) : t;
  }

  /// Groups tensor indices by (dtype, device) in first-seen order, then cuts each group
  /// into buckets of <= bucket_size_mb. Deterministic given the same tensor list.
  std::vector<std::vector<size_t>> make_buckets(const std::vector<torch::Tensor>& tensors) const {
    const double cap = options_.bucket_size_mb * 1024.0 * 1024.0;
    std::vector<std::pair<std::string, std::vector<size_t>>> groups;
    for (size_t i = 0; i < tensors.size(); ++i) {
      const auto& t = tensors[i];
      TORCH_CHECK(t.device() == device_ || (device_.is_cpu() && t.device().is_cpu()),
                  "distributed collectives on backend ", backend_name(), " need tensors on ",
                  device_.str(), ", got a tensor on ", t.device().str());
      const std::string key =
          std::string(c10::toString(as_comm(t).scalar_type())) + "|" + t.device().str();
      auto it = std::find_if(groups.begin(), groups.end(),
                             [&](const auto& g) { return g.first == key; });
      if (it == groups.end()) {
        groups.push_back({key, {}});
        it = groups.end() - 1;
      }
      it->second.push_back(i);
    }
    std::vector<std::vector<size_t>> buckets;
    for (const auto& g : groups) {
      double bytes = 0;
      std::vector<size_t> current;
      for (size_t i : g.second) {
        const double b = static_cast<double>(tensors[i].numel()) * tensors[i].element_size();
        if (!current.empty() && bytes + b > cap) {
          buckets.push_back(std::move(current));
          current.clear();
          bytes = 0;
        }
        current.push_back(i);
        bytes += b;
      }
      if (!current.empty()) buckets.push_back(std::move(current));
    }
    return buckets;
  }

  const char* backend_name() const { return backend_ == DistributedBackend::NCCL ? "nccl" : "gloo"; }

  template <typename WorkPtr>
  void wait(const WorkPtr& work, const char* what) {
    try {
      work->wait();
    } catch (const std::exception& e) {
      throw Error("rank " + std::to_string(rank()) + "/" + std::to_string(world_size()) + ": " +
                  what + " on " + backend_name() + " failed (did another rank exit or time out?): " +
                  detail::dist_message(e));
    }
  }

  DistributedEnv env_;
  DistributedOptions options_;
  DistributedBackend backend_ = DistributedBackend::Gloo;
  torch::Device device_{torch::kCPU};
  c10::intrusive_ptr<c10d::Store> store_;
  BackendPtr pg_;
};

/// Each rank's shard of each epoch, like torch.utils.data.DistributedSampler: the epoch's
/// permutation of [0, dataset_size) (a Fisher-Yates shuffle driven by std::mt19937_64
/// seeded with seed + epoch — identical on every rank and platform, independent of the
/// global torch RNG) is made divisible by world_size, then rank r takes positions
/// r, r + world_size, r + 2 world_size, ...
///  - drop_last = false (default): the permutation is padded by repeating its first
///    elements, so every sample is seen each epoch and a few are seen twice;
///  - drop_last = true: the last dataset_size % world_size samples of the permutation are
///    dropped (they differ from epoch to epoch), so shards are disjoint.
/// Every rank gets num_samples() indices, so all ranks run the same number of steps.
class DistributedSampler {
 public:
  DistributedSampler(int64_t dataset_size, int rank, int world_size, uint64_t seed = 0,
                     bool shuffle = true, bool drop_last = false)
      : size_(dataset_size), rank_(rank), world_(world_size), seed_(seed), shuffle_(shuffle),
        drop_last_(drop_last) {
    if (world_size < 1 || rank < 0 || rank >= world_size) {
      throw Error("DistributedSampler: invalid rank " + std::to_string(rank) + " for world size " +
                  std::to_string(world_size));
    }
    if (dataset_size < 1 || (drop_last && dataset_size < world_size)) {
      throw Error("DistributedSampler: dataset of " + std::to_string(dataset_size) +
                  " samples is too small for " + std::to_string(world_size) + " ranks" +
                  (drop_last ? " with drop_last" : ""));
    }
  }

  /// Indices per rank per epoch.
  int64_t num_samples() const {
    return drop_last_ ? size_ / world_ : (size_ + world_ - 1) / world_;
  }
  /// Indices per epoch over all ranks (num_samples() * world_size).
  int64_t total_size() const { return num_samples() * world_; }

  /// This rank's indices for `epoch` (num_samples() of them, in visiting order).
  std::vector<int64_t> indices(int64_t epoch) const {
    std::vector<int64_t> perm = permutation(epoch);
    const int64_t total = total_size();
    if (static_cast<int64_t>(perm.size()) > total) {
      perm.resize(static_cast<size_t>(total));
    } else {
      for (int64_t i = 0; static_cast<int64_t>(perm.size()) < total; ++i) {
        perm.push_back(perm[static_cast<size_t>(i % size_)]);
      }
    }
    std::vector<int64_t> out;
    out.reserve(static_cast<size_t>(num_samples()));
    for (int64_t i = rank_; i < total; i += world_) out.push_back(perm[static_cast<size_t>(i)]);
    return out;
  }

  /// The full permutation of epoch `epoch` (identity when shuffle is false).
  std::vector<int64_t> permutation(int64_t epoch) const {
    std::vector<int64_t> perm(static_cast<size_t>(size_));
    for (int64_t i = 0; i < size_; ++i) perm[static_cast<size_t>(i)] = i;
    if (!shuffle_) return perm;
    std::mt19937_64 gen(seed_ + static_cast<uint64_t>(epoch));
    for (int64_t i = size_ - 1; i > 0; --i) {
      // Uniform j in [0, i] by rejection (std::uniform_int_distribution is not portable).
      const uint64_t n = static_cast<uint64_t>(i) + 1;
      const uint64_t limit = UINT64_MAX - (UINT64_MAX % n);
      uint64_t x = gen();
      while (x >= limit) x = gen();
      std::swap(perm[static_cast<size_t>(i)], perm[static_cast<size_t>(x % n)]);
    }
    return perm;
  }

  int64_t dataset_size() const { return size_; }
  int rank() const { return rank_; }
  int world_size() const { return world_; }

 private:
  int64_t size_;
  int rank_;
  int world_;
  uint64_t seed_;
  bool shuffle_;
  bool drop_last_;
};

}  // namespace ddpm
