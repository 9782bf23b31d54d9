#!/usr/bin/env python3
"""Checks that HuggingFace diffusers (0.31.0) loads the class-conditional UNet folders ddpm saves
and computes the same outputs. Run by hand (not part of CI):

    cmake --build build --target ddpm_tests
    DDPM_EXPORT_DIR=/tmp/cond_export ./build/tests/ddpm_tests "[.unet_cond_export]"
    /opt/ddpm-py/venv/bin/python tools/check_diffusers_load.py /tmp/cond_export

The export holds cond/ (tests/data/diffusers/unet_tiny_cond re-saved by ddpm), fresh_embedding/
and fresh_timestep/ (freshly initialised ddpm models), and ours.safetensors (ddpm's outputs).
Each folder must load with UNet2DModel.from_pretrained with no missing or unexpected weights,
keep its class config, and reproduce ddpm's outputs within 1e-4.
"""

import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from diffusers import UNet2DModel  # noqa: E402
from safetensors.torch import load_file  # noqa: E402


def main():
    root = sys.argv[1]
    torch.set_num_threads(1)
    ours = load_file(os.path.join(root, "ours.safetensors"))
    x, t = ours["sample"], ours["timestep"]
    cases = [("cond", ours["class_labels"]), ("fresh_embedding", ours["fresh_labels"]),
             ("fresh_timestep", ours["fresh_labels"])]
    worst = 0.0
    for name, labels in cases:
        model, info = UNet2DModel.from_pretrained(os.path.join(root, name), output_loading_info=True)
        assert not any(info.values()), f"{name}: loading info {info}"
        model.eval()
        with torch.no_grad():
            out = model(x, t, class_labels=labels).sample
        d = (out - ours[name]).abs().max().item()
        worst = max(worst, d)
        print(f"{name:16s} class_embed_type={model.config.class_embed_type!r} "
              f"num_class_embeds={model.config.num_class_embeds!r} max|diffusers - ddpm| = {d:.3g}")
        assert d < 1e-4, name
    print(f"OK: diffusers loads all {len(cases)} folders; worst difference {worst:.3g}")


if __name__ == "__main__":
    main()
