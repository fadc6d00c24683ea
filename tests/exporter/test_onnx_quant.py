"""Static QDQ int8 and transformer fusions on a tiny random CLIP: graph structure and numerics (plumbing only;
accuracy on real images is measured on the shared fixture, not here)."""

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from edgeclip.errors import EdgeclipError
from edgeclip.exporter.fidelity import cosine_rows
from edgeclip.exporter.formats.onnx import export_onnx
from edgeclip.exporter.formats.onnx_optimize import optimize_onnx
from edgeclip.exporter.quantize.onnxruntime_static import (CALIBRATIONS, OrtStaticConfig, activation_matmuls,
                                                           quantize_onnx_static, sensitive_nodes)
from edgeclip.models.datasets import load_dataset
from edgeclip.pipeline import prepare

INPUT = "pixel_values"


@pytest.fixture(scope="module")
def tiny(tiny_clip_dir, tiny_images, tmp_path_factory):
    ds = load_dataset(tiny_images)
    prep = prepare(str(tiny_clip_dir), data=ds)
    x = ds.tensors(prep.preprocess).numpy()
    d = tmp_path_factory.mktemp("onnx_quant")
    export_onnx(prep.module, torch.from_numpy(x[:2]), d / "fp32.onnx", INPUT, "logits")
    return d, x


def _run(path, x):
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, {INPUT: x})[0]


def _graph(path):
    return onnx.load(str(path)).graph


def _producers(graph):
    return {o: n for n in graph.node for o in n.output}


def _reads_dequantized(node, producer):
    return all(x in producer and producer[x].op_type == "DequantizeLinear" for x in node.input[:2])


def _attention_matmuls(g):
    """MatMuls whose B is computed, neither a weight nor a dequantized weight."""
    producer, inits = _producers(g), {i.name for i in g.initializer}
    return {n.name for n in g.node if n.op_type == "MatMul" and n.input[1] not in inits
            and not (n.input[1] in producer and producer[n.input[1]].op_type == "DequantizeLinear"
                     and producer[n.input[1]].input[0] in inits)}


def test_static_qdq_wraps_matmuls_and_keeps_norms_float(tiny):
    d, x = tiny
    info = quantize_onnx_static(d / "fp32.onnx", d / "minmax.onnx", x, INPUT, OrtStaticConfig())
    g = _graph(d / "minmax.onnx")
    producer = _producers(g)
    attention = _attention_matmuls(g)
    assert attention == set(activation_matmuls(onnx.load(str(d / "fp32.onnx")))) and len(attention) == 4   # 2 blocks x (QK, AV)
    weight_matmuls = [n for n in g.node if n.op_type == "MatMul" and n.name not in attention]
    assert weight_matmuls and all(_reads_dequantized(n, producer) for n in weight_matmuls)
    # the weight side really is int8: DequantizeLinear of an int8 initializer, one scale per output channel
    inits = {i.name: i for i in g.initializer}
    dq_w = producer[weight_matmuls[0].input[1]]
    assert inits[dq_w.input[0]].data_type == onnx.TensorProto.INT8 and len(inits[dq_w.input[1]].dims) == 1
    assert any(n.op_type == "QuantizeLinear" for n in g.node)
    # LayerNorm / Softmax / attention-score MatMuls compute in float: nothing dequantized feeds them
    for n in g.node:
        if n.op_type in ("LayerNormalization", "Softmax") or n.name in attention:
            assert not any(producer.get(i) is not None and producer[i].op_type == "DequantizeLinear" for i in n.input), n.name
    assert sum(n.op_type == "LayerNormalization" for n in g.node) >= 2 and any(n.op_type == "Softmax" for n in g.node)
    assert {"LayerNormalization", "Softmax"} <= set(info["op_types_kept_float"])
    assert set(info["op_types_quantized"]) == {"MatMul", "Gemm", "Conv"} and info["format"] == "QDQ"
    assert info["activation_type"] == "uint8" and info["weight_type"] == "int8" and info["per_channel"]
    assert info["int8_nodes"]["MatMul"] == len(weight_matmuls) and info["calibration"]["images"] == len(x)
    cos = cosine_rows(_run(d / "fp32.onnx", x), _run(d / "minmax.onnx", x))
    assert cos.mean() > 0.98


def weight_matmul_inputs(path) -> set[str]:
    g = _graph(path)
    inits = {i.name for i in g.initializer}
    return {n.input[0] for n in g.node if n.op_type in ("MatMul", "Gemm") and n.input[1] in inits}


@pytest.mark.parametrize("method", [m for m in CALIBRATIONS if m != "minmax"])
def test_each_calibration_method(tiny, method):
    d, x = tiny
    out = d / f"{method}.onnx"
    info = quantize_onnx_static(d / "fp32.onnx", out, x, INPUT, OrtStaticConfig(calibration=method, batch_size=5))
    assert info["calibration"]["method"] == method and info["calibration"]["images"] == len(x)
    assert info["int8_nodes"].get("MatMul", 0) > 0 and info["qdq_nodes"]["DequantizeLinear"] > 0
    if method == "percentile":
        assert info["calibration"]["percentile"] == 99.999
    if method == "auto":    # every calibrated tensor got the candidate with its lowest measured error, and says so
        per_tensor = info["calibration"]["per_tensor"]
        assert per_tensor and sum(info["calibration"]["chosen"].values()) == len(per_tensor)
        for t in per_tensor.values():
            assert t["mse"][t["method"]] == min(t["mse"].values()) and set(t["mse"]) == {"minmax", "percentile", "entropy", "mse"}
        # the inputs of the weight MatMuls are scored by the error that reaches their outputs
        assert sum(t["error"] == "output-weighted" for t in per_tensor.values()) >= len(weight_matmul_inputs(d / "fp32.onnx"))
    assert cosine_rows(_run(d / "fp32.onnx", x), _run(out, x)).mean() > 0.95


