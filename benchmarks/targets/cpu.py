"""``--target cpu``: every artifact, each in its own worker process on this CPU, with the fp32 eager model
(and, with ``--peers``, the routes a user would take without edgeclip) timed in the same rounds."""

from __future__ import annotations

from .base import BenchOptions, BenchTarget, register


class CpuTarget(BenchTarget):
    name = "cpu"
    summary = "every runtime on this CPU"
    throughput_batch = 64
    peers = True

    def measure(self, arts, ds, opts: BenchOptions):
        from ..harness import bench_processes

        rows = bench_processes(arts, ds, threads_list=opts.threads, timing=opts.timing, baseline=opts.baseline,
                               peers=opts.peers, timeout_s=opts.timeout_s, progress=opts.progress)
        return rows, {"threads_sweep": opts.threads}


register(CpuTarget())
