"""fp16 / bf16 CUDA artifacts: built and verified anywhere (on the CPU when no GPU is here), run on CUDA when one is.

The CUDA-only tests skip without a GPU; they were run on an H100 through the device tool (see the issue note)."""

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import edgeclip
from edgeclip.cli import main
from edgeclip.exporter.quantize.half import HalfPrecision
from edgeclip.exporter.quantize.patch_embed import PatchEmbedLinear, patch_embed_as_linear
from edgeclip.runtimes import load
from edgeclip.runtimes.onnxruntime_cpu import cuda_provider_available

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def test_half_precision_keeps_fp32_io_and_casts_only_floats():
    lin = torch.nn.Linear(4, 2)
    h = HalfPrecision(torch.nn.Sequential(lin), torch.bfloat16)
    assert h(torch.randn(3, 4)).dtype == torch.float32 and h.module[0].weight.dtype == torch.bfloat16
    emb = HalfPrecision(torch.nn.Embedding(10, 4), torch.float16)
    assert emb(torch.tensor([[1, 2]])).dtype == torch.float32   # int64 token ids pass through uncast


def test_patch_embed_as_linear_is_the_same_function():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 8, stride=8), torch.nn.Conv2d(16, 4, 3, padding=1))
    fast = patch_embed_as_linear(net)
    assert isinstance(fast[0], PatchEmbedLinear) and isinstance(fast[1], torch.nn.Conv2d)  # only patchify convs
    x = torch.randn(2, 3, 32, 24)
    assert torch.allclose(fast(x), net(x), atol=1e-5)


@pytest.mark.parametrize("quant, fmt", [("fp16", "onnx"), ("fp16", "ptl"), ("bf16", "ptl")])
def test_half_artifact_round_trip(tiny_clip_dir, tiny_images, tmp_path, quant, fmt):
    (art,) = edgeclip.export(str(tiny_clip_dir), quant=quant, formats=(fmt,), data=tiny_images, out=str(tmp_path),
                             verify_size=18, min_agreement=0.0)  # random toy: near-tied logits; fixture checks agreement
    m = art.manifest
    assert art.name.endswith(f"{fmt}-{quant}") and m["target"] == "cuda" and m["quantization"]["dtype"] == quant
    assert m["quantization"]["io_dtype"] == "float32" and m["outputs"][0]["dtype"] == "float32"
    assert m["fidelity"]["mean_cosine"] >= (0.999 if quant == "fp16" else 0.995)
    on_gpu = torch.cuda.is_available() and (fmt == "ptl" or cuda_provider_available())
    assert m["fidelity"]["device"] == ("cuda" if on_gpu else "cpu")
    fp32 = edgeclip.export(str(tiny_clip_dir), formats=(fmt,), data=tiny_images, out=str(tmp_path), verify_size=18)[0]
    assert art.file.stat().st_size < 0.75 * fp32.file.stat().st_size   # half the weight bytes; tiny model: graph overhead
    sess = load(art)
    for b in (1, 3):
        out = sess.run(np.zeros((b, 3, 32, 32), np.float32))
        assert out.shape == (b, 3) and out.dtype == np.float32


def test_text_encoder_fp16_ptl(tiny_clip_dir, tiny_images, tmp_path):
    (art,) = edgeclip.export(str(tiny_clip_dir), task="text-encoder", quant="fp16", formats=("ptl",), data=tiny_images,
                             out=str(tmp_path), verify_size=12)
    loaded = edgeclip.load_model(str(tiny_clip_dir))
    tokens = loaded.tokenizer(["a car.", "a very blurry photo of a large red car parked outside."])
    ref = loaded.model.encode_text(tokens, normalize=True).detach().numpy()
    got = load(art).run(tokens.numpy())
    assert got.shape == ref.shape and (ref * got).sum(1).min() > 0.999


