"""Choose the healing recipe of benchmarks/README.md on a validation split of the *training* data.

    python -m edgeclip.benchmarks.select_heal [--model DIR] [--data SPEC] [--grid 200:1e-4,500:2e-4,...] [--json]

The calibration source (Fashion-MNIST's 1,000 train images) is split in two stratified halves: healing trains on
the first (unlabelled), and each (steps, lr) is scored by top-1 on the second (labelled, never trained on).  The
test split is not opened here: the README's table then reports the chosen recipe once on the test images.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

GRID = ((200, 1e-4), (200, 2e-4), (500, 1e-4), (500, 2e-4))


def _grid(text: str | None):
    if not text:
        return GRID
    out = []
    for part in text.split(","):
        steps, _, lr = part.partition(":")
        out.append((int(steps), float(lr)))
    return tuple(out)


def main(argv=None) -> int:
    from edgeclip.exporter.compress import CompressRecipe
    from edgeclip.models.datasets import load_calibration_holdout, load_dataset
    from edgeclip.preparation import prepare

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="../shared/fixtures/tiny_clip_fmnist")
    ap.add_argument("--data", default="fashion-mnist")
    ap.add_argument("--prune", default="vision:auto:2")
    ap.add_argument("--grid", default=None, help="steps:lr pairs, comma-separated")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args(argv)
    heal_set, val = load_calibration_holdout(a.data, 500, 500)
    names = load_dataset(a.data, "test", 1)   # class names and prompt names only; no test image is used
    rows = []
    base = prepare(a.model, data=names)
    val_x = val.tensors(base.preprocess)
    labels = np.asarray(val.labels)

    def top1(module) -> float:
        with torch.inference_mode():
            return round(100 * float((module(val_x).argmax(-1).numpy() == labels).mean()), 2)

    rows.append({"recipe": "uncompressed", "val_top1": top1(base.module)})
    unhealed = prepare(a.model, data=names, compress=CompressRecipe(prune_blocks=[a.prune]), calib=heal_set, calib_size=256)
    rows.append({"recipe": f"prune {a.prune}, not healed", "val_top1": top1(unhealed.module)})
    for steps, lr in _grid(a.grid):
        t0 = time.perf_counter()
        c = CompressRecipe(prune_blocks=[a.prune], heal_steps=steps, heal_lr=lr, heal_images=len(heal_set))
        healed = prepare(a.model, data=names, compress=c, calib=heal_set, calib_size=256)
        rows.append({"recipe": f"prune {a.prune}, heal {steps} steps lr {lr:g}", "steps": steps, "lr": lr,
                     "val_top1": top1(healed.module), "seconds": round(time.perf_counter() - t0, 1)})
        if not a.json:
            print(rows[-1], flush=True)
    best = max((r for r in rows if "steps" in r), key=lambda r: (r["val_top1"], -r["steps"]))
    out = {"validation": f"{val.name} {val.split} ({len(val)} held-out images, stratified, not healed on)",
           "heal_images": f"{heal_set.name} {heal_set.split} ({len(heal_set)} images)", "threads": torch.get_num_threads(),
           "rows": rows, "chosen": best["recipe"]}
    print(json.dumps(out, indent=2) if a.json else f"chosen on the validation split: {best['recipe']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
