"""What every device does: stage a job folder, run the runner there, read the result back."""

from __future__ import annotations

import json
import shutil
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgeclip.errors import EdgeclipError

# what the device needs of edgeclip: the manifest contract and the runtime adapters (stdlib + numpy + the
# format's runtime); nothing that imports the exporter, the models or the benchmarks
RUNTIME_MODULES = ("edgeclip", "edgeclip.errors", "edgeclip.manifest", "edgeclip.runtimes", "edgeclip.runtimes.base",
                   "edgeclip.runtimes.onnxruntime_cpu", "edgeclip.runtimes.lite_interpreter",
                   "edgeclip.runtimes.executorch_runtime", "edgeclip.runtimes.device_runner")


class DeviceError(EdgeclipError):
    """The device could not run the job at all (connection lost, environment missing): the row's error."""


@dataclass
class RunResult:
    result: dict                  # result.json as the device wrote it
    outputs: np.ndarray | None    # None when the run failed


def runtime_zip(dest: Path) -> Path:
    """A zip of edgeclip's runtime adapters, importable from ``sys.path`` on any Python >= 3.9."""
    import importlib.util

    dest.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(dest, "w") as z:
        for mod in RUNTIME_MODULES:
            spec = importlib.util.find_spec(mod)
            name = mod.replace(".", "/") + ("/__init__.py" if spec.submodule_search_locations else ".py")
            z.write(spec.origin, name)
    return dest


def stage_job(job: Path, artifact_dir: Path, inputs: Path) -> None:
    """The job folder a device receives: the artifact (folder name kept), the inputs, the adapters."""
    job.mkdir(parents=True, exist_ok=True)
    shutil.copytree(artifact_dir, job / "artifact" / artifact_dir.name)
    shutil.copy2(inputs, job / "inputs.npy")
    runtime_zip(job / "edgeclip_runtime.zip")


def runner_args(job: str, artifact_name: str, threads: int, warmup: int, reps: int) -> list[str]:
    return ["-m", "edgeclip.runtimes.device_runner", f"{job}/artifact/{artifact_name}", f"{job}/inputs.npy",
            f"{job}/result", "--threads", str(threads), "--warmup", str(warmup), "--reps", str(reps)]


def read_result(result_dir: Path, stderr: str = "") -> RunResult:
    res_file = result_dir / "result.json"
    if not res_file.is_file():
        tail = " ".join(stderr.strip().splitlines()[-2:])[:300]
        raise DeviceError(f"the device runner wrote no result ({tail or 'no message'})")
    res = json.loads(res_file.read_text())
    out = result_dir / "outputs.npy"
    return RunResult(res, np.load(out) if "error" not in res and out.is_file() else None)


class Device:
    """A place artifacts run.  ``emulated`` devices give correctness and kernel coverage, never latency."""

    name: str = ""
    arch: str = ""
    emulated: bool = False

    def unavailable(self) -> str | None:
        return None

    def run(self, artifact_dir: Path, inputs: Path, *, threads: int, warmup: int, reps: int,
            timeout_s: float) -> RunResult:
        raise NotImplementedError
