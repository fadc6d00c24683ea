"""Write an artifact folder so that it either appears complete and verified, or not at all.

Everything is written into a hidden staging folder beside the destination, verified there, and
only then swapped into place under a lock, so an interrupted export (exception, Ctrl-C, SIGTERM,
full disk) leaves no half-written model and no manifest claiming success, and two exports into
the same output directory cannot interleave their files.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import signal
import tempfile
from pathlib import Path
from typing import Iterator

from edgeclip.errors import EdgeclipError


@contextlib.contextmanager
def _signals_as_interrupt() -> Iterator[list[int]]:
    """SIGTERM would kill the process without running ``finally`` blocks, so make it unwind like Ctrl-C; and
    remember every SIGINT / SIGTERM, so an interrupt that some library's bare ``except:`` swallowed still stops
    the publish.  A signal the user's shell ignores (``nohup``, background jobs ignore SIGINT) stays ignored."""
    received: list[int] = []

    def handler(signum, frame):
        received.append(signum)
        raise KeyboardInterrupt(f"signal {signum}")

    try:
        old = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)
               if signal.getsignal(sig) is not signal.SIG_IGN}
    except ValueError:  # not in the main thread: leave signals alone
        yield received
        return
    try:
        yield received
    finally:
        for sig, h in old.items():
            signal.signal(sig, h)


def prepare_out_dir(out_dir: Path) -> Path:
    out_dir = Path(out_dir).expanduser()
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise EdgeclipError(f"cannot create output directory {out_dir} ({e.strerror}); pass a writable --out") from None
    if not os.access(out_dir, os.W_OK | os.X_OK):
        raise EdgeclipError(f"output directory {out_dir} is not writable; pass a writable --out")
    return out_dir


@contextlib.contextmanager
def staged_dir(final: Path) -> Iterator[Path]:
    """Yield an empty staging folder; on clean exit it replaces ``final`` atomically, else it is deleted."""
    final = Path(final)
    parent = prepare_out_dir(final.parent)
    stage = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=parent))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(stage, 0o777 & ~umask)  # mkdtemp makes it private; the published folder should not be
    try:
        with _signals_as_interrupt() as received:
            yield stage
            if received:   # interrupted, even if something on the way swallowed the KeyboardInterrupt
                raise KeyboardInterrupt(f"signal {received[0]}")
            _swap_into_place(stage, final)
    except OSError as e:
        if e.errno == 28:  # ENOSPC
            raise EdgeclipError(f"disk full while writing {final}; free space or pass another --out (nothing was written)") from None
        raise
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def _swap_into_place(stage: Path, final: Path) -> None:
    lock_path = final.parent / f".{final.name}.lock"
    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        old = None
        if final.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{final.name}.old-", dir=final.parent))
            os.rename(final, old / "x")
        os.rename(stage, final)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    # the lock file stays: unlinking it would let a waiting and a new process lock different inodes

