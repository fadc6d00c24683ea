"""The sweep's logic in seconds, without ../shared: which points each series plans, what a point's row says
(scored against the uncompressed model through ``prepare``, a separate code path), how timings land in the rows,
and the findings' exact verdicts.  The fixture test (test_sweep.py) shows the same on a trained model."""

from __future__ import annotations

import pytest
import torch

from edgeclip.benchmarks import sweep
from edgeclip.benchmarks.sweep import (FIXED_RATIO, RATIOS, TOKEN_KEEPS, Point, SweepJob, findings, merge_rs,
                                       series_points)
from edgeclip.errors import EdgeclipError
from edgeclip.exporter.compress import CompressRecipe


def test_merge_rs_turns_the_merged_away_fractions_into_per_block_counts():
    assert merge_rs(16, 3) == [1, 3, 4]             # 0.25 / 0.5 / 0.75 of 16 tokens over 3 blocks
    assert merge_rs(64, 6) == [3, 5, 8]
    assert merge_rs(4, 6) == [1]                    # never 0, and equal counts once
    assert merge_rs(8, 0) == [2, 4, 6]              # no blocks counted: as one


def test_series_points_are_exactly_the_planned_recipes():
    v = "vision"
    assert series_points("svd-vision-layers", 3, 2) == [
        Point("svd-vision-layers", k, CompressRecipe(svd_ratio=FIXED_RATIO, svd_blocks=f"last:{k}"), v) for k in (1, 2, 3)]
    assert series_points("svd-vision-layers", 2, 2, fixed_ratio=0.5)[0].recipe.svd_ratio == 0.5
    assert series_points("svd-vision-ratio", 3, 2) == [Point("svd-vision-ratio", r, CompressRecipe(svd_ratio=r), v)
                                                      for r in RATIOS]
    assert series_points("svd-vision-aware", 3, 2, ratios=(0.3,)) == [
        Point("svd-vision-aware", 0.3, CompressRecipe(svd_ratio=0.3, svd_aware=True), v)]
    assert series_points("svd-attn-text", 3, 2, ratios=(0.5, 0.2)) == [
        Point("svd-attn-text", r, CompressRecipe(svd_ratio=r, svd_layers="attn", svd_tower="text"), "text") for r in (0.5, 0.2)]
    assert series_points("svd-attn-vision", 3, 2, ratios=(0.5,)) == [
        Point("svd-attn-vision", 0.5, CompressRecipe(svd_ratio=0.5, svd_layers="attn", svd_tower="vision"), v)]
    assert series_points("tokens-vision", 3, 2) == [Point("tokens-vision", k, CompressRecipe(token_keep=k), v)
                                                   for k in TOKEN_KEEPS]
    assert series_points("merge-vision", 3, 2, patches=16) == [Point("merge-vision", r, CompressRecipe(token_merge=r), v)
                                                              for r in (1, 3, 4)]
    blocks = lambda name, n, t: [(p.x, p.recipe.prune_blocks, p.tower) for p in series_points(name, n, t)]  # noqa: E731
    assert blocks("blocks-vision-last", 3, 2) == [(1, ["vision:2"], v), (2, ["vision:1,2"], v)]
    assert blocks("blocks-vision-first", 3, 2) == [(1, ["vision:0"], v), (2, ["vision:0,1"], v)]
    assert blocks("blocks-text-last", 3, 3) == [(1, ["text:2"], "text"), (2, ["text:1,2"], "text")]
    assert blocks("blocks-text-first", 3, 2) == [(1, ["text:0"], "text")]
    with pytest.raises(EdgeclipError, match="unknown sweep series 'svd-everything'; use one of svd-vision-layers, "):
        series_points("svd-everything", 3, 2)


def test_plan_reads_the_towers_and_skips_text_series_without_a_text_tower():
    import open_clip
    import timm

    from conftest import TINY_CFG

    torch.manual_seed(0)
    clip = open_clip.CLIP(**TINY_CFG)
    planned, skipped = sweep.plan(clip, ("blocks-vision-last", "blocks-text-last", "merge-vision"))
    assert skipped == [] and list(planned) == ["blocks-vision-last", "blocks-text-last", "merge-vision"]
    assert planned["blocks-vision-last"] == series_points("blocks-vision-last", 2, 1)
    assert planned["merge-vision"] == series_points("merge-vision", 2, 1, patches=16)      # 32 px / 8 px patches
    assert [p.x for p in planned["merge-vision"]] == [2, 4, 6]
    vit = timm.create_model("vit_tiny_patch16_224", pretrained=False, depth=3, img_size=32, patch_size=8)
    planned, skipped = sweep.plan(vit, ("blocks-text-last", "svd-attn-text", "blocks-vision-first"))
    assert skipped == ["blocks-text-last", "svd-attn-text"] and list(planned) == ["blocks-vision-first"]
    assert planned["blocks-vision-first"] == series_points("blocks-vision-first", 3, 0)


