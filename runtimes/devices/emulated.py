"""An aarch64 Python under user-mode emulation: the ARM builds of onnxruntime, ExecuTorch and torch, run here.

What was chosen and why (facts in ../shared/notes/arm64-emulation.md, re-checked 2026-12-03):

- ``binfmt_misc`` is not mounted on these machines, so aarch64 programs cannot be exec'd directly; the
  interpreter is started as ``qemu-aarch64-static -L ROOT ROOT/usr/bin/python3.11`` (Debian's qemu-user-static).
- ROOT is not a debootstrap: the second stage needs a chroot under emulation.  It is Debian 12's arm64
  ``python3.11-minimal`` + ``libpython3.11-stdlib`` and the shared libraries they need, fetched with
  ``apt-get download`` and unpacked with ``dpkg -x`` (63 MB, seconds).
- Python packages are PyPI's aarch64 wheels of the versions this host runs (so a file is run by the same
  release of its runtime on both sides), put in a folder by the host's pip (``--platform``, ``--no-deps``).
- PyPI's aarch64 torch 2.14.1 is a CUDA build: its libraries name CUDA libraries that no CPU machine has.  The
  environment gets stand-ins for them -- shared objects with the right names, symbol versions and symbols,
  each function returning an error code -- built with Debian's aarch64 binutils.  They are only loaded, never
  called: torch's CPU kernels (and its qnnpack engine) are the real ARM code; ``torch.cuda.is_available()`` is
  False.  A real device installs its own torch.
- onnxruntime and ExecuTorch probe the CPU with cpuinfo, which reads the host's ``/proc/cpuinfo`` under
  qemu-user and then segfaults; each run gets a private mount namespace (``unshare -m``, root) with an ARM
  ``/proc/cpuinfo`` (a Neoverse-N1 with dotprod) bound over it, and qemu emulates that CPU.

Emulated time is not device time: rows from here carry correctness, kernels and memory, never latency claims.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from .base import Device, DeviceError, RunResult, read_result, runner_args, stage_job

DEBS = ("python3.11-minimal", "libpython3.11-minimal", "libpython3.11-stdlib", "libc6", "libgcc-s1", "libstdc++6",
        "libgomp1", "zlib1g", "libexpat1", "libffi8", "libssl3", "libbz2-1.0", "liblzma5", "libsqlite3-0",
        "libncursesw6", "libtinfo6", "libreadline8", "libuuid1", "libcrypt1", "libdb5.3", "libnsl2", "libtirpc3",
        "libgssapi-krb5-2", "libkrb5-3", "libk5crypto3", "libkrb5support0", "libkeyutils1", "libcom-err2")
# pure-Python packages torch imports; onnxruntime and numpy need nothing else to run a model
TORCH_PURE_DEPS = ("typing_extensions", "filelock", "sympy", "mpmath", "networkx", "jinja2", "markupsafe", "fsspec")
QEMU_CPU = "neoverse-n1"
CPUINFO = "".join(f"processor\t: {i}\nBogoMIPS\t: 50.00\nFeatures\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics "
                  "fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp ssbs\nCPU implementer\t: 0x41\nCPU architecture: 8\n"
                  "CPU variant\t: 0x3\nCPU part\t: 0xd0c\nCPU revision\t: 1\n\n" for i in range(2))
MIN_FREE_GB = 4.0


def arm64_env_dir() -> Path:
    """``$EDGECLIP_ARM64_ENV``, else the user's cache dir (``$XDG_CACHE_HOME`` or ~/.cache)/edgeclip/arm64."""
    if os.environ.get("EDGECLIP_ARM64_ENV"):
        return Path(os.environ["EDGECLIP_ARM64_ENV"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "edgeclip" / "arm64"


def host_versions() -> dict[str, str]:
    """The runtime releases this host runs; the aarch64 environment gets the same ones."""
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for pkg in ("numpy", "onnxruntime", "torch", "executorch"):
        try:
            out[pkg] = version(pkg).split("+")[0]
        except PackageNotFoundError:
            pass
    return out


def _missing_prerequisite(root_needed: bool = True) -> str | None:
    if root_needed and os.geteuid() != 0:
        return "the arm64 environment needs root (a private mount namespace per run); run as root or use --device ssh://..."
    for tool, pkg in (("qemu-aarch64-static", "qemu-user-static"), ("unshare", "util-linux")):
        if shutil.which(tool) is None:
            return f"{tool} is missing; install it with 'apt-get install {pkg}'"
    return None


class EmulatedArm64(Device):
    name = "arm64-emulated"
    arch = "aarch64"
    emulated = True

    def __init__(self, env_dir: Path | None = None):
        self.env = Path(env_dir or arm64_env_dir())

    # --- the environment ---------------------------------------------------------------------------------------
    @property
    def stamp(self) -> Path:
        return self.env / "ready.json"

    def ready(self) -> dict | None:
        try:
            return json.loads(self.stamp.read_text())
        except (OSError, ValueError):
            return None

    def unavailable(self) -> str | None:
        why = _missing_prerequisite()
        if why:
            return why
        if self.ready() is None:
            return f"no aarch64 environment at {self.env}; build it with 'edgeclip device setup arm64'"
        return None

    def setup(self, progress=None, force: bool = False) -> dict:
        """Build (or refresh) the environment; each step is skipped when its output is already there."""
        why = _missing_prerequisite()
        if why:
            raise DeviceError(why)
        for tool, pkg in (("apt-get", "apt"), ("dpkg", "dpkg"), ("aarch64-linux-gnu-as", "binutils-aarch64-linux-gnu")):
            if shutil.which(tool) is None:
                raise DeviceError(f"{tool} is missing; install it with 'apt-get install {pkg}'")
        self.env.mkdir(parents=True, exist_ok=True)
        free = shutil.disk_usage(self.env).free / 1e9
        want = host_versions()
        old = self.ready()
        if old and not force and old.get("versions") == want:
            return old
        if free < MIN_FREE_GB and not (self.env / "site").exists():
            raise DeviceError(f"{free:.1f} GB free under {self.env}; the arm64 environment needs {MIN_FREE_GB:g} GB "
                              "(set EDGECLIP_ARM64_ENV to a bigger disk)")
        self.stamp.unlink(missing_ok=True)
        steps = [("Debian arm64 Python", self._debs), ("aarch64 wheels", lambda: self._wheels(want)),
                 ("CUDA stand-ins for torch", self._stubs), ("smoke test", self._smoke)]
        info = {}
        for i, (label, fn) in enumerate(steps, 1):
            if progress:
                progress(f"[{i}/{len(steps)}] {label}")
            info.update(fn() or {})
        info["versions"] = want
        self.stamp.write_text(json.dumps(info, indent=2))
        return info

    def _debs(self) -> None:
        root = self.env / "root"
        if (root / "usr/bin/python3.11").is_file():
            return
        arches = subprocess.run(["dpkg", "--print-foreign-architectures"], capture_output=True, text=True).stdout.split()
        if "arm64" not in arches:
            _check(["dpkg", "--add-architecture", "arm64"], "dpkg --add-architecture arm64")
            _check(["apt-get", "update", "-q"], "apt-get update")
        with tempfile.TemporaryDirectory(dir=self.env) as d:
            r = subprocess.run(["apt-get", "download", "-q", *[f"{p}:arm64" for p in DEBS]], cwd=d, capture_output=True, text=True)
            if r.returncode != 0:   # a stale package list: refresh once
                _check(["apt-get", "update", "-q"], "apt-get update")
                _check(["apt-get", "download", "-q", *[f"{p}:arm64" for p in DEBS]], "apt-get download (arm64)", cwd=d)
            tmp = Path(d) / "root"
            for deb in sorted(Path(d).glob("*.deb")):
                _check(["dpkg", "-x", str(deb), str(tmp)], f"dpkg -x {deb.name}")
            tmp.rename(root)

    def _wheels(self, want: dict) -> None:
        import sys

        site = self.env / "site"
        pins = [f"{p}=={v}" for p, v in want.items()] + list(TORCH_PURE_DEPS)
        with tempfile.TemporaryDirectory(dir=self.env) as d:
            _check([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", d, "--platform", "manylinux_2_28_aarch64",
                    "--python-version", "3.11", "--only-binary=:all:", *pins], "pip install (aarch64 wheels)")
            if site.exists():
                shutil.rmtree(site)
            Path(d).rename(site)
            Path(d).mkdir()   # TemporaryDirectory's cleanup wants it back

    def _stubs(self) -> dict:
        from .cuda_standins import write_standins

        lib = self.env / "site" / "torch" / "lib"
        if not lib.is_dir():
            return {"cuda_standins": []}
        out = self.env / "standins"
        if out.exists():
            shutil.rmtree(out)
        return {"cuda_standins": write_standins(lib, [self.env / "root" / "lib" / "aarch64-linux-gnu",
                                                      self.env / "root" / "usr" / "lib" / "aarch64-linux-gnu"], out)}

    def _smoke(self) -> dict:
        code = ("import platform, numpy, onnxruntime, torch, json; "
                "from edgeclip.runtimes.executorch_runtime import _runtime_class; _runtime_class(); "
                "print(json.dumps({'machine': platform.machine(), 'engines': torch.backends.quantized.supported_engines, "
                "'ort_providers': onnxruntime.get_available_providers()}))")
        with tempfile.TemporaryDirectory() as d:
            from .base import runtime_zip

            z = runtime_zip(Path(d) / "rt.zip")
            r = subprocess.run(self.command(["-c", code], pythonpath=[str(z)]), capture_output=True, text=True, timeout=600,
                               cwd=d)   # not the caller's folder: a source checkout there would shadow the zip
        if r.returncode != 0:
            raise DeviceError(f"the aarch64 Python does not start its runtimes: {_tail(r.stderr)}")
        return {"smoke": json.loads(r.stdout.strip().splitlines()[-1])}

    # --- running -----------------------------------------------------------------------------------------------
    def command(self, args: list[str], pythonpath: list[str] = ()) -> list[str]:
        """argv that runs the aarch64 Python with ``args`` in its own mount namespace with an ARM /proc/cpuinfo."""
        cpuinfo = self.env / "cpuinfo"
        if not cpuinfo.is_file():
            cpuinfo.write_text(CPUINFO)
        root = self.env / "root"
        path = ":".join([*pythonpath, str(self.env / "site")])
        qemu = ["qemu-aarch64-static", "-cpu", QEMU_CPU, "-L", str(root), "-E", f"PYTHONPATH={path}",
                "-E", f"LD_LIBRARY_PATH={self.env / 'standins'}", "-E", "OMP_WAIT_POLICY=PASSIVE",
                "-E", "PYTHONDONTWRITEBYTECODE=1", str(root / "usr/bin/python3.11"), *args]
        script = 'mount --bind "$0" /proc/cpuinfo && exec "$@"'
        return ["unshare", "-m", "--propagation", "private", "sh", "-c", script, str(cpuinfo), *qemu]

    def run(self, artifact_dir: Path, inputs: Path, *, threads: int, warmup: int, reps: int, timeout_s: float) -> RunResult:
        with tempfile.TemporaryDirectory(prefix="edgeclip-arm64-") as d:
            job = Path(d)
            stage_job(job, Path(artifact_dir), Path(inputs))
            argv = self.command(runner_args(str(job), Path(artifact_dir).name, threads, warmup, reps),
                                pythonpath=[str(job / "edgeclip_runtime.zip")])
            try:
                r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s, cwd=job)
            except subprocess.TimeoutExpired:
                raise DeviceError(f"the emulated run took over {timeout_s:g} s; raise --timeout or pass --limit") from None
            if r.returncode not in (0, 3):
                raise DeviceError(f"the emulated runtime crashed (exit code {r.returncode}): {_tail(r.stderr)}")
            return read_result(job / "result", r.stderr)


def _tail(text: str) -> str:
    lines = [ln for ln in text.strip().splitlines() if "MIDR" not in ln]
    return " ".join(lines[-2:])[:300] or "no message"


def _check(argv: list[str], what: str, cwd=None) -> None:
    r = subprocess.run(argv, capture_output=True, text=True, cwd=cwd)
    if r.returncode != 0:
        raise DeviceError(f"{what} failed: {_tail(r.stderr or r.stdout)}")
