"""The fidelity bar (exporter/fidelity.py): measured agreement, the gate that refuses a file wrong only in its
arg-max, and verify's trust rules (the manifest may only tighten edgeclip's bar; edits that loosen it are tampering).

Runs without ../shared: arrays built to the case, a user module, and the built-in model on the tiny image folder.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import edgeclip
import edgeclip.exporter.export as ex
from edgeclip.errors import EdgeclipError, FidelityError
from edgeclip.exporter import fidelity
from edgeclip.exporter.fidelity import Threshold, compare, rule, trusted_bar
from edgeclip.models.preprocess import Preprocess


def _swapped(n: int = 40, flip: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """Reference logits with a clear top-2 near-tie and a candidate that swaps the top two on ``flip`` rows:
    cosine stays ~1, only the arg-max moves."""
    rng = np.random.default_rng(0)
    ref = rng.normal(0, 1, (n, 5)) + 20.0
    ref[:, 0] = 30.0
    ref[:, 1] = 30.01
    cand = ref.copy()
    cand[:flip, [0, 1]] = cand[:flip, [1, 0]]
    return ref.astype(np.float32), cand.astype(np.float32)


def test_agreement_is_measured_not_assumed():
    ref, cand = _swapped(40, 10)
    f = compare(ref, cand, "test")
    assert f.top1_agreement == pytest.approx(0.75) and f.mean_cosine > 0.99999
    assert compare(ref, ref, "test").top1_agreement == 1.0
    assert compare(ref, cand, "test", classification=False).top1_agreement is None


def test_the_agreement_bar_refuses_an_argmax_only_error_and_waives_it_for_random_weights():
    ref, cand = _swapped(40, 4)    # 90 % agreement, cosine ~1
    f = compare(ref, cand, "test")
    bar = rule("int8", "dynamic")
    assert [m for m in bar.failures(f, random_weights=False) if "agreement" in m] and not [
        m for m in bar.failures(f, random_weights=False) if "cosine" in m]
    assert bar.failures(f, random_weights=True) == []
    assert bar.failures(compare(ref, ref, "test"), random_weights=False) == []


def test_int8_bars_are_the_documented_targets():
    assert rule("int8", "dynamic").min_top1_agreement == 0.98 and rule("int8", "static").min_top1_agreement == 0.97
    assert rule("none").min_top1_agreement == 0.995 and rule("int8", "weight-only") == rule("int8", "dynamic")


class NearTie(torch.nn.Module):
    """Logits with a 0.01 gap between classes 0 and 1 set by the image: a file that swaps them is wrong in
    its answer only."""

    def __init__(self, swap: bool = False):
        super().__init__()
        self.swap = swap

    def forward(self, x):
        s = x.mean(dim=(1, 2, 3))
        gap = torch.where(s > 0, 0.01, -0.01)
        base = torch.stack([30 + 0 * s, 30 + gap, 20 + s, 20 - s, 20 + 2 * s], dim=1)
        return base[:, [1, 0, 2, 3, 4]] if self.swap else base


def test_export_refuses_a_file_that_is_wrong_only_in_its_argmax(tmp_path, monkeypatch):
    real = ex.PRODUCERS["onnx"]

    def wrong_file(subject, recipe, stage):   # the file of another model whose answers differ, cosine ~1
        from dataclasses import replace

        return real(replace(subject, module=NearTie(swap=True)), recipe, stage)

    monkeypatch.setitem(ex.PRODUCERS, "onnx", wrong_file)
    torch.manual_seed(0)
    with pytest.raises(FidelityError, match=r"top-1 agreement 0\.00% < 99\.5%"):
        edgeclip.export(NearTie(), torch.randn(16, 3, 8, 8), preprocess=Preprocess(size=8), labels=list("abcde"), data=None,
                        out=str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------------------------------ verify's trust rules

def _manifest(quant="int8", scheme="dynamic", recorded=(0.98, 0.98), random=False, overrides=(None, None)):
    return {"name": "m", "random_weights": random,
            "recipe": {"quant": quant, "scheme": scheme, "min_cosine": overrides[0], "min_agreement": overrides[1]},
            "fidelity_threshold": {"min_cosine": recorded[0], "min_top1_agreement": recorded[1]}}


def test_a_manifest_edited_to_a_looser_bar_is_tampered():
    with pytest.raises(EdgeclipError, match="tampered"):
        trusted_bar(_manifest(recorded=(0.98, 0.0)), random_weights=False)
    with pytest.raises(EdgeclipError, match="tampered"):
        trusted_bar(_manifest(recorded=(0.5, 0.98)), random_weights=False)
    with pytest.raises(EdgeclipError, match="tampered"):   # bar and recipe edited together still miss edgeclip's rule
        trusted_bar({**_manifest(recorded=(0.98, 0.0)), "fidelity_threshold": {}}, random_weights=False)


def test_the_random_weights_waiver_is_rederived_from_the_source():
    with pytest.raises(EdgeclipError, match="random.*rebuilt.*trained"):
        trusted_bar(_manifest(random=True), random_weights=False)
    bar, _ = trusted_bar(_manifest(random=True), random_weights=True)
    assert bar == rule("int8", "dynamic")


def test_a_manifest_may_only_tighten_and_an_export_time_loosening_is_not_honoured():
    bar, notes = trusted_bar(_manifest(recorded=(0.99, 0.995)), random_weights=False)
    assert bar == Threshold(0.99, 0.995) and notes == []
    bar, notes = trusted_bar(_manifest(recorded=(0.98, 0.5), overrides=(None, 0.5)), random_weights=False)
    assert bar == rule("int8", "dynamic") and "looser than edgeclip's int8 rule" in notes[0]
    bar, notes = trusted_bar(_manifest(recorded=(0.98, 0.5), overrides=(None, 0.5)), False, min_agreement=0.5)
    assert bar.min_top1_agreement == 0.5 and "set by the caller" in notes[-1]


@pytest.fixture(scope="module")
def builtin_onnx(tiny_images, tmp_path_factory):
    """The built-in model's fp32 .onnx with the default bar, exported once for this module (tests copy it to edit)."""
    [art] = edgeclip.export("edgeclip-fmnist", data=tiny_images, out=str(tmp_path_factory.mktemp("builtin")), verify_size=6)
    return art