def test_sensitive_nodes_can_be_kept_float(tiny):
    d, x = tiny
    ranked = sensitive_nodes(d / "fp32.onnx", x, INPUT, OrtStaticConfig(), top_k=2, eval_images=8)
    assert len(ranked) == 2 and ranked[0][1] >= ranked[1][1] >= 0
    keep = tuple(name for name, _ in ranked)
    info = quantize_onnx_static(d / "fp32.onnx", d / "excl.onnx", x, INPUT, OrtStaticConfig(exclude_nodes=keep))
    assert info["excluded_nodes"] == list(keep)
    g = _graph(d / "excl.onnx")
    producer = _producers(g)
    nodes = {n.name: n for n in g.node}
    inits = {i.name: i for i in g.initializer}
    for name in keep:   # float node: neither input dequantized, the weight a float initializer
        node = nodes[name]
        assert not any(producer.get(i) is not None and producer[i].op_type == "DequantizeLinear" for i in node.input)
        assert inits[node.input[1]].data_type == onnx.TensorProto.FLOAT
    others = [n for n in g.node if n.op_type in ("MatMul", "Gemm") and n.name not in keep and n.name not in _attention_matmuls(g)]
    assert others and all(_reads_dequantized(n, producer) for n in others)


def test_optimized_graph_matches_and_still_quantizes(tiny):
    d, x = tiny
    info = optimize_onnx(d / "fp32.onnx", d / "opt.onnx", model_type="vit", check_inputs=x)
    assert info["check"]["max_abs_err"] < 1e-4
    assert np.abs(_run(d / "fp32.onnx", x) - _run(d / "opt.onnx", x)).max() < 1e-4
    assert info["fused"].get("SkipLayerNormalization", 0) > 0 and info["fused"].get("BiasGelu", 0) > 0
    assert info["nodes_after"] < info["nodes_before"] and not info["attention_fused"] and info["notes"]
    # the fused graph (com.microsoft ops) quantizes as many MatMuls as the plain one
    plain = quantize_onnx_static(d / "fp32.onnx", d / "q_plain.onnx", x, INPUT, OrtStaticConfig())
    fused = quantize_onnx_static(d / "opt.onnx", d / "q_opt.onnx", x, INPUT, OrtStaticConfig())
    assert fused["int8_nodes"] == plain["int8_nodes"]
    assert cosine_rows(_run(d / "q_plain.onnx", x), _run(d / "q_opt.onnx", x)).mean() > 0.98


@pytest.mark.parametrize("bad", [np.zeros((4, 3, 16, 16), np.float32), np.zeros((3, 32, 32), np.float32),
                                 np.zeros((4, 3, 32, 32), np.uint8), np.zeros((0, 3, 32, 32), np.float32)])
def test_wrong_calibration_is_a_clear_error(tiny, bad, tmp_path):
    d, _ = tiny
    with pytest.raises(EdgeclipError) as e:
        quantize_onnx_static(d / "fp32.onnx", tmp_path / "q.onnx", bad, INPUT, OrtStaticConfig())
    msg = str(e.value)
    assert "\n" not in msg and "calibration" in msg and "[N, 3, 32, 32]" in msg
    assert not (tmp_path / "q.onnx").exists()


def test_config_and_names_are_checked(tiny, tmp_path):
    d, x = tiny
    with pytest.raises(EdgeclipError, match="unknown calibration"):
        OrtStaticConfig(calibration="kl")
    with pytest.raises(EdgeclipError, match="no input"):
        quantize_onnx_static(d / "fp32.onnx", tmp_path / "q.onnx", x, "image", OrtStaticConfig())
    with pytest.raises(EdgeclipError, match="exclude_nodes not in the graph"):
        quantize_onnx_static(d / "fp32.onnx", tmp_path / "q.onnx", x, INPUT, OrtStaticConfig(exclude_nodes=("nope",)))


def test_dynamic_weights_are_7_bit_so_pre_vnni_x86_does_not_saturate(tiny, tmp_path):
    """Full-range s8 weights times u8 activations overflow the int16 pair sums of AVX2's vpmaddubsw (seen: cosine
    0.975 on an AVX2-only EPYC); 7-bit weights cannot, whatever CPU the file later runs on."""
    from edgeclip.exporter.quantize.onnxruntime_dynamic import quantize_onnx_dynamic

    d, x = tiny
    info = quantize_onnx_dynamic(d / "fp32.onnx", tmp_path / "dyn.onnx")
    assert info["reduce_range"] is True and info["per_channel"] is True
    weights = [onnx.numpy_helper.to_array(i) for i in _graph(tmp_path / "dyn.onnx").initializer
               if i.data_type == onnx.TensorProto.INT8 and len(i.dims) == 2]
    assert weights and max(int(np.abs(w.astype(np.int32)).max()) for w in weights) <= 64
    ref, got = _run(d / "fp32.onnx", x), _run(tmp_path / "dyn.onnx", x)
    assert cosine_rows(ref, got).min() >= 0.99
