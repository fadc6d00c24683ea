"""ExecuTorch routes: torch.export -> edge -> XNNPACK delegate (fp32 / PT2E int8) or portable kernels."""

from __future__ import annotations

from pathlib import Path

from .base import Route, model_path, refuse, register


def produce(subject, recipe, stage: Path) -> dict:
    from edgeclip.exporter.formats.executorch import export_pte
    from edgeclip.exporter.quantize.mixed import residual_adds_int8

    backend = recipe.backend_for("pte")
    float_layers, outliers = tuple(recipe.float_layers), None
    if recipe.quant == "int8" and residual_adds_int8("pte", recipe.scheme) and subject.calib_inputs is not None:
        outliers = residual_outliers_of(subject)
        float_layers += tuple(u for u in outliers["float"] if u not in float_layers)
    facts = export_pte(subject.module, subject.example, model_path(stage, "pte"), quant=recipe.quant, scheme=recipe.scheme,
                       calib=subject.calib_inputs, delegate=backend, float_layers=float_layers, group_size=recipe.group_size,
                       calib_method=recipe.torch_calib_method)
    if outliers is not None:
        facts["residual_adds_float"] = outliers
    if recipe.quant == "none":
        return {"dtype": "fp32", "method": "none", "backend": backend, **facts}
    return {"dtype": recipe.quant, "scheme": recipe.scheme, "backend": backend, **facts}


def residual_outliers_of(subject) -> dict:
    """``quantize.mixed.residual_outliers`` of the subject's module on its calibration images, measured once per
    subject (accuracy control builds the file several times)."""
    from edgeclip.exporter.quantize.mixed import residual_outliers

    key = ("residual_outliers", id(subject.module))
    if key not in subject.rewrites:
        subject.rewrites[key] = residual_outliers(subject.module, subject.calib_inputs)
    return subject.rewrites[key]


register(Route("pte", "none", None, "xnnpack", "torch.export -> to_edge_transform_and_lower, XNNPACK delegate", produce,
               mobile=True))
register(Route("pte", "none", None, "portable", "torch.export -> to_edge, ExecuTorch portable kernels only (reference)", produce))
register(Route("pte", "int8", "dynamic", "xnnpack", "PT2E XNNPACKQuantizer, dynamic activations, per-channel weights", produce,
               mobile=True))
register(Route("pte", "int8", "static", "xnnpack", "PT2E XNNPACKQuantizer, static per-channel symmetric, calibrated", produce,
               mobile=True))

register(Route("pte", "int4", "dynamic", "xnnpack",
               "torchao 8da4w: int4 weights per group (--group-size), int8 dynamic per-token activations, XNNPACK", produce,
               mobile=True))
refuse("{quant} .pte would need ExecuTorch's CUDA backend, which edgeclip does not build; .pte targets CPU/mobile "
       "delegates (XNNPACK)", format="pte", quant=("fp16", "bf16"))