def test_min_agreement_zero_is_recorded_as_not_enforced(builtin_onnx, tiny_images, tmp_path):
    [art] = edgeclip.export("edgeclip-fmnist", data=tiny_images, out=str(tmp_path), verify_size=6, min_agreement=0.0)
    assert art.manifest["fidelity_threshold"]["agreement_enforced"] is False
    assert builtin_onnx.manifest["fidelity_threshold"]["agreement_enforced"] is True   # the same export at the default bar


@pytest.mark.parametrize("edit", ["bar-zero", "claims-random"])
def test_verify_refuses_an_edited_manifest_with_exit_2(edit, builtin_onnx, tmp_path):
    import shutil

    from edgeclip.cli import main
    from edgeclip.manifest import open_artifact

    art = open_artifact(shutil.copytree(builtin_onnx.dir, tmp_path / builtin_onnx.name))
    r = CliRunner().invoke(main, ["verify", str(art.dir)])
    assert r.exit_code == 0, r.output
    m = json.loads((art.dir / "manifest.json").read_text())
    if edit == "bar-zero":
        m["fidelity_threshold"].update(min_top1_agreement=0.0, min_cosine=0.0)
    else:
        m["random_weights"] = True
    (art.dir / "manifest.json").write_text(json.dumps(m))
    r = CliRunner().invoke(main, ["verify", str(art.dir)])
    assert r.exit_code == 2, r.output
    assert "tampered" in r.output and r.output.count("Error:") == 1


