"""Recipe validation refuses impossible combinations before any work, naming what works."""

import re

import pytest

from edgeclip.errors import EdgeclipError
from edgeclip.exporter.recipe import ExportRecipe, support_table


def test_defaults_resolve():
    r = ExportRecipe(quant="int8").validated()
    assert r.scheme == "dynamic" and r.formats == ("onnx",)


@pytest.mark.parametrize("kw, needle", [
    ({"formats": ("ptl",), "backend": "onnxruntime"}, "the onnxruntime backend builds ONNX (.onnx) files, not TorchScript-lite (.ptl)"),
    ({"formats": ("onnx",), "quant": "int8", "backend": "qnnpack"}, "the qnnpack backend builds TorchScript-lite (.ptl) files"),
    ({"quant": "fp16", "target": "cpu"}, "--quant fp16 builds CUDA artifacts and saves nothing on a cpu target"),
    ({"quant": "bf16", "target": "mobile"}, "--quant bf16 builds CUDA artifacts"),
    ({"quant": "int8", "target": "cuda"}, "--quant int8 artifacts run on CPU kernels"),
    ({"quant": "fp16", "formats": ("pte",)}, "fp16 .pte would need ExecuTorch's CUDA backend"),
    ({"quant": "bf16", "formats": ("onnx",)}, "bf16 ONNX is not offered"),
    ({"quant": "none", "backend": "cuda"}, "the cuda backend builds fp16/bf16 TorchScript-lite only"),
    ({"target": "tpu"}, "unknown --target 'tpu'"),
    ({"quant": "fp16", "formats": ("ptl",), "backend": "qnnpack"}, "fp16 .ptl runs on CUDA (backend cuda)"),
    ({"quant": "none", "scheme": "static"}, "only applies to --quant int8"),
    ({"formats": ("tflite",)}, "unknown format 'tflite'"),
    ({"quant": "int2"}, "unknown --quant 'int2'"),
    ({"verify_size": 0}, "--verify-size must be between"),
    ({"min_agreement": 1.5}, "--min-agreement must be between 0 and 1"),
])
def test_refusals_name_problem_and_alternative(kw, needle):
    with pytest.raises(EdgeclipError) as e:
        ExportRecipe(**kw).validated()
    msg = str(e.value)
    assert needle in msg
    assert "\n" not in msg
    if "builds" in needle and "--quant" not in needle or "not offered" in needle or "backend" in needle:
        assert "; valid: --format " in msg


def test_backend_picks_its_format():
    assert ExportRecipe(quant="int8", backend="qnnpack").validated().formats == ("ptl",)
    assert ExportRecipe().validated().formats == ("onnx",)
    r = ExportRecipe(quant="int8", formats=("all",), backend="fbgemm").validated()
    assert "ptl" in r.formats and "onnx" in r.formats
    assert r.backend_for("ptl") == "fbgemm" and r.backend_for("onnx") == "onnxruntime"


def test_from_file_toml_and_unknown_keys(tmp_path):
    p = tmp_path / "r.toml"
    p.write_text('model = "ViT-B-32"\nquant = "int8"\nformats = ["onnx"]\n')
    r = ExportRecipe.from_file(p)
    assert r.model == "ViT-B-32" and r.quant == "int8"
    p.write_text('modle = "x"\n')
    with pytest.raises(EdgeclipError, match="unknown recipe keys modle"):
        ExportRecipe.from_file(p)
    with pytest.raises(EdgeclipError, match="does not exist"):
        ExportRecipe.from_file(tmp_path / "nope.toml")


def test_support_table_lists_only_what_validates():
    for row in support_table():
        ExportRecipe(formats=(row["format"],), quant=row["quant"], backend=row["backend"],
                     scheme=None if row["scheme"] == "-" else row["scheme"]).validated()


def test_calibration_data_is_refused_where_nothing_calibrates():
    with pytest.raises(EdgeclipError, match="--calib-data is only used by --quant int8"):
        ExportRecipe(calib_data="fashion-mnist").validated()                      # fp32
    with pytest.raises(EdgeclipError, match="--calib-data is only used by --quant int8"):
        ExportRecipe(quant="int8", smoothquant=0, calib_data="fashion-mnist").validated()   # dynamic, nothing measured
    # dynamic int8 measures SmoothQuant's channel ranges on it
    assert ExportRecipe(quant="int8", calib_data="fashion-mnist").validated().needs_calibration


@pytest.mark.parametrize("alpha", [-0.1, 1.0, 3])
def test_smoothquant_strength_out_of_range_is_refused(alpha):
    with pytest.raises(EdgeclipError, match="--smoothquant must be at least 0 and below 1"):
        ExportRecipe(quant="int8", smoothquant=alpha).validated()


def test_smoothquant_applies_to_int8_only():
    assert ExportRecipe().validated().smoothquant is None
    assert ExportRecipe(quant="int8").validated().smoothquant == 0.5
    assert ExportRecipe(quant="int8", smoothquant=0).validated().smoothquant is None


def test_half_defaults_to_cuda_target_and_cuda_backend():
    r = ExportRecipe(quant="fp16", formats=("all",)).validated()
    assert r.target == "cuda" and r.formats == ("onnx", "ptl") and r.backend_for("ptl") == "cuda"
    assert ExportRecipe(quant="bf16", formats=("all",)).validated().formats == ("ptl",)
    assert ExportRecipe().validated().target == "cpu"


def test_compress_table_round_trips_and_allows_calibration_data(tmp_path):
    from edgeclip.exporter.compress.config import CompressRecipe
    from edgeclip.exporter.recipe import ExportRecipe

    p = tmp_path / "r.toml"
    p.write_text('quant = "int8"\ncalib_data = "fashion-mnist"\n[compress]\nprune_blocks = "vision:auto:2"\nheal_steps = 500\n')
    r = ExportRecipe.from_file(p).validated()
    assert isinstance(r.compress, CompressRecipe) and r.compress.blocks()[0].auto == 2 and r.compress.needs_calibration
    again = ExportRecipe.from_dict(r.to_dict()).validated()
    assert again.compress == r.compress and again.compress.tag() == r.compress.tag()
    assert ExportRecipe(compress=CompressRecipe()).validated().compress is None     # nothing asked: no compression


@pytest.mark.parametrize("kw, msg", [
    (dict(max_drop=0.5), "--max-drop controls int8 accuracy; it does nothing for --quant none"),
    (dict(quant="int8", max_drop=101), "--max-drop is top-1 points and must be between 0 and 100"),
    (dict(quant="int8", max_drop=0.5, task="image-encoder"), "--max-drop measures top-1 on labelled images"),
    (dict(float_layers=("visual.transformer.resblocks.0.mlp.c_fc",)), "--float-layer applies to --quant int8 / int4 only"),
])
def test_accuracy_control_refusals(kw, msg):
    with pytest.raises(EdgeclipError, match=re.escape(msg)):
        ExportRecipe(**kw).validated()


def test_a_compress_table_with_an_unknown_key_is_refused_by_name_with_the_valid_keys():
    from dataclasses import fields

    from edgeclip.exporter.compress.config import CompressRecipe

    valid = ", ".join(sorted(f.name for f in fields(CompressRecipe)))
    with pytest.raises(EdgeclipError) as e:
        ExportRecipe.from_dict({"compress": {"svd_ratoi": 0.5, "heal_step": 3, "heal_steps": 3}})
    assert str(e.value) == f"unknown compress keys heal_step, svd_ratoi; valid keys: {valid}"
    assert CompressRecipe.from_dict({"prune_blocks": "vision:1"}).prune_blocks == ["vision:1"]   # one spec, as a list
