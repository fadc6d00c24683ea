"""Runtimes: one adapter per artifact kind and device, all behind ``load(...) -> Session``."""

from __future__ import annotations

from edgeclip.exporter.manifest import Artifact, open_artifact

from . import executorch_runtime, lite_interpreter, onnxruntime_cpu  # noqa: F401  (register the pte/ptl/onnx adapters)
from .base import Session, adapter_for, run_batched
from .torch_eager import TorchEagerSession


def load(artifact, threads: int = 1, check: bool = True) -> Session:
    """A session for an artifact folder / manifest / model file, or an ``nn.Module`` (eager)."""
    import torch

    if isinstance(artifact, torch.nn.Module):
        return TorchEagerSession(artifact, threads)
    if not isinstance(artifact, Artifact):
        artifact = open_artifact(artifact)
    return adapter_for(artifact.format)(artifact, threads=threads, check=check)


__all__ = ["Session", "TorchEagerSession", "load", "run_batched"]
