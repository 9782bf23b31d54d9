// Evaluation during training (eval_every): the data must fit the feature network, eval lines
// in metrics.jsonl survive a resume, best.pt holds the EMA weights whose samples scored the
// logged best distance (checked by regenerating them from best.pt independently of the trainer),
// and two ranks' merged statistics give the FD of all their samples scored in one process.
#include <ddpm/data/idx.hpp>
#include <ddpm/eval/evaluate.hpp>
#include <ddpm/pipeline.hpp>
#include <ddpm/train/trainer.hpp>

#include <ATen/CPUGeneratorImpl.h>

#include <cmath>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <thread>
#include <fstream>
#include <string>
#include <vector>

#include "test_util.hpp"
#include "train_test_util.hpp"

namespace {

std::string train_eval_dir() { return ddpm_test::process_temp_dir("train_eval"); }

// 16 images of `channels` x 28 x 28: a bright block whose position depends on the index.
ddpm::ImageData block_data(int64_t channels, int64_t size = 28) {
  ddpm::ImageData d;
  d.images = torch::full({16, channels, size, size}, 0, torch::kUInt8);
  for (int i = 0; i < 16; ++i) {
    const int64_t o = (i % 4) * (size / 4);
    d.images[i].slice(1, o, o + size / 4).slice(2, 4, size - 4).fill_(200);
  }
  d.name = "blocks";
  return d;
}

// The tiny trainer config at 32x32 (the classifier's size), evaluating every 2 steps.
ddpm::TrainConfig eval_config(const std::string& out) {
  ddpm::TrainConfig c = ddpm_test::tiny_train_config(out, 32);
  c.batch_size = 4;
  c.lr = 2e-3;
  c.warmup_steps = 1;
  c.ema_decay = 0.5;
  c.steps = 4;
  c.seed = 5;
  c.log_every = 1;
  c.sample_count = 4;
  c.sample_steps = 1;
  c.checkpoint_every = 2;
  c.eval_every = 2;
  c.eval_samples = 8;
  c.eval_steps = 1;
  c.eval_batch_size = 4;
  return c;
}

using ddpm_test::QuietTrainer;

struct Lines {
  std::vector<int64_t> loss_steps, eval_steps;
  std::vector<nlohmann::json> evals;
};

Lines read_metrics(const std::string& dir) {
  std::ifstream in(dir + "/metrics.jsonl");
  Lines out;
  std::string line;
  while (std::getline(in, line)) {
    const auto j = nlohmann::json::parse(line);
    if (j.contains("eval")) {
      out.eval_steps.push_back(j.at("step").get<int64_t>());
      out.evals.push_back(j.at("eval"));
    } else {
      out.loss_steps.push_back(j.at("step").get<int64_t>());
    }
  }
  return out;
}

}  // namespace

TEST_CASE("eval_every is rejected for data the Fashion-MNIST classifier cannot score", "[train][eval]") {
  auto cfg = eval_config(train_eval_dir());
  CHECK_THROWS_WITH(QuietTrainer(cfg, block_data(3)),
                    Catch::Contains("1-channel 28x28 or 32x32") && Catch::Contains("3-channel 32x32") &&
                        Catch::Contains("eval_every to 0"));
  cfg.image_size = 64;
  CHECK_THROWS_WITH(QuietTrainer(cfg, block_data(1)), Catch::Contains("1-channel 64x64"));
  // Off: the same 3-channel data trains.
  cfg = eval_config(train_eval_dir());
  cfg.eval_every = 0;
  CHECK_NOTHROW(QuietTrainer(cfg, block_data(3)));
  // Config checks: ranges and sampler names.
  nlohmann::json j = eval_config("/tmp/x");
  j["eval_samples"] = 1;
  CHECK_THROWS_WITH(j.get<ddpm::TrainConfig>(), Catch::Contains("eval_samples"));
  j = eval_config("/tmp/x");
  j["eval_sampler"] = "bogus";
  CHECK_THROWS_WITH(j.get<ddpm::TrainConfig>(), Catch::Contains("eval_sampler") && Catch::Contains("bogus"));
  j["eval_sampler"] = "";
  CHECK(j.get<ddpm::TrainConfig>().eval_sampler.empty());
}

