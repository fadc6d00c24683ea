"""The compression-cost gate: a compressed export must stay close to the *uncompressed* model.

Every artifact is verified against the compressed eager model (exporter/fidelity.py), which proves the file
is that model; it says nothing about what the compression itself cost.  This gate measures that cost on the
verification images and refuses the export when it is over the bar, so a pass that wrecks the model (removing
the first text block costs ~82 pt) cannot ship with exit 0.  A user who wants the loss says so
(``--accept-drop PT``) and the manifest records that they did.

The measure, best available first: the top-1 drop on labelled images; without labels, the share of images
whose answer changed (the worst case: every changed answer was a right one, so the drop can be no larger);
for embedding outputs (encoders), mean cosine against the uncompressed model's embeddings.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

DEFAULT_MAX_DROP_PT = 1.0       # when the recipe names no budget: what a user would call "no visible loss"
ENCODER_MIN_COSINE = 0.95       # encoders have no classes to score; below this the embeddings are another model's

# which knob to relax, per pass name (the names exporter/compress.plan gives)
KNOBS = {"prune-blocks": "--prune-blocks (fewer blocks, or TOWER:auto:N)", "structured": "--mlp-keep / --heads-keep (keep more)",
         "svd": "--svd / --svd-energy (keep more) or --svd-aware", "sparsity": "--sparsity (lower)",
         "tokens": "--token-keep (keep more)", "heal": "--heal-steps / --heal-lr"}


@dataclass(frozen=True)
class CostBar:
    max_drop_pt: float
    source: str                  # where the bar came from: --accept-drop, --max-drop or the default

    @classmethod
    def for_recipe(cls, accept_drop: float | None, max_drop: float | None) -> "CostBar":
        if accept_drop is not None:
            return cls(accept_drop, "--accept-drop")
        if max_drop is not None:
            return cls(max_drop, "--max-drop")
        return cls(DEFAULT_MAX_DROP_PT, "default")


@dataclass(frozen=True)
class Cost:
    """One number for what compression cost, and how it was measured."""

    value: float                 # top-1 points (drop or worst-case drop), or mean cosine for embeddings
    measure: str                 # "top1_drop_pt" | "changed_answers_pt" | "mean_cosine"

    @property
    def is_cosine(self) -> bool:
        return self.measure == "mean_cosine"

    def text(self) -> str:
        if self.measure == "top1_drop_pt":
            return f"{self.value:.2f} pt top-1"
        if self.measure == "changed_answers_pt":
            return f"{self.value:.2f} % changed answers (no labels: the worst-case top-1 drop)"
        return f"mean cosine {self.value:.4f}"


def cost_of(vs_uncompressed: dict) -> Cost:
    """The gate's measure from a ``compression_cost`` record (preparation.compression_cost)."""
    v = vs_uncompressed
    if v.get("top1_compressed") is not None and v.get("top1_uncompressed") is not None:
        return Cost(round(v["top1_uncompressed"] - v["top1_compressed"], 4), "top1_drop_pt")
    if v.get("top1_agreement") is not None:
        return Cost(round(100 * (1 - v["top1_agreement"]), 4), "changed_answers_pt")
    return Cost(v["mean_cosine"], "mean_cosine")


def no_cost(like: Cost) -> Cost:
    """The uncompressed model's own cost in ``like``'s measure (nothing dropped, cosine 1): where the
    pass-by-pass steps of ``worst_pass`` start."""
    return Cost(1.0 if like.is_cosine else 0.0, like.measure)


def over(cost: Cost, bar: CostBar) -> bool:
    if cost.is_cosine:
        return bar.source != "--accept-drop" and cost.value < ENCODER_MIN_COSINE
    return cost.value > bar.max_drop_pt + 1e-9


def decide(vs_uncompressed: dict, bar: CostBar, random_weights: bool) -> dict:
    """The gate's record for the manifest: what was measured, against which bar, and whether it passed."""
    cost = cost_of(vs_uncompressed)
    rec = {"measure": cost.measure, "value": cost.value, **{f"bar_{k}": v for k, v in asdict(bar).items()}}
    if cost.is_cosine:
        rec["bar_min_cosine"] = ENCODER_MIN_COSINE
    if random_weights:
        return {**rec, "passed": True, "waived": "random weights: there is no accuracy to lose, so the cost is recorded, "
                                                 "not enforced"}
    failed = over(cost, bar)
    rec["passed"] = not failed
    if bar.source == "--accept-drop":
        rec["accepted_by_user"] = True
    return rec


def worst_pass(stage_costs: list[tuple[str, Cost]], start: Cost) -> tuple[str, float] | None:
    """The pass whose own step cost the most: stage costs are cumulative, so each pass's share is the change
    it made (for cosine, the cosine it lost)."""
    if not stage_costs:
        return None
    prev, best = start, None
    for name, c in stage_costs:
        step = (prev.value - c.value) if c.is_cosine else (c.value - prev.value)
        if best is None or step > best[1]:
            best = (name, step)
        prev = c
    return best


def knob(pass_name: str) -> str:
    return KNOBS.get(pass_name.split(":")[0], pass_name)


def refusal(cost: Cost, bar: CostBar, inputs: str, culprit: tuple[str, float] | None, v: dict) -> str:
    """The one line a refused compressed export prints."""
    what = cost.text()
    if cost.measure == "top1_drop_pt":
        what += f" ({v['top1_uncompressed']:.2f}% -> {v['top1_compressed']:.2f}%)"
    limit = (f"the bar is mean cosine >= {ENCODER_MIN_COSINE}" if cost.is_cosine
             else f"the bar is {bar.max_drop_pt:g} pt ({'set by ' + bar.source if bar.source != 'default' else 'default'})")
    line = f"compression costs {what} against the uncompressed model on {inputs}; {limit}"
    if culprit is not None:
        name, step = culprit
        share = f"{step:.4f} cosine" if cost.is_cosine else f"{step:+.2f} pt"
        line += f"; the pass that cost most: {name} ({share}); relax {knob(name)}"
    accept = "--accept-drop 100" if cost.is_cosine else f"--accept-drop {math.ceil(cost.value * 10) / 10:g}"
    return line + f", or pass {accept} to take the loss knowingly; nothing was written"
