// EMA math against an independent float64 recurrence; checkpoint files: round
// trip, keep-last-K, rejection of truncated/corrupt files with the previous one
// still loading.
#include <ddpm/train/checkpoint.hpp>
#include <ddpm/train/ema.hpp>
#include <ddpm/train/progress.hpp>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <sys/stat.h>
#include <unistd.h>
#include <vector>

#include "test_util.hpp"

TEST_CASE("EMA follows shadow = d*shadow + (1-d)*param with the warmup decay", "[train][ema]") {
  torch::manual_seed(0);
  torch::nn::Linear model(3, 2);
  ddpm::EMA<torch::nn::Linear> ema(model, ddpm::EMAOptions().decay(0.9).warmup(true));
  // Independent float64 recurrence over the weight values.
  const auto w0 = model->weight.detach().to(torch::kFloat64).clone();
  std::vector<double> shadow(w0.data_ptr<double>(), w0.data_ptr<double>() + 6);
  for (int n = 0; n < 30; ++n) {
    {
      torch::NoGradGuard g;
      model->weight.add_(0.1 * (n % 3) - 0.05);
    }
    const double d = std::min(0.9, (1.0 + n) / (10.0 + n));
    CHECK(ema.current_decay() == Approx(d).epsilon(1e-12));
    ema.update(model);
    const auto w = model->weight.detach().to(torch::kFloat64).contiguous();
    for (int i = 0; i < 6; ++i) shadow[i] = d * shadow[i] + (1 - d) * w.data_ptr<double>()[i];
  }
  const auto s = ema.model()->weight.detach().to(torch::kFloat64).contiguous();
  for (int i = 0; i < 6; ++i) CHECK(s.data_ptr<double>()[i] == Approx(shadow[i]).margin(1e-6));
  CHECK(ema.num_updates() == 30);
  // The shadow is a separate copy: it differs from the model and has no gradients.
  CHECK(!torch::allclose(ema.model()->weight, model->weight));
  CHECK(!ema.model()->weight.requires_grad());

  // Without warmup the decay is constant.
  ddpm::EMA<torch::nn::Linear> plain(model, ddpm::EMAOptions().decay(0.5).warmup(false));
  const auto before = plain.model()->bias.detach().clone();
  {
    torch::NoGradGuard g;
    model->bias.add_(1.0);
  }
  plain.update(model);
  CHECK(torch::allclose(plain.model()->bias, 0.5 * before + 0.5 * model->bias.detach()));
}