def test_stated_bars_live_in_one_table():
    assert set(fidelity.THRESHOLDS) == {"fp32", "fp16", "bf16", "int8-dynamic", "int8-static", "int4"}


def test_a_manifest_from_the_earlier_int8_bar_is_not_tampered_but_held_to_todays_rule():
    bar, notes = trusted_bar(_manifest(recorded=(0.98, 0.93)), random_weights=False)
    assert bar == rule("int8", "dynamic") and "earlier, looser int8 bar" in notes[0]
    with pytest.raises(EdgeclipError, match="tampered"):
        trusted_bar(_manifest(recorded=(0.98, 0.92)), random_weights=False)


def test_bars_equal_to_rounding_are_not_looser_and_a_recipe_without_quant_is_fp32():
    """Found by mutmut (python -m edgeclip.benchmarks.mutmut_run): the 1e-12 tolerance at its edge (< vs <=
    survived); and a recipe naming no precision is held to fp32's bar."""
    edge = Threshold(1.0 - 1e-12, 1.0 - 1e-12)
    assert edge.looser_than(Threshold(1.0, 1.0)) == []
    assert len(Threshold(1.0 - 2e-12, 1.0 - 2e-12).looser_than(Threshold(1.0, 1.0))) == 2
    fp32 = rule("none", None)
    m = {"name": "x", "recipe": {}, "random_weights": False,
         "fidelity_threshold": {"min_cosine": fp32.min_cosine, "min_top1_agreement": fp32.min_top1_agreement}}
    bar, _ = trusted_bar(m, random_weights=False)
    assert bar == fp32


def test_static_int8_is_held_to_the_static_rule_not_the_dynamic_one():
    """mutmut: reading the scheme wrongly (None) held a static artifact to the tighter dynamic bar and called its
    honest manifest tampered."""
    static = rule("int8", "static")
    assert static != rule("int8", "dynamic")
    bar, _ = trusted_bar(_manifest(scheme="static", recorded=(static.min_cosine, static.min_top1_agreement)), False)
    assert bar == static


def test_a_manifest_naming_a_precision_edgeclip_has_no_bar_for_is_refused_in_one_line():
    with pytest.raises(EdgeclipError) as e:
        trusted_bar(_manifest(quant="int3", scheme="static"), random_weights=False)
    assert str(e.value) == ("m: manifest.json records quant 'int3' / scheme 'static', which edgeclip has no bar for: "
                            "the manifest was edited or is not edgeclip's; re-export it")


def test_the_weights_claim_is_checked_both_ways_and_an_absent_claim_means_trained():
    for claimed, rebuilt in ((True, False), (False, True)):
        with pytest.raises(EdgeclipError) as e:
            trusted_bar(_manifest(random=claimed), random_weights=rebuilt)
        said, has = ("random", "trained") if claimed else ("trained", "random")
        assert str(e.value) == (f"m: manifest.json says its weights are {said}, but the source model rebuilt from it has "
                                f"{has} weights: the manifest was edited (tampered); re-export the artifact")
    m = _manifest()
    del m["random_weights"]
    assert trusted_bar(m, random_weights=False)[0] == rule("int8", "dynamic")


def test_trusted_bar_messages_and_notes_are_exact():
    """What verify prints is the user's evidence: the artifact's name, each loosened bar, and what happens next."""
    with pytest.raises(EdgeclipError) as e:
        trusted_bar(_manifest(recorded=(0.5, 0.0)), random_weights=False)
    assert str(e.value) == ("m: manifest.json records a fidelity bar looser than edgeclip's rule for its recipe (cosine 0.5 < "
                            "0.98; agreement 0.0 < 0.93): the manifest was edited (tampered); re-export the artifact")
    _, notes = trusted_bar(_manifest(recorded=(0.98, 0.93)), random_weights=False)
    assert notes == ["exported under an earlier, looser int8 bar (agreement 0.93 < 0.98); held to today's rule"]
    _, notes = trusted_bar(_manifest(recorded=(0.9, 0.5), overrides=(0.9, 0.5)), random_weights=False)
    assert notes == ["exported with a bar looser than edgeclip's int8 rule (cosine 0.9 < 0.98; agreement 0.5 < 0.98); "
                     "verify holds it to the rule unless you pass --min-agreement / --min-cosine"]
    bar, notes = trusted_bar(_manifest(), random_weights=False, min_cosine=0.5)
    assert bar == Threshold(0.5, 0.98) and notes == ["bar set by the caller: cosine >= 0.5, agreement >= 0.98"]


