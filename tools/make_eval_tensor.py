#!/usr/bin/env python3
"""Writes the first n Fashion-MNIST training images, padded to 32x32 with the background value and
scaled to [-1, 1], as a safetensors tensor "images" [n, 1, 32, 32] — the input of the evaluation
speed figure in docs/evaluation.md:

  python3 tools/make_eval_tensor.py --n 10000 --out train10k.safetensors
  /usr/bin/time ./build/examples/evaluate --samples train10k.safetensors --threads 2

Needs numpy and safetensors (the project's venv); reads /usr/share/datasets/fashion-mnist.
"""
import argparse

import numpy as np
from safetensors.numpy import save_file

from eval_baselines import idx, model_range


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=10000)
    p.add_argument("--out", required=True)
    a = p.parse_args()
    x = model_range(idx("train-images-idx3-ubyte")[: a.n])
    x = np.pad(x, ((0, 0), (0, 0), (2, 2), (2, 2)), constant_values=-1.0)
    save_file({"images": np.ascontiguousarray(x)}, a.out)
    print(f"wrote {a.out}: {x.shape}")


if __name__ == "__main__":
    main()
