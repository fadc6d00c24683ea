"""``--target mobile``: the files phones run (ExecuTorch XNNPACK ``.pte``, lite-interpreter qnnpack ``.ptl``) at
batch 1 and small thread counts, in worker processes on this host -- which is not a phone, and the report says
so: an ARM engine (qnnpack) measured on x86 runs reference paths that say nothing about a phone's speed."""

from __future__ import annotations

import os
import platform

from edgeclip.errors import EdgeclipError

from ..timing import TimingConfig
from .base import BenchOptions, BenchTarget, register


class MobileTarget(BenchTarget):
    name = "mobile"
    summary = "XNNPACK .pte + qnnpack .ptl at batch 1, 1/2/4 threads"
    throughput_batch = 8

    def default_threads(self) -> list[int]:
        return [1, 2, 4]

    def adjust_timing(self, timing: TimingConfig) -> TimingConfig:
        # a phone app runs a handful of images at once, never 64
        return TimingConfig(**{**timing.__dict__, "throughput_batch": min(timing.throughput_batch, self.throughput_batch)})

    def select(self, arts):
        from ..harness import is_mobile_artifact

        mobile = [a for a in arts if is_mobile_artifact(a)]
        if not mobile:
            raise EdgeclipError("no mobile artifacts (.pte with XNNPACK, .ptl with qnnpack) to measure; export with "
                                "--format pte or --backend qnnpack first")
        return mobile, {"skipped_non_mobile_artifacts": [a.name for a in arts if a not in mobile]}

    def measure(self, arts, ds, opts: BenchOptions):
        from ..harness import bench_processes

        rows = bench_processes(arts, ds, threads_list=opts.threads, timing=opts.timing, baseline=opts.baseline,
                               peers=False, timeout_s=opts.timeout_s, progress=opts.progress)
        profile = ("the backends phones run (ExecuTorch XNNPACK .pte, lite-interpreter qnnpack .ptl) at batch 1 with "
                   f"{', '.join(map(str, opts.threads))} thread(s) -- run on this {platform.machine()} host "
                   f"({os.cpu_count()} cores), not on a phone: ARM engines (qnnpack) measured on x86 say nothing about "
                   "a phone's speed")
        return rows, {"mobile_profile": profile, "threads_sweep": opts.threads}


register(MobileTarget())
