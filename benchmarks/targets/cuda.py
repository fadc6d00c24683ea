"""``--target cuda``: the fp32 model's GPU variants (fp16 / bf16, SDPA, CUDA graphs, optionally torch.compile)
and every artifact exported for CUDA, as in-process sessions timed in the same rounds (see benchmarks/cuda.py)."""

from __future__ import annotations

from edgeclip.errors import EdgeclipError

from .base import BenchOptions, BenchTarget, register


class CudaTarget(BenchTarget):
    name = "cuda"
    summary = "GPU variants and CUDA artifacts"
    throughput_batch = 256

    def unavailable(self, opts):
        from ..cuda import cuda_status

        return cuda_status()

    def measure(self, arts, ds, opts: BenchOptions):
        from ..cuda import bench_cuda

        rows, extra = bench_cuda(arts, ds, timing=opts.timing, baseline=opts.baseline,
                                 compile_variant=opts.compile_variant, progress=opts.progress)
        if not rows:
            raise EdgeclipError("no CUDA artifacts to measure; export with --quant fp16 (or bf16) --target cuda first")
        return rows, extra


register(CudaTarget())
