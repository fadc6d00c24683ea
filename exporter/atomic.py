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


def replace_file(path: Path, data: str | bytes) -> Path:
    """Write ``data`` to ``path`` through a temporary file beside it, then rename over it: a reader, or a run
    stopped halfway, sees the old file or the new one, never half of one (reports, checkpoints, recipes)."""
    tmp = path.with_name(path.name + ".tmp")
    if isinstance(data, bytes):
        tmp.write_bytes(data)
    else:
        tmp.write_text(data)
    os.replace(tmp, path)
    return path


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


def check_out_dir(out_dir: Path) -> Path:
    """Refuse an unusable output directory before minutes of work, without leaving it behind: the folders are
    created to prove they can be, then removed again, since a failed run must not leave a new empty folder
    (``staged_dir`` creates them for real when the first artifact is published)."""
    out_dir = Path(out_dir).expanduser()
    created = _make_dirs(out_dir)
    try:
        if not out_dir.is_dir():
            raise EdgeclipError(f"output directory {out_dir} is a file; pass a folder as --out")
        if not os.access(out_dir, os.W_OK | os.X_OK):
            raise EdgeclipError(f"output directory {out_dir} is not writable; pass a writable --out")
    finally:
        _remove_empty(created)
    return out_dir


def _remove_empty(created: list[Path]) -> None:
    for d in reversed(created):
        try:
            d.rmdir()      # only if empty: another export may have published into it meanwhile
        except OSError:
            break


def _make_dirs(folder: Path) -> list[Path]:
    """``mkdir -p`` that returns the folders it created (outermost first), so a failed publish can remove them."""
    missing = []
    p = folder
    while not p.exists() and p != p.parent:
        missing.append(p)
        p = p.parent
    missing.reverse()
    try:
        for d in missing:
            d.mkdir(exist_ok=True)
    except OSError as e:
        _remove_empty([d for d in missing if d.exists()])
        raise EdgeclipError(f"cannot create output directory {folder} ({e.strerror}); pass a writable --out") from None
    return missing


@contextlib.contextmanager
def staged_dir(final: Path) -> Iterator[Path]:
    """Yield an empty staging folder; on clean exit it replaces ``final`` atomically, else it is deleted, and so
    are the output folders this call created (nothing partial, not even an empty ``--out``)."""
    final = Path(final)
    parent = final.parent
    created = _make_dirs(parent)
    stage = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=parent))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(stage, 0o777 & ~umask)  # mkdtemp makes it private; the published folder should not be
    published = False
    try:
        with _signals_as_interrupt() as received:
            yield stage
            if received:   # interrupted, even if something on the way swallowed the KeyboardInterrupt
                raise KeyboardInterrupt(f"signal {received[0]}")
            _swap_into_place(stage, final)
            published = True
    except OSError as e:
        if e.errno == 28:  # ENOSPC
            raise EdgeclipError(f"disk full while writing {final}; free space or pass another --out (nothing was written)") from None
        raise
    finally:
        shutil.rmtree(stage, ignore_errors=True)
        if not published:
            _remove_empty(created)


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

