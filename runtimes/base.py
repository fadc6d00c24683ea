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
            "pte": "edgeclip.runtimes.executorch_runtime", "pt2": "edgeclip.runtimes.aoti_runtime"}   # imported on first use


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


ROWS_PER_CALL = 32


def chunk_size(shape: tuple[int, ...]) -> int:
    """Rows per call when running many inputs: 32 up to 224x224 images (and for token ids), fewer above.

    Not more than 32 because bigger calls are slower once activations outgrow the caches (2-core AMD EPYC,
    2 threads, rows per call 32 / 64 / 256): the fixture ViT (32 px) eager 390 / 394 / 265 img/s, its ONNX file
    608 / 532 / 432 img/s; open_clip ViT-B-32 (224 px) eager 19.5 / 18.2 / 16.0 img/s.  Fewer above 224x224
    because attention memory grows with the square of the token count (DINOv2 at 518 px with 256 rows per
    call was killed for memory on a 24 GiB machine)."""
    if len(shape) != 4:
        return ROWS_PER_CALL
    return max(1, min(ROWS_PER_CALL, int(ROWS_PER_CALL * (224 * 224 / (shape[2] * shape[3])) ** 2)))


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
