"""Keep library chatter out of the user's terminal, without losing it.

torch's quantized kernels (``qlinear_dynamic.cpp ... reduce_range``), its ``Quantizer.cpp`` deprecation,
ExecuTorch's ``cpuinfo_utils.cpp`` ("Failed to open midr file") and onnxruntime write to standard error from
native code, some straight to file descriptor 2, some through ``sys.stderr`` (pybind11 redirects), and torch
logs through handlers that hold ``sys.stderr``; Python's ``warnings`` filters see none of the first kind.  They
landed among the progress bars.

``captured()`` points fd 2 at a temporary file for the duration of a command, so everything written to
standard error -- native code, ``sys.stderr`` (which writes to fd 2), child processes such as bench workers,
logging handlers created at any time -- is collected, together with Python warnings.  ``sys.stderr`` itself is
never replaced: a handler a library creates meanwhile keeps a stream that still works afterwards.  edgeclip's
own progress bars write to ``terminal()``, a duplicate of the original fd 2, and the CLI prints its error line
after the capture ends.  The CLI then shows a one-line summary, or the raw text with ``--verbose``.
"""

from __future__ import annotations

import contextlib
import contextvars
import io
import os
import re
import sys
import tempfile
import warnings
from dataclasses import dataclass, field
from typing import IO, Iterator

_TERMINAL: contextvars.ContextVar[IO[str] | None] = contextvars.ContextVar("edgeclip_terminal", default=None)


def terminal() -> IO[str]:
    """Where progress bars go: the real standard error while a capture is active, else ``sys.stderr``."""
    return _TERMINAL.get() or sys.stderr


@dataclass
class Captured:
    """What the libraries printed while a command ran."""

    lines: list[str] = field(default_factory=list)

    @property
    def sources(self) -> list[str]:
        """Where the lines came from, most frequent first: ``qlinear_dynamic.cpp``, ``UserWarning``, ``torch``."""
        counts: dict[str, int] = {}
        for line in self.lines:
            m = (re.search(r"([\w.-]+\.(?:cpp|cc|h|c)):\d+", line) or re.search(r"\b(\w+(?:Warning|Error))\b", line)
                 or re.search(r"\b(torch|executorch|onnxruntime|onnxscript|open_clip|timm)\b", line))
            key = m.group(1) if m else "other"
            counts[key] = counts.get(key, 0) + 1
        return sorted(counts, key=lambda k: -counts[k])

    def summary(self) -> str | None:
        if not self.lines:
            return None
        src = self.sources
        more = f" and {len(src) - 3} more" if len(src) > 3 else ""
        n = len(self.lines)
        return (f"{n} line{'s' if n != 1 else ''} of library messages hidden (from {', '.join(src[:3])}{more}); "
                "--verbose shows them")


@contextlib.contextmanager
def captured() -> Iterator[Captured]:
    """Capture everything written to standard error (fd 2) and every Python warning during the block."""
    result = Captured()
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):   # no real fd 2 (embedded interpreter): nothing to redirect
        yield result
        return
    sink = tempfile.TemporaryFile()
    term = io.TextIOWrapper(os.fdopen(os.dup(saved), "wb", buffering=0), encoding="utf-8", errors="replace",
                            line_buffering=True, write_through=True)
    token = _TERMINAL.set(term)
    os.dup2(sink.fileno(), 2)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("default")
            try:
                yield result
            finally:
                seen = set()
                for w in caught:
                    key = (w.category, str(w.message))
                    if key not in seen:
                        seen.add(key)
                        result.lines.append(f"{w.category.__name__}: {str(w.message).strip().splitlines()[0][:300]}")
    finally:
        for stream in (sys.stdout, sys.stderr):   # buffered text belongs where it was written: in the capture
            try:
                stream.flush()
            except (OSError, ValueError, AttributeError):
                pass
        os.dup2(saved, 2)
        os.close(saved)
        _TERMINAL.reset(token)
        term.close()
        sink.seek(0)
        native = sink.read().decode("utf-8", "replace")
        sink.close()
        result.lines[:0] = [line.rstrip() for line in native.splitlines() if line.strip()]
