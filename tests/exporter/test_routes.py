"""The route registry is the single source of what can be built: one registration adds a route to recipe
validation, `edgeclip formats` and the exporter's dispatch; the mobile target and refusals read it too."""

import pytest

import edgeclip
from edgeclip.exporter.recipe import ExportRecipe, support_table
from edgeclip.exporter.routes import Route, base, choices, find, route_of


def test_one_registration_is_a_whole_route(tiny_clip_dir, tiny_images, tmp_path, monkeypatch):
    from edgeclip.exporter.routes import onnx

    calls = []

    def weight_only(subject, recipe, stage):   # a stand-in quantizer: the dynamic route, tagged
        calls.append(recipe.scheme)
        return {**onnx.int8_dynamic(subject, recipe, stage), "scheme": "weight-only"}

    route = Route("onnx", "int8", "weight-only", "onnxruntime", "test route", weight_only, level="file")
    with pytest.raises(Exception, match="unknown --scheme 'weight-only'"):
        ExportRecipe(quant="int8", scheme="weight-only").validated()
    monkeypatch.setitem(base._ROUTES, route.key, route)
    assert "weight-only" in choices("scheme")
    assert any(r["scheme"] == "weight-only" for r in support_table())
    art, = edgeclip.export(str(tiny_clip_dir), quant="int8", scheme="weight-only", data=tiny_images, out=str(tmp_path),
                           verify_size=6, min_agreement=0.0)
    assert calls == ["weight-only"] and art.manifest["quantization"]["scheme"] == "weight-only"
    assert art.name.endswith("onnx-int8-weight-only") and route_of(art.manifest) is route


@pytest.mark.parametrize("fmt, quant, scheme, backend, mobile", [
    ("pte", "int8", "dynamic", "xnnpack", True),
    ("pte", "none", None, "xnnpack", True),
    ("pte", "none", None, "portable", False),     # the reference kernels, not what a phone runs
    ("ptl", "int8", "static", "qnnpack", True),
    ("ptl", "int8", "dynamic", "fbgemm", False),  # a server engine
    ("ptl", "none", None, None, True),            # float .ptl, default engine
    ("onnx", "int8", "dynamic", "onnxruntime", False),
])
def test_mobile_target_is_what_the_routes_declare(fmt, quant, scheme, backend, mobile):
    from types import SimpleNamespace

    from edgeclip.benchmarks.harness import is_mobile_artifact

    q = {"backend": backend} if backend and fmt != "ptl" or quant == "int8" else {}
    manifest = {"format": fmt, "recipe": {"quant": quant, "scheme": scheme, "backend": backend}, "quantization": q}
    assert is_mobile_artifact(SimpleNamespace(format=fmt, manifest=manifest)) is mobile


def test_refusals_are_registered_with_their_format():
    with pytest.raises(Exception, match="bf16 ONNX is not offered"):
        ExportRecipe(quant="bf16", target="cuda", formats=("onnx",)).validated()
    with pytest.raises(Exception, match="fp16 .pte would need ExecuTorch's CUDA backend"):
        ExportRecipe(quant="fp16", target="cuda", formats=("pte",)).validated()
    assert find("onnx", "bf16", None, "onnxruntime") is None