def _row(series, x, top1, vision=None):
    return {"series": series, "x": x, "top1": top1, "params": {"vision": vision if vision is not None else x}}


def test_findings_state_each_verdict_with_its_numbers():
    base = {"top1": 80.0}
    pts = [_row("svd-vision-layers", 1, 70.0, 100), _row("svd-vision-layers", 2, 75.0, 200),
           _row("svd-vision-ratio", 0.25, 69.6, 110), _row("svd-vision-ratio", 0.5, 75.1, 190),
           {"series": "svd-vision-ratio", "x": 0.1, "error": "rank 0"},          # a failed point is no evidence
           _row("svd-attn-vision", 0.5, 79.0), _row("svd-attn-vision", 0.25, 70.0), _row("svd-attn-vision", 0.1, 60.0),
           _row("svd-attn-text", 0.5, 78.0), _row("svd-attn-text", 0.25, 72.0),
           _row("blocks-text-last", 1, 79.5), _row("blocks-text-last", 2, 61.25),
           _row("svd-vision-aware", 0.25, 72.5), _row("svd-vision-aware", 0.75, 90.0)]
    assert findings(base, pts) == [
        "'a low ratio on many layers beats a high ratio on few' is a tie here (within 0.25 pt): many-layer minus few-layer "
        "top-1 at the nearest vision-parameter match is -0.15 pt on average over 2 pairs (range -0.40 .. +0.10)",
        "attention low-rank, top-1 drop by ratio (vision / text): 0.5: 1.00 / 2.00, 0.25: 10.00 / 8.00 -> vision attention "
        "is the more tolerant at 1 of 2 ratios (0.5)",
        "text blocks removed from the last end, top-1 drop by count: 1: 0.5, 2: 18.75",
        "activation-aware vs plain SVD at equal rank (top-1 difference by ratio): 0.25: +2.90"]
    assert "is a tie" in findings(base, pts)[0]
    # the verdict's thresholds: a mean of +0.25 pt is still a tie, beyond it a win either way
    at = lambda d: findings(base, [_row("svd-vision-layers", 1, 70.0, 100), _row("svd-vision-ratio", 0.5, 70.0 + d, 100)])[0]  # noqa: E731
    assert "is a tie" in at(0.25) and "is a tie" in at(-0.25)
    assert "' holds" in at(0.26) and "does not hold (the reverse)" in at(-0.26)
    only = findings(base, [_row("blocks-text-first", 1, 70.0), _row("svd-attn-vision", 0.5, 79.0)])
    assert only == ["text blocks removed from the first end, top-1 drop by count: 1: 10.0"]   # no text attention: no claim
    assert findings(base, [_row("svd-attn-vision", 0.5, 79.0), _row("svd-attn-text", 0.5, 79.0)]) == [
        "attention low-rank, top-1 drop by ratio (vision / text): 0.5: 1.00 / 1.00 -> vision attention is the more "
        "tolerant at 0 of 1 ratios"]


class _CannedTiming:
    """Runs the scoring tasks here and answers the timing tasks, in order, with fixed latencies: rows must carry
    exactly these numbers, and the ratio to the baseline timed with them."""

    def __init__(self, *answers: dict[str, float]):
        self.answers, self.timed, self.jobs = list(answers), [], []

    def submit(self, fn, *args, timing=False):
        if timing:
            self.timed.append([p.x for p in args[1]])
            self.jobs.append(args[0])
            return {k: {"latency_ms_median": v} for k, v in self.answers.pop(0).items()}
        return fn(*args)

    def result(self, ref):
        return ref


