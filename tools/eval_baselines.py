#!/usr/bin/env python3
"""Real-data baselines for FD-fmnist (docs/evaluation.md): scores perturbed Fashion-MNIST sets
against the committed test-split statistics with the `evaluate` CLI and prints a Markdown table.

  python3 tools/eval_baselines.py --evaluate build/examples/evaluate [--n 10000] [--threads 2]

Needs numpy and safetensors (the project's venv has both); reads the IDX files of
/usr/share/datasets/fashion-mnist (Debian's dataset-fashion-mnist). Sets (all in [-1, 1]):
  train          the first n training images (real data, not the test images)
  train-1000     the first 1000 training images (FD's n-dependence)
  test+noise     test images + N(0, 0.1^2) noise in [0, 1] pixel units (0.2 in [-1, 1]), clipped
  test-blur3     test images blurred with a 3x3 box filter (edges replicated)
  class-means    each test image replaced by the mean image of its class (10 distinct images)
  noise          uniform noise in [-1, 1]
  test-1000      the first 1000 test images (the n a model is scored at)
  mirror-half    the same 1000, a random half of them mirrored left-right: what a model trained
                 with random_flip draws at best, since Fashion-MNIST's shoes all face one way
  mirror-all     the same 1000, all mirrored
"""
import argparse
import gzip
import json
import os
import subprocess
import tempfile

import numpy as np
from safetensors.numpy import save_file

DATA = "/usr/share/datasets/fashion-mnist"


def idx(name):
    with gzip.open(os.path.join(DATA, name + ".gz"), "rb") as f:
        raw = f.read()
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def model_range(u8):
    return (u8.astype(np.float32) / 127.5 - 1.0)[:, None]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--evaluate", default="build/examples/evaluate")
    p.add_argument("--n", type=int, default=10000)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    rng = np.random.default_rng(a.seed)
    train = model_range(idx("train-images-idx3-ubyte"))
    test_all = model_range(idx("t10k-images-idx3-ubyte"))
    labels = idx("t10k-labels-idx1-ubyte")
    n = min(a.n, len(test_all))
    test = test_all[:n]
    labels = labels[:n]
    x01 = (test + 1) / 2
    noisy = np.clip(x01 + 0.1 * rng.standard_normal(x01.shape), 0, 1) * 2 - 1
    pad = np.pad(test, ((0, 0), (0, 0), (1, 1), (1, 1)), mode="edge")
    blur = sum(pad[:, :, i:i + 28, j:j + 28] for i in range(3) for j in range(3)) / 9.0
    means = np.stack([test[labels == c].mean(0) for c in range(10)])
    sets = [
        ("real training images", train[:n]),
        ("real training images (n = 1000)", train[:1000]),
        ("test images + N(0, 0.1²) pixel noise", noisy),
        ("test images, 3x3 box blur", blur),
        ("per-class mean images", means[labels]),
        ("uniform noise", rng.uniform(-1, 1, test.shape)),
    ]
    few = test_all[:1000]
    mirror = rng.random(len(few)) < 0.5
    half = np.where(mirror[:, None, None, None], few[..., ::-1], few)
    sets += [
        ("test images (n = 1000)", few),
        ("test images (n = 1000), a random half mirrored left-right", half),
        ("test images (n = 1000), all mirrored left-right", few[..., ::-1]),
    ]
    rows = []
    with tempfile.TemporaryDirectory() as d:
        for name, x in sets:
            path = os.path.join(d, "x.safetensors")
            save_file({"images": np.ascontiguousarray(x, dtype=np.float32)}, path)
            out = subprocess.run([a.evaluate, "--samples", path, "--threads", str(a.threads)], check=True,
                                 capture_output=True, text=True).stdout
            j = json.loads(out)
            rows.append((name, j))
            print(f"{name}: {out.strip()}", flush=True)
    print()
    # Orientation: the share of each class's training images with more ink in the right half.
    tl = idx("train-labels-idx1-ubyte")
    heavy = train[..., 14:].sum((1, 2, 3)) > train[..., :14].sum((1, 2, 3))
    print("right-heavy share of the training images by class: " +
          ", ".join(f"{c} {heavy[tl == c].mean():.1%}" for c in range(10)))
    print()
    print("| set | n | FD-fmnist | KID | mean confidence | seconds |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, j in rows:
        print(f"| {name} | {j['n']} | {j['fd']:.4g} | {j['kid']:.3g} | {j['mean_confidence']:.3f} | "
              f"{j['wall_seconds']:.1f} |")


if __name__ == "__main__":
    main()
