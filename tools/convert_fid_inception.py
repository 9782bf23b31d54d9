#!/usr/bin/env python3
"""Converts pytorch-fid's Inception weights to the safetensors file ddpm reads.

ddpm never downloads weights. Fetch pytorch-fid's published file yourself:
  https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/pt_inception-2015-12-05-6726825d.pth
then run (needs torch and safetensors):
  python tools/convert_fid_inception.py pt_inception-2015-12-05-6726825d.pth pt_inception-fid.safetensors
and pass the result to `evaluate --features inception --inception-weights pt_inception-fid.safetensors`.

The tensor names are kept as they are (e.g. "Mixed_6b.branch7x7dbl_3.conv.weight"); <ddpm/eval/inception.hpp>
uses the same names and ignores "fc.*" (the 1008-class head) and "*.num_batches_tracked".
"""
import argparse
import hashlib

import torch
from safetensors.torch import save_file

EXPECTED_SHA256_PREFIX = "6726825d"  # pytorch-fid names the file after the first digits of its sha256


def convert(src, dst):
    state = torch.load(src, map_location="cpu", weights_only=True)
    if not isinstance(state, dict) or "Conv2d_1a_3x3.conv.weight" not in state:
        raise SystemExit(f"{src}: not pytorch-fid's Inception state dict (no 'Conv2d_1a_3x3.conv.weight')")
    out = {k: v.detach().to(torch.float32).contiguous() for k, v in state.items()
           if v.is_floating_point()}
    save_file(out, dst, metadata={"format": "pytorch-fid-inception", "source": src})
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("src", help="pt_inception-2015-12-05-6726825d.pth")
    p.add_argument("dst", help="output .safetensors")
    a = p.parse_args()
    with open(a.src, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    if not digest.startswith(EXPECTED_SHA256_PREFIX):
        print(f"warning: sha256 {digest[:8]}... is not pytorch-fid's published file ({EXPECTED_SHA256_PREFIX}...)")
    out = convert(a.src, a.dst)
    print(f"wrote {a.dst}: {len(out)} tensors")


if __name__ == "__main__":
    main()
