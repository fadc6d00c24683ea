"""Compressed models go through the same export -> verify path: every format round-trips, int8 included."""

import json

import numpy as np
from click.testing import CliRunner

from edgeclip.cli import main
from edgeclip.manifest import open_artifact
from edgeclip.runtimes import load as load_session


def test_compressed_int8_export_in_every_format_round_trips(tmp_path, tiny_clip_dir, tiny_images):
    """Every pass that changes the image path at once -- heads, neurons, SVD, token dropping and merging -- int8."""
    out = tmp_path / "out"
    argv = ["export", "--model", str(tiny_clip_dir), "--data", tiny_images, "--verify-size", "6", "--out", str(out),
            "--svd", "0.5", "--svd-layers", "attn", "--mlp-keep", "0.5", "--heads-keep", "0.5", "--prune-score", "magnitude",
            "--token-keep", "0.5", "--token-blocks", "0", "--token-merge", "2", "--token-merge-blocks", "1", "--quant", "int8", "--format", "all", "--json"]
    r = CliRunner().invoke(main, argv)
    assert r.exit_code == 0, r.output
    manifests = json.loads(r.stdout)
    assert sorted(m["format"] for m in manifests) == ["onnx", "pte", "ptl"]
    for m in manifests:
        c = m["compression"]
        assert [p["name"] for p in c["passes"]] == ["structured", "svd", "tokens", "token-merge"]
        assert c["passes"][-1]["extra"]["tokens_at_output"] == 7     # 16 patches -(block 0 drops half)- 8 -(block 1 merges 2)- 6
        assert c["params_after"]["vision"] < 0.7 * c["params_before"]["vision"]
        assert c["flops_after"]["vision"] < c["flops_before"]["vision"]
        assert "mean_cosine" in c["vs_uncompressed"] and m["recipe"]["compress"]["mlp_keep"] == 0.5
        a = open_artifact(out / m["name"])
        x = np.random.default_rng(0).standard_normal((3, 3, 32, 32)).astype(np.float32)
        assert load_session(a, threads=1).run(x).shape == (3, len(m["labels"]))
    # names carry the compression, so a plain export into the same folder cannot overwrite these
    assert all("-svd0.5-mlp0.5-heads0.5-tok0.5-tome2-" in m["name"] for m in manifests)
    # verify rebuilds the compressed model from the manifest's recipe and re-measures the file against it
    onnx = next(m["name"] for m in manifests if m["format"] == "onnx")
    v = CliRunner().invoke(main, ["verify", str(out / onnx), "--json"])
    assert v.exit_code == 0, v.output
    assert json.loads(v.stdout)[0]["passed"] is True
