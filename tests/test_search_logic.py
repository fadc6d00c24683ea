"""The search's decisions without Ray or exports: which levels it tries, how it combines them, which it exports,
which artifact it picks, what it refuses, and how a checkpoint resumes.  (End to end on Ray: test_search_ray.py.)"""

from __future__ import annotations

import json
import math

import pytest

from edgeclip.search.driver import (Checkpoint, SearchConfig, _mark_pareto, choose, pick_finalists,
                                               recipe_for)
from edgeclip.search.report import recipe_toml
from edgeclip.search.space import (TARGET_ROUTES, Combination, Estimate, Level, combinations,
                                              knob_levels, merge_fields)
from edgeclip.errors import EdgeclipError
from edgeclip.exporter.recipe import ExportRecipe


def _lv(knob, value, **fields):
    return Level(knob, value, tuple(fields.items()) or ((knob, value),))


def test_knob_levels_follow_the_tower():
    merge = knob_levels("token_merge", n_vision=6, patches=64, heads=3)
    assert [lv.value for lv in merge] == [3, 5, 8]        # 1/4, 1/2, 3/4 of 64 patches merged away over 6 blocks
    heads = knob_levels("heads_keep", n_vision=6, patches=64, heads=3)
    assert [lv.value for lv in heads] == [0.667, 0.333]   # one head fewer, then half (rounded down to whole heads)
    assert knob_levels("heads_keep", n_vision=6, patches=64, heads=1) == []
    assert [lv.value for lv in knob_levels("prune_blocks", n_vision=2, patches=64, heads=3)] == [1]
    assert knob_levels("token_keep", n_vision=6, patches=0, heads=3) == []      # no token layout: no token knobs
    with pytest.raises(EdgeclipError, match="unknown search knob 'wings'"):
        knob_levels("wings", n_vision=6, patches=64, heads=3)


def test_combinations_add_costs_multiply_flops_and_respect_the_budget():
    a1, a2 = _lv("token_merge", 4), _lv("token_merge", 8)
    b1 = _lv("mlp_keep", 0.75)
    c1 = _lv("svd", 0.5)
    singles = {a1: Estimate(0.1, 0.8, 1000), a2: Estimate(0.3, 0.6, 1000), b1: Estimate(0.2, 0.7, 1000),
               c1: Estimate(0.9, 0.5, 1000)}                       # c1 alone is over the budget: never combined
    combos = combinations(singles, budget=0.5, width=10)
    labels = [c.label for c in combos]
    assert all("svd" not in lab for lab in labels)
    assert all(len({lv.knob for lv in c.levels}) == len(c.levels) for c in combos)   # one level per knob
    best = combos[0]
    assert {lv.label for lv in best.levels} == {"token_merge=8", "mlp_keep=0.75"}
    assert best.predicted_drop == pytest.approx(0.5) and best.predicted_ratio == pytest.approx(0.42)
    assert [c.predicted_ratio for c in combos] == sorted(c.predicted_ratio for c in combos)
    assert all(c.predicted_drop <= 0.5 for c in combos)
    assert len(combinations(singles, budget=0.5, width=2)) == 2
    # levels each within the budget whose costs add up past it are not combined
    tight = {c.label for c in combinations(singles, budget=0.4, width=10)}
    assert "mlp_keep=0.75 + token_merge=8" not in tight and "mlp_keep=0.75 + token_merge=4" in tight
    # a level that saves no FLOPs is not worth combining
    assert combinations({_lv("mlp_keep", 0.9): Estimate(0.0, 1.0, 100)}, 0.5, 5) == []
    # measured latency ratios on a route rank instead of FLOPs: a level that saves FLOPs but no time is dropped
    timed = combinations(singles, budget=0.5, width=10, ratio={a1: 1.05, a2: 0.9, b1: 0.6, c1: 0.5})
    assert timed[0].label == "mlp_keep=0.75 + token_merge=8" and timed[0].predicted_ratio == pytest.approx(0.54)
    assert all("token_merge=4" not in c.label for c in timed)
    assert [c.label for c in timed] == ["mlp_keep=0.75 + token_merge=8", "mlp_keep=0.75", "token_merge=8"]


