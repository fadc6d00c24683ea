"""Where the compressible parts of a model live, asked of its family (``edgeclip.models.families``):
towers, their block lists, and per block the Linear layers of each kind (attention input / output
projection, MLP fc1 / fc2).  The passes use only these functions, never a family name.
"""

from __future__ import annotations

import torch
from torch import nn

from edgeclip.errors import EdgeclipError
from edgeclip.models.families import Family, Tower, family_of, resolve
from edgeclip.models.families.open_clip_vit import CompressibleAttention

__all__ = ["CompressibleAttention", "Tower", "family", "towers", "tower", "tower_params", "convert_attention", "slots",
           "slot", "heads_of", "set_heads", "image_tokens", "tower_flops", "refusal"]


def family(model: nn.Module) -> Family:
    return family_of(model)


def towers(model: nn.Module) -> dict[str, Tower]:
    return family_of(model).towers(model)


def tower(model: nn.Module, name: str) -> Tower:
    t = towers(model)
    if name not in t:
        raise EdgeclipError(f"{type(model).__name__} has no {name} transformer tower to compress (has: {', '.join(t) or 'none'})")
    return t[name]


def refusal(t: Tower, what: str) -> str | None:
    """Why ``what`` (heads, mlp, tokens, or a layer kind) cannot be done on this tower, or None."""
    return t.layout.refusals.get(what)


def tower_params(model: nn.Module) -> dict[str, int]:
    """Parameter counts per tower (the classifier's image path is ``vision``); zero-shot CLIP's text tower
    runs once at build time, so only ``vision`` is on the device."""
    fam = family_of(model)
    total = sum(p.numel() for p in model.parameters())
    text = fam.text_params(model)
    return {"vision": total if not fam.has_text else sum(p.numel() for p in fam.vision(model).parameters()),
            "text": text, "total": total}


def convert_attention(model: nn.Module) -> nn.Module:
    """Make every tower's blocks editable in place (open_clip: ``nn.MultiheadAttention`` -> ``CompressibleAttention``)."""
    return family_of(model).prepare(model)


def slots(block: nn.Module, t: Tower, kind: str) -> list[tuple[nn.Module, str]]:
    """(parent, attribute) of every Linear of ``kind`` in ``block`` (two for a gated MLP's fc1, none where refused)."""
    return [resolve(block, p) for p in t.layout.paths(kind)]


def slot(block: nn.Module, t: Tower, kind: str) -> tuple[nn.Module, str]:
    """The single Linear of ``kind`` (structured pruning edits pairs of single layers)."""
    found = slots(block, t, kind)
    if len(found) != 1:
        raise EdgeclipError(refusal(t, kind) or f"{t.name} blocks have {len(found)} {kind} layers; structured pruning needs one")
    return found[0]


def heads_of(attn: nn.Module) -> tuple[int, int]:
    return attn.num_heads, attn.head_dim


def set_heads(attn: nn.Module, n: int) -> None:
    attn.num_heads = n
    if hasattr(attn, "attn_dim"):   # timm
        attn.attn_dim = n * attn.head_dim


def image_tokens(model: nn.Module) -> tuple[int, int]:
    """(patch tokens, prefix tokens such as CLS / registers) the vision tower sees per image."""
    return family_of(model).image_tokens(model)


@torch.no_grad()
def tower_flops(model: nn.Module, image: torch.Tensor, tokens: torch.Tensor | None) -> dict[str, int]:
    """FLOPs of one forward of each tower (batch 1), counted by torch's FlopCounterMode on the real module:
    physically removed rows, dropped tokens and low-rank pairs all show; zeroed weights do not change it.

    Attention is counted in every form a model computes it: torch's counter has no formula for the CPU flash
    kernel of ``scaled_dot_product_attention`` (added here, torch's own SDPA formula) and does not see inside
    ``nn.MultiheadAttention``'s native fast path (turned off while counting).  Before both (2026-12-07), a tiny
    open_clip ViT counted 3.74 MFLOPs as shipped and 5.41 once its attention was made editable, so passes that
    rewrite attention (token dropping and merging) could report fewer tokens as *more* FLOPs."""
    from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

    def sdpa_cpu_flops(q, k, v, *_args, out_shape=None, **_kw) -> int:   # called with shapes
        return sdpa_flop_count(q, k, v)

    sdpa_cpu = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: sdpa_cpu_flops}
    fam = family_of(model)
    out = {}
    # FlopCounterMode's module tracker hooks autograd on tensors that require grad; a parameter used as a
    # tensor (SigLIP's MAP-head latent, expanded per image) then fails "Expected gradient function to be set"
    flags = [(p, p.requires_grad) for p in model.parameters()]
    for p, _ in flags:
        p.requires_grad_(False)
    fastpath = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with FlopCounterMode(display=False, custom_mapping=sdpa_cpu) as fc:
            fam.vision(model)(image[:1])
        out["vision"] = int(fc.get_total_flops())
        if fam.has_text and tokens is not None:
            with FlopCounterMode(display=False, custom_mapping=sdpa_cpu) as fc:
                fam.encode_text(model, tokens[:1])
            out["text"] = int(fc.get_total_flops())
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)
        for p, flag in flags:
            p.requires_grad_(flag)
    return out
