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


def _manifest(fmt, recipe, quantization=None):
    return {"format": fmt, "recipe": recipe, "quantization": quantization}


def test_route_of_finds_every_registered_route_from_its_manifest():
    from edgeclip.exporter.routes import routes

    for r in routes():
        m = _manifest(r.format, {"quant": r.quant, "scheme": r.scheme, "backend": r.backend}, {"backend": r.backend})
        assert route_of(m) is r, r.key


@pytest.mark.parametrize("manifest, key", [
    # the file's own record (quantization) wins over the recipe's ask
    (_manifest("ptl", {"quant": "int8", "scheme": "static", "backend": "qnnpack"}, {"backend": "x86"}),
     ("ptl", "int8", "static", "x86")),
    (_manifest("ptl", {"quant": "int8", "scheme": "dynamic", "backend": "qnnpack"}, {"engine": "fbgemm"}),
     ("ptl", "int8", "dynamic", "fbgemm")),
    (_manifest("ptl", {"quant": "int8", "scheme": "dynamic", "backend": None}, {"engine": "x86"}),
     ("ptl", "int8", "dynamic", "x86")),
    # no record: the recipe's backend; neither, or one no route has: the format's default (its first registered)
    (_manifest("ptl", {"quant": "none", "backend": "fbgemm"}), ("ptl", "none", None, "fbgemm")),
    (_manifest("ptl", {"quant": "none"}), ("ptl", "none", None, "qnnpack")),
    (_manifest("pte", {"quant": "int8", "scheme": "static", "backend": "coreml"}, {"backend": "coreml"}),
     ("pte", "int8", "static", "xnnpack")),
    # a recipe without quant is fp32; a float recipe's scheme (the recipe's default) is no part of its route
    (_manifest("onnx", {}), ("onnx", "none", None, "onnxruntime")),
    (_manifest("pte", {"quant": "none", "scheme": "dynamic"}), ("pte", "none", None, "xnnpack")),
    (_manifest("onnx", {"quant": "int4", "scheme": "dynamic"}), ("onnx", "int4", "dynamic", "onnxruntime")),
    (_manifest("onnx", {"quant": "int2", "scheme": "dynamic"}), None),
    # the default is the first route of the same format *and precision* (a .ptl's first route is qnnpack fp32)
    (_manifest("ptl", {"quant": "fp16"}), ("ptl", "fp16", None, "cuda")),
    (_manifest("ptl", {"quant": "bf16"}), ("ptl", "bf16", None, "cuda")),
])
def test_route_of_reads_the_backend_the_file_records_then_the_recipe_then_the_default(manifest, key):
    r = route_of(manifest)
    assert (r.key if r is not None else None) == key


def test_model_and_file_routes_pass_subject_and_recipe_through_and_keep_their_fields(tmp_path):
    from types import SimpleNamespace

    from edgeclip.exporter.routes import model_route

    seen = []
    subject, recipe = SimpleNamespace(module="net"), SimpleNamespace(fail=False)

    def rewrite(m, s, r):
        seen.append(("rewrite", s, r))
        return m, {}

    def write(module, s, r, path):
        seen.append(("write", s, r))
        path.write_text(module)
        return {}

    a = model_route("ptl", "int8", "test", "qnnpack", "how a", write, rewrite)
    b = model_route("ptl", "int8", "test", "qnnpack", "how b", write, rewrite, mobile=True)
    a.produce(subject, recipe, tmp_path)
    assert seen == [("rewrite", subject, recipe), ("write", subject, recipe)]
    assert (a.format, a.quant, a.scheme, a.backend, a.how, a.level, a.mobile) == ("ptl", "int8", "test", "qnnpack", "how a", "model", False)
    assert b.mobile is True

    def source(s, r, stage):
        src = stage / "fp32.tmp"
        src.write_bytes(b"x")
        return src, {}

    def moves(src, dst, s, r):      # a rewrite that consumes its source (renames it): removing it must not fail
        seen.append(("file", s, r))
        src.rename(dst)
        return {}

    f = file_route("onnx", "int8", "test", "onnxruntime", "how f", source, moves)
    g = file_route("onnx", "int8", "test", "onnxruntime", "how g", source, moves, mobile=True)
    stage = tmp_path / "file"
    stage.mkdir()
    f.produce(subject, recipe, stage)
    assert seen[-1] == ("file", subject, recipe) and [p.name for p in stage.iterdir()] == ["model.onnx"]
    assert (f.how, f.level, f.mobile, g.mobile) == ("how f", "file", False, True)


def test_register_refuses_a_second_route_with_the_same_key_and_refusals_match_whole_values(monkeypatch):
    from edgeclip.exporter.routes import model_route

    monkeypatch.setattr(base, "_ROUTES", {})
    monkeypatch.setattr(base, "_REFUSALS", [])
    r = model_route("pte", "int8", "x", "b", "how", lambda *a: {})
    assert base.register(r) is r and base.find("pte", "int8", "x", "b") is r
    with pytest.raises(ValueError, match=r"export route \('pte', 'int8', 'x', 'b'\) registered twice"):
        base.register(model_route("pte", "int8", "x", "b", "another", lambda *a: {}))
    base.refuse("no {quant} {format} on {backend}", quant="int8", format=("pte", "ptl"))
    assert base._REFUSALS == [({"quant": "int8", "format": ("pte", "ptl")}, "no {quant} {format} on {backend}")]
    assert base.refusal_reason("ptl", "int8", "qnnpack") == "no int8 ptl on qnnpack"
    assert base.refusal_reason("ptl", "int", "qnnpack") == "this combination is not available"   # not a substring match


def test_a_route_that_checks_its_machine_says_why_it_cannot_be_built_here():
    from edgeclip.exporter.routes import model_route

    from dataclasses import replace

    plain = model_route("pte", "int8", "x", "b", "how", lambda *a: {})
    assert plain.unavailable_here() is None                      # no check: every machine builds it
    picky = replace(plain, machine=lambda: "needs a C++ compiler: apt install g++")
    assert picky.unavailable_here() == "needs a C++ compiler: apt install g++"
    assert replace(plain, machine=lambda: None).unavailable_here() is None
