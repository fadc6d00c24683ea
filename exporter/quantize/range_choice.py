"""Per-tensor activation ranges chosen by measured quantization error (``--calib-method auto``).

Why: one calibration rule for every tensor is wrong somewhere.  MinMax keeps a rare outlier and spends the
256 levels on it (pre-trained ViTs carry such channels); percentile and entropy clip, which is right for a
heavy-tailed tensor and wrong for a tensor whose extremes are the signal.  Here each calibrated tensor gets the
candidate range with the lowest mean squared quantization error *on its own calibration activations*:

* ``minmax``: the observed min and max;
* ``percentile``: two-sided, the configured percentile (onnxruntime's rule, on the same histogram);
* ``entropy``: onnxruntime's KL-divergence threshold (TensorRT's method), on the same histogram;
* ``mse``: the best of 120 shrinkings ``(f * min, f * max)``, f from 0.001 to 1 on a log grid (f = 1 is minmax).

The error of a range is computed from a histogram of the tensor's calibration values (merged over the batches),
with the values of each bin spread evenly over the bin, under the quantization onnxruntime applies to activations:
the range widened to include 0 and mapped onto 256 levels (uint8 asymmetric), or centred on 0.  Where the tensor
feeds constant weights (a Linear's input, a conv's input), each value counts with its channel's squared weight
norm (``consumer_weights``), so the error is the one that reaches those layers' outputs: measured on the x50
outlier fixture, scoring the activation's own error kept the outlier channel's range and reached 97.34 %
agreement; the output-weighted score clips it and reached 99.35 % (benchmarks/README.md).  What a layer's error
does further downstream is the sensitivity ranking's and ``--max-drop``'s job.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

CANDIDATES = ("minmax", "percentile", "entropy", "mse")
SUBSAMPLES = 8            # points per histogram bin when integrating the error (values spread evenly in the bin)
SHRINK_STEPS = 120        # f = 0.001 .. 1 (log-spaced) for the mse candidate
FINE_BINS = 8             # the auto histogram has this many times the configured bins: the error of a clipped range
                          # needs bins finer than its quantization step


@dataclass(frozen=True)
class RangeChoice:
    """The chosen range of one tensor, the method it came from and every candidate's error (mean squared)."""

    lowest: float
    highest: float
    method: str
    errors: dict[str, float]


