"""TorchScript-lite artifacts: every (scheme, engine) the README claims, round-tripped through the lite interpreter."""

import numpy as np
import pytest
import torch

import edgeclip
from edgeclip.exporter.quantize.attention import SplitAttention, split_attention
from edgeclip.runtimes import load

# the tiny CLIP's vision tower: 2 blocks x (q, k, v, out, fc, proj) Linears + the zero-shot head
TINY_LINEARS = 2 * 6 + 1


@pytest.mark.parametrize("engine", ["qnnpack", "fbgemm", "x86"])
@pytest.mark.parametrize("scheme", ["dynamic", "static"])
def test_int8_ptl_round_trip(tiny_clip_dir, tiny_images, tiny_calib_images, tmp_path, engine, scheme):
    (art,) = edgeclip.export(str(tiny_clip_dir), quant="int8", scheme=scheme, backend=engine, data=tiny_images,
                             calib_data=tiny_calib_images if scheme == "static" else None, calib_size=12,
                             out=str(tmp_path), verify_size=18, min_agreement=0.0)  # random toy: near-tied logits
    m = art.manifest
    assert art.file.name == "model.ptl" and m["format"] == "ptl" and art.name.endswith(f"ptl-int8-{scheme}-{engine}")
    q = m["quantization"]
    assert q["engine"] == engine and q["scheme"] == scheme
    assert q["int8_modules"]["Linear"] == TINY_LINEARS          # attention projections included
    assert "Linear" not in q["float_modules"]
    if scheme == "static":
        assert q["calibration_images"] == 12 and q["int8_modules"]["Quantize"] == TINY_LINEARS
    assert m["fidelity"]["mean_cosine"] > 0.98
    assert q["optimize_for_mobile"] == "applied" or q["optimize_for_mobile"].startswith("skipped: ")
    sess = load(art, threads=1)
    assert sess.name == "torch-lite-interpreter"
    for b in (1, 5):
        assert sess.run(np.zeros((b, 3, 32, 32), np.float32)).shape == (b, 3)


def test_fp32_ptl_matches_eager(tiny_clip_dir, tiny_images, tmp_path):
    (art,) = edgeclip.export(str(tiny_clip_dir), formats=("ptl",), data=tiny_images, out=str(tmp_path), verify_size=18)
    assert art.manifest["fidelity"]["max_abs_err"] < 1e-4 and art.manifest["fidelity"]["top1_agreement"] == 1.0


def test_text_encoder_ptl(tiny_clip_dir, tiny_images, tmp_path):
    (art,) = edgeclip.export(str(tiny_clip_dir), task="text-encoder", quant="int8", backend="qnnpack",
                             data=tiny_images, out=str(tmp_path), verify_size=12)
    loaded = edgeclip.load_model(str(tiny_clip_dir))
    tokens = loaded.tokenizer(["a car.", "a very blurry photo of a large red car parked outside."])
    ref = loaded.model.encode_text(tokens, normalize=True).detach().numpy()
    got = load(art).run(tokens.numpy())
    cos = (ref * got).sum(1)
    assert got.shape == ref.shape and cos.min() > 0.98


def test_split_attention_is_exact():
    torch.manual_seed(0)
    for batch_first in (True, False):
        mha = torch.nn.MultiheadAttention(32, 4, batch_first=batch_first).eval()
        x = torch.randn(3, 7, 32) if batch_first else torch.randn(7, 3, 32)
        mask = torch.triu(torch.full((7, 7), float("-inf")), 1)
        want = mha(x, x, x, need_weights=False, attn_mask=mask)[0]
        got = SplitAttention(mha)(x, x, x, need_weights=False, attn_mask=mask)[0]
        assert torch.allclose(want, got, atol=1e-5)
    wrapped = split_attention(torch.nn.Sequential(mha))
    assert isinstance(wrapped[0], SplitAttention) and isinstance(mha, torch.nn.MultiheadAttention)  # input untouched


def test_linears_used_through_their_weight_stay_float():
    """A module that calls F.linear on a Linear's weight (as EVA-02's attention does unpatched): swapping that
    Linear for a quantized one would break the call, so torch.ao leaves it float and says so."""
    import torch.nn.functional as F

    from edgeclip.exporter.quantize.torch_ao import linears_not_called, quantize_torch_ao

    class ReadsWeight(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.used, self.read = torch.nn.Linear(8, 8), torch.nn.Linear(8, 8)

        def forward(self, x):
            return self.used(x) + F.linear(x, self.read.weight, self.read.bias)

    m, x = ReadsWeight().eval(), torch.randn(2, 8)
    assert linears_not_called(m, x) == ["read"]
    q, info = quantize_torch_ao(m, "qnnpack", "dynamic", example=x)
    assert info["float_linears"]["layers"] == ["read"] and type(q.read) is torch.nn.Linear
    assert torch.nn.functional.cosine_similarity(q(x), m(x)).min() > 0.99
