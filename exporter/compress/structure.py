"""Where the compressible parts of a CLIP or ViT live: towers, their block lists, and the four Linear
layers of each block (attention input / output projection, MLP fc1 / fc2).

open_clip keeps attention's q/k/v projection as a bare ``in_proj_weight`` inside
``nn.MultiheadAttention``, which no pass can factorise or slice, so open_clip attention is first
rewritten as ``CompressibleAttention``: the same function with a fused ``in_proj`` Linear (the same
``[q; k; v]`` row layout as timm's ``qkv``), an ``out_proj`` Linear, and a head count that may shrink.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from edgeclip.errors import EdgeclipError


class CompressibleAttention(nn.Module):
    """Self-attention with a call signature compatible with ``nn.MultiheadAttention`` (returns ``(out, None)``);
    ``in_proj`` maps width -> 3 * heads * head_dim, ``out_proj`` maps heads * head_dim -> width, so heads can be
    removed and either projection can become a low-rank pair."""

    def __init__(self, in_proj: nn.Module, out_proj: nn.Module, num_heads: int, head_dim: int, batch_first: bool = True):
        super().__init__()
        self.in_proj, self.out_proj = in_proj, out_proj
        self.num_heads, self.head_dim, self.batch_first = num_heads, head_dim, batch_first

    @classmethod
    def from_mha(cls, mha: nn.MultiheadAttention) -> "CompressibleAttention":
        if not mha._qkv_same_embed_dim:
            raise EdgeclipError("attention with separate q/k/v widths cannot be compressed by edgeclip (only self-attention blocks)")
        d = mha.embed_dim
        in_proj = nn.Linear(d, 3 * d, bias=mha.in_proj_bias is not None)
        out_proj = nn.Linear(d, d, bias=mha.out_proj.bias is not None)
        with torch.no_grad():
            in_proj.weight.copy_(mha.in_proj_weight)
            if mha.in_proj_bias is not None:
                in_proj.bias.copy_(mha.in_proj_bias)
            out_proj.load_state_dict(mha.out_proj.state_dict())
        return cls(in_proj, out_proj, mha.num_heads, d // mha.num_heads, mha.batch_first)

    def qkv(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        b, n, _ = x.shape
        q, k, v = self.in_proj(x).reshape(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        return q, k, v

    def forward(self, query, key=None, value=None, need_weights: bool = False, attn_mask=None, key_padding_mask=None):
        x = query if self.batch_first else query.transpose(0, 1)
        b, n, _ = x.shape
        q, k, v = self.qkv(x)
        if attn_mask is not None and attn_mask.dtype == torch.bool:
            attn_mask = torch.zeros_like(attn_mask, dtype=q.dtype).masked_fill(attn_mask, float("-inf"))
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
        out = self.out_proj(out.transpose(1, 2).reshape(b, n, self.num_heads * self.head_dim))
        return (out if self.batch_first else out.transpose(0, 1)), None


@dataclass
class Tower:
    """One tower: the module holding its block list (``owner.<attr>``) and the root its parameters hang from."""

    name: str
    owner: nn.Module
    attr: str
    family: str

    @property
    def blocks(self) -> nn.Module:
        return getattr(self.owner, self.attr)

    def set_blocks(self, kept: list[nn.Module]) -> None:
        old = self.blocks
        setattr(self.owner, self.attr, nn.Sequential(*kept) if isinstance(old, nn.Sequential) else nn.ModuleList(kept))
        if hasattr(self.owner, "layers") and isinstance(self.owner.layers, int):
            self.owner.layers = len(kept)


def family(model: nn.Module) -> str:
    if hasattr(model, "visual") and hasattr(model, "encode_text"):
        return "open_clip"
    if hasattr(model, "blocks") and hasattr(model, "patch_embed"):
        return "timm"
    raise EdgeclipError(f"cannot compress a {type(model).__name__}: edgeclip's passes know open_clip CLIP and timm "
                        "ViT/DeiT models (export it without compression flags)")


def towers(model: nn.Module) -> dict[str, Tower]:
    fam = family(model)
    if fam == "timm":
        return {"vision": Tower("vision", model, "blocks", fam)}
    out = {}
    vt = getattr(model.visual, "transformer", None)
    if vt is not None and hasattr(vt, "resblocks"):
        out["vision"] = Tower("vision", vt, "resblocks", fam)
    text = model.text.transformer if hasattr(model, "text") and hasattr(model.text, "transformer") else getattr(model, "transformer", None)
    if text is not None and hasattr(text, "resblocks"):
        out["text"] = Tower("text", text, "resblocks", fam)
    return out


def tower(model: nn.Module, name: str) -> Tower:
    t = towers(model)
    if name not in t:
        raise EdgeclipError(f"{type(model).__name__} has no {name} transformer tower to compress (has: {', '.join(t) or 'none'})")
    return t[name]


def tower_params(model: nn.Module) -> dict[str, int]:
    """Parameter counts per tower (the classifier's image path is ``vision``); zero-shot CLIP's text tower
    runs once at build time, so only ``vision`` is on the device."""
    fam = family(model)
    total = sum(p.numel() for p in model.parameters())
    if fam == "timm":
        return {"vision": total, "text": 0, "total": total}
    vision = sum(p.numel() for p in model.visual.parameters())
    scalars = sum(p.numel() for n, p in model.named_parameters() if n in ("logit_scale", "logit_bias"))
    return {"vision": vision, "text": total - vision - scalars, "total": total}


def convert_attention(model: nn.Module) -> nn.Module:
    """Replace open_clip's ``nn.MultiheadAttention`` in every tower block by ``CompressibleAttention`` (in place)."""
    for t in towers(model).values():
        for block in t.blocks:
            if isinstance(block.attn, nn.MultiheadAttention):
                if hasattr(block, "ln_1_kv"):
                    raise EdgeclipError("cross-attention blocks cannot be compressed by edgeclip")
                block.attn = CompressibleAttention.from_mha(block.attn)
    return model


SLOTS = {  # layer kind -> (path to parent module, attribute), per family
    "open_clip": {"attn_in": ("attn", "in_proj"), "attn_out": ("attn", "out_proj"), "fc1": ("mlp", "c_fc"), "fc2": ("mlp", "c_proj")},
    "timm": {"attn_in": ("attn", "qkv"), "attn_out": ("attn", "proj"), "fc1": ("mlp", "fc1"), "fc2": ("mlp", "fc2")},
}


def slot(block: nn.Module, fam: str, kind: str) -> tuple[nn.Module, str]:
    parent, attr = SLOTS[fam][kind]
    return getattr(block, parent), attr


def heads_of(attn: nn.Module) -> tuple[int, int]:
    return attn.num_heads, attn.head_dim


def set_heads(attn: nn.Module, n: int) -> None:
    attn.num_heads = n
    if hasattr(attn, "attn_dim"):   # timm
        attn.attn_dim = n * attn.head_dim


def image_tokens(model: nn.Module) -> tuple[int, int]:
    """(patch tokens, prefix tokens such as CLS / registers) the vision tower sees per image."""
    if family(model) == "timm":
        return model.patch_embed.num_patches, int(getattr(model, "num_prefix_tokens", 1))
    gs = model.visual.grid_size
    return int(gs[0] * gs[1]), 1


@torch.no_grad()
def tower_flops(model: nn.Module, image: torch.Tensor, tokens: torch.Tensor | None) -> dict[str, int]:
    """FLOPs of one forward of each tower (batch 1), counted by torch's FlopCounterMode on the real module:
    physically removed rows, dropped tokens and low-rank pairs all show; zeroed weights do not change it."""
    from torch.utils.flop_counter import FlopCounterMode

    out = {}
    fam = family(model)
    with FlopCounterMode(display=False) as fc:
        (model.forward_features(image[:1]) if fam == "timm" else model.visual(image[:1]))
    out["vision"] = int(fc.get_total_flops())
    if fam == "open_clip" and tokens is not None:
        with FlopCounterMode(display=False) as fc:
            model.encode_text(tokens[:1])
        out["text"] = int(fc.get_total_flops())
    return out
