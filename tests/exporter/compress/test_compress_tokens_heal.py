"""Token reduction and distillation healing, and the ``compress`` driver that runs passes in order."""

import copy

import pytest
import torch

from edgeclip.errors import EdgeclipError
from edgeclip.exporter.compress import compress, heal, tokens
from edgeclip.exporter.compress.config import CompressRecipe, HealConfig, TokenConfig
from edgeclip.exporter.compress.structure import convert_attention
from edgeclip.models.families.base import OPEN_CLIP_BLOCK

from compress_fixtures import calib, clip, image_out  # noqa: F401  (fixtures)


def test_token_drop_block_without_dropping_is_the_same_block(clip):
    ref = convert_attention(copy.deepcopy(clip))
    blk = ref.visual.transformer.resblocks[1]
    wrapped = tokens.TokenDropBlock(blk, OPEN_CLIP_BLOCK.parts, keep=16, prefix=1, rate=1.0)     # 4x4 patches: keeps all 16
    x = torch.randn(2, 17, 64)
    with torch.no_grad():
        a, b = wrapped(x), blk(x)
    # same tokens, possibly in another order (attention is permutation-equivariant): compare sorted rows
    torch.testing.assert_close(a[:, 0], b[:, 0], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(a[:, 1:].sort(1).values, b[:, 1:].sort(1).values, atol=1e-5, rtol=1e-4)


def test_token_reduction_has_static_fewer_tokens(clip):
    model, rep = tokens.apply(clip, TokenConfig(0.5, (1,)))
    assert rep.layers == [{"block": 1, "tokens_before": 17, "tokens_after": 9}] and rep.extra["tokens_at_output"] == 9
    x = torch.randn(3, 3, 32, 32)
    assert image_out(model, x).shape == image_out(clip, x).shape
    with pytest.raises(EdgeclipError, match="block 5 does not exist"):
        tokens.apply(clip, TokenConfig(0.5, (5,)))


def test_heal_trains_the_vision_tower_and_reports_cost(clip, calib):
    damaged, _ = compress(clip, CompressRecipe(svd_rank=2, svd_layers="mlp"))
    healed, rep = heal.apply(damaged, HealConfig(steps=4, lr=1e-3, batch=8), calib, teacher=clip)
    assert rep.extra["steps"] == 4 and rep.extra["seconds"] >= 0 and "calib_agreement_after" in rep.extra
    changed = any(not torch.equal(a, b) for a, b in zip(healed.visual.parameters(), damaged.visual.parameters()))
    assert changed and all(torch.equal(a, b) for a, b in zip(healed.transformer.parameters(), damaged.transformer.parameters()))
    assert not any(p.requires_grad for p in healed.parameters())


def test_compress_runs_passes_in_order_and_summarises(clip, calib):
    recipe = CompressRecipe(prune_blocks=["text:0"], mlp_keep=0.5, svd_ratio=0.5, svd_layers="attn", token_keep=0.5,
                            prune_score="magnitude")
    model, report = compress(clip, recipe, calib)
    assert [p["name"] for p in report["passes"]] == ["prune-blocks:text", "structured", "svd", "tokens"]
    assert report["params_after"]["vision"] < report["params_before"]["vision"]
    assert report["params_after"]["text"] < report["params_before"]["text"]
    assert 0 < report["flops_removed_pct"]["vision"] < 100
    assert image_out(model, calib.images[:2]).shape == image_out(clip, calib.images[:2]).shape


def test_every_pass_on_a_timm_vit():
    import timm

    torch.manual_seed(0)
    vit = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32, patch_size=8, embed_dim=64, depth=3,
                            num_heads=2, num_classes=5).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        ref = vit(x)
    from edgeclip.exporter.compress import Calibration

    recipe = CompressRecipe(prune_blocks=["vision:auto:1"], heads_keep=0.5, mlp_keep=0.5, svd_ratio=0.5, token_keep=0.5,
                            heal_steps=2, heal_batch=4)
    model, report = compress(vit, recipe, Calibration(torch.randn(16, 3, 32, 32)))
    assert [p["name"] for p in report["passes"]] == ["prune-blocks:vision", "structured", "svd", "tokens", "heal"]
    assert report["params_after"]["vision"] < 0.6 * report["params_before"]["vision"]
    assert model.blocks[0].attn.num_heads == 1 and model.blocks[0].attn.attn_dim == 32
    with torch.no_grad():
        assert model(x).shape == ref.shape
