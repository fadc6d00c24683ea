"""Accuracy on real labelled images through the whole loop, on the shared trained fixture.

These evaluate 10,000 real Fashion-MNIST test images several times (about a minute each on
2 cores), hence the ``slow`` mark; they run in CI all the same.
"""

import json

import pytest
from click.testing import CliRunner

import edgeclip
from edgeclip.cli import main

pytestmark = pytest.mark.slow


def test_eager_matches_documented_accuracy(fixture_dir, fixture_metrics, fmnist_spec):
    res = edgeclip.evaluate(str(fixture_dir), fmnist_spec)
    assert res["images"] == 10000
    assert abs(res["top1"] - fixture_metrics["top1"]) <= 0.2
    assert abs(res["top5"] - fixture_metrics["top5"]) <= 0.2


def test_cli_export_then_bench_reproduces_fixture_through_onnxruntime(fixture_dir, fixture_metrics, fmnist_spec, tmp_path):
    out = tmp_path / "out"
    runner = CliRunner()
    for quant in ("none", "int8"):
        r = runner.invoke(main, ["export", "--model", str(fixture_dir), "--format", "onnx", "--quant", quant,
                                 "--data", fmnist_spec, "--out", str(out), "--json"], catch_exceptions=False)
        assert r.exit_code == 0, r.output
    r = runner.invoke(main, ["bench", "--target", "cpu", "--out", str(out), "--data", fmnist_spec, "--rounds", "2",
                             "--reps", "5", "--json"], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    rows = {row["artifact"]: row for row in json.loads(r.output)["rows"]}
    eager = rows["tiny_clip_fmnist fp32 eager"]
    fp32 = rows["tiny_clip_fmnist-classifier-onnx-fp32"]
    int8 = rows["tiny_clip_fmnist-classifier-onnx-int8-dynamic"]
    for row in (eager, fp32, int8):
        assert row["images"] == 10000 and "error" not in row
    assert abs(eager["top1"] - fixture_metrics["top1"]) <= 0.2
    assert abs(fp32["top1"] - fixture_metrics["top1"]) <= 0.2      # through ONNX Runtime
    assert fp32["agreement"] >= 99.5                                  # top-1 agreement with eager
    assert int8["agreement"] >= 98.0 and abs(int8["top1"] - eager["top1"]) <= 0.5
    assert int8["file_mb"] <= 0.31 * fp32["file_mb"]
