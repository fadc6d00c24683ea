"""One benchmark subject per child process.

Why a process each: peak resident memory is only meaningful for a process that loaded nothing else; a
runtime that crashes (a segfault in native code) or hangs must cost its own row, not the report; and
one runtime's allocator or thread pool must not tax the next.  Timing is still interleaved: the parent
asks each worker in turn for a few timed calls, round after round, and only one worker runs at a time.

Protocol: the parent sends ``(command, argument)`` and reads ``("ok", value)`` or ``("error", message)``.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import time
from dataclasses import asdict, dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path

from edgeclip.runtimes.device_runner import rss_mb

FAULT_ENV = "EDGECLIP_BENCH_FAULT"   # fault injection for tests: "hang:<name>" or "crash:<name>"


@dataclass
class Subject:
    """What a worker loads: an artifact folder, the eager model behind one, or a bare ONNX file (peers)."""

    name: str
    kind: str                      # artifact | eager | eager-ao-dynamic | onnx-file
    path: str                      # artifact folder (artifact, eager*) or .onnx file
    inputs: str                    # .npy of preprocessed images, shared by the subjects with one preprocessing
    extra: dict = field(default_factory=dict)


def _rss_mb() -> tuple[float, float]:
    """The device runner's reader (/proc/self/status); where that has no figures, getrusage's peak."""
    now, peak = rss_mb()
    if not peak:
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        return peak, peak
    return now, peak


class _State:
    def __init__(self, subject: Subject):
        import numpy as np

        self.subject = subject
        self.inputs = np.load(subject.inputs, mmap_mode="r")
        self.sessions: dict[int, object] = {}
        self.module = None

    def session(self, threads: int):
        if threads not in self.sessions:
            import gc

            # one live session per process: ExecuTorch's threadpool can only be resized with none alive
            self.sessions.clear()
            gc.collect()
            self.sessions[threads] = self._load(threads)
        return self.sessions[threads]

    def _load(self, threads: int):
        s = self.subject
        if s.kind == "artifact":
            from edgeclip.runtimes import load

            return load(s.path, threads=threads)
        if s.kind == "onnx-file":
            from edgeclip.runtimes.onnxruntime_cpu import OnnxRuntimeSession

            return OnnxRuntimeSession(s.path, threads)
        from edgeclip.runtimes.torch_eager import TorchEagerSession

        if self.module is None:
            self.module = _eager_module(s)
        return TorchEagerSession(self.module, threads)

    def import_runtime(self) -> None:
        """Import what this subject's runtime needs (and nothing else), so the idle RSS is that runtime's."""
        import importlib

        from edgeclip.runtimes.base import _MODULES

        s = self.subject
        if s.kind == "onnx-file":
            importlib.import_module(_MODULES["onnx"])
        elif s.kind == "artifact":
            import json

            fmt = json.loads((Path(s.path) / "manifest.json").read_text())["format"]
            importlib.import_module(_MODULES[fmt])
        else:
            importlib.import_module("edgeclip.runtimes.torch_eager")

    def batch(self, n: int):
        """A private, writable copy of the first ``n`` inputs (cycled when the set is smaller)."""
        import numpy as np

        if n <= len(self.inputs):
            return np.array(self.inputs[:n])
        return np.resize(np.asarray(self.inputs), (n, *self.inputs.shape[1:])).copy()


def _eager_module(s: Subject):
    import warnings

    import torch

    from edgeclip.errors import EdgeclipError
    from edgeclip.manifest import open_artifact
    from edgeclip.preparation import rebuild_baseline

    if s.extra.get("open_clip_config"):
        from edgeclip.models.factory import register_open_clip_config

        register_open_clip_config(*s.extra["open_clip_config"])
    if s.extra.get("timm_registrar"):
        from edgeclip.models.factory import import_timm_registrar

        import_timm_registrar(*s.extra["timm_registrar"])
    prep = rebuild_baseline(open_artifact(s.path), None)
    if prep is None:
        raise EdgeclipError("the artifact came from a user module; there is no eager model to rebuild")
    if s.kind == "eager-ao-dynamic":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.ao.quantization.quantize_dynamic(prep.module, {torch.nn.Linear}, dtype=torch.qint8)
    return prep.module


def _handle(state: _State, cmd: str, arg: dict):
    import numpy as np

    if cmd == "load":
        # memory of a process serving this model: the runtime's imports, the load, a few batch-1 calls --
        # measured before the accuracy pass, so the evaluation images do not count
        state.import_runtime()
        base = _rss_mb()[0]
        t0 = time.perf_counter()
        sess = state.session(arg["threads"])
        load_s = time.perf_counter() - t0
        one = state.batch(1)
        for _ in range(3):
            sess.run(one)
        now, peak = _rss_mb()
        return {"load_s": load_s, "runtime": sess.name, "rss_base_mb": base, "rss_mb": now, "peak_rss_mb": peak}
    if cmd == "run":  # every input, in chunks sized for memory (chunk_size), each a private copy
        sess = state.session(arg["threads"])
        n = len(state.inputs)
        from edgeclip.runtimes.base import chunk_size

        step = chunk_size(np.shape(state.inputs))
        return {"outputs": np.concatenate([sess.run(np.array(state.inputs[i:i + step])) for i in range(0, n, step)])}
    if cmd == "time":
        sess = state.session(arg["threads"])
        batch = state.batch(arg["batch"])
        for _ in range(arg.get("warmup", 0)):
            sess.run(batch)
        times = []
        for _ in range(arg["reps"]):
            t0 = time.perf_counter()
            sess.run(batch)
            times.append(time.perf_counter() - t0)
        return times
    raise ValueError(f"unknown command {cmd!r}")


def worker_main(conn: Connection, subject: Subject) -> None:
    # the OpenMP wait policy is the one the parent passed on (default unless the user set one; see edgeclip/cli.py)
    fault = os.environ.get(FAULT_ENV, "")
    state = None
    while True:
        try:
            cmd, arg = conn.recv()
        except EOFError:
            return
        if cmd == "exit":
            return
        if fault == f"hang:{subject.name}" and cmd == "load":
            time.sleep(10**6)
        if fault == f"crash:{subject.name}" and cmd == "run":
            os.abort()
        try:
            from edgeclip.errors import EdgeclipError

            state = state or _State(subject)
            conn.send(("ok", _handle(state, cmd, arg)))
        except EdgeclipError as e:
            conn.send(("error", str(e)))
        except Exception as e:  # a runtime's own failure becomes the row's error
            conn.send(("error", f"{type(e).__name__}: {str(e).strip()[:200]}"))


class WorkerFailed(Exception):
    pass


class Worker:
    """The parent's handle on one child process; every call has a deadline.

    The child is ``python -m edgeclip.benchmarks.worker FD`` rather than a multiprocessing ``spawn``:
    spawn re-imports the caller's ``__main__``, so a user script calling ``edgeclip.bench(...)`` at top level
    (no ``if __name__ == "__main__"`` guard) would re-run itself in every worker.  The protocol runs over an
    inherited socket, so nothing a library prints on stdout can corrupt it."""

    def __init__(self, subject: Subject, timeout_s: float):
        import subprocess
        import sys

        self.subject, self.timeout_s = subject, timeout_s
        self.conn, child = mp.Pipe()
        fd = child.fileno()
        try:    # whatever a runtime prints goes to stderr: stdout may be the caller's --json output
            out = sys.stderr.fileno()
        except (AttributeError, OSError, ValueError):
            out = subprocess.DEVNULL
        self.proc = subprocess.Popen([sys.executable, "-m", "edgeclip.benchmarks.worker", str(fd)], pass_fds=(fd,),
                                     stdin=subprocess.DEVNULL, stdout=out)
        child.close()
        self.conn.send(asdict(subject))
        self.dead: str | None = None

    def call(self, cmd: str, **arg):
        if self.dead:
            raise WorkerFailed(self.dead)
        try:
            self.conn.send((cmd, arg))
            ready = self.conn.poll(self.timeout_s)
        except (BrokenPipeError, ConnectionResetError, OSError):
            ready = True    # the child is gone; recv below reports how
        if not ready:
            self.kill(f"timed out after {self.timeout_s:g} s in '{cmd}' (runtime hung?); the rest of the report is unaffected")
            raise WorkerFailed(self.dead)
        try:
            status, value = self.conn.recv()
        except (EOFError, ConnectionResetError, OSError):
            try:
                self.proc.wait(5)
            except Exception:
                pass
            self.kill(f"the runtime crashed in '{cmd}' (process exit code {self.proc.returncode})")
            raise WorkerFailed(self.dead) from None
        if status == "error":
            raise WorkerFailed(value)
        return value

    def kill(self, reason: str) -> None:
        self.dead = reason
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)

    def ask_exit(self) -> None:
        """Tell the child to exit, without waiting (``close`` waits)."""
        if self.proc.poll() is None and not self.dead:
            try:
                self.conn.send(("exit", None))
            except Exception:
                pass

    def close(self) -> None:
        self.ask_exit()
        if self.proc.poll() is None and not self.dead:
            try:
                self.proc.wait(10)
            except Exception:
                pass
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        self.conn.close()


def close_all(workers) -> None:
    """Close workers together: each child's interpreter teardown (torch, onnxruntime, ExecuTorch) took ~0.9 s
    here, so closing ten one after the other added 9 s to every bench run."""
    workers = list(workers)
    for w in workers:
        w.ask_exit()
    for w in workers:
        w.close()


def _child_main(fd: int) -> None:
    from multiprocessing.connection import Connection

    conn = Connection(fd)
    try:
        subject = Subject(**conn.recv())
    except EOFError:
        return
    worker_main(conn, subject)


def _exit_now(code: int = 0) -> None:
    """Leave without the interpreter's teardown.  A worker holds nothing that needs it (it writes no files; its
    results went over the pipe), and tearing down torch, onnxruntime and ExecuTorch cost ~0.5-0.9 CPU-seconds per
    worker here, on every row of every bench run."""
    import sys

    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            pass
    os._exit(code)


if __name__ == "__main__":
    import sys

    _child_main(int(sys.argv[1]))
    _exit_now(0)