def test_finalists_span_the_frontier_of_predicted_latency_and_estimated_disagreement():
    def ce(ratio, drop, disagree):
        return (Combination((_lv("mlp_keep", ratio),), drop, ratio), Estimate(drop, 1.0, 500, disagree))

    fast_risky, mid, slow_safe = ce(0.5, 0.4, 0.06), ce(0.6, 0.2, 0.03), ce(0.8, 0.0, 0.005)
    dominated = ce(0.7, 0.3, 0.04)           # slower than `mid` and less faithful: never worth exporting
    far_out = ce(0.3, 3.0, 0.10)              # 3 pt is far outside one standard error (~1.4 pt): never a finalist
    measured = [slow_safe, dominated, far_out, mid, fast_risky]
    assert pick_finalists(measured, max_drop=0.5, n=3) == [fast_risky, mid, slow_safe]
    assert pick_finalists(measured, max_drop=0.5, n=2) == [fast_risky, slow_safe]     # both ends of the frontier
    assert pick_finalists(measured, max_drop=0.5, n=4) == [fast_risky, mid, slow_safe, dominated]   # then the rest
    assert far_out not in pick_finalists(measured, max_drop=0.5, n=10)
    noisy = ce(0.4, 0.9, 0.04)                # over the budget but within its noise: the evaluation split decides
    assert pick_finalists([noisy, slow_safe], 0.5, 1) == [noisy]


def test_choose_is_the_fastest_within_the_budget():
    cands = [{"artifact": "fast-but-wrong", "top1": 80.0, "drop": 6.0, "latency_ms_median": 1.0},
             {"artifact": "ok-fast", "top1": 85.9, "drop": 0.4, "latency_ms_median": 2.0},
             {"artifact": "ok-slow", "top1": 86.3, "drop": 0.0, "latency_ms_median": 3.0},
             {"artifact": "unscored", "top1": None, "drop": None, "latency_ms_median": 0.5}]
    best, ok = choose(cands, 0.5)
    assert best["artifact"] == "ok-fast" and {c["artifact"] for c in ok} == {"ok-fast", "ok-slow"}
    assert choose(cands, 0.1)[0]["artifact"] == "ok-slow"
    assert choose(cands[:1], 0.5) == (None, [])
    _mark_pareto(cands)
    assert [c["pareto"] for c in cands] == [True, True, True, False]
    cands[2]["latency_ms_median"] = 1.5                      # now faster and more accurate than ok-fast
    _mark_pareto(cands)
    assert [c["pareto"] for c in cands] == [True, False, True, False]


@pytest.mark.parametrize("settings, message", [
    ({"max_drop": -1}, "--max-drop must be 0 or more"),
    ({"budget_minutes": 0}, "--budget-minutes must be positive"),
    ({"eval_size": 7}, "--eval-size must be at least 100"),
    ({"knobs": ("wings",)}, "unknown knob 'wings'"),
    ({"formats": ("pte",), "target": "cuda"}, "has no route on --target cuda"),
    ({"target": "gpu"}, "search times on cpu, mobile, arm64 or cuda"),
    ({"heal_steps": -5}, "--heal-steps must be 0"),
    ({"device": "ssh://u@h"}, "--device is for --target arm64"),
])
def test_bad_settings_are_refused_in_one_line(settings, message):
    with pytest.raises(EdgeclipError, match=message):
        SearchConfig(**settings).validated()


def test_a_target_this_host_cannot_time_is_refused(monkeypatch):
    import edgeclip.benchmarks.cuda as cuda
    import edgeclip.benchmarks.harness as harness

    monkeypatch.setattr(harness, "host_arch", lambda machine=None: "x86_64")
    with pytest.raises(EdgeclipError, match="would time an emulator"):
        SearchConfig(target="arm64").validated()
    monkeypatch.setattr(cuda, "cuda_status", lambda: "no CUDA device")
    with pytest.raises(EdgeclipError, match="--target cuda: no CUDA device"):
        SearchConfig(target="cuda").validated()


def test_unreachable_ray_address_and_missing_ray_are_one_line(monkeypatch, tmp_path):
    import socket
    import sys

    from edgeclip.benchmarks.executor import RayExecutor, check_address

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()                      # a port nothing listens on
    with pytest.raises(EdgeclipError, match=f"--ray-address 127.0.0.1:{port}: nothing answers there"):
        check_address(f"127.0.0.1:{port}", timeout_s=2)
    with pytest.raises(EdgeclipError, match="use HOST:PORT"):
        check_address("localhost")
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(EdgeclipError, match=r"pip install 'edgeclip\[search\]'"):
        RayExecutor().__enter__()
    with pytest.raises(EdgeclipError, match="--workers must be at least 1"):
        RayExecutor(workers=0)


