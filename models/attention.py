"""One attention module for every rewrite of ``nn.MultiheadAttention`` edgeclip makes, in two layouts.

``nn.MultiheadAttention`` keeps its q/k/v projection as a bare ``in_proj_weight`` Parameter sliced at run
time, so no compression pass can edit it and no quantizer sees it (torch.ao never quantizes it; in an ONNX
graph it reaches its MatMul through a Split, so onnxruntime leaves it float: a third of a ViT's matmul
FLOPs and weights).  ``ProjectedAttention`` is the same function with plain ``nn.Linear`` projections:

* **fused** (``in_proj``: width -> 3 x heads x head_dim, timm's ``[q; k; v]`` row layout): what compression
  edits -- SVD of the whole projection, head slicing across q, k and v at once.  Self-attention only.
* **split** (``q``, ``k``, ``v``): what every int8 route and XNNPACK need -- separate Linears each quantizer
  sees whole, and no q/k/v slice between XNNPACK partitions (which XNNPACK refuses on a free batch dim).
  Key/value widths may differ from the query's, and key/value may be another sequence (cross-attention).

Both return ``(out, None)`` like ``nn.MultiheadAttention`` with ``need_weights=False``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from edgeclip.errors import EdgeclipError


class ProjectedAttention(nn.Module):
    def __init__(self, out_proj: nn.Module, num_heads: int, head_dim: int, batch_first: bool = True, *,
                 in_proj: nn.Module | None = None, q: nn.Module | None = None, k: nn.Module | None = None,
                 v: nn.Module | None = None):
        super().__init__()
        if (in_proj is None) == (q is None or k is None or v is None):
            raise ValueError("give either in_proj (fused layout) or q, k and v (split layout)")
        self.in_proj = in_proj
        self.q, self.k, self.v = q, k, v
        self.out_proj = out_proj
        self.num_heads, self.head_dim, self.batch_first = num_heads, head_dim, batch_first

    @property
    def fused(self) -> bool:
        return self.in_proj is not None

    @classmethod
    def from_mha(cls, mha: nn.MultiheadAttention, layout: str = "fused") -> "ProjectedAttention":
        """The same function as ``mha`` (``layout`` "fused" or "split"), with copied weights."""
        h, hd = mha.num_heads, mha.embed_dim // mha.num_heads
        if layout == "fused":
            return cls(out_projection(mha), h, hd, mha.batch_first, in_proj=_fused_in_proj(mha))
        if layout != "split":
            raise ValueError(f"layout must be 'fused' or 'split', not {layout!r}")
        q, k, v = split_projections(mha)
        return cls(out_projection(mha), h, hd, mha.batch_first, q=q, k=k, v=v)

    def _heads(self, t: torch.Tensor) -> torch.Tensor:
        b, n, _ = t.shape
        return t.reshape(b, n, self.num_heads, self.head_dim).transpose(1, 2)

    def qkv(self, query: torch.Tensor, key: torch.Tensor | None = None, value: torch.Tensor | None = None):
        """Per-head q, k, v ``[B, heads, N, head_dim]`` (batch-first inputs); the fused layout is self-attention."""
        if self.fused:
            b, n, _ = query.shape
            return self.in_proj(query).reshape(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        key = query if key is None else key
        value = key if value is None else value
        return self._heads(self.q(query)), self._heads(self.k(key)), self._heads(self.v(value))

    def forward(self, query, key=None, value=None, need_weights: bool = False, attn_mask=None, key_padding_mask=None):
        if not self.batch_first:
            query, key, value = (t.transpose(0, 1) if t is not None else None for t in (query, key, value))
        b, n, _ = query.shape
        q, k, v = self.qkv(query, key, value)
        if attn_mask is not None and attn_mask.dtype == torch.bool:
            attn_mask = torch.zeros_like(attn_mask, dtype=q.dtype).masked_fill(attn_mask, float("-inf"))
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
        out = self.out_proj(out.transpose(1, 2).reshape(b, n, self.num_heads * self.head_dim))
        return (out if self.batch_first else out.transpose(0, 1)), None


def _linear(weight: torch.Tensor, bias: torch.Tensor | None) -> nn.Linear:
    lin = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None)
    with torch.no_grad():
        lin.weight.copy_(weight)
        if bias is not None:
            lin.bias.copy_(bias)
    return lin


def out_projection(mha: nn.MultiheadAttention) -> nn.Linear:
    """A copy of ``mha``'s output projection."""
    return _linear(mha.out_proj.weight, mha.out_proj.bias)


def _fused_in_proj(mha: nn.MultiheadAttention) -> nn.Linear:
    if not mha._qkv_same_embed_dim:
        raise EdgeclipError("attention with separate q/k/v widths cannot be compressed by edgeclip "
                            "(only self-attention blocks)")
    return _linear(mha.in_proj_weight, mha.in_proj_bias)


def split_projections(mha: nn.MultiheadAttention) -> tuple[nn.Linear, nn.Linear, nn.Linear]:
    """Copies of ``mha``'s q, k and v projections as three Linears (key/value widths may differ)."""
    weights = (mha.in_proj_weight.chunk(3) if mha._qkv_same_embed_dim
               else (mha.q_proj_weight, mha.k_proj_weight, mha.v_proj_weight))
    biases = mha.in_proj_bias.chunk(3) if mha.in_proj_bias is not None else (None, None, None)
    q, k, v = (_linear(w, b) for w, b in zip(weights, biases))
    return q, k, v
