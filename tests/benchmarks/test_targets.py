"""Bench targets are plug-ins: the engine (selection, unavailability, recommendation, report) is one path for all,
and a new target is a class plus ``register`` -- the CLI's --target choices and defaults follow the registry."""

import pytest

import edgeclip
from edgeclip.benchmarks.targets import BenchTarget, base, get_target, register, target_names
from edgeclip.benchmarks.timing import TimingConfig


class _Toy(BenchTarget):
    """Measures nothing real: one row per selected artifact, with a made-up accuracy and latency."""

    name = "toy"
    summary = "a test target"
    throughput_batch = 3

    def __init__(self, why_not=None):
        self.why_not, self.seen = why_not, None

    def unavailable(self, opts):
        return self.why_not

    def select(self, arts):
        keep = [a for a in arts if a.name.endswith("int8-dynamic")]
        return keep, {"skipped_by_toy": [a.name for a in arts if a not in keep]}

    def measure(self, arts, ds, opts):
        self.seen = (arts, len(ds), opts)
        rows = [{"artifact": "eager", "baseline": True, "top1": 90.0, "latency_ms_median": 2.0}]
        rows += [{"artifact": a.name, "top1": 89.8, "agreement": 99.5, "latency_ms_median": 1.0,
                  "speedup": 2.0} for a in arts]
        return rows, {"toy_extra": True}


@pytest.fixture()
def toy(monkeypatch):
    """Register a target for one test only: the registry is restored afterwards."""
    monkeypatch.setattr(base, "_TARGETS", dict(base._TARGETS))
    return _Toy


def test_builtin_targets_registered_and_cli_choices_follow():
    from edgeclip.cli import main

    assert {"cpu", "mobile", "cuda"} <= set(target_names())
    opt = next(p for p in main.commands["bench"].params if p.name == "target")
    assert list(opt.type.choices) == target_names()
    assert get_target("mobile").throughput_batch == 8 and get_target("cuda").throughput_batch == 256
    assert get_target("mobile").default_threads() == [1, 2, 4]
    with pytest.raises(edgeclip.EdgeclipError, match="unknown --target 'tpu'; use cpu, mobile, cuda"):
        get_target("tpu")


def test_registered_target_runs_through_the_engine(toy, tiny_onnx_pair, tiny_images, tmp_path):
    t = register(toy())
    rep = edgeclip.bench(tiny_onnx_pair, data=tiny_images, target="toy", threads=2, report_dir=tmp_path / "rep")
    arts, n_images, opts = t.seen
    assert len(arts) == 1 and arts[0].name.endswith("int8-dynamic")
    assert len(rep["skipped_by_toy"]) == 1 and rep["skipped_by_toy"][0].endswith("onnx-fp32")
    assert n_images == 18 and opts.threads == [2] and opts.timing.throughput_batch == 3
    assert rep["target"] == "toy" and rep["toy_extra"] is True
    assert rep["recommendation"].startswith("fastest artifact") and arts[0].name in rep["recommendation"]
    assert (tmp_path / "rep" / "bench.json").exists()


def test_unavailable_target_is_reported_not_raised(toy, tiny_onnx_pair, tiny_images):
    t = register(toy(why_not="no toy attached"))
    rep = edgeclip.bench(tiny_onnx_pair, data=tiny_images, target="toy")
    assert rep["skipped"] == "no toy attached" and rep["rows"] == [] and t.seen is None


def test_peers_only_where_the_target_allows_them(toy, tiny_onnx_pair, tiny_images):
    register(toy())
    with pytest.raises(edgeclip.EdgeclipError, match="--peers are CPU routes.*use --target cpu"):
        edgeclip.bench(tiny_onnx_pair, data=tiny_images, target="toy", peers=True)


def test_register_twice_refused(toy):
    register(toy())
    with pytest.raises(ValueError, match="registered twice"):
        register(toy())
