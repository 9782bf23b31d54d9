// The trainer's collective decisions, in one process with a fake "other rank": the
// allreduce_sum hook adds the other rank's contribution. A non-finite loss on the other
// rank must stop this rank too (no backward, no gradient allreduce, no update); the loss
// reported is the mean over the ranks; ranks resumed at different steps are refused.
// (The real 2-process runs are the cli.train.dist.* CTests.)
#include <ddpm/train/trainer.hpp>

#include <limits>
#include <string>
#include <unistd.h>

#include "test_util.hpp"
#include "train_test_util.hpp"

namespace {

std::string collective_dir() { return ddpm_test::process_temp_dir("collective"); }

ddpm::ImageData tiny_images() {
  ddpm::ImageData d;
  d.images = torch::randint(0, 256, {16, 1, 8, 8}, torch::TensorOptions().dtype(torch::kUInt8));
  d.labels = torch::zeros({16}, torch::kInt64);
  d.name = "tiny";
  return d;
}

ddpm::TrainConfig collective_config(const std::string& out) {
  ddpm::TrainConfig c = ddpm_test::tiny_train_config(out, 8, /*channels=*/8);
  c.batch_size = 4;
  c.steps = 10;
  return c;
}

struct FakePeer {
  double other = 0;  // what the other rank contributes to every allreduce_sum
  int averages = 0;  // average_gradients calls
};

ddpm::TrainerHooks fake_hooks(FakePeer& peer, int rank) {
  ddpm::TrainerHooks h;
  h.rank = rank;
  h.world_size = 2;
  h.allreduce_sum = [&peer](double v) { return v + peer.other; };
  h.average_gradients = [&peer](torch::nn::Module&) { ++peer.averages; };
  return h;
}

}  // namespace

TEST_CASE("A non-finite loss on another rank stops this rank's step too", "[train][collective]") {
  FakePeer peer;
  ddpm::Trainer t(collective_config(collective_dir()), tiny_images(), fake_hooks(peer, 1), [](const std::string&) {});
  const auto x0 = t.loader().batch(0);

  // Finite on both ranks: the reported loss is the mean of the two ranks' losses.
  peer.other = 0.25;
  const auto ok = t.train_step(x0);
  REQUIRE(ok.finite);
  CHECK(std::isfinite(ok.rank_loss));
  CHECK(ok.loss == Approx((ok.rank_loss + 0.25) / 2.0).epsilon(1e-12));
  CHECK(t.step() == 1);
  CHECK(peer.averages == 1);

  // NaN on the other rank only: nothing happens here either.
  const auto before = t.model()->named_parameters()["conv_in.weight"].clone();
  for (const double bad : {std::numeric_limits<double>::quiet_NaN(), std::numeric_limits<double>::infinity()}) {
    peer.other = bad;
    const auto so = t.train_step(x0);
    CHECK_FALSE(so.finite);
    CHECK(std::isfinite(so.rank_loss));  // this rank's own loss was fine
    CHECK(t.step() == 1);
    CHECK(peer.averages == 1);  // no gradient allreduce that the other rank would never join
    CHECK(torch::equal(before, t.model()->named_parameters()["conv_in.weight"]));
  }
}

TEST_CASE("Ranks that resumed at different steps are refused with a clear error", "[train][collective]") {
  FakePeer peer;
  peer.other = 3;  // the other rank claims step 3, this rank starts fresh at step 0
  CHECK_THROWS_WITH(
      ddpm::Trainer(collective_config(collective_dir()), tiny_images(), fake_hooks(peer, 1), [](const std::string&) {}),
      Catch::Contains("resumed at different steps") && Catch::Contains("shared file system"));
}
