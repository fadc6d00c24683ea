"""``edgeclip sweep`` on the trained fixture: real accuracy moves, the JSON and both plots are written."""

import json

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
