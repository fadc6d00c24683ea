"""Compression passes, run before quantization and export.

Each pass module has ``apply(model, config, calib) -> (model, PassReport)``: a pure function of its
inputs (the model is copied, never edited in place) returning a model whose tensors are physically
smaller, or -- for unstructured sparsity -- a report saying plainly that nothing dense got smaller.
``compress`` runs the passes a ``CompressRecipe`` asks for, in a fixed order, on the *whole* model
(a CLIP's text tower too, so the zero-shot head is rebuilt from the compressed text tower).
"""

from __future__ import annotations

import time
from typing import Callable

import torch
from torch import nn

from . import blocks, heal, merge, sparsity, structured, svd, tokens
from .calibration import Calibration
from .config import CompressRecipe
from .structure import tower_flops, tower_params

__all__ = ["Calibration", "CompressRecipe", "compress", "summary"]


def plan(recipe: CompressRecipe) -> list[tuple[str, Callable, object]]:
    steps: list[tuple[str, Callable, object]] = [(f"prune-blocks {b.tower}", blocks.apply, b) for b in recipe.blocks()]
    for name, module, cfg in (("structured", structured, recipe.structured()), ("svd", svd, recipe.svd()),
                              ("sparsity", sparsity, recipe.sparse()), ("tokens", tokens, recipe.tokens()),
                              ("token-merge", merge, recipe.merge())):
        if cfg is not None:
            steps.append((name, module.apply, cfg))
    return steps


def compress(model: nn.Module, recipe: CompressRecipe, calib: Calibration | None = None,
             flop_inputs: tuple[torch.Tensor, torch.Tensor | None] | None = None,
             progress: Callable[[str], None] | None = None,
             stages: list[tuple[str, nn.Module]] | None = None) -> tuple[nn.Module, dict]:
    """Run every pass of ``recipe`` on ``model``; returns the compressed model and a report (per pass, plus
    parameters and FLOPs per tower before and after).  ``stages``, when given, receives (pass name, model
    after it) for every pass, so the compression-cost gate can say which pass cost the most: passes copy
    the model anyway, so keeping the intermediate copies costs memory, not time."""
    recipe = recipe.validated()
    original = model.eval()
    reports = []
    for name, fn, cfg in plan(recipe):
        if progress:
            progress(name)
        t0 = time.perf_counter()
        model, rep = fn(model, cfg, calib)
        rep.extra.setdefault("seconds", round(time.perf_counter() - t0, 2))
        reports.append(rep.to_dict())
        if stages is not None:
            stages.append((rep.name, model))
    heal_cfg = recipe.heal()
    if heal_cfg is not None:
        if progress:
            progress("heal")
        model, rep = heal.apply(model, heal_cfg, calib, teacher=original)
        reports.append(rep.to_dict())
        if stages is not None:
            stages.append(("heal", model))
    model.eval()
    if flop_inputs is None and calib is not None:
        flop_inputs = (calib.images[:1], calib.captions[:1] if calib.captions is not None else None)
    return model, {"passes": reports, **summary(original, model, flop_inputs)}


def summary(original: nn.Module, compressed: nn.Module, flop_inputs: tuple | None = None) -> dict:
    """Parameters per tower before / after, and FLOPs of one forward per tower when example inputs are given."""
    before, after = tower_params(original), tower_params(compressed)
    out = {"params_before": before, "params_after": after,
           "params_removed_pct": {k: round(100 * (1 - after[k] / before[k]), 2) if before[k] else 0.0 for k in before}}
    if flop_inputs is not None:
        image, caps = flop_inputs
        fb, fa = tower_flops(original, image, caps), tower_flops(compressed, image, caps)
        out.update(flops_before=fb, flops_after=fa,
                   flops_removed_pct={k: round(100 * (1 - fa[k] / fb[k]), 2) for k in fb if fb[k]})
    return out