TEST_CASE("Evaluation during training logs eval lines and keeps best.pt; resume keeps them", "[train][eval]") {
  const std::string dir = train_eval_dir();
  const auto cfg = eval_config(dir);
  {
    QuietTrainer t(cfg, block_data(1));
    REQUIRE(t.run().status == ddpm::RunStatus::Completed);
  }
  Lines m = read_metrics(dir);
  CHECK(m.loss_steps == std::vector<int64_t>{1, 2, 3, 4});
  REQUIRE(m.eval_steps == std::vector<int64_t>{2, 4});
  double best = INFINITY;
  int64_t best_step = -1;
  for (size_t i = 0; i < m.evals.size(); ++i) {
    const auto& e = m.evals[i];
    CHECK(e.at("n").get<int64_t>() == 8);
    CHECK(e.at("metric").get<std::string>() == "FD-fmnist");
    REQUIRE(e.at("fd").is_number());
    const double fd = e.at("fd").get<double>();
    CHECK(std::isfinite(fd));
    CHECK(fd > 0);
    int64_t hist = 0;
    for (const auto& c : e.at("class_histogram")) hist += c.get<int64_t>();
    CHECK(hist == 8);
    if (fd < best) {
      best = fd;
      best_step = m.eval_steps[i];
    }
  }
  const auto bj = ddpm::detail::read_json_file(dir + "/best.json");
  CHECK(bj.at("step").get<int64_t>() == best_step);
  CHECK(bj.at("fd").get<double>() == Approx(best).epsilon(1e-12));
  CHECK(ddpm::detail::file_readable(dir + "/eval.png"));

  // best.pt is a checkpoint of that step whose EMA weights regenerate the scored samples
  // (same sampler, steps, batches and seed as the trainer): the FD matches.
  auto loaded = ddpm::load_training_checkpoint(dir + "/best.pt");
  CHECK(loaded.step == best_step);
  ddpm::Pipeline pipe(loaded.ema_model, ddpm::make_sampler(loaded.scheduler_config, "dpmpp_2m"));
  auto gen = at::detail::createCPUGenerator(cfg.seed + 0xe7a1ull);
  const auto images = pipe.generate(8, gen, ddpm::GenerateOptions().num_inference_steps(1).batch_size(4).sample_size(32));
  auto ev = ddpm::make_fmnist_evaluator(ddpm::EvalOptions().allow_few_samples(true));
  CHECK(ev(images).fd == Approx(best).epsilon(1e-6));
  // The rotation never lists best.pt; resuming uses the newest ckpt-<N>.pt.
  CHECK(ddpm::CheckpointManager(dir, 3).list().size() == 2);

  // Resume to step 6: earlier loss and eval lines are kept, one more evaluation at 6.
  auto cfg6 = cfg;
  cfg6.steps = 6;
  {
    QuietTrainer t(cfg6, block_data(1));
    CHECK(t.step() == 4);
    CHECK(t.best_eval_distance() == Approx(best).epsilon(1e-12));
    CHECK(t.best_eval_step() == best_step);
    REQUIRE(t.run().status == ddpm::RunStatus::Completed);
  }
  m = read_metrics(dir);
  CHECK(m.loss_steps == std::vector<int64_t>{1, 2, 3, 4, 5, 6});
  CHECK(m.eval_steps == std::vector<int64_t>{2, 4, 6});
}

namespace {

/// Two ranks in two threads evaluating `cfg` on `data`; allreduce_sum_tensor is an in-process
/// rendezvous that sums.
struct TwoRanks {
  std::vector<std::unique_ptr<QuietTrainer>> ranks;
  ddpm::EvalResult r0, r1;
  /// Independently of the trainer: each rank's images regenerated from its seed (rank 0 first).
  torch::Tensor regenerate(const ddpm::TrainConfig& cfg) const {
    std::vector<torch::Tensor> all;
    for (int r = 0; r < 2; ++r) {
      const int64_t share = cfg.eval_samples / 2 + (r < cfg.eval_samples % 2 ? 1 : 0);
      ddpm::Pipeline pipe(ranks[static_cast<size_t>(r)]->ema_model(),
                          ddpm::make_sampler(ranks[0]->scheduler_config(), "dpmpp_2m"));
      auto gen = at::detail::createCPUGenerator(cfg.seed + 0xe7a1ull + static_cast<uint64_t>(r) * 0x9E3779B97F4A7C15ull);
      auto opts = ddpm::GenerateOptions().num_inference_steps(1).batch_size(4).sample_size(32);
      if (cfg.num_classes > 0) {
        std::vector<int64_t> labels;
        for (int64_t i = 0; i < share; ++i) labels.push_back(i % cfg.num_classes);
        opts.class_labels(labels).guidance_scale(cfg.guidance_scale);
      }
      all.push_back(pipe.generate(share, gen, opts));
    }
    return torch::cat(all);
  }
};

TwoRanks evaluate_on_two_ranks(const ddpm::TrainConfig& cfg, const ddpm::ImageData& data) {
  struct Rendezvous {
    std::mutex m;
    std::condition_variable cv;
    torch::Tensor sum;
    int arrived = 0;
    bool done = false;
  };
  auto rv = std::make_shared<Rendezvous>();  // the trainers' hooks keep it alive
  auto allreduce = [rv](const torch::Tensor& t) {
    std::unique_lock<std::mutex> lock(rv->m);
    rv->sum = rv->arrived == 0 ? t.clone() : rv->sum + t;
    if (++rv->arrived == 2) {
      rv->done = true;
      rv->cv.notify_all();
    } else {
      rv->cv.wait(lock, [&] { return rv->done; });
    }
    return rv->sum.clone();
  };
  TwoRanks out;
  for (int r = 0; r < 2; ++r) {
    ddpm::TrainerHooks h;
    h.rank = r;
    h.world_size = 2;
    h.allreduce_sum_tensor = allreduce;
    out.ranks.push_back(std::make_unique<QuietTrainer>(cfg, data, h));
  }
  std::thread other([&] { out.r1 = out.ranks[1]->evaluate(); });
  out.r0 = out.ranks[0]->evaluate();
  other.join();
  return out;
}

}  // namespace

