"""AOTInductor (.pt2) x86 int8 on a tiny random CLIP: one verified export through ``edgeclip.export``, its int8
kernels read from the package, its reload through the runtime, and the refusals (float / int4 / no compiler / not
x86) in one line before any work.

Random weights: these tests prove plumbing and numerical agreement with eager only.
"""

import re
import shutil
import zipfile

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from edgeclip.cli import main
from edgeclip.errors import EdgeclipError
from edgeclip.exporter.formats import aoti
from conftest import row_cosine

needs_toolchain = pytest.mark.skipif(aoti.toolchain_refusal() is not None,
                                     reason=f"cannot build .pt2 here: {aoti.toolchain_refusal()}")


@pytest.fixture(scope="module")
def artifact(tiny_clip_dir, tiny_images, tiny_calib_images, tmp_path_factory):
    import edgeclip

    if aoti.toolchain_refusal() is not None:
        pytest.skip(aoti.toolchain_refusal())
    art, = edgeclip.export(str(tiny_clip_dir), quant="int8", scheme="static", formats=("pt2",), data=tiny_images,
                           calib_data=tiny_calib_images, out=str(tmp_path_factory.mktemp("pt2")), verify_size=6)
    return art


def test_attention_split_is_exact_in_fp32_and_leaves_the_module_alone(tiny_classifier):
    module, images, ref = tiny_classifier
    x = torch.from_numpy(images)
    split, n = aoti._exactly_split(module, x[:2])
    assert n == 2 and not any(isinstance(m, torch.nn.MultiheadAttention) for m in split.modules())
    linears = [sum(isinstance(m, torch.nn.Linear) for m in mod.modules()) for mod in (module, split)]
    assert linears[1] == linears[0] + 3 * n               # in_proj -> q, k, v Linears
    assert sum(isinstance(m, torch.nn.MultiheadAttention) for m in module.modules()) == 2   # a copy was split
    with torch.no_grad():
        got = split(x).numpy()
    assert np.abs(got - ref).max() <= 1e-5 * max(1.0, np.abs(ref).max())


def test_a_split_that_changes_the_outputs_is_refused(tiny_classifier, monkeypatch):
    from edgeclip.exporter.quantize import attention

    module, images, _ = tiny_classifier
    real = attention.split_attention

    def off(m):
        out = real(m)
        with torch.no_grad():
            next(l for l in out.modules() if isinstance(l, torch.nn.Linear)).bias.add_(1e-2)
        return out

    monkeypatch.setattr(attention, "split_attention", off)
    with pytest.raises(EdgeclipError, match="changed its outputs"):
        aoti._exactly_split(module, torch.from_numpy(images[:2]))


@needs_toolchain
def test_static_export_records_the_route_and_the_cpu_it_needs(artifact):
    from edgeclip.exporter.routes import route_of

    m = artifact.manifest
    q = m["quantization"]
    assert m["format"] == "pt2" and m["file"]["name"] == "model.pt2" and artifact.name.endswith("pt2-int8-static")
    assert (q["dtype"], q["scheme"], q["backend"], q["max_batch"]) == ("int8", "static", "x86", 32)
    assert "X86InductorQuantizer" in q["method"] and "AOTInductor" in q["method"]
    assert q["calibration_images"] > 0 and q["calibration_set"] and "2 nn.MultiheadAttention split" in q["attention"]
    with zipfile.ZipFile(artifact.file) as z:
        meta = next(z.read(n).decode() for n in z.namelist() if n.endswith("wrapper_metadata.json"))
    assert q["cpu_isa"] and q["cpu_isa"] in meta
    assert route_of(m).key == ("pt2", "int8", "static", "x86")
    fid, bar = m["fidelity"], m["fidelity_threshold"]
    assert fid["mean_cosine"] >= bar["min_cosine"] == 0.98


@needs_toolchain
def test_every_linear_of_the_vision_tower_is_an_int8_kernel(artifact, tiny_classifier):
    from edgeclip.exporter.quantize.attention import split_attention

    module, _, _ = tiny_classifier
    with zipfile.ZipFile(artifact.file) as z:
        wrapper = "".join(z.read(n).decode() for n in z.namelist() if n.endswith(".wrapper.cpp"))
    calls = len(re.findall(r"aoti_torch_cpu__qlinear_pointwise\w*\(", wrapper))
    # the tower's Linears once its attention has q/k/v Linears: an fp32 in_proj (no split) leaves 3 per block out
    tower = sum(isinstance(m, torch.nn.Linear) for m in split_attention(module.backbone).modules())
    assert tower == 12 and calls >= tower and artifact.manifest["quantization"]["qlinear_kernels"] == calls


