#!/usr/bin/env python3
"""The reference for `ddpm_bench --mode sample`: a whole guided sampling run the way a diffusers
user writes it (UNet2DModel + DPMSolverMultistepScheduler, classifier-free guidance on one batched
call of cat([x, x]) with the null class), on the Fashion-MNIST demo model's UNet config (random
weights, nothing downloaded), in batches of --batch-size. Prints one JSON object: wall seconds,
images/s and peak RSS (ru_maxrss). Dev tooling for docs/performance.md, not part of CI.

  OMP_WAIT_POLICY=PASSIVE python3 tools/diffusers_sample_bench.py --num-samples 256 --batch-size 16
"""
import argparse
import json
import resource
import time

import torch


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--num-samples", type=int, default=1000)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--guidance-scale", type=float, default=4.0)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    from diffusers import DPMSolverMultistepScheduler, UNet2DModel

    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    # examples/configs/fashion_mnist.json's model (10 classes + the null class).
    unet = UNet2DModel(sample_size=32, in_channels=1, out_channels=1, block_out_channels=(32, 64, 128),
                       down_block_types=("DownBlock2D", "DownBlock2D", "AttnDownBlock2D"),
                       up_block_types=("AttnUpBlock2D", "UpBlock2D", "UpBlock2D"), layers_per_block=1,
                       norm_num_groups=8, attention_head_dim=32, num_class_embeds=11).eval()
    sched = DPMSolverMultistepScheduler(num_train_timesteps=1000, beta_schedule="linear", beta_start=0.0001,
                                        beta_end=0.02)
    guided = a.guidance_scale != 1.0
    gen = torch.Generator().manual_seed(0)
    start = time.perf_counter()
    done = 0
    with torch.inference_mode():
        while done < a.num_samples:
            b = min(a.batch_size, a.num_samples - done)
            labels = torch.arange(done, done + b) % 10
            x = torch.randn(b, 1, 32, 32, generator=gen) * sched.init_noise_sigma
            sched.set_timesteps(a.steps)
            for t in sched.timesteps:
                if guided:
                    out = unet(torch.cat([x, x]), t, class_labels=torch.cat([labels, torch.full_like(labels, 10)])).sample
                    c, u = out.chunk(2)
                    eps = u + a.guidance_scale * (c - u)
                else:
                    eps = unet(x, t, class_labels=labels).sample
                x = sched.step(eps, t, x).prev_sample
            done += b
    wall = time.perf_counter() - start
    print(json.dumps({"reference": "diffusers UNet2DModel + DPMSolverMultistepScheduler", "torch": torch.__version__,
                      "num_samples": a.num_samples, "batch_size": a.batch_size, "steps": a.steps,
                      "guidance_scale": a.guidance_scale, "threads": torch.get_num_threads(), "wall_s": wall,
                      "images_per_s": a.num_samples / wall,
                      "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0}))


if __name__ == "__main__":
    main()
