"""Interrupted, concurrent and tampered work: nothing half-written, nothing silently wrong.

The kill tests run the real CLI in a child process, wait until it is writing (its hidden staging folder
exists), signal it, and then look at what it left in ``--out``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import edgeclip
from edgeclip.cli import main
from edgeclip.errors import EdgeclipError
from edgeclip.manifest import open_artifact, sha256_file
from edgeclip.runtimes import load

ROOT = Path(__file__).resolve().parent.parent


def _cli(*args: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    # a child of a background job inherits SIGINT as ignored (and Python then never raises KeyboardInterrupt):
    # give the CLI the default disposition a user's terminal gives it
    return subprocess.Popen([sys.executable, "-m", "edgeclip.cli", *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def _staging(out: Path) -> list[Path]:
    return [p for p in out.iterdir() if ".tmp-" in p.name or ".old-" in p.name] if out.exists() else []


def _published(out: Path) -> list[Path]:
    return [p for p in out.iterdir() if not p.name.startswith(".")] if out.exists() else []


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_killed_mid_write_leaves_nothing(tiny_clip_dir, tiny_images, tiny_calib_images, tmp_path, sig):
    out = tmp_path / "out"
    # static int8 ONNX: calibration, per-node sensitivity and quantization all happen inside the staging folder
    proc = _cli("export", "--model", str(tiny_clip_dir), "--data", tiny_images, "--out", str(out), "--quant", "int8",
                "--scheme", "static", "--calib-data", tiny_calib_images, "--calib-size", "6",
                "--verify-size", "18", "--min-agreement", "0", "--json")
    deadline = time.time() + 120
    while not _staging(out):
        assert proc.poll() is None, f"export ended before it could be interrupted: {proc.communicate()}"
        assert time.time() < deadline, "export never started writing"
        time.sleep(0.01)
    time.sleep(0.3)  # well inside the write
    proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, (proc.returncode, stderr[-2000:])
    assert "Interrupted: nothing partial was written." in stderr
    assert _staging(out) == [] and _published(out) == []
    assert not list(out.rglob("manifest.json")) and not list(out.rglob("*.onnx"))


def test_two_exports_into_one_directory(tiny_clip_dir, tiny_images, tmp_path):
    """Same artifact name from two processes at once: one complete, verified artifact, no debris."""
    out = tmp_path / "out"
    args = ["export", "--model", str(tiny_clip_dir), "--data", tiny_images, "--out", str(out), "--verify-size", "18", "--json"]
    procs = [_cli(*args), _cli(*args)]
    results = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [r[1][-1500:] for r in results]
    names = sorted(p.name for p in _published(out))
    assert names == [f"{tiny_clip_dir.name}-classifier-onnx-fp32"], names
    assert _staging(out) == []
    for d in _published(out):
        art = open_artifact(d)
        art.verify_integrity()                  # the manifest describes exactly the file beside it
        assert load(art).run(np.zeros((1, 3, 32, 32), np.float32)).shape == (1, 3)


@pytest.fixture(scope="module")
def fp32_artifacts(tiny_clip_dir, tiny_images, tmp_path_factory):
    out = tmp_path_factory.mktemp("arts")
    arts = edgeclip.export(str(tiny_clip_dir), formats=("onnx", "ptl", "pte"), data=tiny_images, out=str(out), verify_size=18)
    return {a.format: a for a in arts}


def _copy(art, tmp_path: Path):
    import shutil

    dst = tmp_path / art.name
    shutil.copytree(art.dir, dst)
    return open_artifact(dst)


@pytest.mark.parametrize("fmt", ["onnx", "ptl", "pte"])
@pytest.mark.parametrize("damage", ["flip-byte", "truncate", "replace"])
def test_tampered_artifact_refused_by_its_runtime(fp32_artifacts, tmp_path, fmt, damage):
    art = _copy(fp32_artifacts[fmt], tmp_path)
    data = bytearray(art.file.read_bytes())
    if damage == "flip-byte":
        data[len(data) // 2] ^= 0x01
    elif damage == "truncate":
        data = data[: len(data) - 1]
    else:  # a different but same-sized file
        data = bytearray(reversed(data))
    art.file.write_bytes(bytes(data))
    with pytest.raises(EdgeclipError, match=r"(sha256 in its manifest \(tampered or corrupted\)|\(truncated or replaced\)); re-export"):
        load(art)
    r = CliRunner().invoke(main, ["verify", str(art.dir)])
    assert r.exit_code == 2 and r.output.startswith("Error: ") and "re-export" in r.output


@pytest.mark.parametrize("fmt", ["onnx", "ptl", "pte"])
def test_verify_passes_on_a_good_artifact(fp32_artifacts, tiny_images, fmt):
    r = CliRunner().invoke(main, ["verify", str(fp32_artifacts[fmt].dir), "--json"])
    assert r.exit_code == 0, r.output
    (res,) = json.loads(r.stdout)
    assert res["integrity"] == "ok" and res["passed"] and res["fidelity"]["mean_cosine"] > 0.9999
    assert res["fidelity"]["samples"] == 18


def test_verify_catches_a_consistent_but_wrong_file(fp32_artifacts, tiny_clip_dir, tiny_images, tmp_path):
    """A file whose sha256 matches its (edited) manifest but is not the model: fidelity, not integrity, catches it."""
    import shutil

    from safetensors.torch import load_file, save_file

    art = _copy(fp32_artifacts["onnx"], tmp_path)
    other = tmp_path / "retrained"   # same architecture, different weights: what a wrong file really looks like
    shutil.copytree(tiny_clip_dir, other)
    sd = load_file(str(other / "open_clip_model.safetensors"))
    gen = torch.Generator().manual_seed(1)
    sd = {k: v + torch.randn(v.shape, generator=gen) * v.std() if k.startswith("visual.") and v.dim() > 1 else v
          for k, v in sd.items()}
    save_file(sd, str(other / "open_clip_model.safetensors"))
    (wrong,) = edgeclip.export(str(other), data=tiny_images, out=str(tmp_path / "q"), verify_size=18)
    art.file.write_bytes(wrong.file.read_bytes())
    m = json.loads((art.dir / "manifest.json").read_text())
    m["file"].update(bytes=art.file.stat().st_size, sha256=sha256_file(art.file))
    (art.dir / "manifest.json").write_text(json.dumps(m))
    r = CliRunner().invoke(main, ["verify", str(art.dir)])
    assert r.exit_code == 3, r.output
    assert "FAIL: mean cosine" in r.output
