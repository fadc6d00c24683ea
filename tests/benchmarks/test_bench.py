"""The benchmark harness on tiny artifacts: every row measured, eager baseline present, failures become rows."""

import json
from pathlib import Path

import pytest

import edgeclip
from edgeclip.benchmarks.timing import TimingConfig

FAST = TimingConfig(warmup=1, rounds=2, reps_per_round=2, throughput_batch=4)


@pytest.fixture()
def out(tiny_onnx_pair, tmp_path):
    """A private copy per test: some tests break or add artifacts."""
    import shutil

    return Path(shutil.copytree(tiny_onnx_pair, tmp_path / "out"))


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
    assert rep["environment"]["threads"] == 1 and all(r["threads"] == 1 for r in rep["rows"])
    for r in (base, fp32, int8):   # memory of each row's own process: onnxruntime rows do not carry torch
        assert r["peak_rss_mb"] >= r["rss_mb"] > 0 and r["rss_base_mb"] > 0
    assert fp32["rss_base_mb"] < 0.5 * base["rss_base_mb"]
    assert rep["recommendation"].startswith("fastest artifact")
    saved = json.loads((tmp_path / "rep" / "bench.json").read_text())
    assert saved["schema"] == "edgeclip.bench/2" and len(saved["rows"]) == 3
    md = (tmp_path / "rep" / "bench.md").read_text()
    assert "| artifact |" in md and "1 thread(s)" in md and "**Recommendation**" in md
    assert (tmp_path / "rep" / "bench_pareto.png").stat().st_size > 10_000


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


def test_encoders_get_speed_rows_not_errors(out, tiny_clip_dir, tiny_images):
    """Image and text encoders exported into out/ (as the README suggests) are measured, never error rows:
    latency, throughput, memory, size, and cosine against their own fp32 eager encoder; the CLI exits 0."""
    from click.testing import CliRunner

    from edgeclip.cli import main

    for task in ("image-encoder", "text-encoder"):
        edgeclip.export(str(tiny_clip_dir), task=task, quant="int8", data=tiny_images, out=str(out), verify_size=6)
    r = CliRunner().invoke(main, ["bench", str(out), "--data", tiny_images, "--threads", "1", "--rounds", "1", "--reps", "2",
                                  "--batch", "4", "--report-dir", str(out / "rep"), "--json"])
    assert r.exit_code == 0, r.output
    rep = json.loads(r.stdout)
    rows = {x["artifact"]: x for x in rep["rows"]}
    assert not [x for x in rep["rows"] if x.get("error")]
    for task, n_inputs in (("image-encoder", 18), ("text-encoder", 3 * 8)):   # 3 classes x 8 default templates
        art = next(x for x in rep["rows"] if task in x["artifact"] and not x.get("baseline"))
        base = rows[f"{tiny_clip_dir.name} {task} fp32 eager"]
        assert art["task"] == task and base["baseline"] and "top1" not in art and "agreement" not in art
        assert art["inputs"] == n_inputs and "no classes to score" in art["accuracy_note"]
        assert 0.98 <= art["mean_cosine"] <= 1.0 + 1e-6
        assert art["latency_ms_median"] > 0 and art["throughput_img_s"] > 0 and art["peak_rss_mb"] > 0 and art["file_mb"] > 0
        assert art["speedup"] > 0
    assert "fastest artifact" in rep["recommendation"] and "encoder" not in rep["recommendation"]
    md = (out / "rep" / "bench.md").read_text()
    assert "n/a (embeddings)" in md and "no classes to score" in md


