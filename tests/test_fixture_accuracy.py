"""Accuracy on real labelled images through the whole loop, on the shared trained fixture.

The bench run evaluates 10,000 real Fashion-MNIST test images twice (eager -- the check of the documented
accuracy -- and ONNX fp32 through onnxruntime), hence the ``slow`` mark; it runs in CI all the same.
"""

import json

import pytest
from click.testing import CliRunner

from edgeclip.cli import main

pytestmark = pytest.mark.slow


def test_cli_export_then_bench_reproduces_fixture_through_onnxruntime(fixture_dir, fixture_metrics, fmnist_spec, tmp_path):
    out = tmp_path / "out"
    runner = CliRunner()
    r = runner.invoke(main, ["export", "--model", str(fixture_dir), "--format", "onnx", "--data", fmnist_spec, "--out", str(out),
                             "--json"], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    r = runner.invoke(main, ["bench", "--target", "cpu", "--out", str(out), "--data", fmnist_spec, "--rounds", "2",
                             "--reps", "5", "--json"], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    rows = {row["artifact"]: row for row in json.loads(r.stdout)["rows"]}
    eager = rows["tiny_clip_fmnist fp32 eager"]
    fp32 = rows["tiny_clip_fmnist-classifier-onnx-fp32"]
    for row in (eager, fp32):
        assert row["images"] == 10000 and "error" not in row
    assert abs(eager["top1"] - fixture_metrics["top1"]) <= 0.2 and abs(eager["top5"] - fixture_metrics["top5"]) <= 0.2
    assert abs(fp32["top1"] - fixture_metrics["top1"]) <= 0.2      # through ONNX Runtime
    assert fp32["agreement"] >= 99.5                                  # top-1 agreement with eager
    # int8 on the fixture: tests/test_fixture_int8_matrix.py (every format); the full 10k run: benchmarks/
