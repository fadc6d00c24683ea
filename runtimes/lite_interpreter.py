"""TorchScript-lite runtime: the same interpreter phones run, used here on the host."""

from __future__ import annotations

import warnings

import numpy as np
import torch

from edgeclip.errors import EdgeclipError
from edgeclip.exporter.manifest import Artifact

from .base import register


class LiteSession:
    name = "torch-lite-interpreter"

    def __init__(self, path: str, threads: int, engine: str | None):
        from torch.jit.mobile import _load_for_lite_interpreter

        self.engine, self.threads = engine, threads
        self._use_engine()  # quantized weights are packed for the engine active at load time
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                self.module = _load_for_lite_interpreter(str(path))
        except Exception as e:
            raise EdgeclipError(f"the lite interpreter cannot load {path} ({str(e).strip().splitlines()[0][:160]}); re-export it") from None

    def _use_engine(self) -> None:
        if self.engine and torch.backends.quantized.engine != self.engine:
            torch.backends.quantized.engine = self.engine

    def run(self, batch: np.ndarray) -> np.ndarray:
        self._use_engine()
        torch.set_num_threads(self.threads)
        with torch.no_grad():
            return self.module(torch.from_numpy(np.ascontiguousarray(batch))).float().numpy()


@register("ptl")
def load_ptl(artifact: Artifact, threads: int = 1, check: bool = True) -> LiteSession:
    if check:
        artifact.verify_integrity()
    q = artifact.manifest.get("quantization") or {}
    return LiteSession(str(artifact.file), threads, q.get("engine"))
