"""What ``edgeclip search`` may try: compression knobs at a few strengths, how they combine, and each target's routes.

Why knobs and not free recipes: each knob is one pass of ``exporter/compress`` at strengths the sweep showed to
matter.  The search measures every knob level alone once (its sensitivity: top-1 cost and FLOPs on held-out
calibration images), then combines levels of different knobs that the accuracy budget can afford, the largest
estimated FLOP saving first -- so the expensive steps (export, timing, the evaluation split) see only candidates
that have a chance.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

from edgeclip.errors import EdgeclipError


@dataclass(frozen=True)
class Route:
    """One int8 (or, on CUDA, fp16) route a target's files can take: what ``edgeclip export`` is told."""

    format: str
    quant: str
    scheme: str | None
    backend: str

    @property
    def label(self) -> str:
        return f"{self.format} {self.quant}" + (f" {self.scheme}" if self.scheme else "") + f" ({self.backend})"

    def fields(self) -> dict:
        return {"formats": (self.format,), "quant": self.quant, "scheme": self.scheme, "backend": self.backend}

    def unavailable_here(self) -> str | None:
        """Why this machine cannot build the route's files (the export route's own machine check), or None."""
        from edgeclip.exporter.routes import find

        registered = find(self.format, self.quant, self.scheme, self.backend)
        return registered.unavailable_here() if registered is not None else None


# The routes whose files run on each bench target; the export recipe's own ``target`` for each.  The TorchScript-lite
# engine on x86 is x86's (qnnpack is a phone engine, 0.46x eager on this host class).  The .pt2 (AOTInductor, oneDNN
# int8, static: the faster of its two schemes on ViT-B-32) is compiled for the exporting CPU: tried only where this
# machine can build it (``SearchConfig.routes``); on a cluster whose timing node lacks the exporting worker's ISA its
# timing row is an error and the route ranks last.
TARGET_ROUTES: dict[str, tuple[Route, ...]] = {
    "cpu": (Route("pte", "int8", "dynamic", "xnnpack"), Route("onnx", "int8", "dynamic", "onnxruntime"),
            Route("ptl", "int8", "dynamic", "x86"), Route("pt2", "int8", "static", "x86")),
    "mobile": (Route("pte", "int8", "dynamic", "xnnpack"), Route("ptl", "int8", "dynamic", "qnnpack")),
    "arm64": (Route("pte", "int8", "dynamic", "xnnpack"), Route("onnx", "int8", "dynamic", "onnxruntime"),
              Route("ptl", "int8", "dynamic", "qnnpack")),
    "cuda": (Route("onnx", "fp16", None, "onnxruntime"), Route("ptl", "fp16", None, "cuda")),
}
EXPORT_TARGET = {"cpu": "cpu", "mobile": "mobile", "arm64": "mobile", "cuda": "cuda"}


@dataclass(frozen=True)
class Level:
    """One knob at one strength: the CompressRecipe fields it sets."""

    knob: str
    value: float | int | str
    fields: tuple[tuple[str, object], ...]

    @property
    def label(self) -> str:
        return f"{self.knob}={self.value}"

    def recipe_fields(self) -> dict:
        return dict(self.fields)


KNOBS = ("token_merge", "token_keep", "mlp_keep", "heads_keep", "prune_blocks", "svd")


