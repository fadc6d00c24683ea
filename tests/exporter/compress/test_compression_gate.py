"""The compression-cost gate (exporter/compress/gate.py): a compressed export is measured against the
uncompressed model and refused, with nothing written, when compression cost more than the bar.

The plumbing twin runs without ../shared: a timm ViT as the user's own module, verified on the caller's example
images (no labels, so the measure is the share of changed answers).  The fixture test is the issue's case:
removing the first text block of the trained CLIP costs ~80 pt and must be refused with exit 3.
"""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner

import edgeclip
from edgeclip.errors import FidelityError
from edgeclip.exporter.compress import CompressRecipe
from edgeclip.exporter.compress import gate
from edgeclip.models.preprocess import Preprocess


def test_cost_prefers_labelled_drop_then_changed_answers_then_cosine():
    assert gate.cost_of({"top1_uncompressed": 88.0, "top1_compressed": 86.5, "top1_agreement": 0.9,
                         "mean_cosine": 0.9}) == gate.Cost(1.5, "top1_drop_pt")
    assert gate.cost_of({"top1_agreement": 0.97, "mean_cosine": 0.99}) == gate.Cost(3.0, "changed_answers_pt")
    assert gate.cost_of({"top1_agreement": None, "mean_cosine": 0.93}) == gate.Cost(0.93, "mean_cosine")


@pytest.mark.parametrize("value, bar, passed", [(0.9, 1.0, True), (1.0, 1.0, True), (1.1, 1.0, False), (0.4, 0.3, False)])
def test_decide_refuses_over_the_bar_only(value, bar, passed):
    rec = gate.decide({"top1_uncompressed": 50.0, "top1_compressed": 50.0 - value}, gate.CostBar(bar, "--max-drop"), False)
    assert rec["passed"] is passed and rec["value"] == pytest.approx(value)


def test_random_weights_waive_and_encoders_use_cosine():
    v = {"top1_uncompressed": 90.0, "top1_compressed": 10.0}
    assert gate.decide(v, gate.CostBar.for_recipe(None, None), True)["passed"] and "waived" in gate.decide(v, gate.CostBar(1, "d"), True)
    assert not gate.decide(v, gate.CostBar.for_recipe(None, None), False)["passed"]
    enc = {"top1_agreement": None, "mean_cosine": 0.90}
    assert not gate.decide(enc, gate.CostBar.for_recipe(None, None), False)["passed"]
    assert gate.decide({**enc, "mean_cosine": 0.97}, gate.CostBar.for_recipe(None, None), False)["passed"]
    accepted = gate.decide(enc, gate.CostBar.for_recipe(5.0, None), False)
    assert accepted["passed"] and accepted["accepted_by_user"]


def test_bar_comes_from_accept_drop_then_max_drop_then_default():
    assert gate.CostBar.for_recipe(3.0, 0.5) == gate.CostBar(3.0, "--accept-drop")
    assert gate.CostBar.for_recipe(None, 0.5) == gate.CostBar(0.5, "--max-drop")
    assert gate.CostBar.for_recipe(None, None) == gate.CostBar(gate.DEFAULT_MAX_DROP_PT, "default") and gate.DEFAULT_MAX_DROP_PT == 1.0


def test_worst_pass_is_the_largest_step_not_the_first_or_last():
    start = gate.no_cost(gate.Cost(4.0, "top1_drop_pt"))
    assert start == gate.Cost(0.0, "top1_drop_pt") and gate.no_cost(gate.Cost(0.8, "mean_cosine")) == gate.Cost(1.0, "mean_cosine")
    stages = [("svd", gate.Cost(0.5, "top1_drop_pt")), ("tokens", gate.Cost(6.0, "top1_drop_pt")),
              ("heal", gate.Cost(4.0, "top1_drop_pt"))]
    assert gate.worst_pass(stages, start) == ("tokens", 5.5)
    cos = [("svd", gate.Cost(0.99, "mean_cosine")), ("tokens", gate.Cost(0.80, "mean_cosine"))]
    assert gate.worst_pass(cos, gate.no_cost(cos[-1][1]))[0] == "tokens"


# ------------------------------------------------------------------------------------------ through export

@pytest.fixture(scope="module")
def vit():
    import timm

    torch.manual_seed(0)
    return timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32, patch_size=8, embed_dim=64, depth=3,
                             num_heads=2, num_classes=5).eval()


def _export(vit, tmp_path, compress, **kw):
    torch.manual_seed(3)
    return edgeclip.export(vit, torch.randn(48, 3, 32, 32), preprocess=Preprocess(size=32), labels=list("abcde"),
                           data=None, out=str(tmp_path / "out"), compress=compress, **kw)


def test_costly_compression_is_refused_naming_the_pass_and_nothing_is_written(vit, tmp_path):
    # nearly free sparsity first, then token reduction to 1 of 16 patches: the second pass is the costly one
    recipe = CompressRecipe(sparsity=0.02, token_keep=0.0625, token_blocks="0")
    with pytest.raises(FidelityError, match=r"changed answers.*the pass that cost most: tokens .*--token-keep.*--accept-drop") as e:
        _export(vit, tmp_path, recipe)
    assert "sparsity" not in str(e.value).split("cost most:")[1].split(";")[0]
    assert not (tmp_path / "out").exists()


