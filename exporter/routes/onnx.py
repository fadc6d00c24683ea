"""ONNX routes (onnxruntime): fp32 from ``torch.onnx.export``, then file-level precision rewrites."""

from __future__ import annotations

import tempfile
from dataclasses import replace
from functools import partial, wraps
from pathlib import Path

from .base import Route, file_route, model_path, refuse, register


def _fp32_file(subject, recipe, stage: Path, split: bool) -> tuple[Path, dict]:
    """The fp32 ONNX every ONNX route starts from (optionally through onnxruntime's optimizer)."""
    from edgeclip.exporter.formats.onnx import export_onnx
    from edgeclip.exporter.formats.onnx_optimize import optimize_onnx
    from edgeclip.exporter.quantize.attention import split_attention

    fp32 = stage / "fp32.onnx.tmp"
    # fused attention takes q, k and v as the split layout's Linears write them (no head transposes around the op)
    split = split or recipe.fused_attention
    module = split_attention(subject.module) if split else subject.module
    export_onnx(module, subject.example, fp32, subject.input_name, subject.output_name, fused_attention=recipe.fused_attention)
    facts: dict = {}
    if recipe.fused_attention:
        from edgeclip.exporter.formats.onnx_attention import fused_attention_facts

        facts["fused_attention"] = fused_attention_facts(fp32)
    if recipe.optimize:
        optimized = stage / "optimized.onnx.tmp"
        facts["optimizer"] = optimize_onnx(fp32, optimized, check_inputs=subject.verify_inputs[:8])
        fp32.unlink()
        fp32 = optimized
    return fp32, facts


def fp32(subject, recipe, stage: Path) -> dict:
    src, facts = _fp32_file(subject, recipe, stage, split=False)
    src.rename(model_path(stage, "onnx"))
    return {"dtype": "fp32", "method": "none", **facts}


def fp16(src: Path, dst: Path, subject, recipe) -> dict:
    from edgeclip.exporter.quantize.half import convert_onnx_fp16

    return {"dtype": "fp16", "backend": "onnxruntime", **convert_onnx_fp16(src, dst)}


def int8_dynamic(src: Path, dst: Path, subject, recipe) -> dict:
    from edgeclip.exporter.quantize.mixed import onnx_nodes_of
    from edgeclip.exporter.quantize.onnxruntime_dynamic import OrtDynamicConfig, quantize_onnx_dynamic

    config = OrtDynamicConfig(exclude_nodes=tuple(onnx_nodes_of(src, recipe.float_layers)))
    info = quantize_onnx_dynamic(src, dst, config)
    return {"dtype": "int8", "scheme": "dynamic", "backend": "onnxruntime", **info, "float_layers": list(recipe.float_layers)}


def int8_static(src: Path, dst: Path, subject, recipe) -> dict:
    from edgeclip.exporter.quantize.mixed import onnx_nodes_of
    from edgeclip.exporter.quantize.onnxruntime_static import OrtStaticConfig, quantize_onnx_static, sensitive_nodes

    keep = (*recipe.keep_float, *onnx_nodes_of(src, recipe.float_layers))
    config = OrtStaticConfig(calibration=recipe.calib_method, exclude_nodes=tuple(dict.fromkeys(keep)),
                             bias_correction=recipe.bias_correction)
    ranked = []
    # one calibration pass for the sensitivity ranking and the final file: the activation ranges depend on the
    # prepared graph, the images and the method, not on which nodes stay float
    with tempfile.TemporaryDirectory(prefix="edgeclip-calib-") as tmp:
        ranges = Path(tmp) / "calibration.json"
        if recipe.sensitive_float:
            ranked = sensitive_nodes(src, subject.calib_inputs, subject.input_name, config, top_k=recipe.sensitive_float,
                                     calibration_cache=ranges)
            config = replace(config, exclude_nodes=tuple(dict.fromkeys([*keep, *(n for n, _ in ranked)])))
        info = quantize_onnx_static(src, dst, subject.calib_inputs, subject.input_name, config, calibration_cache=ranges)
    info["sensitive_nodes_measured"] = [{"node": n, "rel_error_alone": e} for n, e in ranked]
    return {"dtype": "int8", "scheme": "static", "backend": "onnxruntime", **info, "float_layers": list(recipe.float_layers)}


def int4(src: Path, dst: Path, subject, recipe) -> dict:
    from edgeclip.exporter.quantize.mixed import onnx_nodes_of
    from edgeclip.exporter.quantize.onnxruntime_int4 import quantize_onnx_int4

    info = quantize_onnx_int4(src, dst, recipe.group_size, exclude_nodes=tuple(onnx_nodes_of(src, recipe.float_layers)))
    return {"dtype": "int4", "scheme": "dynamic", "backend": "onnxruntime", **info, "float_layers": list(recipe.float_layers)}


def _shipped(rewrite):
    """``rewrite`` (fp32 source -> shipped file), then the shipped file loses the exporter's per-node provenance
    (``formats.onnx.strip_exporter_metadata``); the rewrite still reads module paths from the source."""
    @wraps(rewrite)
    def run(src: Path, dst: Path, subject, recipe) -> dict:
        from edgeclip.exporter.formats.onnx import strip_exporter_metadata

        info = rewrite(src, dst, subject, recipe)
        strip_exporter_metadata(dst)
        return info

    return run


# int8 / int4: separate q/k/v Linears so the attention projections are quantized too (same function)
_SPLIT, _WHOLE = partial(_fp32_file, split=True), partial(_fp32_file, split=False)

register(Route("onnx", "none", None, "onnxruntime", "torch.onnx.export (dynamo, opset 18)", fp32))
register(file_route("onnx", "int8", "dynamic", "onnxruntime",
                    "onnxruntime quantize_dynamic, per-channel int8 weights in a 7-bit range (no saturation on pre-VNNI x86)",
                    _SPLIT, _shipped(int8_dynamic)))
register(file_route("onnx", "int8", "static", "onnxruntime",
                    "onnxruntime quantize_static QDQ, per-channel, calibrated; sensitive nodes float",
                    _SPLIT, _shipped(int8_static)))
register(file_route("onnx", "int4", "dynamic", "onnxruntime",
                    "onnxruntime MatMulNBits: int4 weights per group (--group-size), int8 activations at run time",
                    _SPLIT, _shipped(int4)))
register(file_route("onnx", "fp16", None, "onnxruntime", "fp32 ONNX converted to fp16 (onnxruntime.transformers.float16), "
                    "fp32 inputs/outputs kept; for onnxruntime's CUDA EP", _WHOLE, _shipped(fp16)))

refuse("bf16 ONNX is not offered (onnxruntime's bf16 kernel coverage is partial and its CPU EP cannot run the file to "
       "verify it)", format="onnx", quant="bf16")