def test_thread_sweep_and_compare(out, tiny_images, tmp_path):
    from click.testing import CliRunner

    from edgeclip.cli import main

    args = ["bench", "--out", str(out), "--data", tiny_images, "--rounds", "1", "--reps", "2", "--batch", "4",
            "--no-baseline", "--report-dir", str(tmp_path / "a")]
    r = CliRunner().invoke(main, [*args, "--threads", "1,2", "--json"])
    assert r.exit_code == 0, r.output
    rep = json.loads(r.stdout)
    assert sorted((x["artifact"][-12:], x["threads"]) for x in rep["rows"]) == sorted(
        (n[-12:], t) for n in {x["artifact"] for x in rep["rows"]} for t in (1, 2))
    assert rep["threads_sweep"] == [1, 2]
    r = CliRunner().invoke(main, [*args[:-1], str(tmp_path / "b"), "--threads", "1", "--compare", str(tmp_path / "a" / "bench.json")])
    assert r.exit_code == 0, r.output
    assert "Changes since" in r.output
    r = CliRunner().invoke(main, [*args, "--compare", str(tmp_path / "nope.json")])
    assert r.exit_code == 2 and "cannot read" in r.output


@pytest.mark.parametrize("fault", ["hang", "crash"])
def test_hanging_or_crashing_runtime_is_a_row(out, tiny_images, monkeypatch, fault):
    from edgeclip.benchmarks.worker import FAULT_ENV

    victim = next(p.name for p in out.iterdir() if p.name.endswith("int8-dynamic"))
    monkeypatch.setenv(FAULT_ENV, f"{fault}:{victim}")
    t0 = __import__("time").time()
    # no eager row: importing torch + open_clip alone takes ~10 s on a loaded 2-core machine, over the
    # 5 s step deadline that makes the hang test quick; the onnxruntime rows load in well under a second
    rep = edgeclip.bench(out, data=tiny_images, threads=1, timing=FAST, timeout_s=5, baseline=False)
    bad = next(r for r in rep["rows"] if r["artifact"] == victim)
    assert ("timed out after 5 s" if fault == "hang" else "the runtime crashed") in bad["error"]
    assert all("latency_ms_median" in r for r in rep["rows"] if r["artifact"] != victim)
    assert __import__("time").time() - t0 < 120


def test_recommendation_respects_the_accuracy_bar():
    from edgeclip.benchmarks.harness import recommendation

    rows = [{"artifact": "eager", "format": "eager", "baseline": True, "top1": 90.0, "latency_ms_median": 5.0, "threads": 2},
            {"artifact": "fast-but-bad", "format": "onnx", "top1": 85.0, "latency_ms_median": 1.0, "threads": 2},
            {"artifact": "good", "format": "pte", "top1": 89.5, "latency_ms_median": 2.0, "speedup": 2.5, "file_mb": 3.0, "threads": 2},
            {"artifact": "peer", "format": "peer", "peer": True, "top1": 90.0, "latency_ms_median": 0.5, "threads": 2}]
    line = recommendation(rows, max_drop=1.0)
    assert line.startswith("fastest artifact within 1 pt of fp32 top-1: good (2.00 ms")
    assert recommendation(rows, max_drop=0.1).startswith("no artifact is within 0.1 pt")


def test_recommendation_says_when_nothing_beats_eager_and_flags_foreign_engines():
    from edgeclip.benchmarks.harness import recommendation

    rows = [{"artifact": "eager", "format": "eager", "baseline": True, "top1": 90.0, "latency_ms_median": 5.0, "threads": 1},
            {"artifact": "eager", "format": "eager", "baseline": True, "top1": 90.0, "latency_ms_median": 3.0, "threads": 2},
            {"artifact": "m-ptl-qnnpack", "format": "ptl", "top1": 89.9, "latency_ms_median": 7.0, "speedup": 0.71, "threads": 1,
             "note": "qnnpack is an ARM engine; measured on x86_64"},
            {"artifact": "m-ptl-qnnpack", "format": "ptl", "top1": 89.9, "latency_ms_median": 6.5, "speedup": 0.46, "threads": 2,
             "note": "qnnpack is an ARM engine; measured on x86_64"}]
    line = recommendation(rows, 1.0)
    assert "m-ptl-qnnpack" in line and "with 2 threads" in line and "slower than the fp32 eager model on this host (0.46x)" in line
    assert "qnnpack is an ARM engine; measured on x86_64" in line
    one = recommendation([rows[0], rows[1], dict(rows[2], latency_ms_median=1.0), rows[3]], 1.0)
    assert "with 1 thread," in one and "1 threads" not in one
    fast = [rows[0], {"artifact": "ok", "format": "onnx", "top1": 89.9, "latency_ms_median": 2.0, "speedup": 2.5, "threads": 1}]
    assert "slower" not in recommendation(fast, 1.0)


