"""Low-rank factorisation of Linear layers: ``W [out,in] ~= up [out,r] @ down [r,in]``, two smaller Linears.

It only pays when ``r * (in + out) < in * out``; a rank that does not is refused for that layer (an
explicit ``--svd-rank`` that saves nothing anywhere is an error).  The data-aware variant whitens by the
layer's calibration input covariance (``W S`` with ``S S^T = X^T X``, as in SVD-LLM), so the truncation
minimises the error of the layer's *outputs* on real inputs instead of the error of its weights.
"""

from __future__ import annotations

import copy
import math

import torch
from torch import nn

from edgeclip.errors import EdgeclipError

from .calibration import Calibration, collect_inputs
from .config import SvdConfig, select_blocks
from .report import PassReport, n_params
from .structure import convert_attention, refusal, slots, towers


class LowRankLinear(nn.Module):
    """``up(down(x))``: two plain Linears, so every quantizer and exporter sees ordinary GEMMs."""

    def __init__(self, down: nn.Linear, up: nn.Linear):
        super().__init__()
        self.down, self.up = down, up
        self.in_features, self.out_features, self.rank = down.in_features, up.out_features, down.out_features

    @property
    def weight(self) -> torch.Tensor:
        """The output-side factor: host code asks layers for ``.weight.dtype`` (open_clip's cast dtype)."""
        return self.up.weight

    def forward(self, x):
        return self.up(self.down(x))


def saves(rank: int, out_f: int, in_f: int) -> bool:
    return rank * (in_f + out_f) < in_f * out_f


def max_saving_rank(out_f: int, in_f: int) -> int:
    return math.ceil(in_f * out_f / (in_f + out_f)) - 1


def choose_rank(s: torch.Tensor | None, out_f: int, in_f: int, cfg: SvdConfig) -> int:
    """``s`` (the singular values) is only needed for ``--svd-energy``."""
    if cfg.rank is not None:
        return min(cfg.rank, out_f, in_f)
    if cfg.ratio is not None:
        return max(1, math.floor(cfg.ratio * in_f * out_f / (in_f + out_f)))
    energy = torch.cumsum(s.double() ** 2, 0) / (s.double() ** 2).sum()
    return int(torch.searchsorted(energy, torch.tensor(cfg.energy, dtype=energy.dtype)).item()) + 1


def decompose(linear: nn.Linear, covariance: torch.Tensor | None = None):
    """``(u, s, vh, chol)`` with ``W chol = u diag(s) vh``; ``chol`` is the Cholesky factor of the damped input
    covariance (data-aware), or None (plain SVD, ``chol`` = identity)."""
    w = linear.weight.detach().double()
    if covariance is None:
        return (*torch.linalg.svd(w, full_matrices=False), None)
    c = covariance.double()
    c = c + (1e-5 * c.diagonal().mean().clamp_min(1e-12)) * torch.eye(len(c), dtype=c.dtype)  # damping: rank-deficient X
    chol = torch.linalg.cholesky(c)                    # X^T X = L L^T
    return (*torch.linalg.svd(w @ chol, full_matrices=False), chol)


def factorise(linear: nn.Linear, rank: int, covariance: torch.Tensor | None = None,
              decomposition=None) -> LowRankLinear:
    u, s, vh, chol = decomposition if decomposition is not None else decompose(linear, covariance)
    down_w = vh[:rank] if chol is None else torch.linalg.solve_triangular(chol, vh[:rank], upper=False, left=False)  # V_r^T L^-1
    root = s[:rank].sqrt()
    down = nn.Linear(linear.in_features, rank, bias=False)
    up = nn.Linear(rank, linear.out_features, bias=linear.bias is not None)
    with torch.no_grad():
        down.weight.copy_((root[:, None] * down_w).to(linear.weight.dtype))
        up.weight.copy_((u[:, :rank] * root[None, :]).to(linear.weight.dtype))
        if linear.bias is not None:
            up.bias.copy_(linear.bias)
    return LowRankLinear(down, up)


