"""Runtimes: one adapter per artifact kind and device, all behind ``load(...) -> Session``.

Adapters are imported on first use, so a process that only runs ONNX never imports torch: the benchmark
measures each runtime's memory in its own process, and an app embedding one runtime pays for one.
"""

from __future__ import annotations

from pathlib import Path

from edgeclip.manifest import Artifact, open_artifact

from .base import Session, adapter_for, chunk_size, run_batched


def load(artifact, threads: int = 1, check: bool = True) -> Session:
    """A session for an artifact folder / manifest / model file, or an ``nn.Module`` (eager)."""
    if not isinstance(artifact, (Artifact, str, Path)):   # an nn.Module
        from .torch_eager import TorchEagerSession

        return TorchEagerSession(artifact, threads)
    if not isinstance(artifact, Artifact):
        artifact = open_artifact(artifact)
    return adapter_for(artifact.format)(artifact, threads=threads, check=check)


def __getattr__(name):
    if name == "TorchEagerSession":
        from .torch_eager import TorchEagerSession

        return TorchEagerSession
    raise AttributeError(f"module 'edgeclip.runtimes' has no attribute {name!r}")


__all__ = ["Session", "TorchEagerSession", "chunk_size", "load", "run_batched"]
