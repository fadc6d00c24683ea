"""The route registry is the single source of what can be built: one registration adds a route to recipe
validation, `edgeclip formats` and the exporter's dispatch; the mobile target and refusals read it too."""

import pytest

import edgeclip
from edgeclip.exporter.recipe import ExportRecipe, support_table
from edgeclip.exporter.routes import base, choices, file_route, find, route_of


def test_one_registration_is_a_whole_route(tiny_clip_dir, tiny_images, tmp_path, monkeypatch):
    from edgeclip.exporter.routes import onnx

    calls = []

    def weight_only(src, dst, subject, recipe):   # a stand-in file-level quantizer: the dynamic one, tagged
        calls.append(recipe.scheme)
        return {**onnx.int8_dynamic(src, dst, subject, recipe), "scheme": "weight-only"}

    route = file_route("onnx", "int8", "weight-only", "onnxruntime", "test route", onnx._SPLIT, weight_only)
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


def test_file_route_writes_the_fp32_source_rewrites_it_and_removes_it_even_when_the_rewrite_fails(tmp_path):
    from types import SimpleNamespace

    def source(subject, recipe, stage):
        src = stage / "fp32.onnx.tmp"
        src.write_bytes(b"fp32")
        return src, {"optimizer": "none"}

    def rewrite(src, dst, subject, recipe):
        if recipe.fail:
            raise RuntimeError("quantizer failed")
        dst.write_bytes(src.read_bytes().replace(b"fp32", b"int8"))
        return {"dtype": "int8"}

    route = file_route("onnx", "int8", "test", "onnxruntime", "test route", source, rewrite)
    assert route.level == "file"
    facts = route.produce(None, SimpleNamespace(fail=False), tmp_path)
    assert facts == {"dtype": "int8", "optimizer": "none"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"] and (tmp_path / "model.onnx").read_bytes() == b"int8"
    (tmp_path / "model.onnx").unlink()
    with pytest.raises(RuntimeError, match="quantizer failed"):
        route.produce(None, SimpleNamespace(fail=True), tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_model_route_writes_the_rewritten_module_and_the_fp32_one_without_a_rewrite(tmp_path):
    from types import SimpleNamespace

    from edgeclip.exporter.routes import model_route

    written = []

    def write(module, subject, recipe, path):
        written.append(module)
        path.write_text(module)
        return {"bytes": path.stat().st_size}

    quantized = model_route("ptl", "int8", "test", "qnnpack", "test route", write, lambda m, s, r: (m + "-int8", {"dtype": "int8"}))
    plain = model_route("ptl", "none", None, "qnnpack", "test route", write)
    subject = SimpleNamespace(module="net")
    assert quantized.level == plain.level == "model"
    assert quantized.produce(subject, None, tmp_path) == {"dtype": "int8", "bytes": 8}
    assert plain.produce(subject, None, tmp_path) == {"dtype": "fp32", "method": "none", "bytes": 3}
    assert written == ["net-int8", "net"]
