// The Trainer on tiny synthetic data: loss goes down, stop + resume equals an
// uninterrupted run, corrupt checkpoints fall back, NaN stops without saving,
// SIGINT saves and stops, config JSON.
#include <ddpm/train/trainer.hpp>

#include <csignal>
#include <filesystem>
#include <fstream>
#include <string>
#include <unistd.h>
#include <vector>

#include "test_util.hpp"
#include "train_test_util.hpp"

namespace {

std::string trainer_dir() { return ddpm_test::process_temp_dir("trainer"); }

// 32 grayscale 6x6 images (padded to 8x8 by the trainer): a bright 3x3 square in
// one of four corners on a dark background.
ddpm::ImageData tiny_data() {
  ddpm::ImageData d;
  d.images = torch::full({32, 1, 6, 6}, 10, torch::kUInt8);
  d.labels = torch::zeros({32}, torch::kInt64);
  for (int i = 0; i < 32; ++i) {
    const int oy = (i % 4) / 2 * 3, ox = (i % 2) * 3;
    d.images[i][0].slice(0, oy, oy + 3).slice(1, ox, ox + 3).fill_(240);
    d.labels[i] = i % 4;
  }
  d.name = "tiny";
  return d;
}

ddpm::TrainConfig tiny_config(const std::string& out) {
  ddpm::TrainConfig c = ddpm_test::tiny_train_config(out, 8);
  c.batch_size = 8;
  c.lr = 2e-3;
  c.warmup_steps = 2;
  c.ema_decay = 0.9;
  c.steps = 6;
  c.seed = 3;
  c.num_threads = 2;
  c.log_every = 1;
  c.sample_count = 4;
  c.sample_steps = 2;
  c.keep_checkpoints = 3;
  return c;
}

ddpm::Trainer::Log quiet() {
  return [](const std::string&) {};
}

using ddpm_test::metric_losses;
using ddpm_test::QuietTrainer;

}  // namespace

TEST_CASE("Training steps on tiny data lower the loss on a fixed evaluation batch", "[train][trainer]") {
  auto cfg = tiny_config(trainer_dir());
  cfg.steps = 30;
  cfg.lr = 3e-3;
  QuietTrainer trainer(cfg, tiny_data(), {}, quiet());
  const auto x0 = trainer.loader().batch(0).images;
  const double before = trainer.evaluate_loss(x0, 99);
  // Independent check of the evaluation: the untrained model's eps-prediction MSE is of order 1.
  CHECK(before > 0.3);
  for (int i = 0; i < 30; ++i) REQUIRE(trainer.train_step().finite);
  const double after = trainer.evaluate_loss(x0, 99);
  CHECK(trainer.step() == 30);
  CHECK(after < 0.6 * before);
  // Learning-rate warmup then constant.
  CHECK(trainer.lr_at(0) == Approx(1.5e-3));
  CHECK(trainer.lr_at(1) == Approx(3e-3));
  CHECK(trainer.lr_at(25) == Approx(3e-3));
}

