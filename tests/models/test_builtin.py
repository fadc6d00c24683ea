"""The built-in default model: the project's own weights, small enough to commit, accuracy as documented."""

import json


import edgeclip
from edgeclip.models.factory import BUILTIN_DIR


def test_weights_are_small_fp16():
    f = BUILTIN_DIR / "open_clip_model.safetensors"
    assert f.stat().st_size <= 16 * 2**20
    from safetensors import safe_open

    with safe_open(str(f), "pt") as s:
        assert {s.get_slice(k).get_dtype() for k in s.keys()} == {"F16"}


def test_accuracy_matches_documented(fmnist_spec):
    documented = json.loads((BUILTIN_DIR / "metrics.json").read_text())
    res = edgeclip.evaluate("edgeclip-fmnist", fmnist_spec)
    assert res["images"] == 10000 and res["model"] == "edgeclip-fmnist"
    assert abs(res["top1"] - documented["top1"]) <= 0.2
    assert abs(res["top5"] - documented["top5"]) <= 0.2
    log = json.loads((BUILTIN_DIR / "train_log.json").read_text())
    assert abs(log["top1_test10k"] - documented["top1"]) <= 0.2  # fp16 storage costs nothing measurable
