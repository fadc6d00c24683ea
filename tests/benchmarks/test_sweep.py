"""``edgeclip sweep`` on the trained fixture: real accuracy moves, the JSON and both plots are written."""

import json

import pytest
from click.testing import CliRunner

from edgeclip.cli import main


def test_sweep_on_the_trained_fixture(tmp_path, fixture_dir, fmnist_spec):
    out = tmp_path / "sweep"
    r = CliRunner().invoke(main, ["sweep", "--model", str(fixture_dir), "--data", fmnist_spec, "--series",
                                  "blocks-text-last,svd-attn-vision", "--eval-size", "300", "--rounds", "2",
                                  "--out", str(out), "--json"])
    assert r.exit_code == 0, r.output
    rep = json.loads(r.stdout)
    assert rep["schema"] == "edgeclip.sweep/1" and rep["baseline"]["top1"] > 80
    assert {p.name for p in out.iterdir()} == {"sweep.json", "sweep_accuracy_vs_params.png", "sweep_accuracy_vs_latency.png"}
    text = [p for p in rep["points"] if p["series"] == "blocks-text-last"]
    vision = {p["x"]: p for p in rep["points"] if p["series"] == "svd-attn-vision"}
    assert [p["x"] for p in text] == [1, 2, 3] and all(p["params"]["text"] < rep["baseline"]["params"]["text"] for p in text)
    assert all("latency_ms_median" not in p for p in text)          # the image path does not change
    assert all(p["speedup_vs_uncompressed"] > 0 for p in vision.values())
    # rank 10% of attention really hurts a trained model; 75% barely does
    assert vision[0.1]["agreement"] < vision[0.75]["agreement"] and vision[0.1]["top1"] < rep["baseline"]["top1"]
    assert any("text blocks removed from the last end" in f for f in rep["findings"])


def _pt(series, x, top1, vision_params=None):
    return {"series": series, "x": x, "top1": top1, "params": {"vision": vision_params if vision_params is not None else x}}


@pytest.mark.parametrize("many_better", [True, False])
def test_findings_flip_when_the_data_flips(many_better):
    """The findings are verdicts computed from the numbers: swapping which side scored higher must swap them."""
    from edgeclip.benchmarks.sweep import findings

    hi, lo = (80.0, 70.0) if many_better else (70.0, 80.0)
    points = [_pt("svd-vision-layers", 1, lo, 100), _pt("svd-vision-layers", 2, lo, 200),
              _pt("svd-vision-ratio", 0.5, hi, 100), _pt("svd-vision-ratio", 0.8, hi, 200),
              _pt("svd-attn-vision", 0.5, hi), _pt("svd-attn-vision", 0.25, hi - 1),
              _pt("svd-attn-text", 0.5, lo), _pt("svd-attn-text", 0.25, lo - 1)]
    out = findings({"top1": 85.0}, points)
    layers = next(f for f in out if "many layers beats" in f)
    attn = next(f for f in out if "attention low-rank" in f)
    if many_better:
        assert "' holds" in layers and "+10.00 pt" in layers
        assert "more tolerant at 2 of 2 ratios" in attn
    else:
        assert "does not hold (the reverse)" in layers and "-10.00 pt" in layers
        assert "more tolerant at 0 of 2 ratios" in attn
