"""The sensitivity study behind ``edgeclip sweep``: how accuracy falls as each compression knob turns.

Series (each a list of compression recipes applied to the same loaded model):

* ``svd-vision-layers``  -- SVD at one fixed ratio on the last N vision blocks, N = 1..L (few layers, strong)
* ``svd-vision-ratio``   -- SVD on every vision block, ratio varied (many layers, mild to strong)
* ``svd-vision-aware``   -- the same with activation-aware SVD (does whitening beat plain SVD at equal rank?)
* ``svd-attn-vision`` / ``svd-attn-text`` -- attention projections only, one tower at a time, ratio varied
* ``blocks-{text,vision}-{last,first}`` -- remove k blocks from one end, k = 1..L-1
* ``tokens-vision``      -- training-free token reduction at blocks L/3 and 2L/3, keep rate varied
* ``merge-vision``       -- training-free token merging (ToMe) at every vision block, r (tokens merged per block)
  varied so that 1/4, 1/2 and 3/4 of the patch tokens are merged away by the last block

"ratio" is the fraction of each factorised layer's parameters *kept*.  Accuracy is zero-shot top-1 of the
eager fp32 model on real labelled images; latency is eager batch-1 median over interleaved rounds,
timed per series against the uncompressed model in the same rounds (so a series' speed-ups are honest
ratios even on a noisy machine).  Text-tower changes do not touch the image path of a zero-shot
classifier (the text tower runs once, at build time), so text series have no latency of their own.
"""

from __future__ import annotations

import functools
import json
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from edgeclip.errors import EdgeclipError
from edgeclip.exporter.compress.config import CompressRecipe

SCHEMA = "edgeclip.sweep/1"
RATIOS = (0.75, 0.5, 0.35, 0.25, 0.15, 0.1)
FIXED_RATIO = 0.25
TOKEN_KEEPS = (0.9, 0.7, 0.5, 0.3)
MERGED_AWAY = (0.25, 0.5, 0.75)      # merge-vision: fraction of patch tokens gone by the last block


def merge_rs(patches: int, n_blocks: int) -> list[int]:
    """ToMe's r for each MERGED_AWAY fraction: r tokens merged at each of ``n_blocks`` blocks."""
    return sorted({max(1, round(f * patches / max(1, n_blocks))) for f in MERGED_AWAY})


@dataclass
class Point:
    series: str
    x: float                       # the knob: ratio or count
    recipe: CompressRecipe
    tower: str                     # the tower it changes


def series_points(name: str, n_vision: int, n_text: int, ratios=RATIOS, fixed_ratio: float = FIXED_RATIO,
                  patches: int = 0) -> list[Point]:
    if name == "svd-vision-layers":
        return [Point(name, k, CompressRecipe(svd_ratio=fixed_ratio, svd_blocks=f"last:{k}"), "vision") for k in range(1, n_vision + 1)]
    if name in ("svd-vision-ratio", "svd-vision-aware"):
        return [Point(name, r, CompressRecipe(svd_ratio=r, svd_aware=name.endswith("aware")), "vision") for r in ratios]
    if name.startswith("svd-attn-"):
        tower = name.rsplit("-", 1)[1]
        return [Point(name, r, CompressRecipe(svd_ratio=r, svd_layers="attn", svd_tower=tower), tower) for r in ratios]
    if name == "tokens-vision":
        return [Point(name, k, CompressRecipe(token_keep=k), "vision") for k in TOKEN_KEEPS]
    if name == "merge-vision":
        return [Point(name, r, CompressRecipe(token_merge=r), "vision") for r in merge_rs(patches, n_vision)]
    if name.startswith("blocks-"):
        _, tower, end = name.split("-")
        n = n_vision if tower == "vision" else n_text
        pts = []
        for k in range(1, n):
            idx = list(range(k)) if end == "first" else list(range(n - k, n))
            pts.append(Point(name, k, CompressRecipe(prune_blocks=[f"{tower}:{','.join(map(str, idx))}"]), tower))
        return pts
    raise EdgeclipError(f"unknown sweep series {name!r}; use one of {', '.join(SERIES)}")


SERIES = ("svd-vision-layers", "svd-vision-ratio", "svd-vision-aware", "svd-attn-vision", "svd-attn-text",
          "blocks-text-last", "blocks-text-first", "blocks-vision-last", "blocks-vision-first", "tokens-vision",
          "merge-vision")