def test_run_sweep_rows_score_each_point_against_the_uncompressed_model(tiny_clip_dir, tiny_images, monkeypatch):
    from edgeclip.exporter.compress.structure import towers
    from edgeclip.models.datasets import load_dataset
    from edgeclip.preparation import prepare
    from edgeclip.benchmarks.timing import TimingConfig

    sweep._CONTEXT.clear()
    job = SweepJob(str(tiny_clip_dir), None, tiny_images, eval_size=7)
    # the first series' timing lost its baseline (a worker died): its rows get no latency, the next series' do;
    # "0.5" is also an x of the text series, which is never timed
    ex = _CannedTiming({"1": 1.0}, {"baseline": 3.14159, "1": 2.71828, "0.5": 1.0})
    real_plan = sweep.plan
    monkeypatch.setattr(sweep, "plan", lambda m, s: (real_plan(m, s)[0], ["svd-attn-text-of-a-vit"]))
    flags, real_build = [], sweep._build_context
    monkeypatch.setattr(sweep, "_build_context", lambda j, progress: flags.append(progress) or real_build(j, progress))
    done = []
    rep = sweep.run_sweep(job, ("tokens-vision", "blocks-vision-last", "svd-attn-text"), TimingConfig(1, 1, 1),
                          executor=ex, progress=done.append)
    assert flags == [True] and done == [1] * (len(TOKEN_KEEPS) + 1 + len(RATIOS))   # a bar while preparing, a tick a point
    ds = load_dataset(tiny_images, "test").take(7)
    base = prepare(str(tiny_clip_dir), data=ds)
    logits = base.module(ds.tensors(base.preprocess))
    base_pred, labels = logits.argmax(-1), torch.as_tensor(ds.labels)
    assert rep["schema"] == "edgeclip.sweep/1" and rep["data"] == f"{ds.name} {ds.split}[:7]"
    assert rep["model"] == base.facts.source and rep["fixed_ratio"] == FIXED_RATIO
    assert rep["ratio_means"] == "fraction of each factorised layer's parameters kept"
    top1 = float((base_pred == labels).float().mean()) * 100
    assert rep["baseline"]["top1"] == round(top1, 2) != round(top1, 3)
    assert rep["skipped_series"] == [{"series": "svd-attn-text-of-a-vit", "why": "the model has no text tower"}]
    assert ex.timed == [list(TOKEN_KEEPS), [1]]     # one timing task per vision series, none for the text series
    assert ex.jobs == [job, job]
    from edgeclip.benchmarks.report import cpu_flags, cpu_name

    env = rep["environment"]
    assert env["executor"] == "ray" and env["threads"] == torch.get_num_threads() and env["torch"] == torch.__version__
    assert env["cpu"] == cpu_name() and env["cpu_flags"] == cpu_flags() and env["latency"] == (
        "eager fp32 classifier, batch 1, median; ratios within one series are interleaved in the same rounds")
    assert set(env) == {"torch", "threads", "cpu", "cpu_flags", "timing", "latency", "executor"}
    text_only = sweep.run_sweep(job, ("svd-attn-text",), TimingConfig(1, 1, 1))    # no executor, nothing to time
    assert text_only["environment"]["executor"] == "in-process"
    assert rep["environment"]["timing"] == {"warmup": 1, "rounds": 1, "reps_per_round": 1}
    assert rep["findings"] == findings(rep["baseline"], rep["points"])
    rows = {(p["series"], p["x"]): p for p in rep["points"]}
    assert list(rows) == ([("tokens-vision", k) for k in TOKEN_KEEPS] + [("blocks-vision-last", 1)]
                          + [("svd-attn-text", r) for r in RATIOS])
    assert all("latency_ms_median" not in r for (series, _), r in rows.items() if series != "blocks-vision-last")
    block = rows[("blocks-vision-last", 1)]
    vision_block = sum(p.numel() for p in towers(base.model)["vision"].blocks[-1].parameters())
    assert block["params"]["vision"] == rep["baseline"]["params"]["vision"] - vision_block
    assert block["params_removed_pct"] == {"vision": round(100 * vision_block / rep["baseline"]["params"]["vision"], 2),
                                           "text": 0.0}
    assert block["recipe"] == {"prune_blocks": ["vision:1"]} and block["tower"] == "vision"
    assert (block["latency_ms_median"], block["baseline_latency_ms_median"], block["speedup_vs_uncompressed"]) == (
        2.718, 3.142, round(3.14159 / 2.71828, 3))
    assert block["flops"]["text"] == rep["baseline"]["flops"]["text"] > 0          # the caption was counted
    assert block["flops"]["vision"] < rep["baseline"]["flops"]["vision"]
    for (series, x), row in rows.items():
        prep = prepare(str(tiny_clip_dir), data=ds, compress=next(p.recipe for p in series_points(series, 2, 1) if p.x == x))
        pred = prep.module(ds.tensors(prep.preprocess)).argmax(-1)
        assert row["top1"] == round(float((pred == labels).float().mean()) * 100, 2), (series, x)
        assert row["agreement"] == round(float((pred == base_pred).float().mean()) * 100, 2), (series, x)
        assert row["flops"] == prep.compression["flops_after"], (series, x)
        assert row["seconds"] >= 0
    assert rows[("svd-attn-text", 0.1)]["agreement"] < 100      # the random tiny model does change its answers
    assert all(r["params_removed_pct"]["vision"] == 0.0 and r["params_removed_pct"]["text"] > 0
               for (s, _), r in rows.items() if s == "svd-attn-text")


