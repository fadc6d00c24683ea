"""The arm64 target's rules that need no aarch64 environment: what it runs, what it never recommends, the CI bars."""

import pytest

import edgeclip
from edgeclip.benchmarks.check_arm64 import failures
from edgeclip.benchmarks.targets import get_target
from edgeclip.benchmarks.targets.arm64 import kernels_summary


class _A:
    def __init__(self, name, fmt, target="cpu", dtype="int8"):
        self.name, self.format = name, fmt
        self.manifest = {"target": target, "quantization": {"dtype": dtype}}


def test_selects_phone_files_only():
    arts = [_A("a", "onnx"), _A("b", "pte"), _A("c", "ptl"), _A("d", "onnx", "cuda", "fp16"), _A("e", "ptl", "cuda", "bf16")]
    keep, extra = get_target("arm64").select(arts)
    assert [a.name for a in keep] == ["a", "b", "c"]
    assert extra["skipped_non_arm_artifacts"] == {"d": "built for CUDA", "e": "built for CUDA"}


def _rows(emulated):
    base = {"artifact": "m fp32 eager", "baseline": True, "top1": 90.0, "images": 1000, "task": "classifier"}
    fast = {"artifact": "fast", "format": "onnx", "top1": 89.9, "agreement": 99.5, "machine": "aarch64", "quant": "int8 dynamic",
            "emulated": emulated, "task": "classifier"}
    if not emulated:
        fast["latency_ms_median"] = 3.0
    return [base, fast]


def test_emulated_rows_never_recommended_on_speed():
    rec = get_target("arm64").recommend(_rows(True), 1.0)
    assert rec.startswith("no speed recommendation") and "1 of 1" in rec


def test_device_rows_recommended_on_their_latency():
    assert get_target("arm64").recommend(_rows(False), 1.0).startswith("fastest artifact within 1 pt of fp32 top-1: fast")


def test_device_option_only_where_a_target_takes_it(tmp_path):
    with pytest.raises(edgeclip.EdgeclipError, match="--device is for --target arm64"):
        edgeclip.bench(tmp_path, target="cpu", device="ssh://pi@board")


def test_ci_bars():
    ok = {"rows": _rows(True)}
    assert failures(ok) == []
    for change, why in (({"agreement": 98.9}, "agreement"), ({"machine": "x86_64"}, "not aarch64"),
                        ({"top1": 89.6}, "top-1"), ({"error": "crashed"}, "crashed")):
        rows = _rows(True)
        rows[1].update(change)
        assert any(why in f for f in failures({"rows": rows})), change
    rows = _rows(True)
    rows[1].update(quant="fp32", agreement=99.8)
    assert failures({"rows": rows})
    assert failures({"rows": _rows(True)[:1]}) == ["no artifact ran on aarch64"]


def test_kernels_cell():
    assert kernels_summary({"onnxruntime_providers": ["CPUExecutionProvider"]}) == "ORT CPU"
    assert kernels_summary({"delegate": "xnnpack", "delegated_fraction": 0.9446}) == "xnnpack 94% of ops"
    assert kernels_summary({"quantized_engine": "qnnpack"}) == "qnnpack engine"
