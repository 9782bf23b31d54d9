#include <ddpm/nn/flops.hpp>

#include <catch2/catch.hpp>
#include <torch/torch.h>

namespace {
// Independent hand count: a multiply-add = 2 FLOPs.
double conv(double cout, double cin, double k, double hw) { return 2 * cout * cin * k * k * hw; }
double lin(double in, double out) { return 2 * in * out; }

ddpm::UNetOptions two_level() {
  ddpm::UNetOptions o;
  o.block_out_channels({16, 32})
      .down_block_types({"DownBlock2D", "DownBlock2D"})
      .up_block_types({"UpBlock2D", "UpBlock2D"})
      .layers_per_block(1)
      .norm_num_groups(8)
      .add_attention(false);
  return o;
}
}  // namespace

TEST_CASE("unet_forward_flops matches a hand count of a 2-level UNet", "[flops]") {
  ddpm::UNet unet(two_level());
  const ddpm::UNetFlops f = ddpm::unet_forward_flops(*unet, 8, 8);
  const double t = 64;  // time embedding width 4 * 16
  const double linear = lin(16, t) + lin(t, t)          // time MLP
                        + lin(t, 16) + lin(t, 32)       // down resnets' time_emb_proj
                        + 2 * lin(t, 32)                // mid resnets
                        + 2 * lin(t, 32) + 2 * lin(t, 16);  // up resnets
  const double convs =
      conv(16, 3, 3, 64)                                                   // conv_in @8x8
      + conv(16, 16, 3, 64) * 2                                            // down0 resnet @8x8
      + conv(16, 16, 3, 16)                                                // down0 downsample -> 4x4
      + conv(32, 16, 3, 16) + conv(32, 32, 3, 16) + conv(32, 16, 1, 16)    // down1 resnet 16->32
      + 4 * conv(32, 32, 3, 16)                                            // mid: 2 resnets
      + conv(32, 64, 3, 16) + conv(32, 32, 3, 16) + conv(32, 64, 1, 16)    // up0 resnet0 (32+32)
      + conv(32, 48, 3, 16) + conv(32, 32, 3, 16) + conv(32, 48, 1, 16)    // up0 resnet1 (32+16)
      + conv(32, 32, 3, 64)                                                // up0 upsample -> 8x8
      + conv(16, 48, 3, 64) + conv(16, 16, 3, 64) + conv(16, 48, 1, 64)    // up1 resnet0 (32+16)
      + conv(16, 32, 3, 64) + conv(16, 16, 3, 64) + conv(16, 32, 1, 64)    // up1 resnet1 (16+16)
      + conv(3, 16, 3, 64);                                                // conv_out
  CHECK(f.linear == linear);
  CHECK(f.conv == convs);
  CHECK(f.attention == 0);
  CHECK(f.matmul() == linear + convs);

  SECTION("a mid-block attention adds its projections and its two matmuls") {
    ddpm::UNet with_attn(two_level().add_attention(true).attention_head_dim(c10::nullopt));
    const ddpm::UNetFlops g = ddpm::unet_forward_flops(*with_attn, 8, 8);
    const double n = 16, c = 32;  // 4x4 positions, 32 channels
    CHECK(g.linear - f.linear == 4 * 2 * n * c * c);
    CHECK(g.attention == 2 * (2 * n * n * c));
    CHECK(g.conv == f.conv);
  }
  SECTION("downsample_padding 0 pads right/bottom first: same output size, same count") {
    ddpm::UNet p0(two_level().downsample_padding(0));
    CHECK(ddpm::unet_forward_flops(*p0, 8, 8).matmul() == f.matmul());
  }
}

TEST_CASE("ddpm_cifar10 costs about 6.25 GMAC per 32x32 image", "[flops]") {
  ddpm::UNet unet(ddpm::UNetOptions::ddpm_cifar10());
  const ddpm::UNetFlops f = ddpm::unet_forward_flops(*unet, 32, 32);
  CHECK(f.matmul() > 12.4e9);
  CHECK(f.matmul() < 12.5e9);
  CHECK(f.attention > 0);
  // Attention at 16x16 only (down level 1, up level 2) plus the 4x4 mid block:
  // 5 blocks at N = 256, C = 256 and one at N = 16.
  CHECK(f.attention == 5 * 4.0 * 256 * 256 * 256 + 4.0 * 16 * 16 * 256);
}