def test_accept_drop_writes_and_records_the_accepted_cost(vit, tmp_path):
    recipe = CompressRecipe(token_keep=0.0625, token_blocks="0")
    [art] = _export(vit, tmp_path, recipe, accept_drop=100.0)
    g = art.manifest["compression"]["gate"]
    assert g["passed"] and g["accepted_by_user"] and g["bar_source"] == "--accept-drop" and g["value"] > 1.0
    assert art.manifest["recipe"]["accept_drop"] == 100.0


def test_mild_compression_passes_the_default_bar(vit, tmp_path):
    [art] = _export(vit, tmp_path, CompressRecipe(sparsity=0.02))
    g = art.manifest["compression"]["gate"]
    assert g["passed"] and g["bar_source"] == "default" and g["value"] <= 1.0 and "accepted_by_user" not in g


def test_accept_drop_without_compression_is_refused():
    from edgeclip.errors import EdgeclipError
    from edgeclip.exporter.recipe import ExportRecipe

    with pytest.raises(EdgeclipError, match="no compression pass"):
        ExportRecipe(accept_drop=2.0).validated()


# ------------------------------------------------------------------------------------------ the case

def test_removing_the_first_text_block_of_the_fixture_is_refused_unless_accepted(fixture_dir, fmnist_spec, tmp_path):
    from edgeclip.cli import main

    out = tmp_path / "out"
    args = ["export", "--model", str(fixture_dir), "--data", fmnist_spec, "--prune-blocks", "text:0", "--verify-size", "128",
            "--out", str(out)]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 3, r.output
    line = [ln for ln in r.output.splitlines() if ln.startswith("Error:")]
    assert len(line) == 1 and "pt top-1" in line[0] and "prune-blocks:text" in line[0] and "--accept-drop" in line[0]
    assert not out.exists()
    r = CliRunner().invoke(main, [*args, "--accept-drop", "100", "--json"])
    assert r.exit_code == 0, r.output
    [m] = json.loads(r.stdout)
    g = m["compression"]["gate"]
    assert g["measure"] == "top1_drop_pt" and g["value"] > 50 and g["accepted_by_user"]


def test_refusal_line_names_cost_bar_culprit_knob_and_the_accept_value_exactly():
    """The refusal is the user's whole guide: what it cost, against which bar, which pass and knob, and the
    --accept-drop value that would let it through (rounded up to 0.1 pt, never below the cost)."""
    v = {"top1_uncompressed": 88.0, "top1_compressed": 86.77}
    line = gate.refusal(gate.Cost(1.23, "top1_drop_pt"), gate.CostBar(0.5, "--max-drop"), "500 images", ("svd", 0.8), v)
    assert line == ("compression costs 1.23 pt top-1 (88.00% -> 86.77%) against the uncompressed model on 500 images; "
                    "the bar is 0.5 pt (set by --max-drop); the pass that cost most: svd (+0.80 pt); relax --svd / "
                    "--svd-energy (keep more) or --svd-aware, or pass --accept-drop 1.3 to take the loss knowingly; "
                    "nothing was written")
    line = gate.refusal(gate.Cost(2.5, "changed_answers_pt"), gate.CostBar(1.0, "default"), "64 images", None, {})
    assert line == ("compression costs 2.50 % changed answers (no labels: the worst-case top-1 drop) against the "
                    "uncompressed model on 64 images; the bar is 1 pt (default), or pass --accept-drop 2.5 to take the "
                    "loss knowingly; nothing was written")
    line = gate.refusal(gate.Cost(0.9, "mean_cosine"), gate.CostBar(1.0, "default"), "32 images", ("tokens:vision", 0.07), {})
    assert line == ("compression costs mean cosine 0.9000 against the uncompressed model on 32 images; the bar is mean "
                    "cosine >= 0.95; the pass that cost most: tokens:vision (0.0700 cosine); relax --token-keep (keep "
                    "more), or pass --accept-drop 100 to take the loss knowingly; nothing was written")


@pytest.mark.parametrize("name, knob", [("svd", gate.KNOBS["svd"]), ("prune-blocks:text", gate.KNOBS["prune-blocks"]),
                                        ("my-own-pass", "my-own-pass")])
def test_knob_follows_the_pass_name_before_its_tower(name, knob):
    assert gate.knob(name) == knob


def test_worst_pass_names_the_first_of_equal_steps():
    stages = [("svd", gate.Cost(1.0, "top1_drop_pt")), ("heal", gate.Cost(2.0, "top1_drop_pt"))]
    assert gate.worst_pass(stages, gate.Cost(0.0, "top1_drop_pt")) == ("svd", 1.0)


