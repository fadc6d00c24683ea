"""TorchScript-lite runtime: the same interpreter phones run, used here on the host."""

from __future__ import annotations

import warnings

import numpy as np
import torch

from edgeclip.errors import EdgeclipError, first_line
from edgeclip.manifest import Artifact

from .base import device_for, register


class LiteSession:
    name = "torch-lite-interpreter"

    def __init__(self, path: str, threads: int, engine: str | None, device: str = "cpu"):
        from torch.jit.mobile import _load_for_lite_interpreter

        self.engine, self.threads, self.device = engine, threads, device
        if device != "cpu":
            self.name = f"torch-lite-interpreter-{device}"
        self._use_engine()  # quantized weights are packed for the engine active at load time
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                self.module = _load_for_lite_interpreter(str(path), map_location=torch.device(device))
        except Exception as e:
            msg = first_line(e, 160)
            if "Unknown qengine" in msg:
                # measured under aarch64 emulation (benchmarks/README.md): torch lists fbgemm there but cannot
                # load its packed weights; an x86-engine file loads but quantizes with x86's 7-bit range
                import platform

                raise EdgeclipError(f"{path} holds weights packed for the {self.engine or 'unknown'} int8 engine, which "
                                    f"torch on this {platform.machine()} CPU cannot load; build the .ptl you run here "
                                    "with --backend qnnpack (the ARM engine)") from None
            raise EdgeclipError(f"the lite interpreter cannot load {path} ({msg}); re-export it") from None

    def _use_engine(self) -> None:
        if self.engine and torch.backends.quantized.engine != self.engine:
            torch.backends.quantized.engine = self.engine

    def run_tensor(self, x: torch.Tensor) -> torch.Tensor:
        """Inputs already on ``self.device`` (the CUDA benchmark times this, without host copies)."""
        with torch.no_grad():
            return self.module(x)

    def run(self, batch: np.ndarray) -> np.ndarray:
        self._use_engine()
        torch.set_num_threads(self.threads)
        x = torch.from_numpy(np.ascontiguousarray(batch)).to(self.device)
        return self.run_tensor(x).float().cpu().numpy()


@register("ptl")
def load_ptl(artifact: Artifact, threads: int = 1, check: bool = True) -> LiteSession:
    if check:
        artifact.verify_integrity()
    return LiteSession(str(artifact.file), threads, artifact.quantization.get("engine"), device_for(artifact.manifest))
