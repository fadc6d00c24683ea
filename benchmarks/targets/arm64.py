"""``bench --target arm64``: the files an app ships, run by the aarch64 builds of their runtimes.

Here: an emulated aarch64 Python (``edgeclip device setup arm64``) -- real ARM kernels (XNNPACK's NEON and
dotprod paths, qnnpack, onnxruntime's MLAS for ARM), so top-1, agreement and cosine against the x86 fp32 model
say whether the shipped file gives the same answers on ARM.  Its timings are emulated: shown as such, never
used for speed-ups or a recommendation.  With ``--device ssh://user@host[:port]`` the same runner runs on the
user's board or phone, with that device's own runtimes, and its latency, memory and load time are real.

The reference is the fp32 eager model on this host (x86), run in a worker process on the same inputs.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import numpy as np

from .base import BenchOptions, BenchTarget, register

EMULATED_NOTE = "emulated: not a device latency"
RUNNABLE = ("pte", "ptl", "onnx")


def _device(opts: BenchOptions):
    from edgeclip.runtimes.devices import EmulatedArm64, SshDevice

    return SshDevice(opts.device) if opts.device else EmulatedArm64()


def _why_not_on_arm(a) -> str | None:
    q = a.manifest.get("quantization") or {}
    if a.format not in RUNNABLE:
        return f"{a.format} files do not run on a phone"
    if a.manifest.get("target") == "cuda" or q.get("dtype") in ("fp16", "bf16"):
        return "built for CUDA"
    return None


class Arm64Target(BenchTarget):
    name = "arm64"
    summary = ("every phone-ready .pte/.ptl/.onnx run by aarch64 runtimes on real images (emulated here: accuracy "
               "and kernels, not latency; --device ssh://user@host for a real board)")
    throughput_batch = 8
    devices = True

    def default_threads(self) -> list[int]:
        return [1]

    def unavailable(self, opts: BenchOptions) -> str | None:
        return _device(opts).unavailable()

    def select(self, arts):
        keep, skipped = [], {}
        for a in arts:
            why = _why_not_on_arm(a)
            if why:
                skipped[a.name] = why
            else:
                keep.append(a)
        return keep, ({"skipped_non_arm_artifacts": skipped} if skipped else {})

    def measure(self, arts, ds, opts: BenchOptions):
        from edgeclip.errors import EdgeclipError
        from edgeclip.preparation import baseline_key, check_label_match, progress_bar

        from ..harness import InputFiles, _artifact_row, _fidelity_metrics, _registered_config, baseline_row
        from ..worker import Subject, Worker, WorkerFailed

        device = _device(opts)
        if not device.emulated:
            device.unavailable()       # learns the device's architecture
        threads = max(opts.threads)
        workdir = Path(tempfile.mkdtemp(prefix="edgeclip-arm64-bench-"))
        rows: list[dict] = []
        refs: dict[str, np.ndarray | None] = {}
        try:
            inputs = InputFiles(workdir, ds, opts.progress)
            with progress_bar(opts.progress, 2 * len(arts), f"{device.name} runs ({'emulated' if device.emulated else 'device'})") as bar:
                for a in arts:
                    row = _artifact_row(a)
                    row.pop("note", None)            # the x86 engine caveat does not apply on ARM
                    try:
                        if row["task"] == "classifier":
                            check_label_match(a.manifest["labels"], ds, a.name)
                        x = inputs.for_artifact(a)
                    except EdgeclipError as e:
                        rows.append({**row, "error": str(e)})
                        continue
                    key = baseline_key(a)
                    if key not in refs and opts.baseline:
                        base = {**baseline_row(a, row), "machine": _host_machine(), "threads": threads}
                        refs[key] = _reference(Subject(base["artifact"], "eager", str(a.dir), x, _registered_config(a)),
                                               threads, opts.timeout_s, base, ds.labels, Worker, WorkerFailed)
                        rows.append(base)
                    if bar:
                        bar.update(1)
                    rows.append(self._device_row(device, a, row, Path(x), ds.labels, refs.get(key), threads, opts))
                    if bar:
                        bar.update(1)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        info = {"name": device.name, "arch": device.arch, "emulated": device.emulated}
        if device.emulated:
            info["environment"] = (device.ready() or {}).get("versions")
            info["note"] = (f"timings from {device.name} are {EMULATED_NOTE}; accuracy, agreement and kernels are the "
                            "aarch64 runtimes' own")
        return rows, {"device": info}

    def _device_row(self, device, a, row: dict, inputs: Path, labels, ref, threads: int, opts: BenchOptions) -> dict:
        from edgeclip.runtimes.devices import DeviceError

        from ..harness import _fidelity_metrics

        emulated = device.emulated
        reps = max(3, opts.timing.reps_per_round) if emulated else opts.timing.rounds * opts.timing.reps_per_round
        row = {**row, "device": device.name, "emulated": emulated, "threads": threads}
        try:
            res = device.run(a.dir, inputs, threads=threads, warmup=1 if emulated else opts.timing.warmup, reps=reps,
                             timeout_s=_run_timeout(opts.timeout_s, len(np.load(inputs, mmap_mode="r")), emulated))
        except DeviceError as e:
            return {**row, "machine": device.arch, "error": str(e)}
        r = res.result
        row.update({"machine": r.get("machine", device.arch), "runtime": r.get("runtime"), "kernels": r.get("kernels"),
                    "kernels_summary": kernels_summary(r.get("kernels") or {}),
                    "device_versions": r.get("versions"), "threads": r.get("threads", threads)})
        if "error" in r:
            return {**row, "error": r["error"]}
        row.update(_fidelity_metrics(row["task"], res.outputs, labels, ref))
        lat = 1e3 * np.asarray(r["latency_s"])
        timing = {"latency_ms_median": float(np.median(lat)), "latency_ms_p90": float(np.percentile(lat, 90)),
                  "latency_ms_p99": float(np.percentile(lat, 99)), "latency_samples": int(lat.size),
                  "load_s": r["load_s"], "rss_base_mb": r["rss_base_mb"], "rss_mb": r["rss_mb"], "peak_rss_mb": r["peak_rss_mb"]}
        if emulated:   # kept, under names no speed-up, recommendation or comparison reads
            row.update({f"emulated_{k}": v for k, v in timing.items() if k.startswith(("latency", "load"))})
            row.update({k: v for k, v in timing.items() if "rss" in k})
            row["latency_note"] = EMULATED_NOTE
        else:
            row.update(timing)
        return row

    def recommend(self, rows: list[dict], max_drop: float) -> str | None:
        from ..harness import recommendation

        device_rows = [r for r in rows if not r.get("baseline")]
        if any(r.get("emulated") for r in device_rows):
            base = next((r for r in rows if r.get("baseline") and "top1" in r), None)
            ok = [r for r in device_rows if "top1" in r and base and r["top1"] >= base["top1"] - max_drop]
            meas = [r for r in device_rows if "top1" in r]
            return (f"no speed recommendation: timings under emulation are not device latencies; {len(ok)} of "
                    f"{len(meas)} classifier artifacts stay within {max_drop:g} pt of x86 fp32 top-1 on aarch64 kernels"
                    + ("" if base else " (no fp32 row to compare with)"))
        return recommendation(rows, max_drop)


def kernels_summary(k: dict) -> str | None:
    """One cell: what ran the model on the device."""
    if "onnxruntime_providers" in k:
        return "ORT " + "+".join(p.removesuffix("ExecutionProvider") for p in k["onnxruntime_providers"])
    if "delegate" in k:
        frac = k.get("delegated_fraction")
        return f"{k['delegate']} {100 * frac:.0f}% of ops" if frac is not None and k["delegate"] == "xnnpack" else k["delegate"]
    if "quantized_engine" in k:
        return f"{k['quantized_engine']} engine" if k["quantized_engine"] else "torch CPU (fp32)"
    return None


# emulated seconds per image seen here (fixture, 2-core EPYC, qemu 7.2): 0.6 (fp32 .onnx, 2 threads, machine busy)
EMULATED_S_PER_IMAGE = 3.0


def _run_timeout(timeout_s: float, images: int, emulated: bool) -> float:
    """--timeout bounds one step on a real device; under emulation a whole accuracy pass is one step, and it
    runs tens of times slower, so the bound grows with the images (a hung runtime is still caught)."""
    return max(timeout_s, 300 + EMULATED_S_PER_IMAGE * images) if emulated else timeout_s


def _host_machine() -> str:
    import platform

    return platform.machine()


def _reference(subject, threads: int, timeout_s: float, row: dict, labels, Worker, WorkerFailed):
    """The x86 fp32 eager outputs on the same inputs, in a worker process; None (and an error row) if it fails."""
    from ..harness import _fidelity_metrics

    w = Worker(subject, timeout_s)
    try:
        w.call("load", threads=threads)
        out = w.call("run", threads=threads)["outputs"]
    except WorkerFailed as e:
        row["error"] = str(e)
        return None
    finally:
        w.close()
    row.update(_fidelity_metrics(row["task"], out, labels, None))
    row["latency_note"] = "reference for accuracy only: an x86 timing is not comparable with the device"
    return out


register(Arm64Target())
