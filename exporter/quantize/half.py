"""fp16 / bf16 for CUDA: the model's weights and arithmetic in half precision, its inputs and outputs in fp32.

Why fp32 at the edges: the app's preprocessing produces fp32 pixels and its postprocessing expects fp32
logits; an artifact that silently changed its I/O dtype would break the caller, not the model.  Casting
at the boundary costs one elementwise kernel each way.

ONNX: the fp32 graph is converted after export with onnxruntime's own converter (the maintained one;
``onnxconverter-common`` is the older copy of it), which keeps ops without reliable fp16 kernels in
fp32 (its default block list) and inserts the Casts.  bf16 ONNX is not offered: onnxruntime's bf16
kernel coverage is partial.
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch
from torch import nn

DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}


class HalfPrecision(nn.Module):
    """``module`` cast to fp16/bf16, taking fp32 (or integer token ids) and returning fp32."""

    def __init__(self, module: nn.Module, dtype: torch.dtype):
        super().__init__()
        self.module = module.to(dtype)
        self.dtype = dtype

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.is_floating_point():
            x = x.to(self.dtype)
        return self.module(x).float()


def to_half(module: nn.Module, quant: str, device: torch.device | str = "cpu") -> HalfPrecision:
    """A half-precision copy of ``module`` on ``device`` (the original is untouched)."""
    return HalfPrecision(copy.deepcopy(module).eval(), DTYPES[quant]).to(device).eval()


def convert_onnx_fp16(src: Path, dst: Path) -> dict:
    """Write ``src`` (fp32 ONNX) as fp16 to ``dst``; fp32 graph inputs/outputs are kept."""
    import onnx
    from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST, convert_float_to_float16

    model = onnx.load(str(src))
    converted = convert_float_to_float16(model, keep_io_types=True, disable_shape_infer=False)
    onnx.save(converted, str(dst))
    ops = {n.op_type for n in model.graph.node}
    kept = sorted(ops & set(DEFAULT_OP_BLOCK_LIST))
    return {"converter": "onnxruntime.transformers.float16.convert_float_to_float16", "keep_io_types": True,
            "ops_kept_fp32": kept, "io_dtype": "float32"}
