"""One interface for every way edgeclip runs a model: ``load(...) -> Session``, ``session.run(batch)``.

The benchmark harness and the exporter's verification only ever see a ``Session``, so adding a
format means adding one adapter here, not touching the harness.
"""

from __future__ import annotations

from typing import Callable, Protocol

import numpy as np


class Session(Protocol):
    name: str          # "torch-eager", "onnxruntime-cpu", ...
    threads: int

    def run(self, batch: np.ndarray) -> np.ndarray:
        """One forward pass: input array (float32 images or int64 token ids) -> output array."""
        ...


_ADAPTERS: dict[str, Callable[..., Session]] = {}
_MODULES = {"onnx": "edgeclip.runtimes.onnxruntime_cpu", "ptl": "edgeclip.runtimes.lite_interpreter",
            "pte": "edgeclip.runtimes.executorch_runtime"}   # imported on first use; importing registers


def register(fmt: str):
    """Declare the loader for artifacts of format ``fmt`` (``onnx``, ``ptl``, ``pte``)."""
    def deco(fn):
        _ADAPTERS[fmt] = fn
        return fn
    return deco


def adapter_for(fmt: str) -> Callable[..., Session]:
    import importlib

    from edgeclip.errors import EdgeclipError

    if fmt not in _ADAPTERS and fmt in _MODULES:
        importlib.import_module(_MODULES[fmt])
    if fmt not in _ADAPTERS:
        raise EdgeclipError(f"no runtime for {fmt!r} artifacts in this release; supported: {', '.join(sorted(_ADAPTERS))}")
    return _ADAPTERS[fmt]


def device_for(manifest: dict) -> str:
    """Where an artifact runs: on the GPU when it was built for CUDA and one is here, else on the CPU
    (fp16/bf16 artifacts still run there, slowly, which is enough to verify them on a CPU-only build machine)."""
    if manifest.get("target") == "cuda":
        import torch

        if torch.cuda.is_available():
            return "cuda"
    return "cpu"


def chunk_size(shape: tuple[int, ...]) -> int:
    """Rows per call when running many inputs: 256 up to 224x224 images (and for token ids), fewer above,
    since attention memory grows with the square of the token count (DINOv2 at 518 px with 256 rows per
    call was killed for memory on a 24 GiB machine; 8 rows fit)."""
    if len(shape) != 4:
        return 256
    return max(1, min(256, int(256 * (224 * 224 / (shape[2] * shape[3])) ** 2)))


def run_batched(session: Session, inputs: np.ndarray, batch_size: int | None = None,
                progress: Callable[[int], None] | None = None) -> np.ndarray:
    """Outputs for many inputs, in chunks small enough for any runtime's memory."""
    batch_size = batch_size or chunk_size(inputs.shape)
    outs = []
    for i in range(0, len(inputs), batch_size):
        chunk = inputs[i:i + batch_size]
        outs.append(session.run(chunk))
        if progress:
            progress(len(chunk))
    return np.concatenate(outs)
