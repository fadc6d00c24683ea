"""Outlier activation channels: where they are, how big, and (for tests and benchmarks) how to make them.

Long pre-training leaves a few channels of a ViT's LayerNorm outputs tens of times larger than the rest;
a per-tensor int8 scale sized for them leaves the other channels a handful of levels (FQ-ViT, LLM.int8).
Every place where this matters -- SmoothQuant migration, ``edgeclip inspect``, the outlier test case -- needs
the same two facts: which LayerNorm feeds which Linear(s) directly, and each channel's range there.  Both
are found by running the model, not by family-specific names, so every family gets them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from .torch_ao import LINEARS   # noqa: F401  (the Linear types every int8 route quantizes; re-exported)


@dataclass(frozen=True)
class NormFeed:
    """A LayerNorm whose output tensor is the input of ``consumers`` (Linears, or self-attention
    ``nn.MultiheadAttention`` modules whose fused in-projection reads it): the place a per-channel scale
    can move between the norm's affine parameters and the consumers' weight columns without changing
    the function."""

    norm: str
    consumers: tuple[str, ...]


def _consumer_weights(m: nn.Module) -> list[torch.Tensor]:
    """Weights whose input columns read the norm's channels (``[out, in]`` each)."""
    if isinstance(m, nn.MultiheadAttention):
        return [m.in_proj_weight] if m._qkv_same_embed_dim else [m.q_proj_weight, m.k_proj_weight, m.v_proj_weight]
    return [m.weight]


def norm_feeds(module: nn.Module, example: torch.Tensor) -> list[NormFeed]:
    """Every affine LayerNorm whose output goes straight into Linear / self-attention modules and nowhere
    else that this pass can see (one forward of ``example``, matching tensors by identity)."""
    norms = {n: m for n, m in module.named_modules() if isinstance(m, nn.LayerNorm) and m.elementwise_affine
             and m.weight is not None and m.bias is not None}
    produced: dict[int, str] = {}
    keep: list[torch.Tensor] = []          # outputs held alive so no id is reused during the pass
    fed: dict[str, list[str]] = {}
    handles = []

    def on_norm(name):
        def hook(mod, args, out):
            produced[id(out)] = name
            keep.append(out)
        return hook

    def on_consumer(name, mha):
        def hook(mod, args, kwargs):
            x = args[0] if args else kwargs.get("query")
            if mha:   # only self-attention: query, key and value are the same tensor
                k = args[1] if len(args) > 1 else kwargs.get("key")
                v = args[2] if len(args) > 2 else kwargs.get("value")
                if not (x is k and k is v):
                    return
            if id(x) in produced:
                fed.setdefault(produced[id(x)], []).append(name)
        return hook

    for n, m in norms.items():
        handles.append(m.register_forward_hook(on_norm(n)))
    for n, m in module.named_modules():
        if type(m) in LINEARS or isinstance(m, nn.MultiheadAttention):
            handles.append(m.register_forward_pre_hook(on_consumer(n, isinstance(m, nn.MultiheadAttention)),
                                                       with_kwargs=True))
    try:
        with torch.no_grad():
            module.eval()(example)
    finally:
        for h in handles:
            h.remove()
    mods = dict(module.named_modules())
    out = []
    for norm, names in fed.items():
        names = list(dict.fromkeys(names))
        width = norms[norm].weight.numel()
        if all(w.shape[1] == width for c in names for w in _consumer_weights(mods[c])):
            out.append(NormFeed(norm, tuple(names)))
    return out


def channel_ranges(module: nn.Module, feeds: list[NormFeed], inputs: np.ndarray, batch: int = 64) -> dict[str, np.ndarray]:
    """Per-channel max |activation| of each fed norm's output over ``inputs`` (calibration images)."""
    return output_ranges(module, [f.norm for f in feeds], inputs, batch)


def channel_amax(a: torch.Tensor) -> torch.Tensor:
    """Per-channel max |a|: channels are the last dimension of token activations ``[..., C]`` and the second of
    a conv block's ``[B, C, H, W]`` feature map (FastViT / MobileCLIP stages)."""
    a = a.detach()
    if a.ndim == 4:
        a = a.movedim(1, -1)
    return a.abs().reshape(-1, a.shape[-1]).amax(0).float()


def output_ranges(module: nn.Module, names: list[str], inputs: np.ndarray, batch: int = 64) -> dict[str, np.ndarray]:
    """Per-channel max |output| of each named submodule over ``inputs`` (outputs that are not one tensor are
    skipped: there is no single activation to quantize)."""
    mods = dict(module.named_modules())
    amax: dict[str, torch.Tensor] = {}

    def hook(name):
        def h(mod, args, out):
            if isinstance(out, torch.Tensor):
                a = channel_amax(out)
                amax[name] = torch.maximum(amax[name], a) if name in amax else a
        return h

    handles = [mods[n].register_forward_hook(hook(n)) for n in names]
    try:
        with torch.no_grad():
            for i in range(0, len(inputs), batch):
                module(torch.from_numpy(np.ascontiguousarray(inputs[i:i + batch])))
    finally:
        for h in handles:
            h.remove()
    return {k: v.numpy() for k, v in amax.items()}


def range_ratio(ranges: np.ndarray) -> float:
    """Largest channel range over the median one: how much of an int8 scale one channel takes."""
    return float(np.max(ranges) / max(float(np.median(ranges)), 1e-12))


def outlier_channels(ranges: np.ndarray, ratio: float = 8.0) -> list[int]:
    """Channels whose range exceeds ``ratio`` x the median channel's: the ones a per-tensor scale is sized for."""
    med = float(np.median(ranges)) or 1e-12
    return [int(c) for c in np.nonzero(ranges > ratio * med)[0]]


def inject_outliers(module: nn.Module, example: torch.Tensor, scale: float = 50.0, channel: int = 0) -> list[NormFeed]:
    """Make ``module`` int8-hostile without changing its fp32 function (in place): in every fed LayerNorm,
    channel ``channel``'s weight and bias are multiplied by ``scale`` and the consumers' input column is
    divided by it.  This reproduces what pre-trained ViTs look like to a quantizer, for tests and benchmarks."""
    feeds = norm_feeds(module, example)
    mods = dict(module.named_modules())
    with torch.no_grad():
        for f in feeds:
            norm = mods[f.norm]
            norm.weight[channel] *= scale
            norm.bias[channel] *= scale
            for c in f.consumers:
                for w in _consumer_weights(mods[c]):
                    w[:, channel] /= scale
    return feeds
