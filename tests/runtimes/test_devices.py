"""Devices: the on-device runner, the SSH device against a real OpenSSH server on 127.0.0.1, the emulated arm64.

The SSH device's "board" here is this host's own Python (x86) reached over a real sshd with a throwaway key and
a free port: what is tested is the transport (host keys, key auth, copy, run, clean-up, lost connection) and
that the numbers come back in the bench schema.  The emulated aarch64 tests need the environment that
``edgeclip device setup arm64`` builds and skip with that reason when it is absent.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import edgeclip
from edgeclip.runtimes.devices import DeviceError, EmulatedArm64, SshDevice, parse_ssh_url, runtime_zip


def _art(out: Path, suffix: str) -> Path:
    return next(p for p in out.iterdir() if p.name.endswith(suffix))


def test_ssh_urls():
    t = parse_ssh_url("ssh://pi@192.168.1.20:2222")
    assert (t.user, t.host, t.port) == ("pi", "192.168.1.20", 2222)
    assert parse_ssh_url("ssh://board").port == 22 and parse_ssh_url("ssh://board").user is None
    for bad in ("pi@host", "ssh://", "http://x", "ssh://a@b:c"):
        with pytest.raises(edgeclip.EdgeclipError, match="is not ssh://user@host"):
            parse_ssh_url(bad)
    for bad in ("ssh://a@b:0", "ssh://a@b:70000"):
        with pytest.raises(edgeclip.EdgeclipError, match="out of range"):
            parse_ssh_url(bad)


def test_runner_needs_only_numpy_and_the_format_runtime(tiny_onnx_pair, tmp_path):
    """The runner, importing edgeclip from the zip alone, runs an .onnx with onnxruntime + numpy (no torch),
    and its outputs are the host session's."""
    from edgeclip.runtimes import load
    from edgeclip.runtimes.devices.base import runner_args, stage_job

    art = _art(tiny_onnx_pair, "onnx-int8-dynamic")
    x = np.random.default_rng(0).standard_normal((5, 3, 32, 32)).astype(np.float32)
    np.save(tmp_path / "in.npy", x)
    job = tmp_path / "job"
    stage_job(job, art, tmp_path / "in.npy")
    r = subprocess.run([sys.executable, "-c", "import runpy, sys; sys.argv[1:] = sys.argv[2:]; "
                        "runpy.run_module('edgeclip.runtimes.device_runner', run_name='__main__')", "-",
                        *runner_args(str(job), art.name, 1, 1, 4)[2:]],
                       cwd=job, env={**os.environ, "PYTHONPATH": str(job / "edgeclip_runtime.zip")},
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    res = json.loads((job / "result" / "result.json").read_text())
    assert "torch" not in res["versions"] and "onnxruntime" in res["versions"]
    assert res["kernels"]["onnxruntime_providers"] == ["CPUExecutionProvider"] and len(res["latency_s"]) == 4
    assert res["machine"] and res["peak_rss_mb"] > 0
    np.testing.assert_allclose(np.load(job / "result" / "outputs.npy"), load(art).run(x), rtol=1e-5, atol=1e-5)


# --- a real OpenSSH server on 127.0.0.1 ------------------------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture()
def sshd(tmp_path):
    sshd_bin = shutil.which("sshd") or "/usr/sbin/sshd"
    if not Path(sshd_bin).is_file() or os.geteuid() != 0:
        pytest.skip("needs root and OpenSSH's sshd (apt-get install openssh-server)")
    d = tmp_path / "ssh"
    d.mkdir()
    for k in ("host", "user"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / k)], check=True)
    shutil.copy(d / "user.pub", d / "authorized_keys")
    Path("/run/sshd").mkdir(exist_ok=True)
    port = _free_port()
    proc = subprocess.Popen([sshd_bin, "-D", "-e", "-p", str(port), "-h", str(d / "host"), "-o", "ListenAddress=127.0.0.1",
                             "-o", f"AuthorizedKeysFile={d / 'authorized_keys'}", "-o", "PasswordAuthentication=no",
                             "-o", "KbdInteractiveAuthentication=no", "-o", "UsePAM=no", "-o", "StrictModes=no",
                             "-o", "PermitRootLogin=prohibit-password", "-o", "PidFile=none"],
                            stderr=open(d / "sshd.log", "w"))
    for _ in range(50):
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                break
        time.sleep(0.1)
    (d / "known_hosts").write_text(f"[127.0.0.1]:{port} {' '.join((d / 'host.pub').read_text().split()[:2])}\n")
    opts = ["-i", str(d / "user"), "-o", f"UserKnownHostsFile={d / 'known_hosts'}", "-o", "IdentitiesOnly=yes"]
    yield {"url": f"ssh://root@127.0.0.1:{port}", "opts": opts, "dir": d, "proc": proc, "port": port}
    proc.kill()
    proc.wait(5)


def _leftovers() -> set[str]:
    import tempfile

    return {p.name for p in Path(tempfile.gettempdir()).glob("edgeclip-job.*")}


