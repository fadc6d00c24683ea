"""Unstructured magnitude pruning: zero the smallest weights of the selected towers' Linear layers, globally
or per layer.

Offered because users ask for it and because it shows how much redundancy a model has, but it is
reported for what it is: the tensors keep their shape, and the dense kernels edgeclip exports for
(onnxruntime MLAS, XNNPACK, qnnpack / fbgemm) multiply the zeros like any other value, so files are
the same size and no faster.  Only a sparse runtime or a compressing file system would gain.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from edgeclip.errors import EdgeclipError

from .calibration import Calibration
from .config import SparsityConfig
from .report import PassReport, n_params
from .structure import towers

NO_DENSE_GAIN = ("unstructured zeros leave every tensor its shape: dense backends (onnxruntime, XNNPACK, qnnpack, "
                 "fbgemm) store and multiply them, so file size and latency do not change")


def apply(model: nn.Module, cfg: SparsityConfig, calib: Calibration | None = None) -> tuple[nn.Module, PassReport]:
    model = copy.deepcopy(model)
    ts = towers(model)
    for t in cfg.towers:        # as structured pruning does: a tower that is not there is the user's mistake
        if t not in ts:
            raise EdgeclipError(f"--prune-tower {t}: this model has no {t} tower (has: {', '.join(ts)})")
    layers = [(f"{t}.{name}", m) for t in cfg.towers for name, m in ts[t].blocks.named_modules() if isinstance(m, nn.Linear)]
    before = n_params(model)
    # params_after = before, on purpose: the zeros are still stored
    report = PassReport("sparsity", before, before, notes=[NO_DENSE_GAIN],
                        extra={"amount": cfg.amount, "scope": cfg.scope, "dense_gain": "none"})
    if cfg.scope == "global":
        mags = torch.cat([m.weight.detach().abs().flatten() for _, m in layers])
        k = int(cfg.amount * mags.numel())
        threshold = mags.kthvalue(k).values if k else torch.tensor(-1.0)
    for name, m in layers:
        w = m.weight.detach()
        if cfg.scope == "layer":
            k = int(cfg.amount * w.numel())
            threshold = w.abs().flatten().kthvalue(k).values if k else torch.tensor(-1.0)
        mask = w.abs() > threshold
        with torch.no_grad():
            m.weight.mul_(mask)
        report.layers.append({"layer": name, "zeros": int((~mask).sum()), "weights": w.numel()})
    zeros = sum(x["zeros"] for x in report.layers)
    report.extra["weights_zeroed"] = zeros
    report.extra["fraction_zeroed"] = round(zeros / sum(x["weights"] for x in report.layers), 4)   # towers hold Linears
    return model, report
