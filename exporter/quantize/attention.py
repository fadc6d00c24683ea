"""The attention rewrite every int8 route and the .pte writer apply before export.

Each ``nn.MultiheadAttention`` becomes ``ProjectedAttention`` in its split layout (models/attention.py): the
same function with separate q/k/v Linears, so every quantizer sees every projection (the fused
``in_proj_weight`` stays float in torch.ao and, behind a Split, in onnxruntime's quantizers) and XNNPACK gets
no q/k/v slice between its partitions.  Numerically the same model (checked in tests).
"""

from __future__ import annotations

import copy

from torch import nn

from edgeclip.models.attention import ProjectedAttention, out_projection, split_projections


class SplitAttention(ProjectedAttention):
    """``ProjectedAttention`` in the split layout, built from an ``nn.MultiheadAttention`` (self or cross
    attention, no dropout)."""

    def __init__(self, mha: nn.MultiheadAttention):
        q, k, v = split_projections(mha)
        super().__init__(out_projection(mha), mha.num_heads, mha.embed_dim // mha.num_heads, mha.batch_first, q=q, k=k, v=v)


def split_attention(module: nn.Module) -> nn.Module:
    """A copy of ``module`` with every ``nn.MultiheadAttention`` replaced by its split-layout rewrite."""
    module = copy.deepcopy(module).eval()
    for name, child in list(module.named_modules()):
        for attr, sub in list(child.named_children()):
            if isinstance(sub, nn.MultiheadAttention):
                setattr(child, attr, SplitAttention(sub))
    return module
