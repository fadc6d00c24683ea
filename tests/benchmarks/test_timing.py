"""The one same-run speed-up computation every bench target and the sweep use."""

from edgeclip.benchmarks.timing import speedups


def test_speedups_are_baseline_over_artifact_for_latency_and_the_reverse_for_throughput():
    got = speedups({"latency_ms_median": 2.0, "throughput_img_s": 300.0}, {"latency_ms_median": 4.0, "throughput_img_s": 100.0})
    assert got == {"speedup": 2.0, "throughput_speedup": 3.0}
    assert "throughput_speedup" not in speedups({"latency_ms_median": 1.0}, {"latency_ms_median": 1.0})


def test_one_loop_interleaves_runners_and_drops_a_failing_one():
    """Rounds alternate between runners; a runner failing in round 2 is dropped with its message, the rest get
    every sample (latency in ms, throughput in seconds per call)."""
    from edgeclip.benchmarks.timing import RunnerFailed, TimingConfig, time_interleaved

    calls = []

    class Fake:
        throughput_batch = 4

        def __init__(self, name, fail_at=None):
            self.name, self.fail_at, self.n = name, fail_at, 0

        def warm(self, cfg):
            calls.append((self.name, "warm"))

        def time(self, kind, reps):
            calls.append((self.name, kind))
            if kind == "latency":
                self.n += 1
                if self.n == self.fail_at:
                    raise RunnerFailed(f"{self.name} crashed")
            return [0.002] * reps

    failed = {}
    cfg = TimingConfig(warmup=1, rounds=3, reps_per_round=2, throughput_batch=4)
    out = time_interleaved({"a": Fake("a"), "b": Fake("b", fail_at=2)}, cfg, failed=failed)
    assert failed == {"b": "b crashed"} and set(out) == {"a"}
    assert out["a"].latency_ms == [2.0] * 6 and out["a"].throughput_s == [0.002] * 3
    assert calls[:6] == [("a", "warm"), ("b", "warm"), ("a", "latency"), ("a", "throughput"), ("b", "latency"), ("b", "throughput")]
    assert calls[6:] == [("a", "latency"), ("a", "throughput"), ("b", "latency"), ("a", "latency"), ("a", "throughput")]
