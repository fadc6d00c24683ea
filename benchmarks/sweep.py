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

import json
import time
from dataclasses import dataclass, replace
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


def run_sweep(loaded, data, series: tuple[str, ...], eval_images: torch.Tensor, labels: np.ndarray,
              classes, prompt_names, templates, timing, progress: Callable[[int], None] | None = None,
              calibration=None) -> dict:
    """Evaluate every point of every series; returns the report dict (schema ``edgeclip.sweep/1``)."""
    from edgeclip.benchmarks.timing import SessionRunner, speedups, time_interleaved
    from edgeclip.exporter.compress import compress
    from edgeclip.exporter.compress.structure import tower_flops, tower_params

    planned, skipped = plan(loaded.model, series)
    base_clf = loaded.classifier(classes, prompt_names, templates)
    image = eval_images[:1]
    caption = loaded.tokenizer(["a photo of a thing."]) if loaded.tokenizer is not None else None
    labels_t = torch.as_tensor(labels)

    @torch.no_grad()
    def feats(clf) -> torch.Tensor:
        out = torch.cat([clf.backbone(eval_images[i:i + 256]) for i in range(0, len(eval_images), 256)])
        return F.normalize(out, dim=-1) if clf.normalize_features else out

    def top1(f, clf) -> float:
        with torch.no_grad():
            return float((clf.head(f).argmax(-1) == labels_t).float().mean()) * 100

    base_feats = feats(base_clf)
    base_pred = base_clf.head(base_feats).argmax(-1)
    base = {"top1": round(top1(base_feats, base_clf), 2), "params": tower_params(loaded.model),
            "flops": tower_flops(loaded.model, image, caption)}
    points: list[dict] = []
    one = eval_images[:1].numpy()
    for name, pts in planned.items():
        sessions = {"baseline": SessionRunner(_Eager(base_clf), one)}
        rows = []
        for p in pts:
            t0 = time.perf_counter()
            try:
                model, report = compress(loaded.model, p.recipe, calibration)
            except EdgeclipError as e:
                rows.append({"series": name, "x": p.x, "error": str(e)})
                continue
            clf = replace(loaded, model=model).classifier(classes, prompt_names, templates)
            f = base_feats if p.tower == "text" else feats(clf)
            with torch.no_grad():
                pred = clf.head(f).argmax(-1)
            row = {"series": name, "x": p.x, "tower": p.tower, "recipe": {k: v for k, v in p.recipe.to_dict().items()
                                                                          if v != getattr(CompressRecipe(), k)},
                   "top1": round(float((pred == labels_t).float().mean()) * 100, 2),
                   "agreement": round(float((pred == base_pred).float().mean()) * 100, 2),
                   "params": tower_params(model), "flops": tower_flops(model, image, caption),
                   "seconds": round(time.perf_counter() - t0, 2)}
            row["params_removed_pct"] = {k: round(100 * (1 - row["params"][k] / base["params"][k]), 2)
                                         for k in ("vision", "text") if base["params"][k]}
            rows.append(row)
            if p.tower == "vision":
                sessions[f"{name}:{p.x}"] = SessionRunner(_Eager(clf), one)
            if progress:
                progress(1)
        if len(sessions) > 1:
            timed = {k: t.summary() for k, t in time_interleaved(sessions, timing).items()}
            b = timed["baseline"]["latency_ms_median"]
            for row in rows:
                key = f"{name}:{row['x']}"
                if key in timed:
                    row["latency_ms_median"] = round(timed[key]["latency_ms_median"], 3)
                    row["speedup_vs_uncompressed"] = round(speedups(timed[key], timed["baseline"])["speedup"], 3)
                    row["baseline_latency_ms_median"] = round(b, 3)
        points += rows
    from .report import cpu_flags, cpu_name

    env = {"torch": torch.__version__, "threads": torch.get_num_threads(), "cpu": cpu_name(), "cpu_flags": cpu_flags(),
           "timing": {"warmup": timing.warmup, "rounds": timing.rounds, "reps_per_round": timing.reps_per_round},
           "latency": "eager fp32 classifier, batch 1, median; ratios within one series are interleaved in the same rounds"}
    return {"schema": SCHEMA, "model": loaded.source, "data": f"{data.name} {data.split}[:{len(labels)}]",
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


def sweep_pngs(report: dict, out_dir: Path) -> list[Path]:
    """accuracy vs parameters (one panel per tower) and accuracy vs latency (vision series)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pts, base = [p for p in report["points"] if "top1" in p], report["baseline"]
    series = list(dict.fromkeys(p["series"] for p in pts))
    paths = []
    fig, axes = plt.subplots(1, 2, figsize=(13, 5))
    for ax, tower in zip(axes, ("vision", "text")):
        for s in series:
            sp = [p for p in pts if p["series"] == s and p["tower"] == tower]
            if sp:
                ax.plot([p["params"][tower] / 1e6 for p in sp], [p["top1"] for p in sp], "o-", label=s, ms=4)
        if base["params"].get(tower):
            ax.scatter([base["params"][tower] / 1e6], [base["top1"]], marker="*", s=160, c="k", zorder=5, label="uncompressed")
        ax.set_xlabel(f"{tower} tower parameters (M)")
        ax.set_ylabel("top-1 %")
        ax.set_title(f"accuracy vs {tower} parameters")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(f"{report['model'].get('model')} on {report['data']}", fontsize=9)
    fig.tight_layout()
    paths.append(out_dir / "sweep_accuracy_vs_params.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(7, 5))
    for s in series:
        sp = [p for p in pts if p["series"] == s and "latency_ms_median" in p]
        if sp:
            ax.plot([p["latency_ms_median"] for p in sp], [p["top1"] for p in sp], "o-", label=s, ms=4)
    lat = [p["baseline_latency_ms_median"] for p in pts if "baseline_latency_ms_median" in p]
    if lat:
        ax.scatter([float(np.median(lat))], [base["top1"]], marker="*", s=160, c="k", zorder=5, label="uncompressed")
    ax.set_xlabel(f"eager batch-1 latency, ms ({report['environment']['threads']} threads)")
    ax.set_ylabel("top-1 %")
    ax.set_title("accuracy vs latency (vision series; text changes leave the image path unchanged)", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    paths.append(out_dir / "sweep_accuracy_vs_latency.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)
    return paths


def write_report(report: dict, out_dir: Path) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "sweep.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(report, indent=2))
    tmp.replace(path)
    return [path, *sweep_pngs(report, out_dir)]
