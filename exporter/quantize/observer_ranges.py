"""Static int8 activation ranges of the torch quantizers (.pte's PT2E, .ptl's torch.ao) chosen per tensor by
measured error (``--calib-method auto``).

The same rule as the ONNX route's (``range_choice``): each activation the quantizer observes gets the candidate
range with the lowest quantization error of its calibration values, each value weighted by the squared norm of the
weights its channel multiplies in the Linear / conv that consumes it.  Candidates: the observed min/max,
HistogramObserver's own L2 search (what the stock quantizers use; it scores the activation's own error, unweighted),
a two-sided percentile, and the best of ``range_choice``'s shrinkings.

Why the weighting matters here too: a pre-trained ViT's outlier channel (x50, compensated in the next Linear's
weights) dominates the activation's own error, so an unweighted search keeps its range and leaves the other channels
a handful of levels; the output-weighted error clips it.  Measured on a LayerNorm -> Linear -> GELU -> Linear block
with one x50 channel (tests/exporter/quantize/test_observer_ranges.py): output error relative to fp32 0.124 with the
stock observer, 0.114 with this choice unweighted, 0.0086 weighted.

How: calibration runs twice.  The first pass is the stock one (the observer is a HistogramObserver: min/max and its
histogram); the second collects, for each observer, a histogram over that fixed range in which each value counts
with its channel's weight (unweighted where no consumer has a constant weight).  The chosen range then replaces the
observer's own search when the quantizer's convert step asks for its quantization parameters.
"""

from __future__ import annotations

import functools
from collections import Counter
from typing import Callable

import numpy as np
import torch

from .range_choice import choose_range

BINS = 4096            # the weighted histogram's resolution over the observed range (the stock observer uses 2048)
PERCENTILE = 99.999    # two-sided, onnxruntime's default percentile


class _ChosenRange:
    """Mixin for a HistogramObserver class: ``weighted`` arms the second pass, ``chosen`` overrides its range."""

    def _init_chosen(self) -> None:
        self.chosen: tuple[float, float] | None = None
        self.channel_weights: tuple[int, torch.Tensor] | None = None   # (channel axis, weight per channel)
        self.weighted: torch.Tensor | None = None                       # the armed pass's histogram

    def forward(self, x_orig: torch.Tensor) -> torch.Tensor:
        if self.weighted is None:
            return super().forward(x_orig)
        x = x_orig.detach().float()
        lo, hi = float(self.min_val), float(self.max_val)
        if x.numel() and hi > lo:
            w = None
            if self.channel_weights is not None:
                axis, cw = self.channel_weights
                if x.dim() and x.shape[axis] == len(cw):
                    shape = [1] * x.dim()
                    shape[axis] = len(cw)
                    w = cw.reshape(shape).expand_as(x).reshape(-1)
            flat = x.reshape(-1).clamp(lo, hi)
            self.weighted += torch.histogram(flat, BINS, range=(lo, hi), weight=w).hist
        return x_orig

    def calculate_qparams(self):
        if self.chosen is None:
            return super().calculate_qparams()
        lo, hi = self.chosen
        return self._calculate_qparams(torch.tensor(lo), torch.tensor(hi))


@functools.cache
def chosen_range_observer(base: type) -> type:
    """A subclass of the HistogramObserver class ``base`` (torchao's for PT2E, torch.ao's for eager mode)."""

    def __init__(self, *args, **kwargs):
        base.__init__(self, *args, **kwargs)
        self._init_chosen()

    return type(f"ChosenRange{base.__name__}", (_ChosenRange, base), {"__init__": __init__})


def chosen_like(ctor, base: type):
    """The observer constructor ``ctor`` (``base.with_args(...)``, as the quantizers' configs hold it) with ``base``
    swapped for its chosen-range subclass and the same arguments (eps, reduce_range, ...)."""
    return chosen_range_observer(base).with_args(**getattr(ctor, "p", ctor).keywords)


def linear_input_weights(weight: torch.Tensor) -> tuple[int, torch.Tensor]:
    """(channel axis, squared norm per input channel) of a Linear's [out, in] weight."""
    return -1, (weight.detach().double() ** 2).sum(0).float()


