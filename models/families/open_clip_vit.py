"""open_clip CLIP with its own ``VisionTransformer`` image tower (OpenAI / LAION ViT-B-32 and kin, the
built-in model and the shared fixture).

open_clip keeps attention's q/k/v projection as a bare ``in_proj_weight`` inside
``nn.MultiheadAttention``, which no pass can factorise or slice, so ``prepare`` rewrites each as
``ProjectedAttention`` in its fused layout (models/attention.py): the same function with an ``in_proj``
Linear (timm's ``[q; k; v]`` row layout), an ``out_proj`` Linear, and a head count that may shrink.
"""

from __future__ import annotations

import torch
from torch import nn

from edgeclip.errors import EdgeclipError
from edgeclip.models.attention import ProjectedAttention

from .base import OPEN_CLIP_BLOCK, Family, Tower, register


CompressibleAttention = ProjectedAttention   # the fused layout is what compression edits (models/attention.py)


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
                block.attn = ProjectedAttention.from_mha(block.attn, "fused")


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
