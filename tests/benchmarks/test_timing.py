"""The one same-run speed-up computation every bench target and the sweep use."""

from edgeclip.benchmarks.timing import speedups


def test_speedups_are_baseline_over_artifact_for_latency_and_the_reverse_for_throughput():
    got = speedups({"latency_ms_median": 2.0, "throughput_img_s": 300.0}, {"latency_ms_median": 4.0, "throughput_img_s": 100.0})
    assert got == {"speedup": 2.0, "throughput_speedup": 3.0}
    assert "throughput_speedup" not in speedups({"latency_ms_median": 1.0}, {"latency_ms_median": 1.0})
