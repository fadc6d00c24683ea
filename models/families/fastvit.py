"""timm ``FastVit`` (FastViT, and the MCi image towers of Apple's MobileCLIP / MobileCLIP2 in open_clip).

A hybrid: convolutional RepMixer stages, then one (MCi0-2) or two (MCi3-4) attention stages.  Two things
differ from a ViT:

* **Reparameterization before export.**  MobileOne / RepMixer / RepCPE blocks train with parallel
  branches (several convolutions + BatchNorms + identity) that fold into one convolution each.  Exported
  unfolded, the file runs every branch; ``patch_for_export`` folds them in a copy (timm's own
  ``reparameterize()`` per block), and the manifest says so.  The fidelity gate then compares the
  folded export against the unfolded eager model, so a wrong fold cannot ship.
* **Compression only in the last attention stage** (the "vision" tower): its blocks are the transformer
  blocks; block pruning and SVD of ``qkv`` / ``proj`` apply there.  The MLP is two 1x1 convolutions
  (``ConvMlp``), the feature map is 2-D with no class token, so SVD of the MLP, neuron and head pruning
  and token reduction are refused with those reasons.  MCi3/4's earlier attention stage is left as is.
"""

from __future__ import annotations

from torch import nn

from .base import BlockLayout, TimmFamily, Tower, register
from .open_clip_vit import OpenClipFamily

REFUSALS = {
    "fc1": "FastViT's MLP is 1x1 convolutions (ConvMlp); SVD factorises Linear layers",
    "fc2": "FastViT's MLP is 1x1 convolutions (ConvMlp); SVD factorises Linear layers",
    "mlp": "FastViT's MLP is 1x1 convolutions (ConvMlp); neuron pruning is implemented for Linear MLPs",
    "heads": "FastViT attention has a fixed head size over a 2-D feature map; head removal is not implemented",
    "tokens": "FastViT attention runs on a 2-D feature map with no class token; token reduction needs a token sequence",
}

# norm2 does not exist (the MLP has its own depthwise conv + BN); parts only serve token reduction, refused here
ATTENTION_BLOCK = BlockLayout(linears={"attn_in": ("token_mixer.qkv",), "attn_out": ("token_mixer.proj",)},
                              parts=("norm", "token_mixer", "layer_scale_1", "", "mlp", "layer_scale_2"),
                              refusals=dict(REFUSALS))


def is_fastvit(model: nn.Module | None) -> bool:
    try:
        from timm.models.fastvit import FastVit
    except ImportError:
        return False
    return isinstance(model, FastVit)


def attention_tower(trunk: nn.Module) -> Tower:
    """The last stage whose blocks are attention blocks (MCi: the last stage)."""
    from timm.models.fastvit import AttentionBlock

    stages = [s for s in trunk.stages if len(s.blocks) and isinstance(s.blocks[0], AttentionBlock)]
    if not stages:
        from edgeclip.errors import EdgeclipError
        raise EdgeclipError("this FastViT has no attention stage; edgeclip compresses only FastViT attention stages")
    return Tower("vision", stages[-1], "blocks", ATTENTION_BLOCK)


def reparameterize(model: nn.Module) -> list[str]:
    """Fold every re-parameterizable block of ``model`` in place (timm's ``reparameterize_model``, which
    also folds nested blocks in the right order); returns the manifest note."""
    from timm.models import reparameterize_model

    counts: dict[str, int] = {}
    for module in model.modules():
        folded = getattr(module, "reparam_conv", None) is not None or getattr(module, "inference_mode", False)
        if hasattr(module, "reparameterize") and not folded:
            counts[type(module).__name__] = counts.get(type(module).__name__, 0) + 1
    if not counts:
        return []
    reparameterize_model(model, inplace=True)
    what = ", ".join(f"{n} {k}" for k, n in sorted(counts.items()))
    return [f"FastViT train-time branches folded into single convolutions before export (timm reparameterize_model: {what})"]


def _patch_tokens(trunk: nn.Module) -> tuple[int, int]:
    from edgeclip.errors import EdgeclipError
    raise EdgeclipError("FastViT has no token sequence (2-D feature maps); token reduction does not apply")


@register
class OpenClipFastViT(OpenClipFamily):
    name = "open_clip-fastvit"
    summary = "open_clip MobileCLIP / MobileCLIP2 (FastViT MCi image tower)"

    def matches(self, model: nn.Module) -> bool:
        return hasattr(model, "encode_text") and is_fastvit(getattr(getattr(model, "visual", None), "trunk", None))

    def vision_tower(self, model: nn.Module) -> Tower:
        return attention_tower(model.visual.trunk)

    def image_tokens(self, model: nn.Module) -> tuple[int, int]:
        return _patch_tokens(model.visual.trunk)

    def patch_for_export(self, model: nn.Module) -> list[str]:
        return reparameterize(model.visual.trunk)


@register
class TimmFastViT(TimmFamily):
    name = "timm-fastvit"
    summary = "timm FastViT"

    def matches(self, model: nn.Module) -> bool:
        return is_fastvit(model)

    def vision_tower(self, model: nn.Module) -> Tower:
        return attention_tower(model)

    def image_tokens(self, model: nn.Module) -> tuple[int, int]:
        return _patch_tokens(model)

    def patch_for_export(self, model: nn.Module) -> list[str]:
        return reparameterize(model)