TEST_CASE("A checkpoint of another model is refused by resume and by sampling from its run folder",
          "[train][trainer][checkpoint][limits]") {
  const std::string dir_a = trainer_dir(), dir_c = trainer_dir();
  {
    QuietTrainer a(tiny_config(dir_a), tiny_data(), {}, quiet());
    REQUIRE(a.run().step == 6);
  }
  const std::string ckpt = dir_a + "/ckpt-000000006.pt";
  std::ifstream cfg_in(dir_a + "/config.json");
  const nlohmann::json run_config = nlohmann::json::parse(cfg_in);
  // Resuming with another schedule: refused, naming the key; the run's files stay as they were.
  auto other = tiny_config(dir_a);
  other.steps = 12;
  other.schedule.beta_end(0.03);
  const std::string why = ddpm_test::error_of([&] { QuietTrainer t(other, tiny_data(), {}, quiet()); });
  CHECK_THAT(why, Catch::Contains("another model than this run's configuration") && Catch::Contains("\"schedule\"") &&
                      Catch::Contains(ckpt) && Catch::Contains("new --out"));
  std::ifstream cfg_again(dir_a + "/config.json");
  CHECK(nlohmann::json::parse(cfg_again) == run_config);
  // ... and another class count (the UNet's shapes would not even differ in the schedule case).
  auto classes = tiny_config(dir_a);
  classes.steps = 12;
  classes.num_classes = 4;
  CHECK_THAT(ddpm_test::error_of([&] { QuietTrainer t(classes, tiny_data(), {}, quiet()); }),
             Catch::Contains("another model"));
  // The same settings resume (the check compares what defines the model, not the step budget).
  {
    auto more = tiny_config(dir_a);
    more.steps = 7;
    QuietTrainer t(more, tiny_data(), {}, quiet());
    CHECK(t.resumed_from() == ckpt);
  }
  // The checkpoint copied into a folder whose config.json says another schedule: refused, as a
  // run folder and as a file; with that run's own config.json it loads.
  std::filesystem::copy_file(ckpt, dir_c + "/ckpt-000000006.pt");
  nlohmann::json changed = run_config;
  changed["schedule"]["beta_end"] = 0.03;
  {
    std::ofstream(dir_c + "/config.json") << changed.dump(2);
  }
  for (const std::string& target : {dir_c, dir_c + "/ckpt-000000006.pt"}) {
    const std::string err = ddpm_test::error_of([&] { (void)ddpm::load_training_checkpoint(target); });
    CHECK_THAT(err, Catch::Contains("holds another model than '" + dir_c + "/config.json'") &&
                        Catch::Contains("\"schedule\"") && Catch::Contains("0.03"));
  }
  {
    std::ofstream(dir_c + "/config.json") << run_config.dump(2);
  }
  CHECK(ddpm::load_training_checkpoint(dir_c).step == 6);
}

