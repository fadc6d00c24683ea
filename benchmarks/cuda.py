"""``bench --target cuda``: what fp16 / bf16, SDPA attention and CUDA graphs each buy on a GPU.

Rows, all measured in one run and interleaved: the fp32 eager model on the GPU (the reference for speed-ups
and agreement), its fp16 and bf16 casts, fp16 with attention through ``scaled_dot_product_attention``
(flash / memory-efficient kernels) instead of ``nn.MultiheadAttention``'s fused path, each of those
replayed as a CUDA graph (one capture per batch shape: no per-kernel launch cost, which dominates at
batch 1), and every artifact exported for CUDA (``--target cuda``) run by its own runtime.

Inputs live on the GPU before the clock starts: a serving process decodes and uploads once, and timing
a 150 MB host copy per batch-256 call would measure PCIe, not the model.  Each timed call ends with a
device synchronise, so a median is the wall time a caller waits.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from edgeclip.errors import EdgeclipError, first_line


def cuda_status() -> str | None:
    """None when a CUDA device is usable, else the reason why not (said plainly, not raised)."""
    if not torch.cuda.is_available():
        built = torch.version.cuda or "none (CPU-only build)"
        return f"no CUDA device: torch.cuda.is_available() is False (torch {torch.__version__}, CUDA {built}); nothing was measured"
    return None


class CudaSession:
    """Runs a callable on GPU tensors; accepts numpy too (accuracy passes), returns what it was given."""

    def __init__(self, name: str, fn: Callable[[torch.Tensor], torch.Tensor], runtime: str):
        self.name, self.fn, self.runtime, self.threads = name, fn, runtime, 1

    def run(self, batch):
        if isinstance(batch, np.ndarray):
            with torch.inference_mode():
                return self.fn(torch.from_numpy(np.ascontiguousarray(batch)).cuda()).float().cpu().numpy()
        with torch.inference_mode():
            out = self.fn(batch)
        torch.cuda.synchronize()
        return out


class CudaGraphed:
    """``fn`` captured once per input shape and replayed; inputs are copied into the captured buffer."""

    def __init__(self, fn: Callable[[torch.Tensor], torch.Tensor]):
        self.fn = fn
        self.graphs: dict[tuple, tuple[torch.cuda.CUDAGraph, torch.Tensor, torch.Tensor]] = {}

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        key = (tuple(x.shape), x.dtype)
        if key not in self.graphs:
            static_in = x.clone()
            stream = torch.cuda.Stream()
            stream.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(stream), torch.inference_mode():
                for _ in range(3):  # warm up allocator and cuBLAS handles outside the capture
                    self.fn(static_in)
            torch.cuda.current_stream().wait_stream(stream)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph), torch.inference_mode():
                static_out = self.fn(static_in)
            self.graphs[key] = (graph, static_in, static_out)
        graph, static_in, static_out = self.graphs[key]
        static_in.copy_(x)
        graph.replay()
        return static_out


@dataclass(frozen=True)
class EagerVariant:
    label: str
    quant: str
    dtype: str           # none | fp16 | bf16
    sdpa: bool = False
    patch_gemm: bool = False
    graphs: bool = False
    compile: bool = False


EAGER_VARIANTS = (
    EagerVariant("fp32 eager", "fp32", "none"),
    EagerVariant("fp16 eager", "fp16", "fp16"),
    EagerVariant("bf16 eager", "bf16", "bf16"),
    EagerVariant("fp16 + SDPA attention", "fp16", "fp16", sdpa=True),
    EagerVariant("fp16 + SDPA + patchify GEMM", "fp16", "fp16", sdpa=True, patch_gemm=True),
    EagerVariant("fp16 + CUDA graphs", "fp16", "fp16", graphs=True),
    EagerVariant("fp16 + SDPA + patchify GEMM + CUDA graphs", "fp16", "fp16", sdpa=True, patch_gemm=True, graphs=True),
    EagerVariant("bf16 + SDPA + patchify GEMM + CUDA graphs", "bf16", "bf16", sdpa=True, patch_gemm=True, graphs=True),
)
COMPILED = EagerVariant("fp16 + SDPA + patchify GEMM + torch.compile + CUDA graphs", "fp16", "fp16", sdpa=True,
                        patch_gemm=True, graphs=True, compile=True)


def build_variant(module: torch.nn.Module, v: EagerVariant) -> Callable[[torch.Tensor], torch.Tensor]:
    from edgeclip.exporter.quantize.attention import split_attention
    from edgeclip.exporter.quantize.half import to_half
    from edgeclip.exporter.quantize.patch_embed import patch_embed_as_linear

    m = split_attention(module) if v.sdpa else module
    m = patch_embed_as_linear(m) if v.patch_gemm else m
    m = to_half(m, v.dtype, "cuda") if v.dtype != "none" else m.to("cuda").eval()
    fn: Callable = m
    if v.compile:
        # inductor's default mode with frozen weights: fuses LayerNorm / GELU / residual adds and keeps cuBLAS
        # GEMMs (max-autotune's Triton GEMMs measured slower on H100 for ViT-B/32, and took 2 minutes)
        fn = torch.compile(m, dynamic=False, options={"freezing": True})
    if v.graphs:
        fn = CudaGraphed(fn)
    return fn


def gpu_environment() -> dict:
    p = torch.cuda.get_device_properties(0)
    return {"gpu": p.name, "gpu_memory_gb": round(p.total_memory / 2**30, 1), "sm_count": p.multi_processor_count,
            "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version(),
            "tf32_matmul": torch.backends.cuda.matmul.allow_tf32}


def gpu_peak_mb(session: CudaSession, x: torch.Tensor) -> float:
    """Peak GPU memory a forward at this batch allocates beyond what was already held (weights included
    in what was held: they are counted once per process by torch's allocator stats)."""
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    session.run(x)
    return (torch.cuda.max_memory_allocated() - before) / 2**20


def bench_cuda(arts, ds, *, timing, baseline: bool, compile_variant: bool, progress: bool) -> tuple[list[dict], dict]:
    """Rows for every eager variant of each artifact family's fp32 model and every CUDA artifact."""
    from edgeclip.benchmarks.accuracy import accuracy_metrics
    from edgeclip.benchmarks.harness import _artifact_row
    from edgeclip.benchmarks.targets.base import attach_speedups
    from edgeclip.benchmarks.timing import SessionRunner, time_interleaved
    from edgeclip.models.preprocess import Preprocess
    from edgeclip.preparation import progress_bar, rebuild_baseline, baseline_key, check_label_match, preprocessed_images, run_all
    from edgeclip.runtimes import load as load_session

    cache: dict = {}
    rows: list[dict] = []
    sessions: dict[str, CudaSession] = {}
    inputs: dict[str, np.ndarray] = {}
    ref_of: dict[str, str] = {}
    baselines: dict[str, str] = {}
    skipped = []
    for a in arts:
        if a.manifest.get("target") != "cuda":
            skipped.append(a.name)
            continue
        key = baseline_key(a)
        if baseline and key not in baselines and a.manifest.get("task") == "classifier":
            prep = rebuild_baseline(a, ds)
            if prep is not None:
                model = Path(str(prep.source["model"])).name
                check_label_match(prep.classes, ds, model)
                images = preprocessed_images(ds, prep.preprocess, cache, progress)
                variants = EAGER_VARIANTS + ((COMPILED,) if compile_variant else ())
                for v in variants:
                    name = f"{model} {v.label}"
                    row = {"artifact": name, "format": "eager", "runtime": "torch-cuda", "quant": v.quant, "file_mb": None,
                           "random_weights": prep.random_weights, "baseline": v.label == "fp32 eager"}
                    try:
                        sessions[name] = CudaSession(name, build_variant(prep.module, v), "torch-cuda")
                        inputs[name] = images
                        if not row["baseline"]:
                            ref_of[name] = f"{model} fp32 eager"
                    except Exception as e:  # a variant this torch cannot build is a row, not a crash
                        row["error"] = f"{type(e).__name__}: {first_line(e, 200)}"
                    rows.append(row)
                baselines[key] = f"{model} fp32 eager"
        row = _artifact_row(a)
        rows.append(row)
        try:
            if a.manifest.get("task") != "classifier":
                raise EdgeclipError(f"a {a.manifest.get('task')} artifact has no classes to score; bench measures classifiers")
            check_label_match(a.manifest["labels"], ds, a.name)
            if a.format == "onnx":
                from edgeclip.runtimes.onnxruntime_cpu import cuda_provider_available

                if not cuda_provider_available():
                    row["skipped"] = "onnxruntime has no CUDAExecutionProvider here (pip install onnxruntime-gpu)"
                    continue
            t0 = time.perf_counter()
            sess = load_session(a, 1)
            row["load_s"] = time.perf_counter() - t0
            row["runtime"] = sess.name
            fn = sess.run_tensor if hasattr(sess, "run_tensor") else (lambda x, s=sess: torch.from_numpy(s.run(x.cpu().numpy())))
            sessions[a.name] = CudaSession(a.name, fn, sess.name)
            inputs[a.name] = preprocessed_images(ds, Preprocess.from_dict(a.manifest["preprocessing"]), cache, progress)
            if key in baselines:
                ref_of[a.name] = baselines[key]
        except EdgeclipError as e:
            row["error"] = str(e)

    outputs: dict[str, np.ndarray] = {}
    for name, sess in list(sessions.items()):
        try:
            outputs[name] = run_all(sess, inputs[name], progress, f"accuracy {name}")
        except Exception as e:
            next(r for r in rows if r["artifact"] == name)["error"] = f"{type(e).__name__}: {str(e).strip()[:200]}"
            sessions.pop(name)
    for r in rows:
        if r["artifact"] in outputs:
            ref = outputs.get(ref_of.get(r["artifact"], "")) if not r.get("baseline") else None
            r.update(accuracy_metrics(outputs[r["artifact"]], ds.labels, ref))
    if sessions:
        staged = {}
        for k, s in sessions.items():
            x = torch.from_numpy(inputs[k]).cuda()
            many = x.repeat((timing.throughput_batch + len(x) - 1) // len(x), 1, 1, 1)[:timing.throughput_batch].contiguous()
            staged[k] = (s, x[:1].contiguous(), many)
        for r in rows:
            graphed = isinstance(getattr(sessions.get(r["artifact"]), "fn", None), CudaGraphed)
            if r["artifact"] in staged and not graphed:  # a graph's memory is reserved at capture, not per call
                s, _, many = staged[r["artifact"]]
                r["gpu_peak_mb"] = gpu_peak_mb(s, many)
        with progress_bar(progress, timing.rounds, "timing (interleaved rounds)") as bar:
            timed = time_interleaved({k: SessionRunner(*t) for k, t in staged.items()}, timing, bar.update if bar else None)
        summaries = {k: t.summary() for k, t in timed.items()}
        for r in rows:
            if r["artifact"] in summaries:
                r.update(summaries[r["artifact"]])
        attach_speedups(rows, summaries, ref_of)
    extra = {"gpu": gpu_environment(), "skipped_cpu_artifacts": skipped,
             "timing_note": "inputs resident on the GPU; each call ends with torch.cuda.synchronize()"}
    if os.environ.get("CUDA_VISIBLE_DEVICES"):
        extra["cuda_visible_devices"] = os.environ["CUDA_VISIBLE_DEVICES"]
    return rows, extra
