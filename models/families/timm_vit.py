"""timm ``VisionTransformer`` and its subclasses: ViT, DeiT (distilled: a second prefix token and head),
DINOv2 (LayerScale ``ls1`` / ``ls2``, register tokens), and the SigLIP trunks open_clip wraps.

Prefix tokens (class, distillation, registers) are counted from ``num_prefix_tokens`` so token reduction
keeps them all.  Token reduction scores patches by the class token's attention, so it needs one: a
model pooled by attention (SigLIP's MAP head) or without a class token is refused with that reason.
"""

from __future__ import annotations

from dataclasses import replace

from torch import nn

from .base import TIMM_VIT_BLOCK, BlockLayout, TimmFamily, Tower, register


def is_timm_vit(model: nn.Module) -> bool:
    try:
        from timm.models.vision_transformer import VisionTransformer
    except ImportError:
        return False
    return isinstance(model, VisionTransformer)


def vit_layout(model: nn.Module) -> BlockLayout:
    """The timm block layout, with the reasons this model refuses what it refuses."""
    refusals = {}
    if int(getattr(model, "num_prefix_tokens", 1)) == 0 or getattr(model, "cls_token", None) is None:
        refusals["tokens"] = "token reduction scores patches by the class token's attention and this model has no class token"
    elif getattr(model, "attn_pool", None) is not None or getattr(model, "global_pool", "token") not in ("token", "avg"):
        refusals["tokens"] = "token reduction needs class-token or average pooling; this model pools with attention"
    attn = model.blocks[0].attn if len(model.blocks) else None
    if attn is not None and (not isinstance(getattr(attn, "q_norm", nn.Identity()), nn.Identity)
                             or not isinstance(getattr(attn, "norm", nn.Identity()), nn.Identity)):
        refusals["heads"] = "attention with q/k norms or a scale norm cannot have heads removed by edgeclip"
    return replace(TIMM_VIT_BLOCK, refusals=refusals) if refusals else TIMM_VIT_BLOCK


def vit_tokens(model: nn.Module) -> tuple[int, int]:
    return int(model.patch_embed.num_patches), int(getattr(model, "num_prefix_tokens", 1))


@register
class TimmViT(TimmFamily):
    name = "timm-vit"
    summary = "timm ViT / DeiT / DINOv2"

    def matches(self, model: nn.Module) -> bool:
        return is_timm_vit(model)

    def vision_tower(self, model: nn.Module) -> Tower:
        return Tower("vision", model, "blocks", vit_layout(model))

    def image_tokens(self, model: nn.Module) -> tuple[int, int]:
        return vit_tokens(model)
