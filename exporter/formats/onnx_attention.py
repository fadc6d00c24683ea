"""Attention exported as onnxruntime's fused ``com.microsoft.MultiHeadAttention`` op.

Why: a torch-dynamo ONNX export spells each attention as Transpose / Reshape / MatMul / Mul / Softmax /
MatMul / Transpose, and no onnxruntime fusion pattern matches that graph (see ``onnx_optimize``).  Instead of
pattern-matching the exported graph, attention is *traced* as one op: while exporting,
``F.scaled_dot_product_attention`` calls with no mask, no dropout and equal head sizes go through
``edgeclip::multi_head_attention`` (q, k, v as [batch, tokens, heads * head_dim]), which the ONNX translation
writes as ``MultiHeadAttention(q, k, v, num_heads, scale)``.  Eager and traced the op calls SDPA, so the fp32
function is unchanged (max abs error vs eager the same as without it).

What it buys (benchmarks/README.md, "Fused attention"): nothing at ViT-B-32's 50 tokens, where onnxruntime's
profiler blamed 10.8 % of int8 kernel time on Transposes but end-to-end latency did not move; int8 1.16x on
ViT-B-16 (197 tokens) and 1.05-1.27x on the 65-token fixture.  Hence opt-in (``--fused-attention``).

Cost: the file needs onnxruntime (a contrib op), like every fused file ``onnx_optimize`` writes.  Calls with a
mask (CLIP's causal text tower) or anything else the contrib op does not express stay as they were.
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F

from . import sdpa_replaced_by

OP_NAME = "edgeclip::multi_head_attention"
_SDPA = F.scaled_dot_product_attention   # the op's own kernel, whatever the tracing swap below puts in F


@torch.library.custom_op(OP_NAME, mutates_args=())
def multi_head_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, num_heads: int, scale: float) -> torch.Tensor:
    """softmax(q k^T * scale) v per head; q, k, v and the result are [batch, tokens, num_heads * head_dim]."""
    b, sq, _ = q.shape
    sk = k.shape[1]
    heads = [t.reshape(b, n, num_heads, -1).transpose(1, 2) for t, n in ((q, sq), (k, sk), (v, sk))]
    out = _SDPA(*heads, scale=scale)
    return out.transpose(1, 2).reshape(b, sq, -1)


@multi_head_attention.register_fake
def _(q, k, v, num_heads, scale):
    return q.new_empty(q.shape[0], q.shape[1], v.shape[2])


def _contrib_schema():
    """The part of onnxruntime's ``com.microsoft::MultiHeadAttention`` schema used here (onnx's registry has no
    contrib ops, and torch's ONNX builder needs a schema to bind inputs and attributes)."""
    from onnx.defs import OpSchema

    param = OpSchema.FormalParameter
    return OpSchema("MultiHeadAttention", "com.microsoft", 1,
                    inputs=[param("query", "T"), param("key", "T"), param("value", "T")],
                    outputs=[param("output", "T")],
                    type_constraints=[("T", ["tensor(float)", "tensor(float16)"], "")],
                    attributes=[OpSchema.Attribute("num_heads", OpSchema.AttrType.INT, "heads"),
                                OpSchema.Attribute("scale", OpSchema.AttrType.FLOAT, "score scale")])


def _onnx_multi_head_attention(q, k, v, num_heads: int, scale: float):
    from onnxscript import values

    op = values.Op(values.Opset("com.microsoft", 1), "MultiHeadAttention", _contrib_schema())
    return op(q, k, v, num_heads=num_heads, scale=scale)


def translation_table() -> dict:
    """``custom_translation_table`` for ``torch.onnx.export``: the op above as the contrib op."""
    return {torch.ops.edgeclip.multi_head_attention.default: _onnx_multi_head_attention}


def fused_attention_facts(path) -> dict:
    """What the manifest says: how many attentions became the contrib op, and what the file then needs."""
    import onnx

    n = sum(node.op_type == "MultiHeadAttention" and node.domain == "com.microsoft"
            for node in onnx.load(str(path), load_external_data=False).graph.node)
    if not n:
        return {"layers": 0, "note": "no attention call could be fused (masked, causal or none); the file is plain ONNX"}
    return {"op": "com.microsoft.MultiHeadAttention", "layers": n, "runtime": "needs onnxruntime (a contrib op)"}


@contextlib.contextmanager
def attention_as_contrib_op():
    """While tracing, SDPA calls the contrib op can express go through ``multi_head_attention``; others are kept.

    Process-wide for the export's duration (``formats.sdpa_replaced_by``): export from one thread."""
    original = F.scaled_dot_product_attention

    def sdpa(q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False):
        plain = (attn_mask is None and dropout_p == 0.0 and not is_causal and not enable_gqa and q.dim() == 4
                 and q.shape[1] == k.shape[1] == v.shape[1] and q.shape[-1] == k.shape[-1] == v.shape[-1])
        if not plain:
            return original(q, k, v, attn_mask=attn_mask, dropout_p=dropout_p, is_causal=is_causal, scale=scale,
                            enable_gqa=enable_gqa)
        b, h, sq, d = q.shape
        s = float(scale) if scale is not None else d ** -0.5
        flat = [t.transpose(1, 2).reshape(b, t.shape[2], h * d) for t in (q, k, v)]
        out = torch.ops.edgeclip.multi_head_attention(*flat, h, s)
        return out.reshape(b, sq, h, d).transpose(1, 2)

    with sdpa_replaced_by(sdpa):
        yield
