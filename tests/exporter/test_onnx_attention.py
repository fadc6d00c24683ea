"""Attention as onnxruntime's MultiHeadAttention contrib op (``--fused-attention``): same function, fewer ops."""

from collections import Counter

import numpy as np
import onnx
import pytest
import torch
import torch.nn.functional as F

import edgeclip
from edgeclip.errors import EdgeclipError
from edgeclip.exporter.formats.onnx_attention import attention_as_contrib_op, multi_head_attention
from edgeclip.runtimes import load


def _ops(path) -> Counter:
    return Counter(f"{n.domain}::{n.op_type}" if n.domain else n.op_type for n in onnx.load(str(path)).graph.node)


def test_the_op_is_sdpa_per_head():
    torch.manual_seed(0)
    b, heads, sq, sk, d = 2, 3, 5, 7, 4
    q, k, v = torch.randn(b, heads, sq, d), torch.randn(b, heads, sk, d), torch.randn(b, heads, sk, d)
    flat = [t.transpose(1, 2).reshape(b, t.shape[2], heads * d) for t in (q, k, v)]
    got = multi_head_attention(*flat, heads, 0.3).reshape(b, sq, heads, d).transpose(1, 2)
    torch.testing.assert_close(got, F.scaled_dot_product_attention(q, k, v, scale=0.3))
    # the tracing swap routes plain calls through the op and leaves masked ones alone
    causal = F.scaled_dot_product_attention(q, k[:, :, :sq], v[:, :, :sq], is_causal=True)
    with attention_as_contrib_op():
        torch.testing.assert_close(F.scaled_dot_product_attention(q, k, v, scale=0.3), got)
        torch.testing.assert_close(F.scaled_dot_product_attention(q, k[:, :, :sq], v[:, :, :sq], is_causal=True), causal)


@pytest.fixture(scope="module")
def fused_pair(tiny_clip_dir, tiny_images, tmp_path_factory):
    out = tmp_path_factory.mktemp("fused")
    common = dict(data=tiny_images, out=str(out), verify_size=18, fused_attention=True)
    fp32, = edgeclip.export(str(tiny_clip_dir), **common)
    # random weights: the 3 logits tie, so int8 top-1 agreement is noise here (see test_export_onnx)
    int8, = edgeclip.export(str(tiny_clip_dir), quant="int8", min_agreement=0.0, **common)
    text, = edgeclip.export(str(tiny_clip_dir), task="text-encoder", **common)
    return fp32, int8, text


def test_image_tower_attention_is_one_contrib_op_per_block_and_the_same_function(fused_pair):
    fp32, int8, _ = fused_pair
    for art in (fp32, int8):
        ops = _ops(art.file)
        assert ops["com.microsoft::MultiHeadAttention"] == 2       # the tiny CLIP's two vision blocks
        assert ops["Softmax"] == 0                                 # the unfused spelling is gone
        facts = art.manifest["quantization"]["fused_attention"]
        assert facts == {"op": "com.microsoft.MultiHeadAttention", "layers": 2, "runtime": "needs onnxruntime (a contrib op)"}
    assert fp32.manifest["fidelity"]["max_abs_err"] < 1e-4 and fp32.manifest["fidelity"]["top1_agreement"] == 1.0
    assert int8.manifest["fidelity"]["mean_cosine"] > 0.999        # int8 linears around a float attention op
    # the exporter's per-node stack traces do not ship in the quantized file (they were 0.3 MB of the fixture's 3.2)
    assert not any(n.metadata_props or n.doc_string for n in onnx.load(str(int8.file)).graph.node)


def test_causal_text_attention_is_left_as_it_was(fused_pair, tiny_clip_dir, tiny_images):
    """The contrib op has no causal flag here: a masked call must keep its mask (fused blindly, the text tower would
    attend to future tokens and its embeddings would move)."""
    _, _, text = fused_pair
    assert "com.microsoft::MultiHeadAttention" not in _ops(text.file)
    assert text.manifest["quantization"]["fused_attention"]["layers"] == 0
    assert text.manifest["fidelity"]["max_abs_err"] < 1e-4


def test_fused_file_runs_any_batch(fused_pair):
    fp32, _, _ = fused_pair
    sess = load(fp32, threads=1)
    x = np.random.default_rng(0).random((5, 3, 32, 32), dtype=np.float32)
    np.testing.assert_allclose(sess.run(x[:1]), sess.run(x)[:1], atol=1e-4)


def test_refused_for_formats_without_it(tiny_clip_dir, tmp_path):
    with pytest.raises(EdgeclipError, match="add --format onnx"):
        edgeclip.export(str(tiny_clip_dir), formats=("pte",), fused_attention=True, out=str(tmp_path / "o"))
    assert not (tmp_path / "o").exists()
