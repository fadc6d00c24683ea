"""--format auto: candidates measured on this CPU, the fastest that holds its accuracy published alone."""

import json

import pytest
from click.testing import CliRunner

import edgeclip.fastest as fastest
from edgeclip.benchmarks.timing import TimingConfig
from edgeclip.cli import main
from edgeclip.errors import EdgeclipError
from edgeclip.exporter.recipe import ExportRecipe


def _row(name, ms, top1=90.0, **kw):
    return {"artifact": name, "latency_ms_median": ms, "top1": top1, "threads": 2, **kw}


BASE = _row("eager", 20.0, 90.0, baseline=True)


def test_the_fastest_row_within_the_drop_wins_and_a_faster_lossy_one_does_not():
    rows = [BASE, _row("a", 3.0, 89.9), _row("lossy", 1.0, 89.0), _row("b", 2.0, 89.8), _row("broken", 0.5, error="x")]
    best, why = fastest.choose(rows, 0.3)
    assert best["artifact"] == "b" and "2.00 ms" in why and "2 within 0.3 top-1 points" in why
    assert fastest.choose(rows, 1.5)[0]["artifact"] == "lossy"        # a looser bar admits it
    with pytest.raises(EdgeclipError, match="every candidate lost more than 0.05"):
        fastest.choose(rows, 0.05)


def test_without_a_score_the_gates_are_the_bar():
    rows = [{**BASE, "random_weights": True}, _row("a", 3.0, 10.0), _row("b", 2.0, 50.0)]
    best, why = fastest.choose(rows, 0.3)
    assert best["artifact"] == "b" and "fidelity gates" in why
    with pytest.raises(EdgeclipError, match=r"no candidate could be measured \(broken: crash\)"):
        fastest.choose([BASE, _row("broken", 1.0, error="crash")], 0.3)


def test_candidates_follow_the_recipe_and_refuse_what_auto_cannot_choose(monkeypatch):
    from edgeclip.exporter.formats import aoti

    monkeypatch.setattr(aoti, "toolchain_refusal", lambda: None)    # an x86 machine with a C++ compiler
    every = fastest.candidates(ExportRecipe())
    assert [(c.quant, c.formats) for c in every] == [("none", ("onnx", "pte")), ("int8", ("onnx", "pte")), ("int8", ("ptl",)),
                                                     ("int8", ("pt2",))]
    assert every[2].backend == every[3].backend == "x86" and all(c.target == "cpu" for c in every)
    static = fastest.candidates(ExportRecipe(quant="int8", scheme="static"))
    assert [c.quant for c in static] == ["int8"] * 3 and all(c.scheme == "static" for c in static)
    monkeypatch.setattr(aoti, "toolchain_refusal", lambda: "no C++ compiler")    # .pt2 only where it can be compiled
    assert [c.formats for c in fastest.candidates(ExportRecipe())] == [("onnx", "pte"), ("onnx", "pte"), ("ptl",)]
    for kw, needle in ((dict(target="mobile"), "needs --target cpu"), (dict(quant="fp16"), "drop --quant fp16"),
                       (dict(backend="onnxruntime"), "drop --backend")):
        with pytest.raises(EdgeclipError, match=needle):
            fastest.candidates(ExportRecipe(**kw))
    with pytest.raises(EdgeclipError, match="use it alone"):
        ExportRecipe(formats=("auto", "onnx")).validated()


def test_cli_publishes_only_the_chosen_artifact_with_why(tiny_clip_dir, tiny_images, tmp_path, monkeypatch):
    # two cheap candidates keep this test short (the real list adds the .pte routes: ~20 s more on the tiny model)
    monkeypatch.setattr(fastest, "CANDIDATES", (("none", None, None, ("onnx",)), ("int8", "dynamic", "x86", ("ptl",))))
    monkeypatch.setattr(fastest, "default_timing", lambda: TimingConfig(warmup=1, rounds=2, reps_per_round=2, throughput_batch=2))
    out = tmp_path / "out"
    r = CliRunner().invoke(main, ["export", "--model", str(tiny_clip_dir), "--data", tiny_images, "--format", "auto",
                                  "--verify-size", "6", "--out", str(out)], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    [published] = [p for p in out.iterdir() if not p.name.startswith(".")]
    sel = json.loads((published / "manifest.json").read_text())["selection"]
    names = {c["artifact"] for c in sel["candidates"]}
    assert published.name in names and len(names) == 3          # eager baseline + both candidates, measured together
    timed = [c for c in sel["candidates"] if c["artifact"] != f"{tiny_clip_dir.name} fp32 eager"]
    assert published.name == min(timed, key=lambda c: c["latency_ms_median"])["artifact"]
    assert "within 0.3 top-1 points of eager fp32" in sel["why"] and sel["threads"] >= 1 and sel["cpu_flags"] is not None
    assert f"Chosen: {published.name}" in r.output and "Candidates measured on this CPU" in r.output


def test_when_every_candidate_fails_its_gate_nothing_is_written(tmp_path):
    from edgeclip.errors import FidelityError

    def refuse(recipe, **_):
        raise FidelityError(f"{recipe.formats[0]} {recipe.quant} not written: top-1 agreement 50.00% < 98.0%")

    out = tmp_path / "out"
    with pytest.raises(EdgeclipError, match=r"no candidate passed its fidelity gate: onnx none not written"):
        fastest.export_fastest(refuse, ExportRecipe(out=str(out)))
    assert not out.exists()