def test_ssh_device_end_to_end(sshd, tiny_onnx_pair, tiny_images, monkeypatch):
    """bench --target arm64 --device ssh://...: real latency percentiles, memory, load time and accuracy in the
    bench schema, the device's architecture on every row, nothing left on the device."""
    from edgeclip.benchmarks.targets import arm64

    before = _leftovers()
    monkeypatch.setattr(arm64, "_device", lambda opts: SshDevice(opts.device, python=sys.executable, ssh_options=sshd["opts"]))
    rep = edgeclip.bench(tiny_onnx_pair, data=tiny_images, target="arm64", device=sshd["url"], threads=1,
                         timing=edgeclip.TimingConfig(warmup=1, rounds=2, reps_per_round=3))
    rows = {r["artifact"]: r for r in rep["rows"]}
    base = next(r for r in rep["rows"] if r.get("baseline"))
    fp32, int8 = rows[_art(tiny_onnx_pair, "onnx-fp32").name], rows[_art(tiny_onnx_pair, "onnx-int8-dynamic").name]
    for r in (fp32, int8):
        assert "error" not in r, r.get("error")
        assert r["latency_samples"] == 6 and r["latency_ms_p99"] >= r["latency_ms_median"] > 0
        assert r["peak_rss_mb"] > 0 and r["load_s"] > 0 and r["images"] == 18 and not r["emulated"]
        assert r["machine"] == os.uname().machine and r["kernels"]["onnxruntime_providers"] == ["CPUExecutionProvider"]
    assert fp32["agreement"] == 100.0 and fp32["mean_cosine"] > 0.99999 and fp32["top1"] == base["top1"]
    assert base["machine"] == os.uname().machine and "speedup" not in fp32
    assert rep["device"]["arch"] == os.uname().machine and rep["device"]["emulated"] is False
    assert _leftovers() == before


def test_ssh_unknown_host_key_refused(sshd):
    opts = [o if not o.startswith("UserKnownHostsFile") else f"UserKnownHostsFile={sshd['dir'] / 'empty'}" for o in sshd["opts"]]
    why = SshDevice(sshd["url"], python=sys.executable, ssh_options=opts).unavailable()
    assert "host key is not in known_hosts" in why and f"ssh-keyscan -p {sshd['port']} 127.0.0.1" in why


def test_ssh_without_the_key_never_asks_a_password(sshd):
    opts = [o for o in sshd["opts"] if not o.startswith(str(sshd["dir"] / "user"))]
    opts = [o for i, o in enumerate(opts) if not (o == "-i")]
    why = SshDevice(sshd["url"], python=sys.executable, ssh_options=[*opts, "-o", "IdentityFile=/dev/null"]).unavailable()
    assert "key authentication refused" in why


def test_lost_connection_is_an_error_row(sshd, tiny_onnx_pair, tmp_path):
    dev = SshDevice(sshd["url"], python=sys.executable, ssh_options=sshd["opts"], connect_timeout_s=3)
    assert dev.unavailable() is None
    sshd["proc"].kill()
    sshd["proc"].wait(5)
    np.save(tmp_path / "in.npy", np.zeros((2, 3, 32, 32), np.float32))
    with pytest.raises(DeviceError, match="127.0.0.1"):
        dev.run(_art(tiny_onnx_pair, "onnx-fp32"), tmp_path / "in.npy", threads=1, warmup=1, reps=1, timeout_s=20)


# --- emulated aarch64 ------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def arm64_env():
    env = EmulatedArm64()
    why = env.unavailable()
    if why:
        pytest.skip(why)
    return env


def test_emulated_arm64_runs_onnx_on_aarch64_kernels(arm64_env, tiny_onnx_pair, tiny_images):
    """The same .onnx files, run by the aarch64 onnxruntime: the rows say aarch64 and emulated, carry accuracy
    against the x86 fp32 model, and no latency a speed-up or recommendation could read."""
    arts = [str(_art(tiny_onnx_pair, s)) for s in ("onnx-fp32", "onnx-int8-dynamic")]
    rep = edgeclip.bench(arts, data=tiny_images, target="arm64", threads=1,
                         timing=edgeclip.TimingConfig(warmup=1, rounds=1, reps_per_round=3))
    dev = [r for r in rep["rows"] if not r.get("baseline")]
    assert len(dev) == 2
    for r in dev:
        assert "error" not in r, r["error"]
        assert r["machine"] == "aarch64" and r["emulated"] and r["latency_note"] == "emulated: not a device latency"
        assert "latency_ms_median" not in r and r["emulated_latency_ms_median"] > 0 and "speedup" not in r
    fp32 = next(r for r in dev if r["quant"] == "fp32")
    assert fp32["agreement"] == 100.0 and fp32["mean_cosine"] > 0.9999
    assert rep["recommendation"].startswith("no speed recommendation")
    assert rep["device"]["arch"] == "aarch64" and rep["device"]["emulated"]


def test_emulated_env_missing_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGECLIP_ARM64_ENV", str(tmp_path / "none"))
    why = EmulatedArm64().unavailable()
    if os.geteuid() == 0 and shutil.which("qemu-aarch64-static"):
        assert why == f"no aarch64 environment at {tmp_path / 'none'}; build it with 'edgeclip device setup arm64'"
    else:
        assert "root" in why or "apt-get install" in why


def test_runtime_zip_has_no_exporter(tmp_path):
    import zipfile

    names = zipfile.ZipFile(runtime_zip(tmp_path / "rt.zip")).namelist()
    assert "edgeclip/runtimes/device_runner.py" in names and not any("exporter" in n or "benchmarks" in n for n in names)
