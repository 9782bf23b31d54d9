#!/usr/bin/env python3
"""PyTorch eager reference for ddpm_bench: diffusers' UNet2DModel with google/ddpm-cifar10-32's
config (random weights, nothing downloaded), timed the way ddpm_bench times ddpm::UNet:
train = q_sample + forward + MSE(eps) + backward + AdamW step at B=128, forward = no-grad forward
at B=256, each in float32 and under bf16 autocast. One JSON object per line on stdout; when
diffusers does not import (a machine with only torch), one line {"skipped": reason}.
Used by tools/gpu-check.sh; dev tooling, not part of the library or of CI.

On a CPU, the same-run reference of docs/performance.md (float32 only; one JSON line per run,
with the same 2048x2048 sgemm reference as ddpm_bench, 5 runs before and after):
  OMP_WAIT_POLICY=PASSIVE python3 tools/gpu_ref_bench.py --device cpu --threads 2 \
      --runs forward:1,forward:16,train:32 --iters 10 --warmup 2
"""
import argparse
import json
import statistics
import time

import torch


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--runs", default="", help="mode:batch,... (default train:128,forward:256; CPU train:2,forward:2)")
    ap.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0: torch's default)")
    a = ap.parse_args()
    if a.threads > 0:
        torch.set_num_threads(a.threads)
    try:
        from diffusers import UNet2DModel
    except Exception as e:  # noqa: BLE001 - any import failure means "no reference here"
        print(json.dumps({"skipped": f"diffusers does not import: {type(e).__name__}: {e}"[:300]}))
        return
    dev = torch.device(a.device)
    cpu = dev.type == "cpu"
    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize()

    runs = [("train", 2 if cpu else 128), ("forward", 2 if cpu else 256)]
    iters, warmup = (1, 0) if cpu else (a.iters, a.warmup)
    if a.runs:
        runs = [(r.split(":")[0], int(r.split(":")[1])) for r in a.runs.split(",")]
        iters, warmup = a.iters, a.warmup

    def sgemm_gflops():
        m = torch.randn(2048, 2048, device=dev)
        ts = []
        for _ in range(6):
            t0 = time.perf_counter()
            torch.mm(m, m)
            sync()
            ts.append(time.perf_counter() - t0)
        return 2 * 2048 ** 3 / statistics.median(ts[1:]) / 1e9
    torch.manual_seed(0)
    model = UNet2DModel(sample_size=32, in_channels=3, out_channels=3, layers_per_block=2,
                        block_out_channels=(128, 256, 256, 256),
                        down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"),
                        up_block_types=("UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
                        attention_head_dim=None, downsample_padding=0, flip_sin_to_cos=False,
                        freq_shift=1, norm_eps=1e-6, norm_num_groups=32).to(dev)
    betas = torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64)
    abar = torch.cumprod(1 - betas, 0).float().to(dev)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

    for precision in ("fp32", "bf16"):
        if cpu and precision == "bf16":
            continue
        amp = torch.autocast("cuda", dtype=torch.bfloat16, enabled=precision == "bf16") if not cpu else torch.autocast("cpu", enabled=False)
        for mode, B in runs:
            x0 = torch.rand(B, 3, 32, 32, device=dev) * 2 - 1
            if mode == "train":
                model.train()

                def step():
                    opt.zero_grad(set_to_none=True)
                    t = torch.randint(0, 1000, (B,), device=dev)
                    noise = torch.randn_like(x0)
                    ab = abar[t].view(-1, 1, 1, 1)
                    xt = ab.sqrt() * x0 + (1 - ab).sqrt() * noise
                    with amp:
                        out = model(xt, t).sample
                    loss = torch.nn.functional.mse_loss(out.float(), noise)
                    loss.backward()
                    opt.step()
            else:
                model.eval()
                t = torch.randint(0, 1000, (B,), device=dev)

                def step():
                    with torch.inference_mode(), amp:
                        model(x0, t)
            sg_before = sgemm_gflops()
            for _ in range(warmup):
                step()
            sync()
            times = []
            for _ in range(iters):
                t0 = time.perf_counter()
                step()
                sync()
                times.append(time.perf_counter() - t0)
            med = statistics.median(times)
            sgemm = statistics.median([sg_before, sgemm_gflops()])
            print(json.dumps({"impl": "pytorch-eager diffusers UNet2DModel", "torch": torch.__version__,
                              "device": a.device, "mode": mode, "batch_size": B, "precision": precision,
                              "median_s": med, "min_s": min(times), "times_s": times, "images_per_s": B / med,
                              "threads": torch.get_num_threads(), "sgemm_gflops_per_s": sgemm,
                              "tf32_cudnn": torch.backends.cudnn.allow_tf32,
                              "tf32_matmul": torch.backends.cuda.matmul.allow_tf32}), flush=True)


if __name__ == "__main__":
    main()