TEST_CASE("Checkpoint round trip, keep-last-K, and corrupt/truncated files rejected", "[train][checkpoint]") {
  const ddpm_test::TempDir dir_tmp("ckpt");
  const std::string dir = dir_tmp.str();
  ddpm::CheckpointManager mgr(dir, 2);
  auto make = [](int64_t step) {
    torch::serialize::OutputArchive a;
    a.write("step", torch::tensor(step));
    a.write("w", torch::full({100}, static_cast<float>(step)));
    ddpm::archive_write_string(a, "config", "{\"step\": " + std::to_string(step) + "}");
    return a;
  };
  for (int64_t step : {10, 20, 30}) {
    auto a = make(step);
    mgr.save(step, a);
  }
  auto all = mgr.list();
  REQUIRE(all.size() == 2);  // keep the last 2
  CHECK(all[0].first == 20);
  CHECK(all[1].first == 30);
  CHECK(all[1].second == dir + "/ckpt-000000030.pt");

  torch::serialize::InputArchive in;
  CHECK(mgr.load_latest(in) == dir + "/ckpt-000000030.pt");
  torch::Tensor step, w;
  in.read("step", step);
  in.read("w", w);
  CHECK(step.item<int64_t>() == 30);
  CHECK(w[99].item<float>() == 30.0f);
  CHECK(ddpm::archive_read_string(in, "config") == "{\"step\": 30}");

  // Flip one payload byte of the newest file: CRC mismatch, named file; the
  // manager falls back to the previous checkpoint.
  const std::string newest = all[1].second;
  {
    std::fstream f(newest, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(200);
    char c;
    f.seekg(200);
    f.get(c);
    f.seekp(200);
    f.put(static_cast<char>(c ^ 0x5a));
  }
  torch::serialize::InputArchive bad;
  CHECK_THROWS_WITH(ddpm::read_checkpoint_file(newest, bad),
                    Catch::Contains(newest) && Catch::Contains("corrupt"));
  std::vector<std::string> rejected;
  torch::serialize::InputArchive prev;
  CHECK(mgr.load_latest(prev, [&](const std::string& p, const std::string&) { rejected.push_back(p); }) ==
        all[0].second);
  REQUIRE(rejected.size() == 1);
  CHECK(rejected[0] == newest);
  prev.read("step", step);
  CHECK(step.item<int64_t>() == 20);

  // A truncated file names the sizes.
  {
    std::ifstream f(all[0].second, std::ios::binary);
    std::vector<char> bytes((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
    bytes.resize(bytes.size() - 10);
    std::ofstream o(dir + "/trunc.pt", std::ios::binary);
    o.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  }
  torch::serialize::InputArchive t;
  CHECK_THROWS_WITH(ddpm::read_checkpoint_file(dir + "/trunc.pt", t), Catch::Contains("truncated"));
  {
    std::ofstream o(dir + "/junk.pt", std::ios::binary);
    o << "not a checkpoint at all, just text";
  }
  CHECK_THROWS_WITH(ddpm::read_checkpoint_file(dir + "/junk.pt", t), Catch::Contains("not a ddpm checkpoint"));
  CHECK_THROWS_WITH(ddpm::read_checkpoint_file(dir + "/missing.pt", t), Catch::Contains("cannot open"));
}

TEST_CASE("Checkpoint lifecycle: pruning spares later steps, stale temporaries and directories are handled",
          "[train][checkpoint]") {
  const ddpm_test::TempDir dir_tmp("ckpt_life");
  const std::string dir = dir_tmp.str();
  ddpm::CheckpointManager mgr(dir, 2);
  auto make = [](int64_t step) {
    torch::serialize::OutputArchive a;
    a.write("step", torch::tensor(step));
    return a;
  };
  // Every checkpoint of an earlier attempt is corrupt (steps 10 and 20): the run restarts at 0
  // and saves steps 2, 4, 6. Pruning keeps the newest two of ITS checkpoints and deletes
  // nothing newer than the one it just wrote and verified (before: it kept 10 and 20, the
  // corrupt ones, and deleted the new good ones).
  for (const char* name : {"ckpt-000000010.pt", "ckpt-000000020.pt"}) {
    std::ofstream o(dir + "/" + name, std::ios::binary);
    o << "corrupt";
  }
  for (int64_t step : {2, 4, 6}) {
    auto a = make(step);
    mgr.save(step, a);
  }
  std::vector<int64_t> steps;
  for (const auto& [s, p] : mgr.list()) steps.push_back(s);
  CHECK(steps == std::vector<int64_t>{4, 6, 10, 20});
  std::vector<std::string> rejected;
  torch::serialize::InputArchive in;
  CHECK(mgr.load_latest(in, [&](const std::string& p, const std::string&) { rejected.push_back(p); }) ==
        dir + "/ckpt-000000006.pt");
  CHECK(rejected.size() == 2);  // 20 and 10, reported and skipped
  // Reaching step 10 overwrites the corrupt file; later saves prune normally.
  for (int64_t step : {10, 12}) {
    auto a = make(step);
    mgr.save(step, a);
  }
  steps.clear();
  for (const auto& [s, p] : mgr.list()) steps.push_back(s);
  CHECK(steps == std::vector<int64_t>{10, 12, 20});

  // A killed writer's temporary is removed on start; a directory named like a checkpoint is
  // neither listed nor read (it used to make the reader allocate its "size": std::bad_alloc).
  { std::ofstream o(dir + "/ckpt-000000014.pt.tmp", std::ios::binary); o << "half written"; }
  REQUIRE(::mkdir((dir + "/ckpt-000000099.pt").c_str(), 0755) == 0);
  CHECK(mgr.remove_stale_temporaries() == std::vector<std::string>{dir + "/ckpt-000000014.pt.tmp"});
  CHECK_FALSE(std::filesystem::exists(dir + "/ckpt-000000014.pt.tmp"));
  CHECK(mgr.list().back().first == 20);
  torch::serialize::InputArchive d;
  CHECK_THROWS_WITH(ddpm::read_checkpoint_file(dir + "/ckpt-000000099.pt", d), Catch::Contains("not a regular file"));
  CHECK(mgr.load_latest(d) == dir + "/ckpt-000000012.pt");
  CHECK_THROWS_WITH(ddpm::load_training_checkpoint(dir + "/ckpt-000000099.pt"),
                    Catch::Contains("no readable checkpoint") && Catch::Contains("ckpt-000000099.pt"));
}

TEST_CASE("Generator state survives a checkpoint; EMA save/load", "[train][checkpoint]") {
  const ddpm_test::TempDir dir_tmp("ckpt");
  const std::string dir = dir_tmp.str();
  auto gen = at::detail::createCPUGenerator(42);
  torch::randn({5}, gen);
  torch::nn::Linear model(2, 2);
  ddpm::EMA<torch::nn::Linear> ema(model);
  ema.update(model);
  torch::serialize::OutputArchive a;
  ddpm::archive_write_generator(a, "rng", gen);
  torch::serialize::OutputArchive e;
  ema.save(e);
  a.write("ema", e);
  ddpm::write_checkpoint_file(dir + "/c.pt", a);
  const auto expected = torch::randn({5}, gen);

  torch::serialize::InputArchive in;
  ddpm::read_checkpoint_file(dir + "/c.pt", in);
  auto gen2 = at::detail::createCPUGenerator(0);
  ddpm::archive_read_generator(in, "rng", gen2);
  CHECK(torch::equal(torch::randn({5}, gen2), expected));
  torch::nn::Linear other(2, 2);
  ddpm::EMA<torch::nn::Linear> ema2(other);
  torch::serialize::InputArchive ein;
  in.read("ema", ein);
  ema2.load(ein);
  CHECK(ema2.num_updates() == 1);
  CHECK(torch::equal(ema2.model()->weight, ema.model()->weight));
}

TEST_CASE("format_duration", "[train][progress]") {
  CHECK(ddpm::format_duration(0) == "00:00");
  CHECK(ddpm::format_duration(75) == "01:15");
  CHECK(ddpm::format_duration(3725) == "1:02:05");
  CHECK(ddpm::format_duration(NAN) == "--:--");
}
