"""AOTInductor ``.pt2`` packages: a model compiled ahead of time to a shared library for this CPU.

The package holds the generated C++ and its ``.so`` (weights prepacked inside it); loading needs torch
but not the compiler or torchao, and the same package loads from C++ through
``torch::inductor::AOTIModelPackageLoader``.  Its kernels run on torch's OpenMP pool, so ``threads`` is
``torch.set_num_threads``.  The library was built for the instruction set of the machine that compiled it
(recorded in the package as ``AOTI_CPU_ISA``): a package from an AVX-512 machine dies on an illegal instruction on an
AVX2-only one, so the session compares that ISA with this CPU's flags first and refuses in one line.
"""

from __future__ import annotations

import json
import platform
import zipfile
from pathlib import Path

import numpy as np
import torch

from edgeclip.errors import EdgeclipError, first_line
from edgeclip.manifest import Artifact

from .base import register


def package_target(path: str | Path) -> tuple[str | None, str | None]:
    """The instruction set (``AOTI_CPU_ISA``, e.g. "AVX512 AVX512_VNNI") and machine (``AOTI_MACHINE``) the package's
    library was compiled for, from its own metadata (a manifest could be edited; the package is what runs)."""
    if not Path(path).is_file():
        raise EdgeclipError(f"{path} does not exist; pass the model.pt2 of an artifact folder")
    try:
        with zipfile.ZipFile(path) as z:
            meta = next((json.loads(z.read(n)) for n in z.namelist() if n.endswith("wrapper_metadata.json")), {})
    except (OSError, zipfile.BadZipFile, ValueError) as e:
        raise EdgeclipError(f"{path} is not an AOTInductor package ({first_line(e, 120)}); pass a .pt2 written by "
                            "edgeclip export --format pt2") from None
    return meta.get("AOTI_CPU_ISA"), meta.get("AOTI_MACHINE")


def cannot_run_here(isa: str | None, machine: str | None, flags: set[str] | None, here: str) -> str | None:
    """Why a package compiled for ``isa`` on ``machine`` cannot run on a CPU with ``flags`` (None: unknown, not judged)
    of architecture ``here``: said before loading, where the library would otherwise die on an illegal instruction."""
    from .cpu_features import missing_for_isa

    if machine and here and machine != here:
        return f"compiled for {machine}, this machine is {here}"
    missing = missing_for_isa(isa, flags) if isa and flags is not None else []
    if missing:
        return f"compiled for {isa}, this CPU lacks {', '.join(missing)}"
    return None


class AotiSession:
    name = "torch-aoti"

    def __init__(self, path: str | Path, threads: int = 1, max_batch: int | None = None):
        from .cpu_features import all_cpu_flags

        why = cannot_run_here(*package_target(path), all_cpu_flags(), platform.machine())
        if why:
            raise EdgeclipError(f"{Path(path).name} cannot run on this CPU ({why}): an AOTInductor package runs only where "
                                "its instruction set does; re-export it on this machine (edgeclip export --format pt2)")
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
