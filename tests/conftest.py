"""Shared test fixtures: a tiny random CLIP (plumbing), a tiny image folder, and the shared data/fixture."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
# EDGECLIP_TEST_SHARED points elsewhere (e.g. a missing folder, to run the suite as a clone without ../shared would)
SHARED = Path(os.environ.get("EDGECLIP_TEST_SHARED", ROOT / ".." / "shared")).resolve()
FIXTURE = SHARED / "fixtures" / "tiny_clip_fmnist"
FMNIST = SHARED / "data" / "fashion_mnist"

TINY_CFG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "patch_size": 8, "width": 64, "layers": 2, "head_width": 32},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


# One core's worth of threads per xdist worker.  With both workers at torch's default (all cores), OpenMP threads of
# one process spin on the cores the other needs: measured here, tests that take 8 s alone took 95 s in the suite.
# Benchmarks set their own thread counts (bench workers get --threads), so this only changes in-process work.
if os.environ.get("PYTEST_XDIST_WORKER_COUNT"):
    _workers = int(os.environ["PYTEST_XDIST_WORKER_COUNT"])
    _per_worker = max(1, (os.cpu_count() or 1) // _workers)
    # Each worker, and every process it starts (bench workers, CLI runs), keeps to its own cores: "all cores" in
    # those children means this worker's share (runtimes.cpu_features.usable_cores), so a bench run by one worker
    # does not put two threads on the core the other worker is using.  Measured 2026-12-06 (2-core AMD EPYC): a
    # 2-thread onnxruntime pass with the other core busy cost 20 CPU-s where one thread took 11.6 for the same work.
    _cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    _index = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw") or 0)
    if len(_cpus) >= _workers * _per_worker:
        os.sched_setaffinity(0, _cpus[_index * _per_worker:(_index + 1) * _per_worker])
    torch.set_num_threads(_per_worker)
    os.environ.setdefault("OMP_NUM_THREADS", str(_per_worker))
    # Child processes (bench workers at --threads 2, CLI runs) sleep between parallel regions instead of spinning:
    # with both cores shared by two test processes, OpenMP's default spin made them steal each other's cores
    # (suite 6:50 -> 9:13 when the CLI stopped setting PASSIVE).  Timings in tests are never asserted; an app's
    # (and bench's) default policy is measured in benchmarks/, not here.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def _keep_freed_memory() -> None:
    """glibc malloc: serve large blocks from the heap and keep freed memory, in this process and (through the
    environment, read at start) every process it starts.

    By default glibc maps each block over its dynamic threshold (at most 32 MB) fresh from the kernel and unmaps it
    on free, so every big activation of a torch forward on a few hundred images faults its pages in again: measured
    2026-12-06 (2-core AMD EPYC, one core), the healing test took 20.9 s wall with 4.5 s of it in the kernel
    (2.3 M page faults); with both thresholds raised, 16.0 s and 0.8 s (0.3 M faults), peak RSS 1.39 -> 1.56 GB.
    Test processes only: a benchmark's latency and peak-RSS figures are measured with the allocator as users have
    it (``edgeclip bench`` sets nothing), and in the suite no timing is asserted."""
    big = str(2**31 - 1)
    for var in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_"):
        os.environ.setdefault(var, big)
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
    except OSError:   # not glibc: nothing to tune
        return
    m_trim_threshold, m_mmap_threshold = -1, -3      # <malloc.h>
    libc.mallopt(m_mmap_threshold, int(os.environ["MALLOC_MMAP_THRESHOLD_"]))
    libc.mallopt(m_trim_threshold, int(os.environ["MALLOC_TRIM_THRESHOLD_"]))


_keep_freed_memory()

# Test files that take the longest (measured 2026-12-06, fourth session, suite on 2 cores: tests/test_fixture_int8_matrix.py
# ~150 s, test_fixture_accuracy.py ~110 s, models/test_families.py ~85 s, test_packaging.py ~52 s,
# exporter/test_executorch.py ~50 s, test_reliability.py ~39 s, benchmarks/test_bench.py ~38 s; exporter/test_pt2.py ~25-30 s
# alone, 2026-12-07, one AOTInductor compile).  They go first so the short files fill in around
# them (longest-first scheduling): started late (at 213 s and 376 s of a 534 s run), the matrix and the fixture
# accuracy file left one worker running alone at the end.  pytest-xdist 3.x hands out files largest test count
# first unless told not to, which put the matrix (6 tests) behind files of many quick parametrized tests;
# ``pytest_configure`` turns that off.
LONGEST_FIRST = ("test_fixture_int8_matrix.py", "test_families.py", "test_fixture_accuracy.py", "test_packaging.py",
                 "test_executorch.py", "test_reliability.py", "test_bench.py", "test_pt2.py")


def pytest_configure(config):
    if hasattr(config.option, "loadscopereorder"):   # pytest-xdist >= 3.7: keep the collection order below
        config.option.loadscopereorder = False


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))   # stable: order inside a file is kept


def _need(path: Path, what: str) -> Path:
    if not path.exists():
        pytest.skip(f"{what} not found at {path} (needs ../shared beside the repository)")
    return path


@pytest.fixture(scope="session")
def fixture_dir() -> Path:
    return _need(FIXTURE / "open_clip_model.safetensors", "shared tiny_clip_fmnist fixture").parent


@pytest.fixture(scope="session")
def fixture_metrics(fixture_dir) -> dict:
    return json.loads((fixture_dir / "metrics.json").read_text())


@pytest.fixture(scope="session")
def fmnist_spec() -> str:
    _need(FMNIST / "test.npz", "shared Fashion-MNIST")
    return f"fashion-mnist:{FMNIST}"


def built_once(tmp_path_factory, name: str, build) -> Path:
    """A folder ``build(folder)`` fills once per test run, shared by every xdist worker: the first worker to ask
    builds it under a file lock, the others wait and reuse it.  For read-only inputs (copy before changing)."""
    import fcntl
    import shutil

    base = tmp_path_factory.getbasetemp()
    root = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "built_once"
    root.mkdir(exist_ok=True)
    d = root / name
    with open(root / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (root / f"{name}.done").exists():
            shutil.rmtree(d, ignore_errors=True)
            d.mkdir()
            build(d)
            (root / f"{name}.done").touch()
    return d


def _write_tiny_clip(d: Path) -> None:
    import open_clip
    from safetensors.torch import save_file

    torch.manual_seed(0)
    model = open_clip.CLIP(**TINY_CFG)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(d / "open_clip_model.safetensors"))
    (d / "open_clip_config.json").write_text(json.dumps({"model_cfg": TINY_CFG, "preprocess_cfg": {
        "size": 32, "mean": [0.48145466, 0.4578275, 0.40821073], "std": [0.26862954, 0.26130258, 0.27577711],
        "interpolation": "bicubic"}}))


@pytest.fixture(scope="session")
def tiny_clip_dir(tmp_path_factory) -> Path:
    """A random-weight open_clip CLIP (2 blocks, width 64) saved as a local model folder (shared: copy to change)."""
    return built_once(tmp_path_factory, "tiny_clip", _write_tiny_clip)


def _image_folder(root: Path, seed: int) -> str:
    from PIL import Image

    rng = np.random.default_rng(seed)
    for c, name in enumerate(["cat", "dog", "car"]):
        (root / name).mkdir()
        for i in range(6):
            arr = rng.integers(0, 80, (36, 36, 3), dtype=np.uint8)
            arr[:, :, c] += 150
            Image.fromarray(arr).save(root / name / f"{i}.png")
    return f"folder:{root}"


@pytest.fixture(scope="session")
def tiny_onnx_pair(tiny_clip_dir, tiny_images, tmp_path_factory) -> Path:
    """fp32 and int8 dynamic .onnx of the tiny CLIP in one out folder, exported once per test run; tests read it
    (copy it first to add or change files)."""
    import edgeclip

    def build(d: Path) -> None:
        for q in ("none", "int8"):
            edgeclip.export(str(tiny_clip_dir), quant=q, data=tiny_images, out=str(d / "out"), verify_size=6)

    return built_once(tmp_path_factory, "onnx_pair", build) / "out"


def copy_fp32_onnx(onnx_pair: Path, dst: Path) -> Path:
    """A private copy of the fp32 artifact folder of ``tiny_onnx_pair`` under ``dst``, for a test to damage or misuse."""
    import shutil

    src = next(d for d in onnx_pair.iterdir() if d.name.endswith("-onnx-fp32"))
    return Path(shutil.copytree(src, dst / src.name))


def tiny_visual(seed: int = 0):
    """The image tower of a random-weight open_clip CLIP (TINY_CFG: 2 blocks, width 64, 32x32 images), eval mode."""
    import open_clip

    torch.manual_seed(seed)
    return open_clip.CLIP(**TINY_CFG).visual.eval()


def row_cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine of each row pair, in float64: computed here rather than by edgeclip's own fidelity code, so a round-trip
    test does not grade the product with the function it tests."""
    a, b = a.astype(np.float64), b.astype(np.float64)
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