def _targets(model: nn.Module, cfg: SvdConfig, skipped: list[dict]) -> list[tuple[str, str, nn.Module, str]]:
    """(tower, layer name, parent, attribute) of every Linear the config selects; layers the family
    refuses go to ``skipped`` with its reason."""
    ts = towers(model)
    out = []
    for tname in cfg.towers:
        if tname not in ts:
            raise EdgeclipError(f"--svd-tower {tname}: this model has no {tname} tower (has: {', '.join(ts)})")
        blocks = ts[tname].blocks
        for i in select_blocks(cfg.blocks, len(blocks), "--svd-blocks"):
            for kind in cfg.layers:
                found = slots(blocks[i], ts[tname], kind)
                for parent, attr in found:
                    name = f"{tname}.{i}.{kind}" + (f".{attr}" if len(found) > 1 else "")
                    out.append((tname, name, parent, attr))
                if not found:
                    skipped.append({"layer": f"{tname}.{i}.{kind}", "why": refusal(ts[tname], kind) or f"no {kind} layer here"})
    return out


def apply(model: nn.Module, cfg: SvdConfig, calib: Calibration | None = None) -> tuple[nn.Module, PassReport]:
    model = convert_attention(copy.deepcopy(model))
    before = n_params(model)
    refused: list[dict] = []
    targets = _targets(model, cfg, refused)
    covs: dict[str, torch.Tensor] = {}
    if cfg.aware:
        if calib is None:
            raise EdgeclipError("--svd-aware needs calibration images; pass --calib-data (a train split or folder)")
        for tname in cfg.towers:
            mods = {name: getattr(p, a) for t, name, p, a in targets if t == tname and isinstance(getattr(p, a), nn.Linear)}
            inputs = calib.inputs_for(tname)
            if inputs is None:
                raise EdgeclipError(f"--svd-aware on the {tname} tower needs calibration captions; use a CLIP model with a tokenizer")
            covs.update(collect_inputs(model, tname, inputs, mods, lambda x: (x.T @ x).double()))
    report = PassReport("svd", before, before, extra={"method": "activation-aware (whitened)" if cfg.aware else "plain",
                                                      "rule": _rule(cfg)})
    report.skipped.extend(refused)
    for _tname, name, parent, attr in targets:
        lin = getattr(parent, attr)
        if not isinstance(lin, nn.Linear):
            report.skipped.append({"layer": name, "why": f"is a {type(lin).__name__}, not a dense Linear"})
            continue
        out_f, in_f = lin.weight.shape
        # the energy rule needs the (whitened) spectrum first; the others decide the rank from the shape alone
        dec = decompose(lin, covs.get(name)) if cfg.rank is None and cfg.ratio is None else None
        rank = choose_rank(dec[1] if dec is not None else None, out_f, in_f, cfg)
        if not saves(rank, out_f, in_f):
            report.skipped.append({"layer": name, "rank": rank, "why": f"rank {rank} of a {out_f}x{in_f} layer would not save "
                                   f"parameters (needs rank <= {max_saving_rank(out_f, in_f)})"})
            continue
        setattr(parent, attr, factorise(lin, rank, covs.get(name), dec))
        report.layers.append({"layer": name, "shape": [out_f, in_f], "rank": rank, "params_before": in_f * out_f,
                              "params_after": rank * (in_f + out_f)})
    if not report.layers:
        why = report.skipped[0]["why"] if report.skipped else "no layer matched"
        raise EdgeclipError(f"SVD would compress nothing ({why}); pick a smaller --svd-rank, a lower --svd / --svd-energy, "
                            "or other --svd-layers")
    report.params_after = n_params(model)
    return model, report


def _rule(cfg: SvdConfig) -> str:
    if cfg.rank is not None:
        return f"rank {cfg.rank}"
    if cfg.ratio is not None:
        return f"keep {cfg.ratio:g} of each layer's parameters"
    return f"smallest rank keeping {cfg.energy:g} of the singular-value energy"