def _points(hist: np.ndarray, edges: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sample points and weights: each bin's count spread over SUBSAMPLES evenly spaced points inside it."""
    edges = edges.astype(np.float64)
    frac = (np.arange(SUBSAMPLES) + 0.5) / SUBSAMPLES
    x = edges[:-1, None] + (edges[1:] - edges[:-1])[:, None] * frac[None, :]
    w = np.repeat(hist.astype(np.float64)[:, None] / SUBSAMPLES, SUBSAMPLES, axis=1)
    keep = w.ravel() > 0
    return x.ravel()[keep], w.ravel()[keep]


def quantization_mse(x: np.ndarray, w: np.ndarray, lowest: float, highest: float, symmetric: bool = False,
                     levels: int = 256) -> float:
    """Weighted mean squared error of quantizing ``x`` to ``levels`` levels (8 bits; 128 for fbgemm's reduce_range)
    over [lowest, highest] as onnxruntime does for activations (range widened to include 0; symmetric: centred on 0),
    values outside clipped to the ends."""
    lo, hi = min(float(lowest), 0.0), max(float(highest), 0.0)
    if symmetric:
        hi = max(abs(lo), abs(hi))
        lo = -hi
    if hi - lo <= 0:
        return float(np.average(x ** 2, weights=w))
    top = levels - 1
    scale = (hi - lo) / top
    q = np.clip(np.round((x - lo) / scale), 0, top) * scale + lo
    return float(np.average((x - q) ** 2, weights=w))


def choose_range(hist: np.ndarray, edges: np.ndarray, observed: tuple[float, float], clipped: dict[str, tuple[float, float]],
                 symmetric: bool = False, levels: int = 256) -> RangeChoice:
    """The candidate range with the lowest quantization error of this histogram.

    ``observed``: the tensor's min and max; ``clipped``: other methods' ranges (e.g. percentile, entropy)."""
    x, w = _points(hist, edges)
    lo, hi = float(observed[0]), float(observed[1])
    ranges = {"minmax": (lo, hi), **{k: (float(a), float(b)) for k, (a, b) in clipped.items()}}
    if w.sum() == 0:
        return RangeChoice(lo, hi, "minmax", {"minmax": 0.0})
    errors = {k: quantization_mse(x, w, a, b, symmetric, levels) for k, (a, b) in ranges.items()}
    shrink = [(f * lo, f * hi) for f in np.logspace(-3, 0, SHRINK_STEPS)]
    shrink_err = [quantization_mse(x, w, a, b, symmetric, levels) for a, b in shrink]
    best = int(np.argmin(shrink_err))
    ranges["mse"], errors["mse"] = shrink[best], shrink_err[best]
    method = min(errors, key=lambda k: (errors[k], CANDIDATES.index(k) if k in CANDIDATES else len(CANDIDATES)))
    return RangeChoice(ranges[method][0], ranges[method][1], method, errors)


def coarser(histogram: tuple, factor: int) -> tuple:
    """onnxruntime's value histogram ``(hist, edges, min, max, threshold)``, symmetric about 0, with ``factor``
    adjacent bins merged (padded with empty bins on both sides first, so the zero bin stays in the middle): the
    entropy search is quadratic in the bin count, and runs on the configured resolution."""
    hist, edges, lowest, highest, threshold = histogram
    width = float(edges[1] - edges[0])
    extra = (-len(hist)) % (2 * factor)
    pad = extra // 2
    hist = np.concatenate([np.zeros(pad, hist.dtype), hist, np.zeros(extra - pad, hist.dtype)])
    edges = np.concatenate([edges[0] - width * np.arange(pad, 0, -1), edges, edges[-1] + width * np.arange(1, extra - pad + 1)])
    merged = hist.reshape(-1, factor).sum(axis=1)
    return merged, edges[::factor].astype(np.float32), lowest, highest, np.float32(max(abs(edges[0]), abs(edges[-1])))


def consumer_weights(model) -> dict[str, tuple[int, np.ndarray]]:
    """For each tensor that is the activation input of a MatMul / Gemm / Conv with a constant weight: its channel
    axis and, per input channel, the squared norm of the weights that channel multiplies (summed over consumers).

    Why: an activation's rounding error reaches the output through those weights, so the output error of a
    range is ``sum_c ||W_c||^2 * E[dx_c^2]``.  A channel scaled up x50 with its weights divided by 50 (what
    SmoothQuant undoes, and what pre-trained ViTs carry) dominates the activation's own error but not the
    output's; without this weighting the choice keeps that channel's range and starves the others."""
    from onnx import numpy_helper

    inits = {i.name: i for i in model.graph.initializer}
    out: dict[str, tuple[int, np.ndarray]] = {}
    for n in model.graph.node:
        if len(n.input) < 2 or n.input[1] not in inits:
            continue
        attrs = {a.name: a for a in n.attribute}
        w = numpy_helper.to_array(inits[n.input[1]]).astype(np.float64)
        if n.op_type == "MatMul" and w.ndim >= 2:
            axis, norms = -1, (w.reshape(-1, w.shape[-2], w.shape[-1]) ** 2).sum(axis=(0, 2))
        elif n.op_type == "Gemm" and w.ndim == 2 and not (attrs.get("transA") and attrs["transA"].i):
            w = w.T if attrs.get("transB") and attrs["transB"].i else w
            axis, norms = -1, (w ** 2).sum(axis=1)
        elif n.op_type == "Conv" and w.ndim >= 3 and not (attrs.get("group") and attrs["group"].i != 1):
            axis, norms = 1, (w ** 2).sum(axis=tuple(i for i in range(w.ndim) if i != 1))
        else:
            continue
        prev = out.get(n.input[0])
        if prev is not None and (prev[0] != axis or len(prev[1]) != len(norms)):
            out[n.input[0]] = (axis, np.array([]))     # consumers disagree on the layout: no weighting
            continue
        out[n.input[0]] = (axis, norms if prev is None else prev[1] + norms)
    return {k: v for k, v in out.items() if len(v[1])}


class WeightedHistograms:
    """A collector for onnxruntime's calibrator (it calls ``collect``): value histograms over fixed ranges where
    each value counts with the squared weight norm of its channel (``consumer_weights``)."""

    def __init__(self, weights: dict[str, tuple[int, np.ndarray]], limits: dict[str, float], bins: int):
        self.weights, self.limits, self.bins = weights, limits, bins
        self.hist: dict[str, np.ndarray] = {}
        self.skipped: set[str] = set()

    def collect(self, name_to_arr: dict) -> None:
        for name, arrays in name_to_arr.items():
            if name not in self.weights or name not in self.limits or name in self.skipped:
                continue
            axis, w = self.weights[name]
            t = self.limits[name]
            for a in arrays:
                a = np.asarray(a, dtype=np.float32)
                if a.ndim == 0 or a.shape[axis] != len(w) or t <= 0:
                    self.skipped.add(name)
                    self.hist.pop(name, None)
                    break
                shape = [1] * a.ndim
                shape[axis] = len(w)
                ww = np.broadcast_to(w.reshape(shape), a.shape)
                h, _ = np.histogram(a, self.bins, range=(-t, t), weights=ww)
                self.hist[name] = self.hist.get(name, 0) + h

    def edges(self, name: str) -> np.ndarray:
        t = self.limits[name]
        return np.linspace(-t, t, self.bins + 1)
