"""onnxruntime int4 weights: every weight MatMul becomes ``MatMulNBits`` (4-bit weights, one fp32 scale and
zero point per ``block_size`` input rows), with ``accuracy_level`` 4 so the CPU EP quantizes activations to int8
at run time and multiplies on int8 kernels (the 8-bit-activation / 4-bit-weight scheme torchao calls 8da4w).
About 5 bits per weight with block 32 (4.5 with 64): the smallest file edgeclip writes for transformer towers.
The patch-embedding conv and embeddings keep their float weights.
"""

from __future__ import annotations

from pathlib import Path

GROUP_SIZES = (16, 32, 64, 128, 256)     # MatMulNBits needs a power of two >= 16


def quantize_onnx_int4(fp32_path: Path, out_path: Path, block_size: int = 32, accuracy_level: int = 4,
                       exclude_nodes: tuple[str, ...] = ()) -> dict:
    import onnx
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    model = onnx.load(str(fp32_path))
    q = MatMulNBitsQuantizer(model, bits=4, block_size=block_size, is_symmetric=True, accuracy_level=accuracy_level,
                             nodes_to_exclude=list(exclude_nodes))
    q.process()
    onnx.save_model(q.model.model, str(out_path))
    ops: dict[str, int] = {}
    for node in q.model.model.graph.node:
        ops[node.op_type] = ops.get(node.op_type, 0) + 1
    return {"method": "onnxruntime MatMulNBitsQuantizer", "weights": f"int4 symmetric, one scale per {block_size} inputs",
            "group_size": block_size, "activations": "int8 at run time (accuracy_level 4)" if accuracy_level == 4 else
            f"accuracy_level {accuracy_level}", "int4_ops": {"MatMulNBits": ops.get("MatMulNBits", 0)},
            "float_ops": {k: v for k, v in ops.items() if k in ("MatMul", "Gemm", "Conv")},
            "excluded_nodes": list(exclude_nodes)}
