"""edgeclip inspect: it finds the outlier channels a pretrained-like model carries and predicts that SmoothQuant
removes most of their int8 error; a tame model shows none."""

from __future__ import annotations

import json

from click.testing import CliRunner

from edgeclip.cli import main
from edgeclip.exporter.quantize.outliers import inject_outliers
from edgeclip.inspect_int8 import inspect_int8


def test_inspect_finds_injected_outliers_and_predicts_smoothquant_helps(fmnist_spec):
    from edgeclip.models.datasets import load_dataset
    from edgeclip.preparation import prepare

    tame = inspect_int8("edgeclip-fmnist", data=fmnist_spec, calib_size=16)
    prep = prepare("edgeclip-fmnist", data=load_dataset(fmnist_spec, "test", 2))
    inject_outliers(prep.module, load_dataset(fmnist_spec, "test", 2).tensors(prep.preprocess), scale=50.0, channel=7)
    hostile = inspect_int8(prep.module, data=fmnist_spec, calib_size=16, preprocess=prep.preprocess, labels=prep.classes)
    assert len(hostile["norms"]) == 8 and all(n["outlier_channels"] == [7] for n in hostile["norms"])
    assert not any(7 in n["outlier_channels"] for n in tame["norms"])
    err = lambda rep, key: sum(layer[key] for layer in rep["layers"])   # noqa: E731
    assert err(hostile, "int8_rel_error") > 10 * err(tame, "int8_rel_error")          # outliers make int8 worse ...
    assert err(hostile, "int8_rel_error_smoothquant") < err(hostile, "int8_rel_error") / 10   # ... SmoothQuant undoes it
    # and the CLI prints the same report
    r = CliRunner().invoke(main, ["inspect", "--data", fmnist_spec, "--calib-size", "16", "--json"])
    assert r.exit_code == 0, r.output
    rep = json.loads(r.stdout)
    # static (the default): the 25 Linears (4 x 6 + the class head) and the 4 blocks' residual adds, which only
    # static .pte makes int8 and says so
    assert rep["calibration"].startswith("fashion-mnist train") and len(rep["layers"]) == 4 * 6 + 1 + 4
    adds = [x for x in rep["layers"] if x["layer"].endswith(":add")]
    assert all(x["int8_in"].startswith("static .pte only") for x in adds)
    assert sorted(x["layer"] for x in adds) == [f"backbone.transformer.resblocks.{i}:add" for i in range(4)]
    assert [x["layer"] for x in rep["layers"]] == [x["layer"] for x in tame["layers"]]
    worst = hostile["layers"][0]
    assert worst["input_outlier_ratio"] > 20 and worst["int8_rel_error"] == max(x["int8_rel_error"] for x in hostile["layers"])


def test_inspect_cli_table_and_refusal(fmnist_spec):
    r = CliRunner().invoke(main, ["inspect", "--data", fmnist_spec, "--calib-size", "8", "--top", "3"])
    assert r.exit_code == 0 and "int8 error alone" in r.output and "with SmoothQuant" in r.output
    r = CliRunner().invoke(main, ["inspect", "--data", fmnist_spec, "--calib-size", "0"])
    assert r.exit_code != 0 and "--calib-size must be between 1 and 10000" in r.output and "Traceback" not in r.output