@pytest.mark.parametrize("recipe, touched", [
    (CompressRecipe(), set()),
    (CompressRecipe(prune_blocks=["text:0"]), {"text"}),
    (CompressRecipe(svd_ratio=0.5, svd_tower="text"), {"text"}),
    (CompressRecipe(mlp_keep=0.5, prune_tower="both"), {"vision", "text"}),
    (CompressRecipe(sparsity=0.5, prune_tower="text"), {"text"}),
    (CompressRecipe(token_keep=0.5), {"vision"}),
    (CompressRecipe(token_merge=2), {"vision"}),
    (CompressRecipe(svd_ratio=0.5, svd_tower="text", heal_steps=5), {"vision", "text"}),
])
def test_towers_touched_is_what_the_passes_change(recipe, touched):
    """What a text-encoder export checks before it runs passes that would change the vision tower."""
    assert recipe.towers_touched() == touched and recipe.active is bool(touched)


@pytest.mark.parametrize("recipe, parts", [
    (CompressRecipe(svd_ratio=0.5), ["svd0.5"]),
    (CompressRecipe(svd_energy=0.9), ["svde0.9"]),
    (CompressRecipe(svd_rank=16), ["svdr16"]),
    (CompressRecipe(prune_blocks=["vision:0,1", "text:auto:2"]), ["pbv2", "pbt2"]),
    (CompressRecipe(prune_blocks=["text:3"]), ["pbt1"]),
    (CompressRecipe(prune_blocks=["vision:auto:3"]), ["pbv3"]),
    (CompressRecipe(mlp_keep=0.5, heads_keep=0.75), ["mlp0.5", "heads0.75"]),
    (CompressRecipe(mlp_keep=1.0, heads_keep=1.0, token_keep=1.0), []),
    (CompressRecipe(sparsity=0.3, token_keep=0.7, token_merge=4, heal_steps=300), ["sp0.3", "tok0.7", "tome4", "heal300"]),
])
def test_tag_names_each_pass_and_hashes_every_field(recipe, parts):
    """The artifact folder name: readable parts for what ran, then a hash so two recipes never share a folder."""
    import hashlib

    digest = hashlib.sha256(json.dumps(recipe.to_dict(), sort_keys=True).encode()).hexdigest()[:4]
    assert recipe.tag() == "-".join([*parts, digest])


def test_cost_needs_both_top1s_and_keeps_four_decimals():
    assert gate.cost_of({"top1_uncompressed": 88.123456, "top1_compressed": 86.888888}) == gate.Cost(1.2346, "top1_drop_pt")
    assert gate.cost_of({"top1_compressed": 80.0, "top1_agreement": 0.9876543}) == gate.Cost(1.2346, "changed_answers_pt")
    assert gate.cost_of({"top1_uncompressed": 80.0, "top1_agreement": 0.5}) == gate.Cost(50.0, "changed_answers_pt")


def test_decide_records_measure_value_and_bar_exactly():
    v = {"top1_uncompressed": 80.0, "top1_compressed": 78.5}
    assert gate.decide(v, gate.CostBar(1.0, "--max-drop"), False) == {
        "measure": "top1_drop_pt", "value": 1.5, "bar_max_drop_pt": 1.0, "bar_source": "--max-drop", "passed": False}
    assert gate.decide(v, gate.CostBar(2.0, "--accept-drop"), False) == {
        "measure": "top1_drop_pt", "value": 1.5, "bar_max_drop_pt": 2.0, "bar_source": "--accept-drop", "passed": True,
        "accepted_by_user": True}
    enc = gate.decide({"top1_agreement": None, "mean_cosine": 0.95}, gate.CostBar(1.0, "default"), False)
    assert enc == {"measure": "mean_cosine", "value": 0.95, "bar_max_drop_pt": 1.0, "bar_source": "default",
                   "bar_min_cosine": gate.ENCODER_MIN_COSINE, "passed": True}        # exactly at the cosine bar passes
    assert gate.over(gate.Cost(0.9499, "mean_cosine"), gate.CostBar(1.0, "default"))
    assert not gate.over(gate.Cost(0.5, "mean_cosine"), gate.CostBar(100, "--accept-drop"))


def test_random_weights_waiver_says_why_in_the_manifest_and_a_cost_at_the_bar_passes():
    v = {"top1_uncompressed": 90.0, "top1_compressed": 10.0}
    assert gate.decide(v, gate.CostBar(1.0, "default"), True) == {
        "measure": "top1_drop_pt", "value": 80.0, "bar_max_drop_pt": 1.0, "bar_source": "default", "passed": True,
        "waived": "random weights: there is no accuracy to lose, so the cost is recorded, not enforced"}
    # within 1e-9 of the bar is at the bar (float noise of a subtraction must not refuse an export)
    assert not gate.over(gate.Cost(1.0 + 1e-9, "top1_drop_pt"), gate.CostBar(1.0, "--max-drop"))
    assert gate.over(gate.Cost(1.0 + 1e-8, "top1_drop_pt"), gate.CostBar(1.0, "--max-drop"))
