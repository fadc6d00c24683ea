"""The benchmark harness on tiny artifacts: every row measured, eager baseline present, failures become rows."""

import json

import pytest

import edgeclip
from edgeclip.benchmarks.timing import TimingConfig

FAST = TimingConfig(warmup=1, rounds=2, reps_per_round=2, throughput_batch=4)


@pytest.fixture()
def out(tiny_clip_dir, tiny_images, tmp_path):
    for q in ("none", "int8"):
        edgeclip.export(str(tiny_clip_dir), quant=q, data=tiny_images, out=str(tmp_path / "out"), verify_size=6)
    return tmp_path / "out"


def test_bench_rows(out, tiny_images, tmp_path):
    rep = edgeclip.bench(out, data=tiny_images, threads=1, timing=FAST, report_dir=tmp_path / "rep")
    rows = {r["artifact"]: r for r in rep["rows"]}
    assert len(rows) == 3
    base = next(r for r in rep["rows"] if r.get("baseline"))
    assert base["runtime"] == "torch-eager" and base["speedup"] == 1.0
    fp32 = next(r for r in rep["rows"] if r["artifact"].endswith("onnx-fp32"))
    int8 = next(r for r in rep["rows"] if r["artifact"].endswith("int8-dynamic"))
    assert fp32["agreement"] == 100.0 and fp32["top1"] == base["top1"]
    for r in (base, fp32, int8):
        assert r["images"] == 18 and r["latency_samples"] == 4 and r["latency_ms_median"] > 0
        assert r["throughput_batch"] == 4 and r["throughput_img_s"] > 0
    assert int8["file_mb"] < fp32["file_mb"] and "speedup" in int8
    assert rep["environment"]["threads"] == 1
    saved = json.loads((tmp_path / "rep" / "bench.json").read_text())
    assert saved["schema"] == "edgeclip.bench/1" and len(saved["rows"]) == 3
    md = (tmp_path / "rep" / "bench.md").read_text()
    assert "| artifact |" in md and "1 thread(s)" in md


def test_broken_artifact_is_a_row_not_a_crash(out, tiny_images):
    victim = next(p for p in out.iterdir() if p.name.endswith("int8-dynamic"))
    (victim / "model.onnx").write_bytes(b"garbage")
    rep = edgeclip.bench(out, data=tiny_images, threads=1, timing=FAST)
    bad = next(r for r in rep["rows"] if r["artifact"] == victim.name)
    assert "truncated or replaced" in bad["error"]
    good = [r for r in rep["rows"] if r["artifact"] != victim.name]
    assert all("top1" in r and "latency_ms_median" in r for r in good)


def test_bench_empty_dir(tmp_path, tiny_images):
    with pytest.raises(edgeclip.EdgeclipError, match="no artifacts under"):
        edgeclip.bench(tmp_path, data=tiny_images)


def test_encoder_artifact_is_an_error_row(out, tiny_clip_dir, tiny_images):
    edgeclip.export(str(tiny_clip_dir), task="image-encoder", data=tiny_images, out=str(out), verify_size=6)
    rep = edgeclip.bench(out, data=tiny_images, threads=1, timing=FAST)
    enc = next(r for r in rep["rows"] if "image-encoder" in r["artifact"])
    assert "bench measures classifier artifacts" in enc["error"]
    assert sum(1 for r in rep["rows"] if "top1" in r) == 3
