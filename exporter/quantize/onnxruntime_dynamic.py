"""onnxruntime dynamic int8: weights int8 (per output channel), activations quantized at run time.

The cheapest int8 route: no calibration data, weights shrink ~4x, and MatMul runs on int8
kernels (MatMulInteger / DynamicQuantizeMatMul).  LayerNorm, Softmax and GELU stay float.
Per-channel weights are on by default because one scale per tensor loses the small channels of
ViT projections; ``per_channel=False, reduce_range=False`` reproduces onnxruntime's default (the naive peer).

Weights are 7-bit (``reduce_range=True``) by default because the file may run on any x86 CPU.
onnxruntime's int8 GEMM on AVX2 CPUs without VNNI multiplies u8 activations by s8 weights with
``vpmaddubsw``, whose int16 pair sums saturate when both use their full range; per-channel scales
put every channel at full range.  Measured on a 2-core AMD EPYC with AVX2 and no AVX-512/VNNI
(2026-12-02), tiny text encoder, 8 real captions, cosine vs fp32: per-channel 8-bit 0.9748,
per-channel 7-bit 0.9994, per-tensor 8-bit 0.9997.  On VNNI and ARM there is no saturation and
the 7th bit costs only weight resolution (what ``reduce_range=False`` buys back): on a Xeon with
AVX-512 VNNI and AMX (2026-12-02), tiny random CLIP, 18 images, cosine vs fp32 for 8-bit / 7-bit
per-channel: image encoder 0.99993 / 0.99978, text encoder 0.99965 / 0.99932, i.e. small; a file
that saturates on a user's pre-VNNI laptop is the larger risk.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class OrtDynamicConfig:
    per_channel: bool = True
    reduce_range: bool = True        # 7-bit weights: no int16 saturation on pre-VNNI x86 (see above)
    op_types: tuple[str, ...] = ("MatMul", "Gemm")
    preprocess: bool = True          # shape inference + graph optimisation before quantizing (ORT's advice)
    exclude_nodes: tuple[str, ...] = ()   # node names kept float (accuracy control)


def quantize_onnx_dynamic(fp32_path: Path, out_path: Path, config: OrtDynamicConfig = OrtDynamicConfig()) -> dict:
    """Quantize ``fp32_path`` into ``out_path``; returns what was quantized, for the manifest."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.shape_inference import quant_pre_process

    src = Path(fp32_path)
    with tempfile.TemporaryDirectory(dir=Path(out_path).parent) as tmp:
        if config.preprocess:
            pre = Path(tmp) / "pre.onnx"
            quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
            src = pre
        quantize_dynamic(str(src), str(out_path), op_types_to_quantize=list(config.op_types),
                         per_channel=config.per_channel, reduce_range=config.reduce_range, weight_type=QuantType.QInt8,
                         nodes_to_exclude=list(config.exclude_nodes))
    graph = onnx.load(str(out_path), load_external_data=False).graph
    ops: dict[str, int] = {}
    for node in graph.node:
        ops[node.op_type] = ops.get(node.op_type, 0) + 1
    int8_ops = {k: v for k, v in ops.items() if k in ("MatMulInteger", "DynamicQuantizeMatMul", "ConvInteger", "DynamicQuantizeLinear")}
    float_ops = {k: v for k, v in ops.items() if k in ("MatMul", "Gemm", "LayerNormalization", "Softmax", "Gelu", "Conv")}
    return {"method": "onnxruntime.quantization.quantize_dynamic", "weight_type": "int8",
            "per_channel": config.per_channel, "reduce_range": config.reduce_range, "op_types": list(config.op_types),
            "int8_ops": int8_ops, "float_ops": float_ops, "excluded_nodes": list(config.exclude_nodes)}
