"""int8 token tables: the int8 text encoder stores its embedding table as per-row int8 in every format."""

import numpy as np
import pytest
import torch

import edgeclip
from edgeclip.exporter.quantize.embedding import RowwiseInt8Embedding, int8_embeddings


def test_rowwise_int8_table_is_close_and_small():
    torch.manual_seed(0)
    emb = torch.nn.Embedding(1000, 64)
    with torch.no_grad():
        emb.weight[7] *= 100                      # one loud row must not cost the others their precision
    q = RowwiseInt8Embedding(emb.weight)
    ids = torch.randint(0, 1000, (4, 9))
    ref, got = emb(ids), q(ids)
    rel = (got - ref).abs().amax(-1) / ref.abs().amax(-1)
    assert got.shape == ref.shape and float(rel.max()) <= 0.5 / 127 + 1e-6
    assert q.weight_int8.dtype == torch.int8 and q.scale.shape == (1000, 1)
    model, info = int8_embeddings(torch.nn.Sequential(emb))
    assert isinstance(model[0], RowwiseInt8Embedding) and isinstance(emb, torch.nn.Embedding)   # the input is not changed
    assert info["embeddings"]["bytes_after"] < 0.3 * info["embeddings"]["bytes_before"]


@pytest.fixture(scope="module")
def text_encoders(tiny_clip_dir, tiny_images, tmp_path_factory):
    out = tmp_path_factory.mktemp("text")
    fp32 = edgeclip.export(str(tiny_clip_dir), task="text-encoder", data=tiny_images, out=str(out), verify_size=24)[0]
    int8 = edgeclip.export(str(tiny_clip_dir), task="text-encoder", quant="int8", formats=("onnx", "ptl", "pte"),
                           data=tiny_images, out=str(out), verify_size=24)
    return fp32, {a.format: a for a in int8}


@pytest.mark.parametrize("fmt", ["onnx", "ptl", "pte"])
def test_int8_text_encoder_quantizes_the_token_table(text_encoders, fmt):
    fp32, int8 = text_encoders
    art = int8[fmt]
    ratio = art.manifest["file"]["bytes"] / fp32.manifest["file"]["bytes"]
    assert ratio <= 0.35, f"{fmt}: {ratio:.3f}x of the fp32 file (the token table stayed float?)"
    assert art.manifest["quantization"]["embeddings"]["int8_tables"] == ["token_embedding"]
    assert art.manifest["fidelity"]["mean_cosine"] >= 0.99 and "real captions" in art.manifest["fidelity"]["inputs"]


def test_int8_onnx_gathers_int8_rows(text_encoders):
    import onnx

    _, int8 = text_encoders
    g = onnx.load(str(int8["onnx"].file)).graph
    big = [i for i in g.initializer if np.prod(i.dims) >= 49408 * 32]
    assert [onnx.TensorProto.DataType.Name(i.data_type) for i in big] == ["INT8"]
    assert any(n.op_type == "Gather" and big[0].name in n.input for n in g.node)