def test_cuda_bench_without_gpu_says_so_and_exits_zero(tiny_clip_dir, tiny_images, tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    edgeclip.export(str(tiny_clip_dir), quant="fp16", formats=("ptl",), data=tiny_images, out=str(tmp_path), verify_size=6)
    r = CliRunner().invoke(main, ["bench", "--target", "cuda", "--out", str(tmp_path), "--data", tiny_images, "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["skipped"].startswith("no CUDA device")


@needs_cuda
def test_cuda_bench_rows(tiny_clip_dir, tiny_images, tmp_path):
    edgeclip.export(str(tiny_clip_dir), quant="fp16", formats=("all",), data=tiny_images, out=str(tmp_path), verify_size=18)
    edgeclip.export(str(tiny_clip_dir), quant="bf16", formats=("ptl",), data=tiny_images, out=str(tmp_path), verify_size=18,
                    min_agreement=0.0)
    rep = edgeclip.bench(str(tmp_path), data=tiny_images, target="cuda",
                         timing=edgeclip.TimingConfig(warmup=2, rounds=2, reps_per_round=3, throughput_batch=32))
    rows = {r["artifact"]: r for r in rep["rows"]}
    assert rep["gpu"]["gpu"] and any(r.get("baseline") for r in rows.values())
    ptl = [r for n, r in rows.items() if n.endswith("ptl-fp16")][0]
    assert ptl["runtime"] == "torch-lite-interpreter-cuda" and ptl["throughput_img_s"] > 0 and "error" not in ptl
    graphs = [r for n, r in rows.items() if "CUDA graphs" in n]
    assert graphs and all("error" not in r and r["mean_cosine"] > 0.99 for r in graphs)


# ------------------------------------------------------------------------------------------ bf16 on the CPU

def _flags(monkeypatch, flags):
    from edgeclip.runtimes import cpu_features

    monkeypatch.setattr(cpu_features, "cpu_flags", lambda cpuinfo=None: list(flags))


def test_cpu_bf16_is_refused_where_the_cpu_has_no_bf16_units(monkeypatch):
    from edgeclip.errors import EdgeclipError
    from edgeclip.exporter.recipe import ExportRecipe

    _flags(monkeypatch, ["avx2", "fma", "avx512f", "avx512_vnni"])   # the AMD EPYC seen on this machine kind
    with pytest.raises(EdgeclipError, match="no bf16 matrix units.*save nothing; use --quant int8"):
        ExportRecipe(quant="bf16", target="cpu").validated()
    _flags(monkeypatch, ["avx2", "avx512_bf16", "amx_bf16"])
    r = ExportRecipe(quant="bf16", target="cpu").validated()
    assert r.formats == ("ptl",) and r.backend_for("ptl") == "onednn"
    assert ExportRecipe(quant="bf16", backend="onednn").validated().target == "cpu"
    with pytest.raises(EdgeclipError, match="fp16 builds CUDA artifacts"):
        ExportRecipe(quant="fp16", target="cpu").validated()


@pytest.mark.skipif(not __import__("edgeclip.runtimes.cpu_features", fromlist=["x"]).bf16_units(),
                    reason="this CPU has no bf16 matrix units (amx_bf16 / avx512_bf16): the route is refused here")
def test_cpu_bf16_ptl_runs_on_the_cpu_and_is_verified_there(tiny_clip_dir, tiny_images, tmp_path):
    (art,) = edgeclip.export(str(tiny_clip_dir), quant="bf16", target="cpu", data=tiny_images, out=str(tmp_path),
                             verify_size=18, min_agreement=0.0)   # random toy: near-tied logits
    m = art.manifest
    assert art.name.endswith("ptl-bf16-onednn") and m["target"] == "cpu" and m["quantization"]["backend"] == "onednn"
    assert m["quantization"]["traced_on"] == "cpu" and m["fidelity"]["device"] == "cpu"
    assert m["fidelity"]["mean_cosine"] >= 0.995
    sess = load(art)
    assert sess.device == "cpu" and sess.run(np.zeros((2, 3, 32, 32), np.float32)).dtype == np.float32