def knob_levels(knob: str, *, n_vision: int, patches: int, heads: int) -> list[Level]:
    """The strengths tried for ``knob`` on a vision tower of ``n_vision`` blocks, ``patches`` tokens, ``heads`` heads."""
    if knob == "token_merge":
        from edgeclip.benchmarks.sweep import merge_rs

        return [Level(knob, r, (("token_merge", r),)) for r in merge_rs(patches, n_vision)] if patches else []
    if knob == "token_keep":
        return [Level(knob, k, (("token_keep", k),)) for k in (0.9, 0.8, 0.7, 0.5)] if patches else []
    if knob == "mlp_keep":
        return [Level(knob, k, (("mlp_keep", k), ("prune_score", "activation"))) for k in (0.9, 0.75, 0.5)]
    if knob == "heads_keep":     # whole heads: one fewer, then half (rounded), when the tower has that many
        keeps = sorted({round((heads - 1) / heads, 3), round(max(1, heads // 2) / heads, 3)} - {1.0}, reverse=True) if heads > 1 else []
        return [Level(knob, k, (("heads_keep", k), ("prune_score", "activation"))) for k in keeps]
    if knob == "prune_blocks":
        return [Level(knob, n, (("prune_blocks", (f"vision:auto:{n}",)),)) for n in (1, 2) if n < n_vision]
    if knob == "svd":
        return [Level(knob, r, (("svd_ratio", r), ("svd_aware", True))) for r in (0.5, 0.35)]
    raise EdgeclipError(f"unknown search knob {knob!r}; use {', '.join(KNOBS)}")


def merge_fields(levels: tuple[Level, ...]) -> dict:
    """One CompressRecipe's fields from levels of different knobs (mlp_keep and heads_keep share prune_score)."""
    out: dict = {}
    for lv in levels:
        out.update(lv.recipe_fields())
    return out


@dataclass
class Estimate:
    """A level's or a combination's measured cost on the held-out calibration images."""

    drop: float            # top-1 points below the uncompressed model
    flops: float           # vision FLOPs after / before (1.0 = nothing saved)
    images: int
    disagree: float = 0.0  # fraction of images whose top-1 changed

    @property
    def noise(self) -> float:
        """One standard error of the paired top-1 difference, in points: a drop within it is not a measured loss."""
        return 100 * math.sqrt(max(self.disagree, 1.0 / max(self.images, 1)) / max(self.images, 1))


@dataclass
class Combination:
    """Levels of different knobs applied together, with what their single measurements predict: the cost adds,
    the ratio (latency on one route, or FLOPs) multiplies."""

    levels: tuple[Level, ...]
    predicted_drop: float
    predicted_ratio: float
    heal_steps: int = 0

    @property
    def label(self) -> str:
        s = " + ".join(lv.label for lv in self.levels)
        return s + (f" + heal{self.heal_steps}" if self.heal_steps else "")

    def fields(self) -> dict:
        return {**merge_fields(self.levels), **({"heal_steps": self.heal_steps} if self.heal_steps else {})}


def combinations(singles: dict[Level, Estimate], budget: float, width: int, ratio: dict[Level, float] | None = None,
                 max_knobs: int = 3) -> list[Combination]:
    """Up to ``width`` combinations (one level per knob, up to ``max_knobs`` knobs) predicted to cost at most
    ``budget`` points, smallest predicted ratio first.  ``ratio`` is each level's measured latency over the plain
    file's on one route; without it, its FLOP ratio.  A level that alone saves nothing (ratio >= 0.98) or alone costs
    more than the budget is not combined."""
    gain = {lv: (ratio.get(lv) if ratio is not None else e.flops) for lv, e in singles.items()}
    useful = [lv for lv, e in singles.items() if gain[lv] is not None and gain[lv] < 0.98 and e.drop <= budget]
    by_knob: dict[str, list[Level]] = {}
    for lv in useful:
        by_knob.setdefault(lv.knob, []).append(lv)
    out = []
    knobs = sorted(by_knob)
    for k in range(1, max_knobs + 1):
        for chosen in itertools.combinations(knobs, k):
            for levels in itertools.product(*(by_knob[c] for c in chosen)):
                drop = sum(max(0.0, singles[lv].drop) for lv in levels)
                if drop > budget:
                    continue
                out.append(Combination(tuple(levels), round(drop, 3), round(math.prod(gain[lv] for lv in levels), 4)))
    out.sort(key=lambda c: (c.predicted_ratio, c.predicted_drop, c.label))
    return out[:width]
