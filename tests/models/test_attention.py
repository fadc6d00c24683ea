"""ProjectedAttention: one module, two layouts, both the same function as the nn.MultiheadAttention it replaces."""

import pytest
import torch

from edgeclip.errors import EdgeclipError
from edgeclip.models.attention import ProjectedAttention


def _mha(**kw):
    torch.manual_seed(0)
    mha = torch.nn.MultiheadAttention(32, 4, batch_first=True, **kw).eval()
    with torch.no_grad():          # non-zero biases, so a bias copied to the wrong projection shows
        for p in mha.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return mha


@pytest.mark.parametrize("layout", ["fused", "split"])
def test_both_layouts_compute_what_mha_computes(layout):
    mha, x = _mha(), torch.randn(3, 7, 32)
    causal = torch.full((7, 7), float("-inf")).triu(1)
    att = ProjectedAttention.from_mha(mha, layout)
    assert att.fused == (layout == "fused")
    for mask in (None, causal, causal.isinf()):
        ref = mha(x, x, x, need_weights=False, attn_mask=mask)[0]
        torch.testing.assert_close(att(x, x, x, attn_mask=mask)[0], ref, atol=1e-5, rtol=1e-5)


def test_split_layout_serves_cross_attention_with_other_key_widths():
    mha = _mha(kdim=16, vdim=24)
    q, kv_k, kv_v = torch.randn(2, 3, 32), torch.randn(2, 9, 16), torch.randn(2, 9, 24)
    att = ProjectedAttention.from_mha(mha, "split")
    torch.testing.assert_close(att(q, kv_k, kv_v)[0], mha(q, kv_k, kv_v, need_weights=False)[0], atol=1e-5, rtol=1e-5)
    with pytest.raises(EdgeclipError, match="separate q/k/v widths"):
        ProjectedAttention.from_mha(mha, "fused")
