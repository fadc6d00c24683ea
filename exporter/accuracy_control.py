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

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from edgeclip.errors import FidelityError


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
                                f"images even with all {k} layers float (bar {max_drop} pt); raise --max-drop or use "
                                "--quant none")
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
