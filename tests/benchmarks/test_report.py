"""The report says which CPU features decided int8 / bf16 speed, on x86 and on ARM."""

from edgeclip.benchmarks.report import cpu_flags, cpu_label, environment, markdown

XEON = "processor\t: 0\nmodel name\t: Intel Xeon\nflags\t\t: fpu sse avx2 fma avx512f avx512_vnni avx512_bf16 amx_tile amx_int8 amx_bf16\n"
EPYC = "processor\t: 0\nmodel name\t: AMD EPYC\nflags\t\t: fpu sse avx2 fma avx512f\n"
PI5 = "processor\t: 0\nBogoMIPS\t: 108.00\nFeatures\t: fp asimd evtstrm aes crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp\n"


def test_cpu_flags_per_machine():
    assert cpu_flags(XEON) == ["avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_int8", "amx_bf16"]
    assert cpu_flags(EPYC) == ["avx2", "fma", "avx512f"]
    assert cpu_flags(PI5) == ["asimd", "asimddp"]
    assert cpu_flags("") == []


def test_environment_and_table_state_the_flags():
    env = environment(2)
    assert env["cpu_flags"] == cpu_flags() and env["machine"] and env["threads"] == 2
    report = {"rows": [{"artifact": "a", "top1": 1.0, "agreement": 100.0}], "environment": {**env, "cpu": "AMD EPYC",
              "cpu_flags": ["avx2", "avx512_vnni"]}, "target": "cpu", "dataset": "d",
              "timing": {"rounds": 1, "reps_per_round": 1, "warmup": 1, "throughput_batch": 4}}
    assert "AMD EPYC (avx2, avx512_vnni), " in markdown(report)
    assert cpu_label({"cpu": "X", "cpu_flags": []}) == "X (no int8/bf16 extensions found)"


def test_all_cores_means_the_cores_this_process_may_use(monkeypatch):
    """Under taskset or a cgroup cpuset, "all cores" (bench's default threads, --threads all) is the affinity
    mask, not os.cpu_count(): one core allowed of 64 must give one thread, never 64 threads on one core."""
    import os

    from edgeclip.benchmarks.targets import get_target
    from edgeclip.cli import _threads
    from edgeclip.runtimes.cpu_features import usable_cores

    monkeypatch.setattr(os, "cpu_count", lambda: 64)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {3}, raising=False)
    assert usable_cores() == 1
    assert _threads("1,all") == [1] and _threads("all") == [1]
    assert get_target("cpu").default_threads() == [1]
    env = environment(1)
    assert env["cores"] == 64 and env["usable_cores"] == 1
    monkeypatch.delattr(os, "sched_getaffinity")          # no affinity API (macOS): the machine's count
    assert usable_cores() == 64
