"""ExecuTorch ``.pte`` programs through executorch's Python runtime (``executorch.runtime.Runtime``).

What runs where: ops lowered to XNNPACK run in XNNPACK's kernels on executorch's threadpool;
everything else (LayerNorm, and the few ops XNNPACK refuses) runs on ExecuTorch's portable CPU
kernels, single-threaded.

Threads: the threadpool is one per process and its only Python handle in executorch 1.5 is the
experimental ``_unsafe_reset_threadpool`` binding.  Each XNNPACK runtime keeps a pointer to the
pool it was created with and a reset destroys that pool, so resizing while any method is loaded
is a use-after-free (seen here as random segfaults, SIGFPE and hangs on the next call).  So the
pool is resized only while no other session of this module is alive, before the method is
loaded; otherwise the session runs on the pool as it is.  ``threads`` always reports the pool's
real size, never the request.

Batch: export_pte writes a free batch dimension with an upper bound (the method's input metadata
reports that bound); a static-batch program reports its one batch size.  ``run`` splits a larger
batch into chunks of that size (padding the last one for a static batch > 1), so callers can pass
any batch size to any .pte.
"""

from __future__ import annotations

import sys
import types
import weakref
from pathlib import Path

import numpy as np

from edgeclip.errors import EdgeclipError, first_line
from edgeclip.manifest import Artifact

from .base import register

XNNPACK_ID = b"XnnpackBackend"
_LIVE: "weakref.WeakSet[ExecuTorchSession]" = weakref.WeakSet()   # sessions whose methods hold the pool


def _runtime_class():
    """``executorch.runtime.Runtime``, imported without ExecuTorch's compiler.

    executorch 1.5's pybindings module imports ``executorch.exir._warnings`` for one warning class, and that
    runs ``executorch/exir/__init__.py``: the whole compiler stack (exir, its passes, torch.export), 5.5 s of
    a 6.8 s import measured here, and resident memory a process that only *runs* a .pte does not need (an app,
    or a bench worker whose peak RSS is reported as the runtime's).  While the runtime imports, ``executorch.exir``
    is a bare package object (its __init__ not run), so only ``_warnings`` loads from it; both entries are
    removed afterwards, so a later ``import executorch.exir`` (an export in this process) runs it in full.
    Where the compiler is already imported, or this layout differs, it is the plain import."""
    if "executorch.runtime" in sys.modules or "executorch.exir" in sys.modules:
        from executorch.runtime import Runtime

        return Runtime
    import executorch

    bare = types.ModuleType("executorch.exir")
    bare.__path__ = [f"{p}/exir" for p in executorch.__path__]
    sys.modules["executorch.exir"] = bare
    executorch.exir = bare
    try:
        from executorch.runtime import Runtime
    except ImportError:    # the runtime wants more of exir than _warnings: import it the ordinary way
        Runtime = None
    finally:
        for name in [m for m in sys.modules if m == "executorch.exir" or m.startswith("executorch.exir.")]:
            del sys.modules[name]
        if getattr(executorch, "exir", None) is bare:
            del executorch.exir
    if Runtime is None:    # a failed import leaves no module behind, so this is a clean second try
        from executorch.runtime import Runtime
    return Runtime


def _threadpool():
    """(get, set) for executorch's CPU threadpool, or None if this build has no binding for it."""
    try:
        from executorch.extension.pybindings import portable_lib as lib

        return lib._threadpool_get_thread_count, lib._unsafe_reset_threadpool
    except (ImportError, AttributeError):
        return None


def _uses_xnnpack(path: Path, facts: dict) -> bool:
    if facts.get("delegate") in ("xnnpack", "portable"):
        return facts["delegate"] == "xnnpack" and facts.get("delegated_ops", 1) > 0
    with open(path, "rb") as f:      # delegate ids are plain strings in the program flatbuffer
        return XNNPACK_ID in f.read()


class ExecuTorchSession:
    """One loaded ``forward`` method; ``run`` takes any batch size.

    ``facts`` are the manifest's ExecuTorch facts (``delegate``, ``batch``, ``max_batch``); without
    them the delegate is read from the file and the batch bound from the method's input metadata.
    """

    def __init__(self, path: str | Path, threads: int = 1, facts: dict | None = None):
        import torch  # executorch's runtime exchanges torch tensors

        Runtime = _runtime_class()
        path = Path(path)
        facts = facts or {}
        if not path.is_file():
            raise EdgeclipError(f"{path} does not exist; pass a .pte written by 'edgeclip export --format pte'")
        self._torch = torch
        self.delegate = "xnnpack" if _uses_xnnpack(path, facts) else "portable"
        self.name = f"executorch-{self.delegate}"
        self._pool = _threadpool()
        # XNNPACK: size the pool before our method exists (see module doc).  Portable kernels
        # never use the pool (measured: same latency at 1 and 2 threads): they run on 1 thread.
        self.threads = self._size_pool(threads) if self.delegate == "xnnpack" else 1
        try:
            program = Runtime.get().load_program(path)
            self.method = program.load_method("forward")
        except Exception as e:
            first = first_line(e, 200)
            raise EdgeclipError(f"ExecuTorch cannot load {path} ({first}); re-export it with this executorch version") from None
        if self.delegate == "xnnpack":
            _LIVE.add(self)
        self._program = program      # keeps the program alive as long as the method
        info = self.method.metadata.input_tensor_meta(0)
        self.input_shape = tuple(info.sizes())
        batch_fact = facts.get("batch")
        self.static_batch = isinstance(batch_fact, int) or self.input_shape[0] == 1
        # a dynamic batch's meta size is the bound memory was planned for: above it set_inputs fails (0x10)
        self.max_batch = min(int(facts.get("max_batch") or self.input_shape[0]), int(self.input_shape[0]))

    def _size_pool(self, threads: int) -> int:
        """Resize the process's threadpool to ``threads`` if that is safe now; returns its real size."""
        if self._pool is None:
            return 1          # no handle on the pool: the portable kernels run single-threaded
        get, reset = self._pool
        if threads >= 1 and get() != threads and len(_LIVE) == 0:
            reset(int(threads))
        return int(get())

    def _call(self, chunk: np.ndarray) -> np.ndarray:
        out = self.method.execute([self._torch.from_numpy(chunk)])
        return out[0].numpy().copy()

    def run(self, batch: np.ndarray) -> np.ndarray:
        batch = np.ascontiguousarray(batch)
        n, step = len(batch), max(1, self.max_batch)
        if n == 0:
            raise EdgeclipError("ExecuTorch session got an empty batch; pass at least one input")
        outs = []
        for i in range(0, n, step):
            chunk = batch[i:i + step]
            rows = len(chunk)
            if self.static_batch and rows < step:   # a static batch > 1 needs exactly its size
                pad = np.zeros((step - rows, *chunk.shape[1:]), chunk.dtype)
                chunk = np.concatenate([chunk, pad])
            outs.append(self._call(chunk)[:rows])
        return outs[0] if len(outs) == 1 else np.concatenate(outs)


@register("pte")
def load_pte(artifact: Artifact | str, threads: int = 1, check: bool = True) -> ExecuTorchSession:
    """Load an ExecuTorch artifact (integrity-checked against its manifest) or a bare .pte path."""
    if isinstance(artifact, Artifact):
        if check:
            artifact.verify_integrity()
        return ExecuTorchSession(artifact.file, threads, artifact.quantization)
    return ExecuTorchSession(str(artifact), threads)