def test_a_point_that_cannot_apply_is_a_row_with_its_error_and_no_timing(tiny_clip_dir, tiny_images):
    from edgeclip.benchmarks.timing import TimingConfig

    sweep._CONTEXT.clear()
    job = SweepJob(str(tiny_clip_dir), None, tiny_images, eval_size=6)
    bad = Point("blocks-vision-last", 2, CompressRecipe(prune_blocks=["vision:0,1"]), "vision")   # every block
    row = sweep.sweep_point(job, bad)
    assert set(row) == {"series", "x", "error"} and (row["series"], row["x"]) == ("blocks-vision-last", 2)
    assert "vision" in row["error"]
    assert sweep.series_latency(job, [bad], TimingConfig(1, 1, 1)) == {}     # nothing left to time but the baseline
    timed = sweep.series_latency(job, [Point("blocks-vision-last", 1, CompressRecipe(prune_blocks=["vision:1"]), "vision")],
                                 TimingConfig(1, 2, 1))
    assert set(timed) == {"baseline", "1"} and all(t["latency_samples"] == 2 for t in timed.values())


def test_context_uses_the_job_images_templates_and_calibration_and_refuses_random_weights(tiny_clip_dir, tiny_images,
                                                                                       tiny_calib_images):
    sweep._CONTEXT.clear()
    plain = sweep.sweep_context(SweepJob(str(tiny_clip_dir), None, tiny_images, eval_size=7))
    assert len(plain.labels) == len(plain.images) == 7 and plain.calibration is None
    assert plain.zero_shot[2] is None and sweep.sweep_context(SweepJob(str(tiny_clip_dir), None, tiny_images, eval_size=7)) is plain
    job = SweepJob(str(tiny_clip_dir), None, tiny_images, calib_data=tiny_calib_images, calib_size=9, eval_size=None,
                   templates=("a {c}.",), aware=True)
    ctx = sweep.sweep_context(job)
    assert ctx is not plain and len(ctx.labels) == 18 and ctx.zero_shot[2] == ["a {c}."] and ctx.calibration is not None
    assert ctx.base_pred.tolist() == ctx.base_clf.head(ctx.base_feats).argmax(-1).tolist()
    assert sweep._CONTEXT == {job: ctx}                       # one job's context kept per process
    with pytest.raises(EdgeclipError, match="a sensitivity sweep of random weights measures nothing"):
        sweep.sweep_context(SweepJob("timm:vit_tiny_patch16_224", "none", tiny_images))


def test_write_report_creates_the_folder_and_overwrites_a_previous_report(tmp_path):
    import json

    rep = {"schema": "edgeclip.sweep/1", "model": {"model": "m"}, "data": "d", "environment": {"threads": 1},
           "baseline": {"top1": 80.0, "params": {"vision": 1e6, "text": 0}},
           "points": [{"series": "blocks-vision-last", "x": 1, "tower": "vision", "top1": 70.0,
                       "params": {"vision": 5e5, "text": 0}, "latency_ms_median": 1.0, "baseline_latency_ms_median": 2.0}]}
    out = tmp_path / "new" / "sweep"
    paths = sweep.write_report(rep, out)
    assert [p.name for p in paths] == ["sweep.json", "sweep_accuracy_vs_params.png", "sweep_accuracy_vs_latency.png"]
    rep["baseline"]["top1"] = 81.0
    sweep.write_report(rep, out)                    # a second run into the same folder replaces the report
    assert (out / "sweep.json").read_text() == json.dumps(rep, indent=2)     # readable: indented, the whole report
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in paths)     # no temporary file left