TEST_CASE("Rank-parallel evaluation merges the ranks' statistics into the FD of all their samples",
          "[train][eval]") {
  auto cfg = eval_config(train_eval_dir());
  cfg.eval_samples = 7;  // rank 0 generates 4, rank 1 3
  const TwoRanks two = evaluate_on_two_ranks(cfg, block_data(1));
  const ddpm::EvalResult& r0 = two.r0;
  auto ev = ddpm::make_fmnist_evaluator(ddpm::EvalOptions().allow_few_samples(true));
  const ddpm::EvalResult whole = ev(two.regenerate(cfg));
  CHECK(r0.n == 7);
  // 1e-4: the classifier's float32 features of batches of 4 + 3 vs 7 differ in the last bits (how
  // much depends on the CPU's kernels), and the FD of 7 samples in 128 dimensions (a singular
  // covariance) amplifies that; a wrong merge (a rank missing, moments not summed) is off by percent.
  CHECK(r0.fd == Approx(whole.fd).epsilon(1e-4));
  CHECK(r0.class_histogram == whole.class_histogram);
  CHECK(r0.mean_confidence == Approx(whole.mean_confidence).epsilon(1e-5));  // float32 softmax, batches 4+3 vs 7
  CHECK(r0.class_accuracy.empty());  // unconditional: no class accuracy
  // Both ranks see the merged statistics.
  CHECK(two.r1.fd == Approx(two.r0.fd).epsilon(1e-12));
}

TEST_CASE("Class-conditional rank-parallel evaluation merges the class accuracy of all the ranks' samples",
          "[train][eval][guidance]") {
  auto cfg = eval_config(train_eval_dir());
  cfg.num_classes = 10;
  cfg.guidance_scale = 2;
  cfg.eval_samples = 23;  // rank 0: classes 0..9, 0, 1; rank 1: 0..9, 0
  ddpm::ImageData data = block_data(1, 32);
  data.labels = torch::arange(16, torch::kLong) % 10;
  data.class_names = ddpm::fashion_mnist_class_names();  // the classifier's classes
  const TwoRanks two = evaluate_on_two_ranks(cfg, data);
  const ddpm::ClassAccuracy& acc = two.r0.class_accuracy;
  REQUIRE(acc.totals.size() == 10);
  CHECK(acc.totals == std::vector<int64_t>{4, 3, 2, 2, 2, 2, 2, 2, 2, 2});
  // Independently: classify the regenerated images, count by hand what matches its label.
  auto net = ddpm::load_fmnist_classifier_features();
  const torch::Tensor probs = net->compute(two.regenerate(cfg)).probs;
  const torch::Tensor predicted = probs.argmax(1);
  std::vector<int64_t> hits(10, 0);
  for (int64_t i = 0; i < 23; ++i) {
    const int64_t label = (i < 12 ? i : i - 12) % 10;
    if (predicted[i].item<int64_t>() == label) ++hits[static_cast<size_t>(label)];
  }
  CHECK(acc.hits == hits);
  CHECK(two.r1.class_accuracy.hits == hits);
  const auto j = two.r0.to_json();
  REQUIRE(j.contains("class_accuracy"));
  CHECK(j.at("class_accuracy").size() == 10);
  double mean = 0;
  for (size_t k = 0; k < 10; ++k) mean += static_cast<double>(hits[k]) / static_cast<double>(acc.totals[k]);
  CHECK(j.at("mean_class_accuracy").get<double>() == Approx(mean / 10).epsilon(1e-12));

  // Other class names (MNIST digits, say) are not the classifier's: no class accuracy.
  data.class_names = ddpm::mnist_class_names();
  cfg.out_dir = train_eval_dir() + "/digits";
  CHECK(evaluate_on_two_ranks(cfg, data).r0.class_accuracy.empty());
}