def test_checkpoint_resumes_only_the_same_search(tmp_path):
    ck = Checkpoint(tmp_path, "abc", resume=False)
    ck.record("k1", {"top1": 90.0})
    ck.record("k2", {"name": "art", "tar": b"bytes of a tar"})
    with pytest.raises(EdgeclipError, match="holds a search already; --resume"):
        Checkpoint(tmp_path, "abc", resume=False)
    with pytest.raises(EdgeclipError, match="other settings"):
        Checkpoint(tmp_path, "xyz", resume=True)
    again = Checkpoint(tmp_path, "abc", resume=True)
    assert again.done == {"k1": {"top1": 90.0}, "k2": {"name": "art"}}
    assert again.tar("k2") == b"bytes of a tar"
    assert "tar" not in (tmp_path / ".search" / "state.jsonl").read_text()   # artifacts beside the log, not in it


def test_fingerprint_ignores_how_the_search_runs_not_what_it_measures():
    base = SearchConfig()
    assert base.fingerprint() == SearchConfig(budget_minutes=5, workers=1, ray_address="h:1", resume=True,
                                              out="elsewhere").fingerprint()
    assert base.fingerprint() != SearchConfig(max_drop=1.0).fingerprint()
    assert base.fingerprint() != SearchConfig(eval_size=500).fingerprint()


def test_best_toml_is_the_export_recipe(tmp_path):
    cfg = SearchConfig(model="edgeclip-fmnist", data="fashion-mnist")
    route = TARGET_ROUTES["cpu"][1]
    fields = merge_fields((_lv("token_merge", 8, token_merge=8), _lv("mlp_keep", 0.5, mlp_keep=0.5, prune_score="activation")))
    rec = recipe_for(cfg, route, {**fields, "heal_steps": 300})
    path = tmp_path / "best.toml"
    path.write_text(recipe_toml(rec, ["a comment", 'with "quotes"']))
    back = ExportRecipe.from_file(path)
    assert back.to_dict() == ExportRecipe.from_dict(rec).to_dict()
    assert back.compress.token_merge == 8 and back.compress.heal_steps == 300 and back.compress.heal_images == 500
    assert back.accept_drop == 1.5      # the per-file compression gate is a backstop: the search holds the split to 0.5
    assert tuple(back.formats) == ("onnx",) and back.quant == "int8" and back.target == "cpu"
    back.validated()
    assert json.loads(json.dumps(rec)) == rec and not math.isnan(back.compress.mlp_keep)


class _InlineExecutor:
    """Runs each task at submit time (what Ray would run), to test the rung loop without Ray."""

    def __init__(self):
        self.submitted = []

    def submit(self, fn, *args, timing=False):
        self.submitted.append(fn.__name__)
        ref = type("Ref", (), {})()      # hashable, like a Ray ObjectRef
        try:
            ref.kind, ref.value = "ok", fn(*args)
        except Exception as e:            # noqa: BLE001 -- handed back as Ray hands back a dead worker's task
            ref.kind, ref.value = "err", e
        return ref

    def wait_any(self, pending):
        return pending[:1], pending[1:]

    def lost(self, e):
        return isinstance(e, RuntimeError) and "worker died" in str(e)

    def result(self, ref):
        if ref.kind == "err":
            raise ref.value
        return ref.value


def test_rung_runs_only_unfinished_tasks_keeps_going_past_a_dead_worker_and_honours_the_budget(tmp_path):
    import time as _time

    from edgeclip.search.driver import Run, Task

    def good(x):
        return {"value": x, "node": "n1", "pid": 1}

    def dies(x):
        raise RuntimeError("worker died")

    ck = Checkpoint(tmp_path, "fp", resume=False)
    ck.record("a", {"value": 0})
    ex = _InlineExecutor()
    run = Run(SearchConfig(), ex, ck, deadline=None, progress=False)
    got = run.rung("r1", [Task("a", good, (1,), label="a"), Task("b", good, (2,), label="b"), Task("c", dies, (3,), label="c")])
    assert ex.submitted == ["good", "dies"]                       # "a" had finished before: not redone
    assert got == {"a": {"value": 0}, "b": {"value": 2, "node": "n1", "pid": 1}}
    assert "c" not in ck.done and any(t.get("error", "").startswith("RuntimeError") for t in run.log)
    assert [t.get("reused", False) for t in run.log if t["task"] in "ab"] == [True, False]
    late = Run(SearchConfig(), ex, ck, deadline=_time.monotonic() - 1, progress=False)
    assert late.rung("r2", [Task("d", good, (4,)), Task("b", good, (2,))]) == {"b": got["b"]}
    assert late.skipped_rungs == ["r2"] and ex.submitted == ["good", "dies"]     # out of time: nothing new started
    with pytest.raises(TypeError, match="a bug"):              # a task that raised is not a lost worker
        def buggy(x):
            raise TypeError("a bug")
        run.rung("r3", [Task("f", buggy, (6,))])
    with pytest.raises(EdgeclipError, match="random weights"):
        def refuses(x):
            raise EdgeclipError("a search of random weights measures nothing")
        run.rung("r3", [Task("e", refuses, (5,))])


