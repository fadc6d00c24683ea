"""Runs ON the device (an emulated aarch64 Python, a board or phone over SSH): one artifact, one job, files in
and files out.

Why a separate entry point and not the bench worker: the worker speaks pickled messages over an inherited
socket, which needs the same Python and numpy on both ends; a board's Python is whatever the user has.
Here the host ships a folder (the artifact, an .npy of inputs, a zip of edgeclip's runtime adapters --
stdlib + numpy + the format's own runtime, nothing else) and reads back ``result.json`` and
``outputs.npy``.  The adapters are the ones the host uses (``edgeclip.runtimes.load``), so a .pte's batch
handling or a .ptl's engine choice is the same code on both sides.

    python -m edgeclip.runtimes.device_runner ARTIFACT_DIR INPUTS.npy OUT_DIR [--threads N --warmup W --reps R]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path


def rss_mb() -> tuple[float, float]:
    """(current, peak) resident MB of this process from /proc/self/status (Linux, Android); zeros elsewhere.

    Not ``getrusage().ru_maxrss``: on Linux it survives exec, so a spawned process would report its parent's
    peak (seen: 918 MB for an onnxruntime bench worker whose own peak was under 100 MB)."""
    vals = {}
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(("VmRSS:", "VmHWM:")):
                    vals[line.split(":")[0]] = int(line.split()[1]) / 1024
    except OSError:
        pass
    return vals.get("VmRSS", 0.0), vals.get("VmHWM", 0.0)


def _versions() -> dict:
    out = {"python": platform.python_version()}
    for mod in ("numpy", "onnxruntime", "torch"):
        m = sys.modules.get(mod)
        if m is not None:
            out[mod] = getattr(m, "__version__", "?")
    if "executorch" in sys.modules:
        try:
            from importlib.metadata import version

            out["executorch"] = version("executorch")
        except Exception:
            out["executorch"] = "?"
    return out


def kernels(sess, manifest: dict) -> dict:
    """Which kernels really ran, as the device's runtime reports them."""
    fmt = manifest["format"]
    if fmt == "onnx":
        return {"onnxruntime_providers": list(sess.session.get_providers())}
    if fmt == "ptl":
        import torch

        return {"quantized_engine": torch.backends.quantized.engine if sess.engine else None,
                "engines_available": list(torch.backends.quantized.supported_engines)}
    if fmt == "pte":
        facts = manifest.get("quantization") or {}
        out = {"delegate": sess.delegate, "delegated_fraction": facts.get("delegated_fraction"),
               "delegated_ops": facts.get("delegated_ops"), "non_delegated_ops": facts.get("non_delegated_ops")}
        try:
            from executorch.extension.pybindings import portable_lib as lib

            out["backends_registered"] = list(lib._get_registered_backend_names())
        except Exception:
            pass
        return out
    return {}


def run_job(artifact_dir: Path, inputs: Path, out_dir: Path, threads: int, warmup: int, reps: int) -> dict:
    import numpy as np

    from edgeclip.manifest import open_artifact
    from edgeclip.runtimes import load
    from edgeclip.runtimes.base import run_batched

    art = open_artifact(artifact_dir)
    x = np.load(inputs)
    base = rss_mb()[0]
    t0 = time.perf_counter()
    sess = load(art, threads=threads)
    load_s = time.perf_counter() - t0
    one = np.ascontiguousarray(x[:1])
    for _ in range(max(1, warmup)):
        sess.run(one)
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        sess.run(one)
        times.append(time.perf_counter() - t)
    rss, _ = rss_mb()
    out = run_batched(sess, x)
    np.save(out_dir / "outputs.npy", out)
    return {"machine": platform.machine(), "system": platform.system(), "versions": _versions(),
            "runtime": sess.name, "threads": getattr(sess, "threads", threads), "kernels": kernels(sess, art.manifest),
            "load_s": load_s, "latency_s": times, "rss_base_mb": base, "rss_mb": rss, "peak_rss_mb": rss_mb()[1]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="edgeclip.runtimes.device_runner")
    p.add_argument("artifact", type=Path)
    p.add_argument("inputs", type=Path)
    p.add_argument("out", type=Path)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--reps", type=int, default=20)
    a = p.parse_args(argv)
    a.out.mkdir(parents=True, exist_ok=True)
    try:
        res = run_job(a.artifact, a.inputs, a.out, a.threads, a.warmup, a.reps)
    except Exception as e:   # the row's error, in the device's own words
        res = {"error": f"{type(e).__name__}: {str(e).strip()[:300]}", "machine": platform.machine()}
    (a.out / "result.json").write_text(json.dumps(res))
    return 0 if "error" not in res else 3


if __name__ == "__main__":
    sys.exit(main())