def test_series_latency_times_batch_one_of_what_the_points_built_and_rebuilds_the_rest(tiny_clip_dir, tiny_images,
                                                                                      tiny_calib_images, monkeypatch):
    """A point scored in this process is timed as built (not compressed twice); one scored elsewhere (a Ray worker)
    is rebuilt here, with the job's calibration when its recipe needs it; one that cannot be built is left out
    and the rest still timed."""
    from edgeclip.benchmarks import timing
    from edgeclip.benchmarks.timing import TimingConfig

    sweep._CONTEXT.clear()
    job = SweepJob(str(tiny_clip_dir), None, tiny_images, calib_data=tiny_calib_images, calib_size=6, eval_size=5, aware=True)
    seen = {}

    class Timed:
        def __init__(self, k):
            self.k = k

        def summary(self):
            return {"k": self.k}

    monkeypatch.setattr(timing, "time_interleaved", lambda sessions, cfg: seen.update(sessions) or {k: Timed(k) for k in sessions})
    built = Point("blocks-vision-last", 1, CompressRecipe(prune_blocks=["vision:1"]), "vision")
    sweep.sweep_point(job, built)
    clf = sweep.sweep_context(job).built["blocks-vision-last:1"]
    broken = Point("blocks-vision-first", 2, CompressRecipe(prune_blocks=["vision:0,1"]), "vision")
    aware = Point("svd-vision-aware", 0.5, CompressRecipe(svd_ratio=0.5, svd_aware=True), "vision")
    out = sweep.series_latency(job, [built, broken, aware], TimingConfig(1, 1, 1))
    assert out == {"baseline": {"k": "baseline"}, "1": {"k": "1"}, "0.5": {"k": "0.5"}}
    assert seen["1"].session.module is clf and sweep.sweep_context(job).built == {}
    assert all(r.one.shape == (1, 3, 32, 32) for r in seen.values())


def test_findings_need_both_sides_and_list_every_pair():
    base = {"top1": 80.0}
    assert findings(base, [_row("svd-vision-layers", 1, 70.0, 100)]) == []           # no many-layer side: no claim
    assert findings(base, [_row("svd-vision-ratio", 0.5, 70.0, 100)]) == []
    assert findings(base, [_row("svd-vision-aware", 0.5, 70.0)]) == []                # no plain SVD to compare with
    assert findings(base, [_row("svd-vision-ratio", 0.5, 70.0)]) == []
    assert findings(base, [_row("svd-vision-layers", 1, 70.0, 100), _row("svd-vision-ratio", 0.5, 69.0, 100)]) == [
        "'a low ratio on many layers beats a high ratio on few' does not hold (the reverse): many-layer minus few-layer "
        "top-1 at the nearest vision-parameter match is -1.00 pt on average over 1 pairs (range -1.00 .. -1.00)"]
    pts = [_row("svd-attn-vision", 0.5, 79.0), _row("svd-attn-vision", 0.25, 78.0), _row("svd-attn-text", 0.5, 75.0),
           _row("svd-attn-text", 0.25, 70.0), _row("blocks-text-last", 1, 61.123),
           _row("svd-vision-ratio", 0.5, 70.0), _row("svd-vision-ratio", 0.25, 60.0),
           _row("svd-vision-aware", 0.5, 71.0), _row("svd-vision-aware", 0.25, 59.5)]
    assert findings(base, pts) == [
        "attention low-rank, top-1 drop by ratio (vision / text): 0.5: 1.00 / 5.00, 0.25: 2.00 / 10.00 -> vision attention "
        "is the more tolerant at 2 of 2 ratios (0.5, 0.25)",
        "text blocks removed from the last end, top-1 drop by count: 1: 18.88",
        "activation-aware vs plain SVD at equal rank (top-1 difference by ratio): 0.5: +1.00, 0.25: -0.50"]


def test_plan_gives_a_family_without_a_token_layout_the_merge_points_that_fail_with_its_reason(monkeypatch):
    import open_clip

    from conftest import TINY_CFG
    from edgeclip.exporter.compress import structure

    def no_layout(model):
        raise EdgeclipError("this family has no token layout")

    monkeypatch.setattr(structure, "image_tokens", no_layout)
    planned, _ = sweep.plan(open_clip.CLIP(**TINY_CFG), ("merge-vision",))
    assert planned["merge-vision"] == series_points("merge-vision", 2, 1, patches=0)


