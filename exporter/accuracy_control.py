"""Accuracy-controlled mixed precision: quantize fully, then keep the layers int8 hurts most in float until the
top-1 loss on held-out calibration images is within ``max_drop`` (NNCF's accuracy-control idea).

The order comes from one measurement (``quantize.mixed.FakeInt8.sensitivity``: each layer's error alone, on the
calibration part).  How many layers stay float is first predicted on the fake-quantized eager model (cheap, a
bisection), then confirmed on the real artifact, built by its own route and run by its own runtime on the
held-out part -- never the evaluation split; if the real file misses, the count doubles until it passes.
Typically one to three real builds.

The loss counted is the share of held-out images the fp32 model classifies right and the artifact gets wrong:
gains are not netted against losses, so 500 images' noise does not let a worse file through.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Callable

import numpy as np

from edgeclip.errors import EdgeclipError, FidelityError

if TYPE_CHECKING:
    import torch

    from .export import ExportSubject
    from .recipe import ExportRecipe

PREDICT_IMAGES = 200   # held-out images the fake-quant prediction runs on (the real files use all of them)


@dataclass
class Attempt:
    float_layers: int
    loss: float          # top-1 points lost vs fp32 on the held-out images (gains not netted)
    facts: dict = field(repr=False, default_factory=dict)


def top1_lost(reference: np.ndarray, outputs: np.ndarray, labels: np.ndarray) -> float:
    """Points of images ``reference`` classifies right that ``outputs`` gets wrong."""
    right = reference.argmax(-1) == labels
    return 100.0 * float((right & (outputs.argmax(-1) != labels)).mean())


def smallest_passing(n: int, passes: Callable[[int], bool]) -> int:
    """The smallest k in [1, n] with ``passes(k)``, by bisection (assumes more float layers never hurt); n if none."""
    lo, hi = 0, n
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if passes(mid):
            hi = mid
        else:
            lo = mid
    return hi


def _still_int8(facts: dict) -> str:
    """What a file built with every candidate float still runs in int8 (ops no candidate covers, e.g. a static
    .pte's patch-embedding conv, position-embedding add and class-token cat), from its quantization facts."""
    ops = {**facts.get("int8_weight_ops", {}), **facts.get("int8_activation_ops", {})}
    ops = {op: n for op, n in ops.items() if n}
    return f" (still int8: {', '.join(f'{n} {op}' for op, n in sorted(ops.items()))})" if ops else ""


def control(rank: Callable[[], list[str]], max_drop: float, build: Callable[[tuple[str, ...]], tuple[dict, float]],
            name: str, predict: Callable[[list[str]], int] | None = None
            ) -> tuple[tuple[str, ...], Attempt, list[Attempt]]:
    """The fewest of the layers ``rank()`` returns (worst first; only measured when full int8 misses) kept float so
    that the real file ``build(layers) -> (facts, loss)`` is within ``max_drop``; ``predict(ranked)`` proposes the
    first count to try.  The file of the returned attempt is the last one built.  Raises FidelityError if even
    every layer in float misses."""
    tried: list[Attempt] = []
    ranked: list[str] = []

    def attempt(k: int) -> Attempt:
        facts, loss = build(tuple(ranked[:k]))
        tried.append(Attempt(k, loss, facts))
        return tried[-1]

    if attempt(0).loss <= max_drop:
        return (), tried[-1], tried
    ranked = rank()
    if not ranked:
        if tried[-1].loss > max_drop:
            raise FidelityError(f"{name} not written: int8 loses {tried[-1].loss:.2f} pt top-1 on held-out calibration "
                                f"images and no layer can stay float (bar {max_drop} pt); use --quant none")
        return (), tried[-1], tried
    n = len(ranked)
    lo, k = 0, max(1, min(predict(ranked) if predict else 1, n))
    while attempt(k).loss > max_drop:      # the prediction was optimistic: grow by half until a file passes
        if k == n:
            raise FidelityError(f"{name} not written: int8 loses {tried[-1].loss:.2f} pt top-1 on held-out calibration "
                                f"images even with all {k} layers float{_still_int8(tried[-1].facts)} (bar {max_drop} pt); "
                                "raise --max-drop or use --quant none")
        lo, k = k, min(n, k + max(1, k // 2))
    best = tried[-1]
    while k - lo > 1:                      # then the fewest in (lo, k] on real files
        mid = (lo + k) // 2
        if attempt(mid).loss <= max_drop:
            k, best = mid, tried[-1]
        else:
            lo = mid
    if tried[-1] is not best:              # leave the passing file in place
        best = attempt(k)
    return tuple(ranked[:k]), best, tried


def accuracy_controlled(produced: "ExportSubject", fp32: "torch.nn.Module", recipe: "ExportRecipe", fmt: str, name: str,
                        produce: Callable[..., dict], session_of: Callable[[dict], object]) -> tuple[dict, "ExportRecipe"]:
    """Build the int8 file (``produce(recipe=...) -> facts``, into the staging folder) with the fewest sensitive
    layers float that keeps top-1 on ``produced``'s held-out calibration images within ``recipe.max_drop`` of
    ``fp32``; ``session_of(facts)`` loads the staged file with its runtime.  Returns the file's facts (with an
    ``accuracy_control`` record) and the recipe with those layers in ``float_layers``, so the manifest's recipe
    rebuilds this file."""
    from edgeclip.runtimes.base import run_batched
    from edgeclip.runtimes.torch_eager import TorchEagerSession

    from .quantize.mixed import FakeInt8, residual_adds_int8, simulated_bits

    if produced.holdout_inputs is None or produced.calib_inputs is None:
        raise EdgeclipError("--max-drop needs labelled calibration images (a train split or --calib-data) to measure on")
    held, labels = produced.holdout_inputs, produced.holdout_labels
    ref = run_batched(TorchEagerSession(fp32), held)
    t0 = time.perf_counter()
    fake: FakeInt8 | None = None
    sens: list = []
    predicted: dict[int, float] = {}
    last: dict = {}
    already: set[str] = set()

    def rank() -> list[str]:
        nonlocal fake
        fake = FakeInt8(produced.module, produced.calib_inputs, recipe.scheme, bits=simulated_bits(fmt, recipe.backend_for(fmt)),
                        residual_adds=residual_adds_int8(fmt, recipe.scheme))
        sens.extend(fake.sensitivity())
        # units the route keeps float on its own (a static .pte's residual adds where the stream has outliers)
        already.update(last["facts"].get("residual_adds_float", {}).get("float", ()))
        return [s.layer for s in sens if s.layer not in recipe.float_layers and s.layer not in already]

    def predict(ranked: list[str]) -> int:
        def passes(k: int) -> bool:
            n = PREDICT_IMAGES
            predicted[k] = top1_lost(ref[:n], fake.outputs(ranked[k:], held[:n]).numpy(), labels[:n])
            return predicted[k] <= recipe.max_drop
        return smallest_passing(len(ranked), passes)

    def build(layers: tuple[str, ...]) -> tuple[dict, float]:
        facts = produce(recipe=replace(recipe, float_layers=(*recipe.float_layers, *layers)))
        last["facts"], last["outputs"] = facts, run_batched(session_of(facts), held)
        return facts, top1_lost(ref, last["outputs"], labels)

    layers, best, tried = control(rank, recipe.max_drop, build, name, predict)
    by_layer = {s.layer: s for s in sens}

    def top1(y: np.ndarray) -> float:
        return round(100.0 * float((y.argmax(-1) == labels).mean()), 2)

    record = {
        "max_drop_pt": recipe.max_drop, "measured_on": produced.holdout_desc,
        "loss_counted": "held-out images fp32 gets right and int8 gets wrong (gains not netted)",
        "fp32_top1": top1(ref), "int8_top1": top1(last["outputs"]), "lost_pt": round(best.loss, 2),
        "float_layers": [{"layer": n, "rel_error_alone": round(by_layer[n].rel_error, 6),
                          "why": "most sensitive int8 layers first, until the loss met the bar"} for n in layers],
        "quantized_layers": len(sens) - len(layers) - len(recipe.float_layers) - len(already) if sens else "all (full int8 met the bar)",
        "predicted_lost_pt": {str(k): round(v, 2) for k, v in sorted(predicted.items())},
        "built": [{"float_layers": a.float_layers, "lost_pt": round(a.loss, 2)} for a in tried],
        "sensitivity": [{"layer": s.layer, "rel_error_alone": round(s.rel_error, 6),
                         "input_outlier_ratio": round(s.act_outlier_ratio, 1)} for s in sens[:10]],
        "seconds": round(time.perf_counter() - t0, 2)}
    return {**best.facts, "accuracy_control": record}, replace(recipe, float_layers=(*recipe.float_layers, *layers))