TEST_CASE("Stop and resume reproduces the uninterrupted loss sequence exactly", "[train][trainer]") {
  const std::string dir_a = trainer_dir(), dir_b = trainer_dir();
  {
    QuietTrainer a(tiny_config(dir_a), tiny_data(), {}, quiet());
    const auto res = a.run();
    CHECK(res.status == ddpm::RunStatus::Completed);
    CHECK(res.step == 6);
  }
  {
    QuietTrainer b(tiny_config(dir_b), tiny_data(), {}, quiet());
    const auto res = b.run(3);  // stops early: checkpoint at step 3
    CHECK(res.step == 3);
    CHECK(res.checkpoint == dir_b + "/ckpt-000000003.pt");
  }
  {
    QuietTrainer c(tiny_config(dir_b), tiny_data(), {}, quiet());
    CHECK(c.resumed_from() == dir_b + "/ckpt-000000003.pt");
    CHECK(c.step() == 3);
    c.run();
    CHECK(c.step() == 6);
  }
  const auto la = metric_losses(dir_a), lb = metric_losses(dir_b);
  REQUIRE(la.size() == 6);
  REQUIRE(lb.size() == 6);
  for (size_t i = 0; i < 6; ++i) CHECK(la[i] == lb[i]);  // bit-identical on CPU
  // The runs wrote the same final weights, and the outputs exist.
  {
    auto ea = ddpm::load_training_checkpoint(dir_a + "/ckpt-000000006.pt");
    auto eb = ddpm::load_training_checkpoint(dir_b + "/ckpt-000000006.pt");
    CHECK(ea.step == 6);
    // A run directory resolves to its newest checkpoint.
    auto latest = ddpm::load_training_checkpoint(dir_b);
    CHECK(latest.path == dir_b + "/ckpt-000000006.pt");
    CHECK(latest.step == 6);
    for (const auto& p : ea.ema_model->named_parameters()) {
      CHECK(torch::equal(p.value(), eb.ema_model->named_parameters()[p.key()]));
    }
    CHECK(eb.scheduler_config.at("prediction_type") == "epsilon");
    CHECK(std::ifstream(dir_a + "/samples/step-000000006.png").good());
    CHECK(std::ifstream(dir_a + "/loss.png").good());
    CHECK(std::ifstream(dir_a + "/config.json").good());
  }
  // Corrupt the newest checkpoint: the next trainer warns and resumes from the previous one.
  {
    std::fstream f(dir_b + "/ckpt-000000006.pt", std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(100);
    f.put('\x7f');
    f.put('\x01');
  }
  std::vector<std::string> logs;
  QuietTrainer d(tiny_config(dir_b), tiny_data(), {}, [&](const std::string& s) { logs.push_back(s); });
  CHECK(d.resumed_from() == dir_b + "/ckpt-000000003.pt");
  CHECK(d.step() == 3);
  REQUIRE(!logs.empty());
  CHECK_THAT(logs[0], Catch::Contains("ckpt-000000006.pt") && Catch::Contains("corrupt"));
}

TEST_CASE("A non-finite loss stops training and leaves the last good checkpoint", "[train][trainer]") {
  const std::string dir = trainer_dir();
  auto cfg = tiny_config(dir);
  QuietTrainer t(cfg, tiny_data(), {}, quiet());
  const auto w_before = t.model()->named_parameters()["conv_in.weight"].clone();
  auto bad = t.loader().batch(0);
  bad.images[0][0][0][0] = std::numeric_limits<float>::quiet_NaN();
  const auto so = t.train_step(bad);
  CHECK(!so.finite);
  CHECK(t.step() == 0);
  CHECK(torch::equal(w_before, t.model()->named_parameters()["conv_in.weight"]));

  // A huge learning rate blows the weights up; run() stops at the first non-finite loss.
  auto cfg2 = tiny_config(trainer_dir());
  cfg2.lr = 1e30;
  cfg2.warmup_steps = 0;
  cfg2.grad_clip = 0;
  cfg2.checkpoint_every = 1;
  cfg2.steps = 50;
  QuietTrainer t2(cfg2, tiny_data(), {}, quiet());
  const auto res = t2.run();
  REQUIRE(res.status == ddpm::RunStatus::NonFiniteLoss);
  CHECK_THAT(res.message, Catch::Contains("at step " + std::to_string(res.step + 1)));
  CHECK(res.step >= 1);
  CHECK(res.checkpoint == cfg2.out_dir + "/ckpt-" + std::string(9 - std::to_string(res.step).size(), '0') +
                              std::to_string(res.step) + ".pt");
  torch::serialize::InputArchive a;
  CHECK_NOTHROW(ddpm::read_checkpoint_file(res.checkpoint, a));
  ddpm::CheckpointManager mgr(cfg2.out_dir, 3);
  CHECK(mgr.list().back().first == res.step);  // nothing written after the bad step
}

TEST_CASE("A run killed before its first checkpoint leaves no duplicate metrics lines or temporaries",
          "[train][trainer][checkpoint]") {
  const std::string dir = trainer_dir();
  auto cfg = tiny_config(dir);
  cfg.steps = 3;
  cfg.checkpoint_every = 0;
  {
    // "Killed" after 3 logged steps, before any checkpoint: lines 1..3 and a half-written
    // temporary are all it leaves.
    QuietTrainer t(cfg, tiny_data(), {}, quiet());
    std::ofstream o(dir + "/metrics.jsonl", std::ios::app);
    for (int s = 1; s <= 3; ++s) o << nlohmann::json({{"step", s}, {"loss", 1.0}}).dump() << '\n';
    std::ofstream tmp(dir + "/ckpt-000000003.pt.tmp", std::ios::binary);
    tmp << "half";
  }
  QuietTrainer again(cfg, tiny_data(), {}, quiet());
  CHECK(again.step() == 0);
  CHECK_FALSE(std::ifstream(dir + "/ckpt-000000003.pt.tmp").good());
  again.run();
  std::vector<int64_t> steps;
  std::ifstream in(dir + "/metrics.jsonl");
  std::string line;
  while (std::getline(in, line)) steps.push_back(nlohmann::json::parse(line).at("step").get<int64_t>());
  CHECK(steps == std::vector<int64_t>{1, 2, 3});  // the new run's lines, once each
}

TEST_CASE("SIGINT during run() saves a checkpoint and stops; hooks are called", "[train][trainer]") {
  const std::string dir = trainer_dir();
  auto cfg = tiny_config(dir);
  cfg.steps = 100;
  int broadcasts = 0, averages = 0;
  ddpm::TrainerHooks hooks;
  hooks.broadcast_parameters = [&](torch::nn::Module&) { ++broadcasts; };
  hooks.average_gradients = [&](torch::nn::Module&) {
    if (++averages == 2) std::raise(SIGINT);
  };
  QuietTrainer t(cfg, tiny_data(), hooks, quiet());
  const auto res = t.run();
  CHECK(res.status == ddpm::RunStatus::Interrupted);
  CHECK(res.step == 2);
  CHECK(res.checkpoint == dir + "/ckpt-000000002.pt");
  CHECK(broadcasts == 1);
  CHECK(averages == 2);
}

TEST_CASE("TrainConfig JSON round trip and rejection of unknown keys and names", "[train][config]") {
  auto c = tiny_config("/tmp/x");
  c.optimizer = ddpm::OptimizerKind::Adam;
  c.lr_schedule = ddpm::LrSchedule::Cosine;
  c.objective.prediction_type(ddpm::PredictionType::VPrediction);
  const nlohmann::json j = c;
  const auto back = j.get<ddpm::TrainConfig>();
  CHECK(nlohmann::json(back) == j);
  CHECK(j.at("optimizer") == "adam");
  CHECK(j.at("objective").at("prediction_type") == "v_prediction");

  nlohmann::json bad = j;
  bad["learning_rate"] = 1;
  CHECK_THROWS_WITH(bad.get<ddpm::TrainConfig>(), Catch::Contains("unknown key \"learning_rate\""));
  bad = j;
  bad["optimizer"] = "sgd";
  CHECK_THROWS_WITH(bad.get<ddpm::TrainConfig>(), Catch::Contains("\"adamw\", \"adam\""));
  bad = j;
  bad["batch_size"] = 0;
  CHECK_THROWS_WITH(bad.get<ddpm::TrainConfig>(), Catch::Contains("batch_size"));
  bad = j;
  bad["steps"] = "many";
  CHECK_THROWS_WITH(bad.get<ddpm::TrainConfig>(), Catch::Contains("\"steps\""));
  CHECK_THROWS_WITH(ddpm::resolve_model_config("huge"), Catch::Contains("unknown model \"huge\""));
  CHECK(ddpm::resolve_model_config("seed").block_out_channels() == std::vector<int64_t>{64, 128, 256});
  // Cosine schedule: half the peak at mid-training.
  auto cc = tiny_config(trainer_dir());
  cc.lr_schedule = ddpm::LrSchedule::Cosine;
  cc.warmup_steps = 0;
  cc.steps = 100;
  QuietTrainer t(cc, tiny_data(), {}, quiet());
  CHECK(t.lr_at(50) == Approx(cc.lr * 0.5));
  CHECK(t.lr_at(0) == Approx(cc.lr));
}

TEST_CASE("run() calls periodic callbacks at their steps; the loader's batches carry the labels",
          "[train][trainer]") {
  auto cfg = tiny_config(trainer_dir());
  cfg.steps = 6;
  QuietTrainer t(cfg, tiny_data(), {}, quiet());
  // tiny_data: label i % 4; each batch's labels are those of its images' indices.
  const auto b = t.loader().batch(3);
  REQUIRE(b.labels.has_value());
  CHECK(torch::equal(*b.labels, t.loader().indices(3).remainder(4)));
  std::vector<int64_t> every2, every4;
  t.add_periodic_callback(2, [&](ddpm::Trainer& tr) { every2.push_back(tr.step()); });
  t.add_periodic_callback(4, [&](ddpm::Trainer& tr) { every4.push_back(tr.step()); });
  CHECK_THROWS_WITH(t.add_periodic_callback(0, [](ddpm::Trainer&) {}), Catch::Contains("every must be >= 1"));
  const auto res = t.run();
  CHECK(res.status == ddpm::RunStatus::Completed);
  CHECK(every2 == std::vector<int64_t>{2, 4, 6});
  CHECK(every4 == std::vector<int64_t>{4});
}

TEST_CASE("A time-limited cosine schedule decays to 0 at the step the limit allows", "[train][config]") {
  ddpm::TrainConfig c;
  c.lr = 1.0;
  c.warmup_steps = 10;
  c.steps = 1000;
  c.lr_schedule = ddpm::LrSchedule::Cosine;
  // Horizon 110: the cosine runs over steps 10..110 (0.5 (1 + cos(pi p)), p = (s - 10) / 100).
  CHECK(ddpm::learning_rate_at(c, 4, 110) == Approx(0.5));  // warmup: (4 + 1) / 10
  CHECK(ddpm::learning_rate_at(c, 35, 110) == Approx(0.5 * (1 + std::cos(M_PI * 0.25))));
  CHECK(ddpm::learning_rate_at(c, 60, 110) == Approx(0.5));
  CHECK(ddpm::learning_rate_at(c, 110, 110) == Approx(0.0).margin(1e-12));
  CHECK(ddpm::learning_rate_at(c, 500, 110) == Approx(0.0).margin(1e-12));  // past the horizon: 0
  // No horizon, or one past `steps`: the cosine ends at steps (p = (505 - 10) / 990 = 0.5).
  CHECK(ddpm::learning_rate_at(c, 505, 0) == Approx(0.5));
  CHECK(ddpm::learning_rate_at(c, 505, 5000) == Approx(0.5));
  c.lr_schedule = ddpm::LrSchedule::Constant;  // a constant schedule ignores it
  CHECK(ddpm::learning_rate_at(c, 500, 110) == Approx(1.0));
  // The projection: 50 steps from step 100 in 10 s, limit 60 s: 100 + 60 * 50 / 10.
  CHECK(ddpm::time_limit_horizon(100, 50, 10.0, 60.0) == 400);
  CHECK(ddpm::time_limit_horizon(100, 0, 0.0, 60.0) == 0);  // nothing to project from yet
  CHECK(ddpm::time_limit_horizon(0, 3, 1.5, 0.0) == 0);     // no limit

  // A run whose time limit (6 s) comes long before its steps: the learning rate starts at the peak
  // (no pace measured yet) and is near 0 by the last step.
  auto cfg = tiny_config(trainer_dir());
  cfg.lr_schedule = ddpm::LrSchedule::Cosine;
  cfg.warmup_steps = 0;
  cfg.steps = 1000000;
  cfg.time_limit_minutes = 0.1;
  cfg.log_every = 1000;
  cfg.sample_every = 0;
  cfg.checkpoint_every = 0;
  QuietTrainer t(cfg, tiny_data(), {}, quiet());
  std::vector<double> lrs;
  std::vector<int64_t> horizons;
  t.add_periodic_callback(1, [&](ddpm::Trainer& tr) {
    lrs.push_back(tr.lr_at(tr.step() - 1));
    horizons.push_back(tr.state().lr_horizon());
  });
  const auto res = t.run();
  CHECK(res.status == ddpm::RunStatus::TimeLimit);
  REQUIRE(lrs.size() >= 5);
  CHECK(lrs.front() == Approx(cfg.lr));
  CHECK(horizons.front() == 0);
  INFO("steps " << res.step << ", last horizon " << horizons.back() << ", last lr " << lrs.back());
  CHECK(horizons.back() >= res.step - 1);  // projected before the last step, rounded down
  CHECK(horizons.back() <= 2 * res.step);
  CHECK(lrs.back() < 0.3 * cfg.lr);
}
