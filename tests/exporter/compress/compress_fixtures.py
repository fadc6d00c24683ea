"""Fixtures for the compression tests (imported by each test module: a conftest.py here would shadow
tests/conftest.py, which other tests import by name).  A tiny random CLIP (3 vision blocks with 2 heads, 2 text blocks, width <= 64) and a calibration set for it."""

from __future__ import annotations

import pytest
import torch

from edgeclip.exporter.compress import Calibration

CFG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "patch_size": 8, "width": 64, "layers": 3, "head_width": 32},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
}


@pytest.fixture(scope="module")
def clip():
    import open_clip

    torch.manual_seed(0)
    return open_clip.CLIP(**CFG).eval()


@pytest.fixture(scope="module")
def calib(clip):
    import open_clip

    torch.manual_seed(1)
    tok = open_clip.get_tokenizer("ViT-B-32")
    names = ["cat", "dog", "car", "tree"]
    caps = tok([f"a photo of a {n}." for n in names] + [f"a drawing of a {n}." for n in names], context_length=16)

    def head(model):
        with torch.no_grad():
            e = torch.nn.functional.normalize(model.encode_text(caps), dim=-1)
            return torch.nn.functional.normalize(e[:4] + e[4:], dim=-1)

    images = torch.randn(48, 3, 32, 32)
    return Calibration(images, caps, head, "random test images")


def image_out(model, x):
    with torch.no_grad():
        return model.visual(x)


def n_params(m):
    return sum(p.numel() for p in m.parameters())
