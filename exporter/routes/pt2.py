"""AOTInductor routes: x86 int8 (torchao PT2E X86InductorQuantizer) compiled ahead of time into a ``.pt2`` package
that runs oneDNN int8 kernels through torch (Python or C++, ``AOTIModelPackageLoader``).  The package is compiled
for the exporting CPU, so these routes need an x86 machine with a C++ compiler (``machine``), and ``--format all``
leaves them out (name ``--format pt2``)."""

from __future__ import annotations

from pathlib import Path

from .base import Route, model_path, refuse, register

METHOD = "torchao PT2E X86InductorQuantizer -> AOTInductor (freezing), oneDNN qlinear kernels"


def machine() -> str | None:
    from edgeclip.exporter.formats.aoti import toolchain_refusal

    return toolchain_refusal()


def produce(subject, recipe, stage: Path) -> dict:
    from edgeclip.exporter.formats.aoti import export_pt2

    facts = export_pt2(subject.module, subject.example, model_path(stage, "pt2"), scheme=recipe.scheme,
                       calib=subject.calib_inputs, float_layers=tuple(recipe.float_layers),
                       calib_method=recipe.torch_calib_method)
    return {"dtype": "int8", "scheme": recipe.scheme, "backend": recipe.backend_for("pt2"), "method": METHOD, **facts}


register(Route("pt2", "int8", "static", "x86", "PT2E X86InductorQuantizer, static per-tensor activations (calibrated), "
               "per-channel weights -> AOTInductor package for this x86 CPU (needs g++ at export)", produce,
               machine=machine, in_all=False))
register(Route("pt2", "int8", "dynamic", "x86", "PT2E X86InductorQuantizer, dynamic per-tensor activations, per-channel "
               "weights -> AOTInductor package for this x86 CPU (needs g++ at export)", produce,
               machine=machine, in_all=False))
refuse("use .onnx/.pte for float; pt2 is the x86 int8 route", format="pt2", quant=("none", "fp16", "bf16"))
refuse("the x86 int8 quantizer has no int4 weights; int4 is in .onnx (MatMulNBits) and .pte (torchao 8da4w, XNNPACK)",
       format="pt2", quant="int4")