def test_an_activation_aware_point_is_compressed_with_the_jobs_calibration(tiny_clip_dir, tiny_images, tiny_calib_images):
    sweep._CONTEXT.clear()
    job = SweepJob(str(tiny_clip_dir), None, tiny_images, calib_data=tiny_calib_images, calib_size=6, eval_size=5, aware=True)
    row = sweep.sweep_point(job, Point("svd-vision-aware", 0.5, CompressRecipe(svd_ratio=0.5, svd_aware=True), "vision"))
    assert "error" not in row and row["recipe"] == {"svd_ratio": 0.5, "svd_aware": True}


class _Bars:
    """Records each progress bar the sweep opens (shown or not, its size and label) and how far it was advanced."""

    def __init__(self):
        self.opened, self.advanced = [], []

    def __call__(self, progress, total, desc):
        import contextlib

        self.opened.append((progress, total, desc))
        if not progress:
            return contextlib.nullcontext(None)
        bars = self

        class Bar:
            def __enter__(self):
                bars.advanced.append(0)
                return self

            def __exit__(self, *exc):
                return False

            def update(self, n=1):
                bars.advanced[-1] += n

        return Bar()


def test_context_shows_its_preprocessing_only_when_asked_and_loads_the_jobs_weights(tiny_clip_dir, tiny_images,
                                                                                     tiny_calib_images, monkeypatch):
    from edgeclip import preparation
    from edgeclip.models import factory
    from edgeclip.models.datasets import load_dataset

    bars, loads, real_load = _Bars(), [], factory.load_model
    monkeypatch.setattr(preparation, "progress_bar", bars)
    monkeypatch.setattr(factory, "load_model", lambda m, p: loads.append((m, p)) or real_load(m, p))
    job = SweepJob(str(tiny_clip_dir), "weights-tag", tiny_images, calib_data=tiny_calib_images, calib_size=4,
                   eval_size=7, aware=True)
    sweep._CONTEXT.clear()
    ctx = sweep._build_context(job, True)
    name = load_dataset(tiny_images).name
    assert loads == [(str(tiny_clip_dir), "weights-tag")]
    assert bars.opened == [(True, 7, f"preprocess {name}"), (True, 4, "preprocess calibration images")]
    assert bars.advanced == [7, 4]                                  # each bar follows its images to the end
    assert ctx.calibration.captions is not None and ctx.calibration.head is not None   # the CLIP's captions, its head
    # a point (a Ray task) builds its context without bars
    sweep._CONTEXT.clear()
    bars.opened.clear()
    sweep.sweep_point(job, Point("blocks-vision-last", 1, CompressRecipe(prune_blocks=["vision:1"]), "vision"))
    assert [o[0] for o in bars.opened] == [False, False]


def test_context_refuses_calibrating_on_the_evaluation_folder_and_random_weights_in_one_line(tiny_clip_dir, tiny_images):
    sweep._CONTEXT.clear()
    with pytest.raises(EdgeclipError, match="is the evaluation folder"):     # no calib_data: the eval folder itself
        sweep.sweep_context(SweepJob(str(tiny_clip_dir), None, tiny_images, calib_size=4, aware=True))
    with pytest.raises(EdgeclipError) as e:
        sweep.sweep_context(SweepJob("timm:vit_tiny_patch16_224", "none", tiny_images))
    assert str(e.value) == "a sensitivity sweep of random weights measures nothing; pass trained weights (--pretrained)"


def test_a_text_point_reuses_the_image_features_and_times_itself(tiny_clip_dir, tiny_images, monkeypatch):
    """The image tower is untouched by a text-tower point: its features are the baseline's, not computed again."""
    import time

    sweep._CONTEXT.clear()
    job = SweepJob(str(tiny_clip_dir), None, tiny_images, eval_size=6)
    ctx = sweep.sweep_context(job)
    computed = []
    real = ctx.feats
    monkeypatch.setattr(ctx, "feats", lambda clf: computed.append(clf) or real(clf))
    t0 = time.perf_counter()
    text = next(p for p in series_points("svd-attn-text", 2, 1) if p.x == 0.5)
    row = sweep.sweep_point(job, text)
    wall = time.perf_counter() - t0
    assert "error" not in row and computed == []
    assert isinstance(row["seconds"], float) and 0 <= row["seconds"] <= wall + 0.005 and row["seconds"] == round(row["seconds"], 2)
    sweep.sweep_point(job, Point("blocks-vision-last", 1, CompressRecipe(prune_blocks=["vision:1"]), "vision"))
    assert len(computed) == 1                                   # a vision point does compute its own
