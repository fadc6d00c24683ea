"""The release as a stranger gets it: a built wheel (and sdist) carries the built-in weights, and the installed
package -- not this checkout -- exports, verifies and benchmarks the built-in model to its documented top-1.

Editable installs read the weights from the source tree, so only a real wheel in a separate venv catches a
package-data glob that misses them (it did: the 0.1.0 wheel had no weights).  The new venv reuses the torch
already installed here through a ``.pth`` path entry (quick, offline); that entry does not process the
editable-install hooks of this environment, so ``import edgeclip`` there can only find the wheel's copy.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import zipfile
from pathlib import Path

import pytest

from conftest import ROOT

WEIGHTS = "models/weights/edgeclip_fmnist/open_clip_model.safetensors"


def _source_copy(dst: Path) -> Path:
    """The files a fresh clone would have (tracked, plus new files not ignored), so build leftovers cannot hide a packaging bug."""
    try:
        files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT, capture_output=True, check=True).stdout.decode().split("\0")
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("needs a git checkout to know which files a clone has")
    for rel in filter(None, files):
        if (ROOT / rel).is_file():
            (dst / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / rel, dst / rel)
    return dst


@pytest.fixture(scope="module")
def dists(tmp_path_factory) -> dict[str, Path]:
    src = _source_copy(tmp_path_factory.mktemp("src"))
    dist = tmp_path_factory.mktemp("dist")
    built = {}
    for kind in ("wheel", "sdist"):   # one process each: setuptools keeps state between builds in one process
        code = f"import sys; from setuptools import build_meta as b; print('BUILT', b.build_{kind}(sys.argv[1]))"
        out = subprocess.run([sys.executable, "-c", code, str(dist)], cwd=src, capture_output=True, text=True)
        assert out.returncode == 0, out.stderr[-2000:]
        built[kind] = dist / out.stdout.strip().splitlines()[-1].split()[-1]
    return built


def test_wheel_and_sdist_carry_the_builtin_weights(dists):
    names = zipfile.ZipFile(dists["wheel"]).namelist()
    for f in ("open_clip_model.safetensors", "open_clip_config.json", "templates.json", "metrics.json"):
        assert f"edgeclip/models/weights/edgeclip_fmnist/{f}" in names
    shipped = zipfile.ZipFile(dists["wheel"]).getinfo(f"edgeclip/{WEIGHTS}")
    assert shipped.file_size == (ROOT / WEIGHTS).stat().st_size   # the whole file, not a pointer or a stub
    with tarfile.open(dists["sdist"]) as t:
        assert any(n.endswith(WEIGHTS) for n in t.getnames())


@pytest.fixture(scope="module")
def installed(dists, tmp_path_factory) -> Path:
    venv = tmp_path_factory.mktemp("venv")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    py = venv / "bin" / "python"
    site = Path(subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    (site / "reuse_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    r = subprocess.run([sys.executable, "-m", "pip", "--python", str(py), "install", "--no-deps", "--no-index", "-q",
                        str(dists["wheel"])], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    where = subprocess.run([str(py), "-c", "import edgeclip.models.factory as f; print(f.BUILTIN_DIR)"],
                           capture_output=True, text=True, check=True, cwd=venv).stdout.strip()
    assert where.startswith(str(site)), f"edgeclip was imported from {where}, not the installed wheel"
    return venv


def test_installed_wheel_exports_verifies_and_benches(installed, fmnist_spec, tmp_path):
    exe = str(installed / "bin" / "edgeclip")
    env = {**os.environ, "PYTHONPATH": ""}
    run = lambda *a: subprocess.run([exe, *a], cwd=tmp_path, capture_output=True, text=True, env=env)  # noqa: E731

    r = run("export", "--quant", "int8", "--data", fmnist_spec, "--verify-size", "64")
    assert r.returncode == 0, r.stderr[-2000:]
    assert (tmp_path / "out" / "edgeclip-fmnist-classifier-onnx-int8-dynamic" / "model.onnx").is_file()
    r = run("verify", "out", "--data", fmnist_spec)                 # the folder export wrote into
    assert r.returncode == 0, r.stdout + r.stderr[-2000:]
    assert "pass" in r.stdout
    # Eager and int8 on the first 2,000 test images (agreement, and eager against its measured first-2000 figures;
    # eager over all 10,000 ran here before: ~20 CPU-s more); the int8 file over all 10,000 below
    r = run("bench", "out", "--data", fmnist_spec, "--limit", "2000", "--threads", "1", "--rounds", "1", "--reps", "3", "--json")
    assert r.returncode == 0, r.stderr[-2000:]
    rows = {x["artifact"]: x for x in json.loads(r.stdout)["rows"]}
    documented = json.loads((ROOT / "models" / "weights" / "edgeclip_fmnist" / "metrics.json").read_text())
    eager = rows["edgeclip-fmnist fp32 eager"]
    assert eager["images"] == 2000 and eager["top1"] == pytest.approx(documented["top1_first2000"], abs=0.005)
    assert eager["top5"] == pytest.approx(documented["top5_first2000"], abs=0.005)
    int8 = rows["edgeclip-fmnist-classifier-onnx-int8-dynamic"]
    assert "error" not in int8 and int8["agreement"] >= 99.0
    # README's results table is the output of command (1) on all 10,000 images: its rows name these artifacts
    # with these sizes, and its eager top-1 is the documented figure
    readme = {cells[0]: cells for cells in _readme_table()[1:]}
    assert readme["edgeclip-fmnist-classifier-onnx-int8-dynamic"][4] == f"{int8['file_mb']:.2f}"
    assert readme["edgeclip-fmnist fp32 eager"][-4] == f"{documented['top1']:.2f}"
    # All 10,000 test images through the installed int8 file (onnxruntime, no eager pass: ~6 CPU-s), against the
    # top-1 README documents for it.  Within 0.15 pt, not exactly: int8 kernels differ per CPU (88.98 % on a Xeon
    # with AMX, 89.05 % on an AMD EPYC, same file); a wrong label order, preprocessing or weight file moves it by
    # whole points.
    r = run("bench", str(tmp_path / "out" / int8["artifact"]), "--data", fmnist_spec, "--no-baseline", "--threads", "1",
            "--rounds", "1", "--reps", "2", "--json")
    assert r.returncode == 0, r.stderr[-2000:]
    full = json.loads(r.stdout)["rows"][0]
    assert full["images"] == 10_000 and "error" not in full
    assert full["top1"] == pytest.approx(float(readme[int8["artifact"]][-4]), abs=0.15)


def _readme_table() -> list[list[str]]:
    """README's 'What command (1) printed' table: the header row, then one row per artifact."""
    block = (ROOT / "README.md").read_text().split("What command (1) printed", 1)[1]
    rows: list[list[str]] = []
    for line in block.splitlines():
        if line.startswith("|"):
            rows.append([c.strip() for c in line.strip().strip("|").split("|")])
        elif rows:
            break
    return [r for r in rows if not set("".join(r)) <= set("-")]


def test_readme_table_has_the_columns_bench_prints():
    """README's table is pasted from `edgeclip bench`: the headers bench.md writes, in its order."""
    from edgeclip.benchmarks.report import COLUMNS

    header = _readme_table()[0]
    order = [h for _, h, _ in COLUMNS]
    assert header == [h for h in order if h in header]
    for h in ("threads", "load s", "peak RSS MB", "img/s", "cosine vs fp32"):
        assert h in header, f"README's table lacks the '{h}' column that bench prints"
    assert "Not in this release" not in (ROOT / "README.md").read_text()
