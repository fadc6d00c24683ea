"""A real board or phone over SSH: ``ssh://user@host[:port]``, its own Python and runtimes, real latency.

Safety: OpenSSH's client with ``BatchMode`` (key auth only, never a password prompt) and
``StrictHostKeyChecking=yes`` (the host must already be in known_hosts: a first connection is refused with
the command that adds it, never trusted silently).  Each job lives in a ``mktemp -d`` folder on the device
that is removed afterwards, also when the run fails.  A lost connection is the row's error.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from edgeclip.errors import EdgeclipError

from .base import Device, DeviceError, RunResult, read_result, runner_args, stage_job

_URL = re.compile(r"^ssh://(?:(?P<user>[^@/:]+)@)?(?P<host>[^@/:]+|\[[0-9a-fA-F:]+\])(?::(?P<port>\d+))?/?$")


@dataclass(frozen=True)
class SshTarget:
    user: str | None
    host: str
    port: int


def parse_ssh_url(url: str) -> SshTarget:
    m = _URL.match(url)
    if not m:
        raise EdgeclipError(f"--device {url!r} is not ssh://user@host[:port]; e.g. ssh://pi@192.168.1.20 or ssh://u0_a123@phone:8022")
    port = int(m.group("port") or 22)
    if not 0 < port < 65536:
        raise EdgeclipError(f"--device {url!r}: port {port} is out of range")
    return SshTarget(m.group("user"), m.group("host").strip("[]"), port)


class SshDevice(Device):
    emulated = False

    def __init__(self, url: str, *, python: str = "python3", ssh_options: list[str] | None = None,
                 connect_timeout_s: int = 15):
        self.url, self.target = url, parse_ssh_url(url)
        self.python, self.extra = python, list(ssh_options or [])
        self.connect_timeout_s = connect_timeout_s
        self.name = f"ssh {self.target.host}"
        self.arch = ""          # learned from the device (uname -m)

    def _base(self, tool: str) -> list[str]:
        t = self.target
        opts = ["-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes", "-o", "PasswordAuthentication=no",
                "-o", f"ConnectTimeout={self.connect_timeout_s}", "-o", "ServerAliveInterval=5",
                "-o", "ServerAliveCountMax=3", *self.extra]
        return [tool, *opts, "-p" if tool == "ssh" else "-P", str(t.port)]

    @property
    def _dest(self) -> str:
        t = self.target
        return f"{t.user}@{t.host}" if t.user else t.host

    def ssh(self, command: str, timeout_s: float, check: bool = True) -> subprocess.CompletedProcess:
        try:
            r = subprocess.run([*self._base("ssh"), self._dest, command], capture_output=True, text=True, timeout=timeout_s)
        except subprocess.TimeoutExpired:
            raise DeviceError(f"{self.url}: no answer within {timeout_s:g} s (connection lost?)") from None
        if check and r.returncode == 255:
            raise DeviceError(_ssh_error(self.url, r.stderr, self.target))
        return r

    def unavailable(self) -> str | None:
        try:
            r = self.ssh("uname -m && " + f"{shlex.quote(self.python)} -c 'import numpy'", timeout_s=self.connect_timeout_s + 15)
        except DeviceError as e:
            return str(e)
        if r.returncode != 0:
            return f"{self.url}: '{self.python}' with numpy is not on the device ({_last(r.stderr)}); install python3 and numpy there"
        self.arch = r.stdout.split()[0] if r.stdout.split() else ""
        return None

    def run(self, artifact_dir: Path, inputs: Path, *, threads: int, warmup: int, reps: int, timeout_s: float) -> RunResult:
        remote = self.ssh("mktemp -d -t edgeclip-job.XXXXXX", timeout_s=60).stdout.strip()
        if not remote.startswith("/"):
            raise DeviceError(f"{self.url}: could not make a job folder on the device")
        try:
            with tempfile.TemporaryDirectory(prefix="edgeclip-ssh-") as d:
                job = Path(d) / "job"
                stage_job(job, Path(artifact_dir), Path(inputs))
                self._scp([*map(str, job.iterdir())], f"{self._dest}:{remote}/", timeout_s)
                args = runner_args(remote, Path(artifact_dir).name, threads, warmup, reps)
                cmd = f"cd {shlex.quote(remote)} && PYTHONPATH={shlex.quote(remote + '/edgeclip_runtime.zip')} " \
                      f"{shlex.quote(self.python)} " + " ".join(shlex.quote(a) for a in args)
                r = self.ssh(cmd, timeout_s=timeout_s)
                if r.returncode not in (0, 3):
                    raise DeviceError(f"the runner failed on the device (exit code {r.returncode}): {_last(r.stderr)}")
                self._scp([f"{self._dest}:{remote}/result"], d, timeout_s)
                return read_result(Path(d) / "result", r.stderr)
        finally:
            try:   # nothing left on the device, whatever happened
                self.ssh(f"rm -rf {shlex.quote(remote)}", timeout_s=60, check=False)
            except DeviceError:
                pass

    def _scp(self, sources: list[str], dest: str, timeout_s: float) -> None:
        try:
            r = subprocess.run([*self._base("scp"), "-r", "-q", *sources, dest], capture_output=True, text=True, timeout=timeout_s)
        except subprocess.TimeoutExpired:
            raise DeviceError(f"{self.url}: copying took over {timeout_s:g} s (connection lost?)") from None
        if r.returncode != 0:
            raise DeviceError(_ssh_error(self.url, r.stderr, self.target, "copying to/from the device failed"))


def _last(text: str) -> str:
    return " ".join(text.strip().splitlines()[-2:])[:300] or "no message"


def _ssh_error(url: str, stderr: str, t: SshTarget, what: str = "cannot connect") -> str:
    if "Host key verification failed" in stderr or "No ED25519 host key" in stderr or "host key" in stderr.lower():
        port = f" -p {t.port}" if t.port != 22 else ""
        return (f"{url}: the device's host key is not in known_hosts (or changed); check it and add it with "
                f"'ssh-keyscan{port} {t.host} >> ~/.ssh/known_hosts'")
    if "Permission denied" in stderr:
        return f"{url}: key authentication refused (passwords are never used); add your public key to the device's authorized_keys"
    return f"{url}: {what} ({_last(stderr)})"
