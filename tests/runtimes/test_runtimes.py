"""Runtimes load only what the manifest vouches for."""

import numpy as np
import pytest

from conftest import copy_fp32_onnx
from edgeclip.errors import EdgeclipError
from edgeclip.runtimes import TorchEagerSession, load


@pytest.fixture()
def art(tiny_onnx_pair, tmp_path):
    """A private copy of the session's fp32 tiny .onnx artifact (tests damage it)."""
    from edgeclip.manifest import open_artifact

    return open_artifact(copy_fp32_onnx(tiny_onnx_pair, tmp_path))


def test_onnx_and_eager_agree(art, tiny_clip_dir, tiny_images):
    from edgeclip.pipeline import prepare
    from edgeclip.models.datasets import load_dataset

    ds = load_dataset(tiny_images)
    prep = prepare(str(tiny_clip_dir), data=ds)
    x = ds.tensors(prep.preprocess).numpy()
    a, b = load(art, threads=1).run(x), TorchEagerSession(prep.module, 1).run(x)
    assert np.abs(a - b).max() < 1e-4


def test_tampered_file_refused(art):
    data = bytearray(art.file.read_bytes())
    data[len(data) // 2] ^= 0xFF
    art.file.write_bytes(bytes(data))
    with pytest.raises(EdgeclipError, match="does not match the sha256 in its manifest"):
        load(art.dir)


def test_truncated_file_refused(art):
    art.file.write_bytes(art.file.read_bytes()[:1000])
    with pytest.raises(EdgeclipError, match="truncated or replaced"):
        load(art.dir)


def test_not_an_artifact(tmp_path):
    (tmp_path / "model.onnx").write_bytes(b"x")
    with pytest.raises(EdgeclipError, match="not an edgeclip artifact"):
        load(tmp_path / "model.onnx")
    with pytest.raises(EdgeclipError, match="does not exist"):
        load(tmp_path / "nope")


def test_a_ptl_for_an_engine_this_cpu_lacks_names_the_engine_and_the_fix(tmp_path, monkeypatch):
    """On aarch64 torch lists fbgemm among its engines yet cannot load an fbgemm .ptl ("Unknown qengine", measured
    under emulation): the user must hear which engine and which --backend, not 're-export it'."""
    import torch.jit.mobile

    from edgeclip.runtimes.lite_interpreter import LiteSession

    def refuse(path, map_location=None):
        raise RuntimeError("Unknown qengine ()\nException raised from ...")

    monkeypatch.setattr(torch.jit.mobile, "_load_for_lite_interpreter", refuse)
    with pytest.raises(EdgeclipError, match=r"packed for the fbgemm int8 engine.*--backend qnnpack"):
        LiteSession(str(tmp_path / "model.ptl"), 1, "fbgemm")

    def broken(path, map_location=None):
        raise RuntimeError("PytorchStreamReader failed reading zip archive")

    monkeypatch.setattr(torch.jit.mobile, "_load_for_lite_interpreter", broken)
    with pytest.raises(EdgeclipError, match="cannot load .*PytorchStreamReader.*re-export it"):
        LiteSession(str(tmp_path / "model.ptl"), 1, "fbgemm")