@needs_toolchain
def test_the_package_reloads_close_to_eager_at_any_batch(artifact, tiny_classifier):
    from edgeclip.runtimes import load

    _, images, ref = tiny_classifier
    sess = load(artifact, threads=1)
    assert sess.max_batch == 32
    runner, sizes = sess.runner, []
    sess.runner = lambda x: (sizes.append(len(x)), runner(x))[1]
    many = np.concatenate([images] * 3)          # 54 images: run in batches within the package's range
    got = sess.run(many)
    assert sizes == [32, 22]
    assert got.shape == (len(many), ref.shape[1]) and got.dtype == np.float32
    assert row_cosine(got, np.concatenate([ref] * 3)).min() > 0.99
    assert row_cosine(sess.run(images[:1]), ref[:1]).min() > 0.99


def _one_line_refusal(argv, out, needle):
    r = CliRunner().invoke(main, argv)
    lines = [f for f in re.split(r"[\r\n]", r.output) if f.strip()]
    assert r.exit_code == 2, r.output
    assert "Traceback" not in r.output and len(lines) == 1 and lines[0].startswith("Error: "), r.output
    assert needle in lines[0], lines[0]
    assert not out.exists() or not [p for p in out.rglob("*") if p.is_file()]


def _export(clip, images, out, *extra):
    return ["export", "--model", str(clip), "--data", images, "--verify-size", "6", "--out", str(out), "--format", "pt2",
            *extra]


@pytest.mark.parametrize("quant, needle", [("none", "use .onnx/.pte for float; pt2 is the x86 int8 route"),
                                           ("fp16", "use .onnx/.pte for float"),
                                           ("int4", "the x86 int8 quantizer has no int4 weights")])
def test_float_and_int4_pt2_are_refused_in_one_line(quant, needle, tiny_clip_dir, tiny_images, tmp_path):
    out = tmp_path / "out"
    extra = ("--target", "cuda") if quant == "fp16" else ()
    _one_line_refusal(_export(tiny_clip_dir, tiny_images, out, "--quant", quant, *extra), out, needle)


@pytest.fixture
def nothing_loaded(monkeypatch):
    """The model and data must not be loaded: a machine refusal comes before any work."""
    import edgeclip.pipeline

    def loaded(*a, **k):
        raise AssertionError("the export loaded the model before refusing")

    monkeypatch.setattr(edgeclip.pipeline, "_export", loaded)


def test_no_compiler_is_refused_before_any_work(tiny_clip_dir, tiny_images, tmp_path, monkeypatch, nothing_loaded):
    real, missing = shutil.which, (*aoti.compilers(), "g++", "c++")
    monkeypatch.setattr(shutil, "which", lambda cmd, *a, **k: None if cmd in missing else real(cmd, *a, **k))
    out = tmp_path / "out"
    _one_line_refusal(_export(tiny_clip_dir, tiny_images, out, "--quant", "int8"), out, "install g++")
    # the writer checks too (a caller of the route's producer), before it writes anything
    with pytest.raises(EdgeclipError, match="install g\\+\\+"):
        aoti.export_pt2(torch.nn.Linear(4, 4), torch.randn(2, 4), tmp_path / "m.pt2", scheme="dynamic")
    assert not (tmp_path / "m.pt2").exists()


def test_another_cpu_is_refused_before_any_work(tiny_clip_dir, tiny_images, tmp_path, monkeypatch, nothing_loaded):
    import platform

    monkeypatch.setattr(platform, "machine", lambda: "aarch64")
    out = tmp_path / "out"
    _one_line_refusal(_export(tiny_clip_dir, tiny_images, out, "--quant", "int8", "--scheme", "static"), out,
                      "export on the x86 machine that will run it")


def test_a_package_without_int8_kernels_is_refused_and_removed(tmp_path, monkeypatch):
    """Inductor's int8 fusion not firing (no freezing, grad on: pytorch/ao#4566) gives the same numbers in fp32, so
    the package's own code is what is checked."""
    monkeypatch.setattr(aoti, "toolchain_refusal", lambda: None)

    def fp32_package(ep, package_path, inductor_configs):
        with zipfile.ZipFile(package_path, "w") as z:
            z.writestr("m/data/aotinductor/model/x.wrapper.cpp", "cpp_fused_mm_0(buf0); aoti_torch_cpu_addmm_out(buf1);")
            z.writestr("m/data/aotinductor/model/x.wrapper_metadata.json", '{"AOTI_CPU_ISA": "AVX512"}')
        return package_path

    monkeypatch.setattr(torch._inductor, "aoti_compile_and_package", fp32_package)
    path = tmp_path / "m.pt2"
    with pytest.raises(EdgeclipError, match="without int8 kernels"):
        aoti.export_pt2(torch.nn.Sequential(torch.nn.Linear(8, 8)).eval(), torch.randn(2, 8), path, scheme="dynamic")
    assert not path.exists()


