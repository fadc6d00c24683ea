import pytest
import torch
from torch import nn

from edgeclip.errors import EdgeclipError
from edgeclip.exporter.compress import svd
from edgeclip.exporter.compress.config import SvdConfig
from edgeclip.exporter.compress.structure import CompressibleAttention, convert_attention

from compress_fixtures import calib, clip, image_out, n_params  # noqa: F401  (fixtures)


def test_attention_rewrite_is_the_same_function(clip):
    x = torch.randn(2, 3, 32, 32)
    converted = convert_attention(__import__("copy").deepcopy(clip))
    assert isinstance(converted.visual.transformer.resblocks[0].attn, CompressibleAttention)
    torch.testing.assert_close(image_out(converted, x), image_out(clip, x), atol=1e-5, rtol=1e-4)
    toks = torch.randint(0, 49000, (2, 16))
    with torch.no_grad():
        torch.testing.assert_close(converted.encode_text(toks), clip.encode_text(toks), atol=1e-5, rtol=1e-4)


def test_full_rank_factorisation_is_exact():
    lin = nn.Linear(24, 40)
    low = svd.factorise(lin, 24)
    x = torch.randn(5, 24)
    torch.testing.assert_close(low(x), lin(x), atol=1e-5, rtol=1e-4)


def test_ratio_removes_params_and_keeps_shapes(clip):
    x = torch.randn(2, 3, 32, 32)
    model, rep = svd.apply(clip, SvdConfig(ratio=0.5))
    assert n_params(model) < n_params(clip) and rep.params_removed == n_params(clip) - n_params(model)
    assert len(rep.layers) == 3 * 4 and all(r["params_after"] <= r["params_before"] / 2 for r in rep.layers)
    assert image_out(model, x).shape == image_out(clip, x).shape
    assert n_params(clip.visual) == sum(p.numel() for p in clip.visual.parameters())   # input untouched (pure)
    assert isinstance(clip.visual.transformer.resblocks[0].attn, nn.MultiheadAttention)


def test_selection_by_tower_kind_and_blocks(clip):
    _, rep = svd.apply(clip, SvdConfig(ratio=0.5, towers=("text",), layers=("attn_in", "attn_out"), blocks="last:1"))
    assert [r["layer"] for r in rep.layers] == ["text.1.attn_in", "text.1.attn_out"]


def test_energy_picks_the_rank_and_refuses_non_saving_layers(clip):
    _, rep = svd.apply(clip, SvdConfig(energy=0.5))
    assert rep.layers and all(0 < r["rank"] < 32 for r in rep.layers)
    # rank 40 saves on the 192x64 / 256x64 layers but not on the 64x64 output projections: those are refused, per layer
    _, rep = svd.apply(clip, SvdConfig(rank=40))
    assert {s["layer"].rsplit(".", 1)[1] for s in rep.skipped} == {"attn_out"} and len(rep.layers) == 9
    assert all("would not save parameters (needs rank <= 31)" in s["why"] for s in rep.skipped)
    with pytest.raises(EdgeclipError, match="SVD would compress nothing"):
        svd.apply(clip, SvdConfig(rank=1000))


def test_activation_aware_beats_plain_on_its_inputs():
    torch.manual_seed(0)
    lin = nn.Linear(32, 32)
    x = torch.randn(2000, 32) @ torch.diag(torch.logspace(1, -2, 32))   # strongly anisotropic inputs
    cov = (x.T @ x).double()
    err = {name: (low(x) - lin(x)).norm().item()
           for name, low in (("plain", svd.factorise(lin, 8)), ("aware", svd.factorise(lin, 8, cov)))}
    assert err["aware"] < 0.5 * err["plain"], err


def test_aware_pass_uses_calibration(clip, calib):
    model, rep = svd.apply(clip, SvdConfig(ratio=0.3, aware=True, layers=("fc1", "fc2")), calib)
    assert rep.extra["method"].startswith("activation-aware") and len(rep.layers) == 6
    with pytest.raises(EdgeclipError, match="needs calibration images"):
        svd.apply(clip, SvdConfig(ratio=0.3, aware=True))