def plan(model, series: tuple[str, ...]) -> tuple[dict[str, list[Point]], list[str]]:
    """The points of each series this model can run, and the series it cannot (text series without a text tower)."""
    from edgeclip.exporter.compress.structure import image_tokens, towers

    ts = towers(model)
    n_vision = len(ts["vision"].blocks) if "vision" in ts else 0
    n_text = len(ts["text"].blocks) if "text" in ts else 0
    try:
        patches = image_tokens(model)[0] if n_vision else 0
    except EdgeclipError:     # a family without a token layout: the merge series' points fail with its reason
        patches = 0
    skipped = [s for s in series if "text" in s and not n_text]
    return {s: series_points(s, n_vision, n_text, patches=patches) for s in series if s not in skipped}, skipped


class _Eager:
    def __init__(self, module):
        self.module = module

    def run(self, batch: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return self.module(torch.from_numpy(batch)).numpy()


@dataclass(frozen=True)
class SweepJob:
    """What a worker needs to rebuild a sweep's context on its own (in this process, or on a Ray node)."""

    model: str
    pretrained: str | None
    data: str
    calib_data: str | None = None
    calib_size: int = 256
    eval_size: int | None = 2000
    templates: tuple[str, ...] | None = None
    aware: bool = False                 # an activation-aware series: build calibration activations


@dataclass
class SweepContext:
    loaded: object
    data: object                        # the evaluation images (LabeledImages)
    images: torch.Tensor
    labels: torch.Tensor
    zero_shot: tuple                    # (classes, prompt names, templates)
    calibration: object
    base_clf: object
    base_feats: torch.Tensor
    base_pred: torch.Tensor
    built: dict = field(default_factory=dict)   # "series:x" -> the compressed classifier a point built here, so timing
                                                # it in the same process does not compress it again

    def classifier(self, model):
        return replace(self.loaded, model=model).classifier(*self.zero_shot)

    @functools.cached_property
    def flop_inputs(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """One image and one tokenized caption: what ``tower_flops`` runs each tower on (the same for every point)."""
        tok = self.loaded.tokenizer
        return self.images[:1], (tok(["a photo of a thing."]) if tok is not None else None)

    @torch.no_grad()
    def feats(self, clf) -> torch.Tensor:
        out = torch.cat([clf.backbone(self.images[i:i + 256]) for i in range(0, len(self.images), 256)])
        return F.normalize(out, dim=-1) if clf.normalize_features else out


_CONTEXT: dict[SweepJob, SweepContext] = {}


def sweep_context(job: SweepJob, progress: bool = False) -> SweepContext:
    """The loaded model, its evaluation images and its uncompressed predictions.  Kept per process for the last job:
    every point of a sweep needs them, and a Ray worker runs many points."""
    if job not in _CONTEXT:
        _CONTEXT.clear()
        _CONTEXT[job] = _build_context(job, progress)
    return _CONTEXT[job]


def _build_context(job: SweepJob, progress: bool) -> SweepContext:
    from edgeclip.models.datasets import load_calibration, load_dataset
    from edgeclip.models.factory import load_model
    from edgeclip.preparation import build_calibration, progress_bar

    ds = load_dataset(job.data, "test")
    calib = load_calibration(job.calib_data or job.data, job.calib_size, eval_spec=job.data) if job.aware else None
    loaded = load_model(job.model, job.pretrained)
    if loaded.random_weights:
        raise EdgeclipError("a sensitivity sweep of random weights measures nothing; pass trained weights (--pretrained)")
    sub = ds.take(job.eval_size)
    with progress_bar(progress, len(sub), f"preprocess {ds.name}") as bar:
        images = sub.tensors(loaded.preprocess, bar.update if bar else None)
    zero_shot = (ds.classes, ds.prompt_names, list(job.templates) if job.templates else None)
    calibration = build_calibration(calib, loaded.preprocess, loaded, zero_shot, progress, job.calib_size) if calib is not None else None
    ctx = SweepContext(loaded, sub, images, torch.as_tensor(np.asarray(sub.labels)), zero_shot, calibration,
                       None, None, None)
    ctx.base_clf = loaded.classifier(*zero_shot)
    ctx.base_feats = ctx.feats(ctx.base_clf)
    with torch.no_grad():
        ctx.base_pred = ctx.base_clf.head(ctx.base_feats).argmax(-1)
    return ctx


def sweep_point(job: SweepJob, p: Point) -> dict:
    """One point: compress, score on the evaluation images against the uncompressed model (a task: runs anywhere)."""
    from edgeclip.exporter.compress import compress
    from edgeclip.exporter.compress.structure import tower_flops, tower_params

    ctx = sweep_context(job)
    t0 = time.perf_counter()
    try:
        model, _ = compress(ctx.loaded.model, p.recipe, ctx.calibration)
    except EdgeclipError as e:
        return {"series": p.series, "x": p.x, "error": str(e)}
    clf = ctx.classifier(model)
    if p.tower == "vision":
        ctx.built[f"{p.series}:{p.x}"] = clf
    f = ctx.base_feats if p.tower == "text" else ctx.feats(clf)
    with torch.no_grad():
        pred = clf.head(f).argmax(-1)
    image, caption = ctx.flop_inputs
    return {"series": p.series, "x": p.x, "tower": p.tower,
            "recipe": {k: v for k, v in p.recipe.to_dict().items() if v != getattr(CompressRecipe(), k)},
            "top1": round(float((pred == ctx.labels).float().mean()) * 100, 2),
            "agreement": round(float((pred == ctx.base_pred).float().mean()) * 100, 2),
            "params": tower_params(model), "flops": tower_flops(model, image, caption),
            "seconds": round(time.perf_counter() - t0, 2)}


def series_latency(job: SweepJob, points: list[Point], timing) -> dict[str, dict]:
    """Eager batch-1 latency of a series' vision points and of the uncompressed model, timed interleaved in the same
    rounds in one process (a timing task: it holds its node)."""
    from edgeclip.benchmarks.timing import SessionRunner, time_interleaved
    from edgeclip.exporter.compress import compress

    ctx = sweep_context(job)
    one = ctx.images[:1].numpy()
    sessions = {"baseline": SessionRunner(_Eager(ctx.base_clf), one)}
    for p in points:
        clf = ctx.built.pop(f"{p.series}:{p.x}", None)
        if clf is None:            # scored in another process (a Ray worker): build it here
            try:
                clf = ctx.classifier(compress(ctx.loaded.model, p.recipe, ctx.calibration)[0])
            except EdgeclipError:
                continue
        sessions[str(p.x)] = SessionRunner(_Eager(clf), one)
    if len(sessions) == 1:
        return {}
    return {k: t.summary() for k, t in time_interleaved(sessions, timing).items()}


class _Inline:
    """The executor without Ray: each task runs here, when submitted."""

    def submit(self, fn, *args, **placement):      # timing=True changes nothing here: everything runs in order
        return fn(*args)

    def result(self, ref):
        return ref


def run_sweep(job: SweepJob, series: tuple[str, ...], timing, progress: Callable[[int], None] | None = None,
              executor=None) -> dict:
    """Evaluate every point of every series; returns the report dict (schema ``edgeclip.sweep/1``).  ``executor``:
    a ``benchmarks.executor.RayExecutor`` (points spread over its workers, each series timed on its timing node);
    none runs everything here, in order."""
    from edgeclip.benchmarks.timing import speedups
    from edgeclip.exporter.compress.structure import tower_flops, tower_params

    ex = executor or _Inline()
    ctx = sweep_context(job, progress is not None)
    planned, skipped = plan(ctx.loaded.model, series)
    image, caption = ctx.flop_inputs
    base = {"top1": round(float((ctx.base_pred == ctx.labels).float().mean()) * 100, 2),
            "params": tower_params(ctx.loaded.model), "flops": tower_flops(ctx.loaded.model, image, caption)}
    refs = [(ex.submit(sweep_point, job, p), p) for pts in planned.values() for p in pts]
    times = {name: ex.submit(series_latency, job, [p for p in pts if p.tower == "vision"], timing, timing=True)
             for name, pts in planned.items() if any(p.tower == "vision" for p in pts)}
    points: list[dict] = []
    for ref, p in refs:
        row = ex.result(ref)
        if "params" in row:
            row["params_removed_pct"] = {k: round(100 * (1 - row["params"][k] / base["params"][k]), 2)
                                         for k in ("vision", "text") if base["params"][k]}
        points.append(row)
        if progress:
            progress(1)
    for name, ref in times.items():
        timed = ex.result(ref)
        if "baseline" not in timed:
            continue
        b = timed["baseline"]["latency_ms_median"]
        for row in points:
            if row["series"] == name and str(row["x"]) in timed and "top1" in row:
                t = timed[str(row["x"])]
                row["latency_ms_median"] = round(t["latency_ms_median"], 3)
                row["speedup_vs_uncompressed"] = round(speedups(t, timed["baseline"])["speedup"], 3)
                row["baseline_latency_ms_median"] = round(b, 3)
    from .report import cpu_flags, cpu_name

    env = {"torch": torch.__version__, "threads": torch.get_num_threads(), "cpu": cpu_name(), "cpu_flags": cpu_flags(),
           "timing": {"warmup": timing.warmup, "rounds": timing.rounds, "reps_per_round": timing.reps_per_round},
           "latency": "eager fp32 classifier, batch 1, median; ratios within one series are interleaved in the same rounds",
           "executor": "ray" if executor is not None else "in-process"}
    return {"schema": SCHEMA, "model": ctx.loaded.source, "data": f"{ctx.data.name} {ctx.data.split}[:{len(ctx.labels)}]",
            "ratio_means": "fraction of each factorised layer's parameters kept", "fixed_ratio": FIXED_RATIO,
            "baseline": base, "points": points, "environment": env,
            "skipped_series": [{"series": s, "why": "the model has no text tower"} for s in skipped],
            "findings": findings(base, points)}


def _at(points, series):
    return [p for p in points if p["series"] == series and "top1" in p]


def findings(base: dict, points: list[dict]) -> list[str]:
    """The claims of the original study, checked against this run's numbers (each says what it compared)."""
    out = []
    few, many = _at(points, "svd-vision-layers"), _at(points, "svd-vision-ratio")
    if few and many:
        wins = []
        for p in few:   # compare with the many-layer point closest in vision params
            q = min(many, key=lambda m: abs(m["params"]["vision"] - p["params"]["vision"]))
            wins.append(q["top1"] - p["top1"])
        mean = float(np.mean(wins))
        verdict = "holds" if mean > 0.25 else "does not hold (the reverse)" if mean < -0.25 else "is a tie here (within 0.25 pt)"
        out.append(f"'a low ratio on many layers beats a high ratio on few' {verdict}: many-layer minus few-layer top-1 at the "
                   f"nearest vision-parameter match is {mean:+.2f} pt on average over {len(wins)} pairs "
                   f"(range {min(wins):+.2f} .. {max(wins):+.2f})")
    v, t = _at(points, "svd-attn-vision"), _at(points, "svd-attn-text")
    if v and t:
        dv = {p["x"]: base["top1"] - p["top1"] for p in v}
        dt = {p["x"]: base["top1"] - p["top1"] for p in t}
        common = sorted(set(dv) & set(dt), reverse=True)
        vision_better = [r for r in common if dv[r] < dt[r]]
        out.append("attention low-rank, top-1 drop by ratio (vision / text): " +
                   ", ".join(f"{r:g}: {dv[r]:.2f} / {dt[r]:.2f}" for r in common) +
                   f" -> vision attention is the more tolerant at {len(vision_better)} of {len(common)} ratios"
                   + (f" ({', '.join(f'{r:g}' for r in vision_better)})" if vision_better else ""))
    for end in ("last", "first"):
        tb = _at(points, f"blocks-text-{end}")
        if tb:
            drops = [(p["x"], round(base["top1"] - p["top1"], 2)) for p in tb]
            out.append(f"text blocks removed from the {end} end, top-1 drop by count: " + ", ".join(f"{k:g}: {d}" for k, d in drops))
    a, pl = _at(points, "svd-vision-aware"), {p["x"]: p for p in _at(points, "svd-vision-ratio")}
    if a and pl:
        diffs = [(p["x"], p["top1"] - pl[p["x"]]["top1"]) for p in a if p["x"] in pl]
        out.append("activation-aware vs plain SVD at equal rank (top-1 difference by ratio): " +
                   ", ".join(f"{r:g}: {d:+.2f}" for r, d in diffs))
    return out


def write_report(report: dict, out_dir: Path) -> list[Path]:
    from edgeclip.exporter.atomic import replace_file

    from .plot import sweep_pngs

    out_dir.mkdir(parents=True, exist_ok=True)
    path = replace_file(out_dir / "sweep.json", json.dumps(report, indent=2))

    return [path, *sweep_pngs(report, out_dir)]