def test_trusted_bar_reads_the_recipe_scheme_and_its_cosine_and_agreement_overrides():
    # static int8 records 97 %: held to the static rule, not the dynamic one
    bar, notes = trusted_bar(_manifest(scheme="static", recorded=(0.98, 0.97)), random_weights=False)
    assert bar == rule("int8", "static") and notes == []
    # a cosine the user loosened at export is what an honest manifest records: not tampered (but held to the rule)
    bar, _ = trusted_bar(_manifest(recorded=(0.9, 0.98), overrides=(0.9, None)), random_weights=False)
    assert bar == rule("int8", "dynamic")
    # the earlier 93 % bar excuses only manifests whose recipe set no bar of its own
    for overrides in ((0.99, None), (None, 0.99)):
        with pytest.raises(EdgeclipError, match="tampered"):
            trusted_bar(_manifest(recorded=(0.99, 0.93), overrides=overrides), random_weights=False)


@pytest.mark.parametrize("kept", ["min_cosine", "min_top1_agreement"])
def test_a_manifest_missing_one_bar_is_tampered(kept):
    m = _manifest()
    m["fidelity_threshold"] = {kept: m["fidelity_threshold"][kept]}
    with pytest.raises(EdgeclipError, match="tampered"):
        trusted_bar(m, random_weights=False)


def test_compare_reports_every_measure_exactly():
    """The record the fidelity gate and the manifest read: computed by hand for two rows."""
    ref = np.array([[1.0, 0.0, 0.0], [0.0, 2.0, 0.0]], dtype=np.float32)
    cand = np.array([[1.0, 0.5, 0.0], [0.0, 0.5, 1.0]], dtype=np.float32)    # row 1 changes its answer
    f = fidelity.compare(ref, cand, "two rows")
    cos = [1 / np.sqrt(1.25), 0.5 / np.sqrt(1.25)]
    assert (f.samples, f.top1_agreement, f.inputs, f.device) == (2, 0.5, "two rows", "cpu")
    assert f.max_abs_err == 1.5 and f.mean_cosine == pytest.approx(np.mean(cos)) and f.min_cosine == pytest.approx(cos[1])
    assert fidelity.compare(ref, cand, "x", classification=False, device="cuda").top1_agreement is None
    assert fidelity.compare(ref, cand, "x", device="cuda").device == "cuda"
    with pytest.raises(ValueError, match=r"output shapes differ: reference \(2, 3\), artifact \(2, 2\)"):
        fidelity.compare(ref, cand[:, :2], "x")


def test_a_file_exactly_at_the_bar_passes_and_the_failure_lines_are_exact():
    bar = Threshold(0.98, 0.97)
    at = fidelity.Fidelity(8, 0.1, 0.98, 0.9, 0.97, "x")
    assert bar.failures(at, random_weights=False) == []
    below = fidelity.Fidelity(8, 0.1, 0.97, 0.9, 0.875, "x")
    assert bar.failures(below, random_weights=False) == ["mean cosine 0.97000 < 0.98", "top-1 agreement 87.50% < 97.0%"]
    assert bar.failures(below, random_weights=True) == ["mean cosine 0.97000 < 0.98"]   # agreement waived, cosine not
    assert bar.to_dict(below, random_weights=True) == {"min_cosine": 0.98, "min_top1_agreement": 0.97,
                                                        "agreement_enforced": False}