@pytest.fixture(scope="module")
def tiny_classifier(tiny_clip_dir, tiny_images):
    """The tiny CLIP as edgeclip prepares it (zero-shot classifier module), its preprocessed evaluation images and its
    eager fp32 logits: the reference a format's round trip is compared with."""
    from edgeclip.models.datasets import load_dataset
    from edgeclip.pipeline import prepare

    ds = load_dataset(tiny_images)
    prep = prepare(str(tiny_clip_dir), data=ds)
    images = ds.tensors(prep.preprocess).numpy()
    with torch.inference_mode():
        ref = prep.module(torch.from_numpy(images)).numpy()
    return prep.module, images, ref


@pytest.fixture(scope="session")
def tiny_images(tmp_path_factory) -> str:
    """A labelled image-folder dataset: 3 classes x 6 real PNG files with class-dependent content."""
    return f"folder:{built_once(tmp_path_factory, 'imgs', lambda d: _image_folder(d, 0))}"


@pytest.fixture(scope="session")
def tiny_calib_images(tmp_path_factory) -> str:
    """A second, disjoint folder of the same kind, for calibration (never the evaluation folder)."""
    return f"folder:{built_once(tmp_path_factory, 'calib', lambda d: _image_folder(d, 1))}"


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to open a connection or resolve a host fails at once (the test must stay offline)."""
    def refuse(*a, **k):
        raise OSError("network access attempted in an offline test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)


@pytest.fixture
def offline_hub(monkeypatch, tmp_path, no_network):
    cache = tmp_path / "hf_home"
    cache.mkdir()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(cache))
    monkeypatch.setenv("HF_HUB_CACHE", str(cache / "hub"))
    monkeypatch.setenv("HUGGINGFACE_HUB_CACHE", str(cache / "hub"))
    monkeypatch.setenv("TORCH_HOME", str(cache / "torch"))
    import huggingface_hub.constants as hc

    monkeypatch.setattr(hc, "HF_HUB_OFFLINE", True)
    for attr in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if hasattr(hc, attr):
            monkeypatch.setattr(hc, attr, str(cache / "hub"))
    return cache
