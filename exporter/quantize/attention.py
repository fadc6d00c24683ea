"""A quantization-friendly rewrite of ``nn.MultiheadAttention``, shared by every int8 route.

MHA keeps its fused q/k/v projection as a bare ``in_proj_weight`` Parameter that is sliced at run time:
torch.ao never quantizes it, and in an exported ONNX graph the weight reaches its MatMul through a Split,
so onnxruntime's quantizers leave it float too -- a third of a ViT's matmul FLOPs and weights.  Splitting
it into four ``nn.Linear`` is numerically the same model (checked in tests) and lets every quantizer see
every projection.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn


class SplitAttention(nn.Module):
    """Drop-in for ``nn.MultiheadAttention`` (self/cross attention, no dropout) with separate q/k/v Linears."""

    def __init__(self, mha: nn.MultiheadAttention):
        super().__init__()
        d, h = mha.embed_dim, mha.num_heads
        self.num_heads, self.batch_first = h, mha.batch_first
        self.q, self.k, self.v = (nn.Linear(d, d, bias=mha.in_proj_bias is not None) for _ in range(3))
        with torch.no_grad():
            if mha._qkv_same_embed_dim:
                wq, wk, wv = mha.in_proj_weight.chunk(3)
            else:
                wq, wk, wv = mha.q_proj_weight, mha.k_proj_weight, mha.v_proj_weight
            for lin, w in zip((self.q, self.k, self.v), (wq, wk, wv)):
                lin.weight.copy_(w)
            if mha.in_proj_bias is not None:
                for lin, b in zip((self.q, self.k, self.v), mha.in_proj_bias.chunk(3)):
                    lin.bias.copy_(b)
        self.out_proj = nn.Linear(d, d, bias=mha.out_proj.bias is not None)
        self.out_proj.load_state_dict(mha.out_proj.state_dict())

    def forward(self, query, key, value, need_weights: bool = False, attn_mask=None, key_padding_mask=None):
        if not self.batch_first:
            query, key, value = (t.transpose(0, 1) for t in (query, key, value))
        b, n, d = query.shape
        hd = d // self.num_heads

        def heads(t):
            return t.reshape(b, t.shape[1], self.num_heads, hd).transpose(1, 2)

        q, k, v = heads(self.q(query)), heads(self.k(key)), heads(self.v(value))
        if attn_mask is not None and attn_mask.dtype == torch.bool:
            attn_mask = torch.zeros_like(attn_mask, dtype=q.dtype).masked_fill(attn_mask, float("-inf"))
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
        out = self.out_proj(out.transpose(1, 2).reshape(b, n, d))
        if not self.batch_first:
            out = out.transpose(0, 1)
        return out, None


def split_attention(module: nn.Module) -> nn.Module:
    """A copy of ``module`` with every ``nn.MultiheadAttention`` replaced by ``SplitAttention``."""
    module = copy.deepcopy(module).eval()
    for name, child in list(module.named_modules()):
        for attr, sub in list(child.named_children()):
            if isinstance(sub, nn.MultiheadAttention):
                setattr(child, attr, SplitAttention(sub))
    return module
