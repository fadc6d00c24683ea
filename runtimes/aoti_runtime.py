"""AOTInductor ``.pt2`` packages: a model compiled ahead of time to a shared library for this CPU.

The package holds the generated C++ and its ``.so`` (weights prepacked inside it); loading needs torch
but not the compiler or torchao, and the same package loads from C++ through
``torch::inductor::AOTIModelPackageLoader``.  Its kernels run on torch's OpenMP pool, so ``threads`` is
``torch.set_num_threads``.  The library was built for the instruction set of the machine that compiled it
(recorded in the package as ``AOTI_CPU_ISA``): a package from an AVX-512 machine may not run on an AVX2-only one.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from edgeclip.errors import EdgeclipError, first_line
from edgeclip.manifest import Artifact

from .base import register


class AotiSession:
    name = "torch-aoti"

    def __init__(self, path: str | Path, threads: int = 1, max_batch: int | None = None):
        torch.set_num_threads(max(1, threads))
        self.threads = torch.get_num_threads()
        self.max_batch = max_batch
        try:
            self.runner = torch._inductor.aoti_load_package(str(path))
        except Exception as e:      # noqa: BLE001 -- torch raises RuntimeError or OSError by cause
            raise EdgeclipError(f"cannot load the AOTInductor package {path} ({first_line(e, 160)}); a package runs only on "
                                "a CPU with the instruction set it was compiled for: re-export it on this machine") from None

    def run(self, batch: np.ndarray) -> np.ndarray:
        step = self.max_batch or len(batch)
        outs = []
        with torch.inference_mode():
            for i in range(0, len(batch), step):
                outs.append(self.runner(torch.from_numpy(np.ascontiguousarray(batch[i:i + step]))).numpy())
        return np.concatenate(outs)


@register("pt2")
def load_pt2(artifact: Artifact | str, threads: int = 1, check: bool = True) -> AotiSession:
    if isinstance(artifact, Artifact):
        if check:
            artifact.verify_integrity()
        return AotiSession(artifact.file, threads, (artifact.manifest.get("quantization") or {}).get("max_batch"))
    return AotiSession(artifact, threads)
