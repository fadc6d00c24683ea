"""Write a copy of an open_clip model folder whose image tower carries int8-hostile outlier channels.

Long-pretrained ViTs have a few LayerNorm output channels tens of times larger than the rest; the models we
train here do not.  This makes one that does, without changing its fp32 function (exporter/quantize/outliers.py:
channel 0 of every LayerNorm that feeds a Linear is scaled by ``--scale`` and the Linear's input column divided
by it), so the int8 table in benchmarks/README.md can show what happens on such a model.

    python benchmarks/outlier_model.py ../shared/fixtures/tiny_clip_fmnist /tmp/hostile --scale 50
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("src", type=Path, help="open_clip model folder (open_clip_config.json + open_clip_model.safetensors)")
    ap.add_argument("dst", type=Path)
    ap.add_argument("--scale", type=float, default=50.0)
    a = ap.parse_args()

    import open_clip
    from safetensors.torch import load_file, save_file

    from edgeclip.exporter.quantize.outliers import inject_outliers

    cfg = json.loads((a.src / "open_clip_config.json").read_text())
    model = open_clip.CLIP(**cfg["model_cfg"]).eval()
    model.load_state_dict({k: v.float() for k, v in load_file(str(a.src / "open_clip_model.safetensors")).items()})
    size = cfg["model_cfg"]["vision_cfg"]["image_size"]
    x = torch.randn(4, 3, size, size)
    with torch.no_grad():
        before = model.encode_image(x)
    feeds = inject_outliers(model.visual, x[:2], scale=a.scale)
    with torch.no_grad():
        diff = float((model.encode_image(x) - before).abs().max())
    if a.dst.exists():
        shutil.rmtree(a.dst)
    shutil.copytree(a.src, a.dst, ignore=shutil.ignore_patterns("open_clip_model.safetensors", "metrics.json"))
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(a.dst / "open_clip_model.safetensors"))
    print(f"{a.dst}: x{a.scale:g} outlier channel in {len(feeds)} LayerNorms; fp32 image features max |diff| {diff:.2e}")


if __name__ == "__main__":
    main()
