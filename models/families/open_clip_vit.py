"""open_clip CLIP with its own ``VisionTransformer`` image tower (OpenAI / LAION ViT-B-32 and kin, the
built-in model and the shared fixture).

open_clip keeps attention's q/k/v projection as a bare ``in_proj_weight`` inside
``nn.MultiheadAttention``, which no pass can factorise or slice, so ``prepare`` rewrites each as
``CompressibleAttention``: the same function with a fused ``in_proj`` Linear (timm's ``[q; k; v]`` row
layout), an ``out_proj`` Linear, and a head count that may shrink.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from edgeclip.errors import EdgeclipError

from .base import OPEN_CLIP_BLOCK, Family, Tower, register


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


def text_tower(model: nn.Module) -> Tower | None:
    """open_clip's text transformer: ``model.transformer`` (CLIP) or ``model.text.transformer`` (CustomTextCLIP)."""
    text = model.text.transformer if hasattr(model, "text") and hasattr(model.text, "transformer") else getattr(model, "transformer", None)
    if text is not None and hasattr(text, "resblocks"):
        return Tower("text", text, "resblocks", OPEN_CLIP_BLOCK)
    return None


def convert_mha(towers: list[Tower]) -> None:
    for t in towers:
        if t.layout is not OPEN_CLIP_BLOCK:
            continue
        for block in t.blocks:
            if isinstance(block.attn, nn.MultiheadAttention):
                if hasattr(block, "ln_1_kv"):
                    raise EdgeclipError("cross-attention blocks cannot be compressed by edgeclip")
                block.attn = CompressibleAttention.from_mha(block.attn)


class OpenClipFamily(Family):
    """Shared by every open_clip CLIP: a text tower, zero-shot embeddings (cosine), ``encode_text``."""

    has_text = True

    def vision_tower(self, model: nn.Module) -> Tower:
        raise NotImplementedError

    def towers(self, model: nn.Module) -> dict[str, Tower]:
        text = text_tower(model)
        return {"vision": self.vision_tower(model), **({"text": text} if text is not None else {})}

    def vision(self, model: nn.Module) -> nn.Module:
        return model.visual

    def encode_text(self, model: nn.Module, tokens: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        return model.encode_text(tokens, normalize=normalize)

    def text_params(self, model: nn.Module) -> int:
        vision = sum(p.numel() for p in model.visual.parameters())
        scalars = sum(p.numel() for n, p in model.named_parameters() if n in ("logit_scale", "logit_bias"))
        return sum(p.numel() for p in model.parameters()) - vision - scalars

    def prepare(self, model: nn.Module) -> nn.Module:
        convert_mha(list(self.towers(model).values()))
        return model


@register
class OpenClipViT(OpenClipFamily):
    name = "open_clip-vit"
    summary = "open_clip ViT CLIP"

    def matches(self, model: nn.Module) -> bool:
        vt = getattr(getattr(model, "visual", None), "transformer", None)
        return hasattr(model, "encode_text") and hasattr(vt, "resblocks")

    def vision_tower(self, model: nn.Module) -> Tower:
        return Tower("vision", model.visual.transformer, "resblocks", self._vision_layout(model))

    def _vision_layout(self, model: nn.Module):
        if getattr(model.visual, "attn_pool", None) is None:
            return OPEN_CLIP_BLOCK
        from dataclasses import replace

        return replace(OPEN_CLIP_BLOCK, refusals={"tokens": "this open_clip tower pools with attention (attn_pool), "
                                                            "which reads every token"})

    def image_tokens(self, model: nn.Module) -> tuple[int, int]:
        gs = model.visual.grid_size
        return int(gs[0] * gs[1]), 1
