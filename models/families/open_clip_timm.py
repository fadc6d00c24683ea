"""open_clip CLIP whose image tower is a timm ViT trunk (``visual.trunk``): SigLIP and SigLIP2.

The vision blocks are timm blocks (``qkv`` / ``proj`` / ``fc1`` / ``fc2``), the text blocks open_clip
ones; the trunk pools with an attention-pool (MAP) head and has no class token, so token reduction is
refused.  The zero-shot head (sigmoid logit scale + bias) is the wrapper's concern, not compression's.
"""

from __future__ import annotations

from torch import nn

from .base import Tower, register
from .open_clip_vit import OpenClipFamily
from .timm_vit import is_timm_vit, vit_layout, vit_tokens


@register
class OpenClipTimmViT(OpenClipFamily):
    name = "open_clip-timm-vit"
    summary = "open_clip CLIP with a timm ViT trunk (SigLIP / SigLIP2)"

    def matches(self, model: nn.Module) -> bool:
        return hasattr(model, "encode_text") and is_timm_vit(getattr(getattr(model, "visual", None), "trunk", None))

    def vision_tower(self, model: nn.Module) -> Tower:
        return Tower("vision", model.visual.trunk, "blocks", vit_layout(model.visual.trunk))

    def image_tokens(self, model: nn.Module) -> tuple[int, int]:
        return vit_tokens(model.visual.trunk)
