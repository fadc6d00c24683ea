"""Structured pruning with physical removal: MLP hidden neurons (rows of fc1, columns of fc2) and whole
attention heads (their q/k/v rows of the input projection, their columns of the output projection).

The tensors really shrink, so every format and backend gets the saving -- unlike masks.  Scores:
``magnitude`` (weight norms, no data) or ``activation`` (how much each neuron / head actually contributes
to the block's output on calibration inputs: mean |activation| x outgoing weight norm).
"""

from __future__ import annotations

import copy
import math

import torch
from torch import nn

from edgeclip.errors import EdgeclipError

from . import select
from .calibration import Calibration, collect_inputs
from .config import StructuredConfig
from .report import PassReport, n_params
from .structure import Tower, convert_attention, heads_of, refusal, set_heads, slot, towers


def keep_count(total: int, keep: float, multiple: int = 8) -> int:
    """How many to keep: rounded up to a multiple of 8 when that is still a saving (GEMM kernels tile by 8/16)."""
    k = max(1, math.ceil(keep * total))
    if total >= 8 * multiple and k % multiple:
        k = min(total, k + multiple - k % multiple)
    return k


def _linear(layer: nn.Module, what: str) -> nn.Linear:
    if not isinstance(layer, nn.Linear):
        raise EdgeclipError(f"{what} is a {type(layer).__name__}; structured pruning runs before SVD, on dense Linears")
    return layer


def _slice_linear(lin: nn.Linear, rows: torch.Tensor | None = None, cols: torch.Tensor | None = None) -> nn.Linear:
    w = lin.weight.detach()
    b = lin.bias.detach() if lin.bias is not None else None
    if rows is not None:
        w, b = w[rows], (b[rows] if b is not None else None)
    if cols is not None:
        w = w[:, cols]
    out = nn.Linear(w.shape[1], w.shape[0], bias=b is not None)
    with torch.no_grad():
        out.weight.copy_(w)
        if b is not None:
            out.bias.copy_(b)
    return out


def _mlp(model, t: Tower, tname, blocks, cfg, calib, report) -> None:
    fc1s = {f"{tname}.{i}.fc1": _linear(getattr(*slot(b, t, "fc1")), f"{tname}.{i}.fc1") for i, b in enumerate(blocks)}
    fc2s = {f"{tname}.{i}.fc2": _linear(getattr(*slot(b, t, "fc2")), f"{tname}.{i}.fc2") for i, b in enumerate(blocks)}
    act = {}
    if cfg.score == "activation":
        act = collect_inputs(model, tname, calib.inputs_for(tname), fc2s, lambda x: x.abs().sum(0).double())
    for i, block in enumerate(blocks):
        fc1, fc2 = fc1s[f"{tname}.{i}.fc1"], fc2s[f"{tname}.{i}.fc2"]
        hidden = fc1.out_features
        out_norm = fc2.weight.detach().norm(dim=0).double()
        score = act[f"{tname}.{i}.fc2"] * out_norm if act else fc1.weight.detach().norm(dim=1).double() * out_norm
        k = keep_count(hidden, cfg.mlp_keep)
        if k >= hidden:
            report.skipped.append({"layer": f"{tname}.{i}.mlp", "why": f"keeping {k} of {hidden} neurons removes nothing"})
            continue
        keep = select.keep_top(score, k).sort().values
        p1, a1 = slot(block, t, "fc1")
        p2, a2 = slot(block, t, "fc2")
        setattr(p1, a1, _slice_linear(fc1, rows=keep))
        setattr(p2, a2, _slice_linear(fc2, cols=keep))
        report.layers.append({"layer": f"{tname}.{i}.mlp", "neurons_before": hidden, "neurons_after": k})


def _heads(model, t: Tower, tname, blocks, cfg, calib, report) -> None:
    outs = {f"{tname}.{i}": _linear(getattr(*slot(b, t, "attn_out")), f"{tname}.{i}.attn_out") for i, b in enumerate(blocks)}
    act = {}
    if cfg.score == "activation":
        act = collect_inputs(model, tname, calib.inputs_for(tname), outs, lambda x: x.abs().sum(0).double())
    for i, block in enumerate(blocks):
        attn = block.attn
        h, hd = heads_of(attn)
        inp = _linear(getattr(*slot(block, t, "attn_in")), f"{tname}.{i}.attn_in")
        out = outs[f"{tname}.{i}"]
        w_out = out.weight.detach().double().reshape(out.out_features, h, hd)
        if act:   # mean |head output| x the norm of what the head writes back, per head
            score = (act[f"{tname}.{i}"].reshape(h, hd) * w_out.norm(dim=0)).sum(-1)
        else:
            w_in = inp.weight.detach().double().reshape(3, h, hd, -1)
            score = w_in[2].flatten(1).norm(dim=1) * w_out.permute(1, 0, 2).flatten(1).norm(dim=1) \
                + w_in[0].flatten(1).norm(dim=1) * w_in[1].flatten(1).norm(dim=1)
        k = max(1, round(cfg.heads_keep * h))     # 0.67 of 3 heads is 2, not 3
        if k >= h:
            report.skipped.append({"layer": f"{tname}.{i}.attn", "why": f"keeping {k} of {h} heads removes nothing"})
            continue
        kept = select.keep_top(score, k).sort().values
        cols = (kept[:, None] * hd + torch.arange(hd)[None]).flatten()
        rows = torch.cat([j * h * hd + cols for j in range(3)])
        p_in, a_in = slot(block, t, "attn_in")
        p_out, a_out = slot(block, t, "attn_out")
        setattr(p_in, a_in, _slice_linear(inp, rows=rows))
        setattr(p_out, a_out, _slice_linear(out, cols=cols))
        set_heads(attn, k)
        report.layers.append({"layer": f"{tname}.{i}.attn", "heads_before": h, "heads_after": k,
                              "kept_heads": kept.tolist()})


def apply(model: nn.Module, cfg: StructuredConfig, calib: Calibration | None = None) -> tuple[nn.Module, PassReport]:
    model = convert_attention(copy.deepcopy(model))
    ts = towers(model)
    before = n_params(model)
    report = PassReport("structured", before, before, extra={"score": cfg.score, "mlp_keep": cfg.mlp_keep,
                                                             "heads_keep": cfg.heads_keep})
    if cfg.score == "activation" and calib is None:
        raise EdgeclipError("--prune-score activation needs calibration images; pass --calib-data or use --prune-score magnitude")
    for tname in cfg.towers:
        if tname not in ts:
            raise EdgeclipError(f"--prune-tower {tname}: this model has no {tname} tower (has: {', '.join(ts)})")
        if cfg.score == "activation" and calib.inputs_for(tname) is None:
            raise EdgeclipError(f"activation scores for the {tname} tower need captions; use --prune-score magnitude")
        t = ts[tname]
        for what, flag, edit in (("heads", "--heads-keep", _heads), ("mlp", "--mlp-keep", _mlp)):
            if (cfg.heads_keep if what == "heads" else cfg.mlp_keep) >= 1:
                continue
            why = refusal(t, what)
            if why:
                raise EdgeclipError(f"{flag} on the {tname} tower: {why}; use SVD or block pruning on this model")
            edit(model, t, tname, t.blocks, cfg, calib, report)
    report.params_after = n_params(model)
    return model, report