def test_pt2_is_built_only_when_named():
    from edgeclip.exporter.recipe import ExportRecipe

    assert ExportRecipe(quant="int8", formats=("all",)).validated().formats == ("onnx", "ptl", "pte")
    assert ExportRecipe(quant="int8", formats=("pt2",)).validated().backend_for("pt2") == "x86"
    assert ExportRecipe(quant="int8", scheme="static", calib_method="auto", formats=("pt2",)).validated(
    ).torch_calib_method == "auto"


# /proc/cpuinfo flag sets of the CPUs this project has met (trimmed to what Inductor's ISA names need)
ZEN2 = {"avx2", "fma", "f16c"}
ZEN4 = ZEN2 | {"avx512f", "avx512dq", "avx512vl", "avx512bw", "avx512_vnni", "avx512_bf16"}
SAPPHIRE_RAPIDS = ZEN4 | {"amx_tile", "amx_bf16", "amx_int8"}


@pytest.mark.parametrize("isa, machine, flags, here, why", [
    ("AVX512 AVX512_VNNI", "x86_64", ZEN4, "x86_64", None),
    ("AVX512 AVX512_VNNI", "x86_64", SAPPHIRE_RAPIDS, "x86_64", None),           # a newer CPU runs it
    ("AVX512 AVX512_VNNI", "x86_64", ZEN2, "x86_64",
     "compiled for AVX512 AVX512_VNNI, this CPU lacks avx512_vnni, avx512bw, avx512dq, avx512f, avx512vl"),
    ("AVX512 AVX512_VNNI AMX_TILE", "x86_64", ZEN4, "x86_64",
     "compiled for AVX512 AVX512_VNNI AMX_TILE, this CPU lacks amx_bf16, amx_int8, amx_tile"),
    ("AVX2", "x86_64", ZEN2, "x86_64", None),
    ("AVX2", "x86_64", {"asimd"}, "aarch64", "compiled for x86_64, this machine is aarch64"),
    ("AVX512 AVX512_VNNI", "x86_64", None, "x86_64", None),        # flags unknown (no /proc/cpuinfo): not judged
    ("SOME_FUTURE_ISA", "x86_64", ZEN2, "x86_64", None),            # a word it does not know: not judged
])
def test_a_package_is_judged_against_the_cpu_by_its_instruction_set(isa, machine, flags, here, why):
    from edgeclip.runtimes.aoti_runtime import cannot_run_here

    assert cannot_run_here(isa, machine, flags, here) == why


def test_a_missing_or_foreign_package_file_is_refused_in_one_line(tmp_path):
    from edgeclip.runtimes.aoti_runtime import package_target

    with pytest.raises(EdgeclipError, match="does not exist; pass the model.pt2"):
        package_target(tmp_path / "none.pt2")
    (tmp_path / "x.pt2").write_text("not a zip")
    with pytest.raises(EdgeclipError, match="is not an AOTInductor package .*; pass a .pt2 written by edgeclip export"):
        package_target(tmp_path / "x.pt2")


@needs_toolchain
def test_a_package_for_another_cpu_is_refused_in_one_line_before_it_is_loaded(artifact, monkeypatch):
    from edgeclip.runtimes import aoti_runtime, cpu_features, load

    isa, machine = aoti_runtime.package_target(artifact.file)
    assert isa == artifact.manifest["quantization"]["cpu_isa"] and machine == artifact.manifest["quantization"]["cpu_machine"]
    monkeypatch.setattr(cpu_features, "all_cpu_flags", lambda: set())        # a CPU with none of the package's flags
    monkeypatch.setattr(torch._inductor, "aoti_load_package", lambda p: pytest.fail("loaded a package it cannot run"))
    with pytest.raises(EdgeclipError) as e:
        load(artifact, threads=1)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("model.pt2 cannot run on this CPU (compiled for " + isa) and (
        msg.endswith("re-export it on this machine (edgeclip export --format pt2)"))