def fx_consumer_weights(gm: torch.fx.GraphModule, node: torch.fx.Node) -> tuple[int, torch.Tensor] | None:
    """For an observed activation of a PT2E graph: (channel axis, per-channel squared weight norm summed over its
    consumers) when it feeds Linears / convs with constant weights; None when it feeds none, or their layouts differ."""
    axis, total = None, None
    for user in node.users:
        name = getattr(user.target, "__name__", str(user.target)).split(".")[0]
        if user.op != "call_function" or name not in ("linear", "conv2d", "conv1d") or user.args[0] is not node:
            continue
        w = user.args[1]
        while isinstance(w, torch.fx.Node) and w.op == "call_module":      # the weight's own observer
            w = w.args[0]
        if not (isinstance(w, torch.fx.Node) and w.op == "get_attr"):
            return None
        weight = functools.reduce(getattr, w.target.split("."), gm)
        if name == "linear":
            a, norms = linear_input_weights(weight)
        else:
            if (user.args[6] if len(user.args) > 6 else 1) != 1:
                return None     # grouped conv: a channel's weights are not one column of the kernel
            a, norms = 1, (weight.detach().double() ** 2).sum(dim=tuple(i for i in range(weight.dim()) if i != 1)).float()
        if total is not None and (a != axis or len(norms) != len(total)):
            return None
        axis, total = a, norms if total is None else total + norms
    return None if total is None else (axis, total)


def choose_ranges(observers: list[tuple[object, tuple[int, torch.Tensor] | None]],
                  run_calibration: Callable[[], object]) -> dict:
    """After the stock calibration pass: arm each ``(observer, channel weights)``, run ``run_calibration()`` again
    to collect weighted histograms, and set each observer's range.  Returns facts for the manifest."""
    observers = [(o, cw) for o, cw in observers if float(o.max_val) > float(o.min_val)]
    for obs, cw in observers:
        obs.channel_weights = cw
        obs.weighted = torch.zeros(BINS, dtype=torch.float64)
    try:
        run_calibration()
        hists = [obs.weighted.numpy() for obs, _ in observers]
    finally:
        for obs, _ in observers:
            obs.weighted = None
    methods: Counter = Counter()
    for (obs, _), hist in zip(observers, hists):
        lo, hi = float(obs.min_val), float(obs.max_val)
        edges = np.linspace(lo, hi, BINS + 1)
        search = tuple(float(v) for v in obs._non_linear_param_search())
        cdf = np.cumsum(hist) / max(float(hist.sum()), 1e-30)
        tail = (100 - PERCENTILE) / 200
        pct = (float(edges[np.searchsorted(cdf, tail)]), float(edges[min(int(np.searchsorted(cdf, 1 - tail)) + 1, BINS)]))
        levels = int(obs.quant_max) - int(obs.quant_min) + 1
        choice = choose_range(hist, edges, (lo, hi), {"histogram": search, "percentile": pct}, levels=levels)
        obs.chosen = (choice.lowest, choice.highest)
        methods[choice.method] += 1
    return {"range_choice": dict(sorted(methods.items())), "tensors": len(observers),
            "output_weighted": sum(cw is not None for _, cw in observers)}


def with_chosen_ranges(config):
    """A PT2E quantization config (XNNPACK's or x86 Inductor's) whose activation observers -- HistogramObservers --
    are swapped for their chosen-range subclass, same arguments; the weight observers stay."""
    import dataclasses

    from torchao.quantization.pt2e import HistogramObserver

    def chosen(spec):
        if spec is None:
            return None
        return dataclasses.replace(spec, observer_or_fake_quant_ctr=chosen_like(spec.observer_or_fake_quant_ctr,
                                                                                HistogramObserver))

    return dataclasses.replace(config, input_activation=chosen(config.input_activation),
                               output_activation=chosen(config.output_activation))


def choose_graph_ranges(prepared: torch.fx.GraphModule, run_calibration: Callable[[], object]) -> dict:
    """``choose_ranges`` for every chosen-range observer of a prepared PT2E graph, each weighted by the Linears /
    convs its activation feeds."""
    observed = [(getattr(prepared, n.target), n) for n in prepared.graph.nodes if n.op == "call_module"]
    return choose_ranges([(o, fx_consumer_weights(prepared, n)) for o, n in observed if isinstance(o, _ChosenRange)],
                         run_calibration)