def test_artifacts_travel_as_a_tar_of_plain_files_only(tmp_path):
    import io
    import tarfile

    from edgeclip.search.tasks import pack, unpack

    art = tmp_path / "src" / "my-artifact"
    art.mkdir(parents=True)
    (art / "model.onnx").write_bytes(b"\x00model")
    (art / "manifest.json").write_text("{}")
    back = unpack(pack(art), tmp_path / "dst")
    assert back == tmp_path / "dst" / "my-artifact" and (back / "model.onnx").read_bytes() == b"\x00model"
    evil = io.BytesIO()
    with tarfile.open(fileobj=evil, mode="w") as tar:
        info = tarfile.TarInfo("../outside.txt")
        info.size = 1
        tar.addfile(info, io.BytesIO(b"x"))
    with pytest.raises(ValueError, match="not a plain file inside the artifact folder"):
        unpack(evil.getvalue(), tmp_path / "dst2")
    assert not (tmp_path / "outside.txt").exists()


@pytest.mark.parametrize("args, message", [(["--max-drop", "-1"], "--max-drop must be 0 or more"),
                                           (["--budget-minutes", "0"], "--budget-minutes must be positive"),
                                           (["--knobs", "wings"], "unknown knob 'wings'")])
def test_cli_refuses_in_one_line_with_exit_2_and_writes_nothing(tmp_path, args, message):
    from click.testing import CliRunner

    from edgeclip.cli import main

    out = tmp_path / "search"
    r = CliRunner().invoke(main, ["search", *args, "--out", str(out)])
    assert r.exit_code == 2 and message in r.output and len(r.output.strip().splitlines()) == 1, r.output
    assert not out.exists()


@pytest.mark.parametrize("left, refused", [(49, True), (50, False)])
def test_too_few_held_out_calibration_images_for_the_estimates_are_refused(monkeypatch, left, refused):
    """Estimates on a handful of images cannot tell levels apart: the reference task refuses below 50, naming the
    knobs that free images (before this test the guard ran only inside a whole search)."""
    from edgeclip.search import tasks

    class PastTheGuard(Exception):
        pass

    class Held:
        def __len__(self):
            return left

        def tensors(self, pre):            # the first thing the task does with enough images
            raise PastTheGuard

    prep = type("Prep", (), {"random_weights": False, "preprocess": None, "module": None})()
    monkeypatch.setattr(tasks, "_prepared", lambda job, fields: (prep, None))
    monkeypatch.setattr(tasks, "_estimate_images", lambda job: Held())
    job = tasks.Job("m", None, "d", None, 256, 500, 50, None, "cpu")
    if refused:
        with pytest.raises(EdgeclipError, match=r"only 49 calibration images .* after the 500 compression.*--estimate-size"):
            tasks.reference(job)
    else:
        with pytest.raises(PastTheGuard):
            tasks.reference(job)


def test_every_search_route_is_an_export_route_and_pt2_is_tried_only_where_it_can_be_built(monkeypatch):
    from edgeclip.exporter.formats import aoti
    from edgeclip.exporter.routes import find

    for target, routes in TARGET_ROUTES.items():
        for r in routes:
            assert find(r.format, r.quant, r.scheme, r.backend) is not None, (target, r)
    monkeypatch.setattr(aoti, "toolchain_refusal", lambda: None)
    assert [r.format for r in SearchConfig().validated().routes()] == ["pte", "onnx", "ptl", "pt2"]
    assert [r.format for r in SearchConfig(target="mobile").validated().routes()] == ["pte", "ptl"]
    monkeypatch.setattr(aoti, "toolchain_refusal", lambda: "no C++ compiler (g++) on PATH: apt install g++")
    assert [r.format for r in SearchConfig().validated().routes()] == ["pte", "onnx", "ptl"]
    with pytest.raises(EdgeclipError) as e:
        SearchConfig(formats=("pt2",)).validated()
    assert str(e.value) == "--format pt2: this machine cannot build it: no C++ compiler (g++) on PATH: apt install g++"