def test_recommendation_blames_random_weights_only_when_they_are_random():
    from edgeclip.benchmarks.harness import recommendation

    rows = [{"artifact": "eager", "format": "eager", "baseline": True, "random_weights": False, "threads": 2,
             "error": "the runtime crashed in 'load' (process exit code -6)"},
            {"artifact": "a", "format": "onnx", "top1": 89.0, "latency_ms_median": 2.0, "random_weights": False, "threads": 2}]
    line = recommendation(rows, 1.0)
    assert "random weights" not in line and "the fp32 eager row failed (the runtime crashed" in line
    rows = [dict(r, random_weights=True) for r in rows]
    assert "random weights, so accuracy was not part of the choice" in recommendation(rows, 1.0)


def test_engine_for_another_cpu_is_flagged():
    from edgeclip.benchmarks.harness import foreign_engine_note

    assert foreign_engine_note("qnnpack", "x86_64") == "qnnpack is an ARM engine; measured on x86_64"
    assert foreign_engine_note("qnnpack", "aarch64") is None
    assert foreign_engine_note("fbgemm", "aarch64") == "fbgemm is an x86 engine; measured on aarch64"
    assert foreign_engine_note("x86", "x86_64") is None and foreign_engine_note("xnnpack", "x86_64") is None


def test_pareto_front():
    from edgeclip.benchmarks.plot import pareto_front

    pts = [(1.0, 80.0), (2.0, 85.0), (3.0, 84.0), (4.0, 90.0), (0.5, 70.0)]
    assert [pts[i] for i in pareto_front(pts)] == [(0.5, 70.0), (1.0, 80.0), (2.0, 85.0), (4.0, 90.0)]


def test_mobile_target_needs_mobile_artifacts(out, tiny_images):
    with pytest.raises(edgeclip.EdgeclipError, match="no mobile artifacts"):
        edgeclip.bench(out, data=tiny_images, target="mobile")


def test_bench_from_a_script_without_main_guard(out, tiny_images, tmp_path):
    """Workers must not re-run the caller's script (multiprocessing spawn would, and break)."""
    import subprocess
    import sys

    script = tmp_path / "user_script.py"
    script.write_text(
        "import edgeclip\n"
        f"rep = edgeclip.bench({str(out)!r}, data={tiny_images!r}, threads=1,\n"
        "                     timing=edgeclip.TimingConfig(warmup=1, rounds=1, reps_per_round=1, throughput_batch=2))\n"
        "print('ROWS', sum('latency_ms_median' in r for r in rep['rows']))\n")
    r = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "ROWS 3" in r.stdout and r.stdout.count("ROWS") == 1


def test_workers_are_asked_to_exit_before_any_is_waited_for():
    """close_all tells every worker to exit first, then waits: each child's teardown (~0.9 s here) overlaps."""
    from edgeclip.benchmarks.worker import close_all

    events = []

    class Fake:
        def __init__(self, n):
            self.n = n

        def ask_exit(self):
            events.append(("exit", self.n))

        def close(self):
            events.append(("close", self.n))

    close_all([Fake(1), Fake(2), Fake(3)])
    assert events[:3] == [("exit", 1), ("exit", 2), ("exit", 3)] and sorted(events[3:]) == [("close", 1), ("close", 2), ("close", 3)]
