"""Block pruning, structured pruning (neurons, heads) and unstructured sparsity."""

import pytest
import torch

from edgeclip.errors import EdgeclipError
from edgeclip.exporter.compress import blocks, sparsity, structured
from edgeclip.exporter.compress.config import BlockPruneConfig, SparsityConfig, StructuredConfig

from compress_fixtures import calib, clip, image_out, n_params  # noqa: F401  (fixtures)


def test_drop_blocks_by_index(clip):
    x = torch.randn(2, 3, 32, 32)
    model, rep = blocks.apply(clip, BlockPruneConfig("vision", indices=(-1,)))
    assert len(model.visual.transformer.resblocks) == 2 and len(clip.visual.transformer.resblocks) == 3
    assert rep.extra["removed"] == [2] and rep.params_removed == n_params(clip.visual.transformer.resblocks[2])
    assert image_out(model, x).shape == image_out(clip, x).shape
    with pytest.raises(EdgeclipError, match="keep at least one"):
        blocks.apply(clip, BlockPruneConfig("vision", indices=(0, 1, 2)))


def test_greedy_choice_is_by_measured_agreement(clip, calib):
    model, rep = blocks.apply(clip, BlockPruneConfig("text", auto=1), calib)
    step = rep.layers[0]
    assert step["removed_block"] == int(max(step["candidates"], key=lambda k: (step["candidates"][k], int(k))))
    assert len(model.transformer.resblocks) == 1
    with torch.no_grad():
        assert model.encode_text(calib.captions).shape == clip.encode_text(calib.captions).shape


def test_mlp_neurons_are_physically_removed(clip, calib):
    x = torch.randn(2, 3, 32, 32)
    for score in ("magnitude", "activation"):
        model, rep = structured.apply(clip, StructuredConfig(mlp_keep=0.5, score=score), calib)
        fc1 = model.visual.transformer.resblocks[0].mlp.c_fc
        assert fc1.out_features == 128 and model.visual.transformer.resblocks[0].mlp.c_proj.in_features == 128
        assert rep.params_removed == 3 * (2 * 64 * 128 + 128)
        assert image_out(model, x).shape == image_out(clip, x).shape


def test_heads_are_physically_removed_and_kept_heads_unchanged(clip, calib):
    model, rep = structured.apply(clip, StructuredConfig(heads_keep=0.5, score="magnitude"), calib)
    attn = model.visual.transformer.resblocks[0].attn
    assert attn.num_heads == 1 and attn.in_proj.out_features == 3 * 32 and attn.out_proj.in_features == 32
    assert all(r["heads_after"] == 1 for r in rep.layers) and rep.params_removed > 0
    # removing a head whose output projection is zero changes nothing: proves the slicing keeps the right rows
    from edgeclip.exporter.compress.structure import convert_attention
    import copy

    ref = convert_attention(copy.deepcopy(clip))
    for blk in ref.visual.transformer.resblocks:
        blk.attn.out_proj.weight.data[:, 32:] = 0      # head 1 writes nothing
    pruned, _ = structured.apply(ref, StructuredConfig(heads_keep=0.5, score="magnitude"), calib)
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(image_out(pruned, x), image_out(ref, x), atol=1e-5, rtol=1e-4)


def test_keep_everything_is_reported_not_silent(clip, calib):
    _, rep = structured.apply(clip, StructuredConfig(heads_keep=0.9, score="magnitude"), calib)
    assert rep.params_removed == 0 and all("removes nothing" in s["why"] for s in rep.skipped)


def test_unstructured_sparsity_says_it_saves_nothing_dense(clip):
    model, rep = sparsity.apply(clip, SparsityConfig(0.5, "layer"))
    assert rep.params_removed == 0 and rep.extra["dense_gain"] == "none" and "do not change" in rep.notes[0]
    w = model.visual.transformer.resblocks[0].mlp.c_fc.weight
    assert 0.49 < float((w == 0).float().mean()) < 0.51
    _, rep_g = sparsity.apply(clip, SparsityConfig(0.5, "global"))
    assert abs(rep_g.extra["fraction_zeroed"] - 0.5) < 0.01


@pytest.mark.parametrize("scope", ["layer", "global"])
def test_sparsity_zeros_exactly_the_smallest_weights_and_reports_them(clip, scope):
    """Exactly int(amount * n) weights per layer (or over all layers) become zero -- the smallest ones, on a copy --
    and the report counts them; amount 0 zeroes nothing."""
    from edgeclip.exporter.compress.report import n_params as count
    from edgeclip.exporter.compress.structure import towers

    before = {k: v.clone() for k, v in clip.state_dict().items()}
    model, rep = sparsity.apply(clip, SparsityConfig(0.3, scope))
    assert all(torch.equal(v, clip.state_dict()[k]) for k, v in before.items())          # the input is untouched
    src, out = towers(clip)["vision"].blocks, towers(model)["vision"].blocks
    layers = [(n, m, dict(out.named_modules())[n]) for n, m in src.named_modules() if isinstance(m, torch.nn.Linear)]
    mags = torch.cat([m.weight.abs().flatten() for _, m, _ in layers])
    rows, total = [], 0
    for n, m, new in layers:
        w = m.weight.detach()
        k = int(0.3 * w.numel()) if scope == "layer" else None
        cut = w.abs().flatten().kthvalue(k).values if scope == "layer" else mags.kthvalue(int(0.3 * mags.numel())).values
        assert torch.equal(new.weight, w * (w.abs() > cut))          # the smallest go, every other weight stays
        zeros = int((new.weight == 0).sum())
        if scope == "layer":
            assert zeros == k
        rows.append({"layer": f"vision.{n}", "zeros": zeros, "weights": w.numel()})
        total += zeros
    assert scope == "layer" or total == int(0.3 * mags.numel())
    assert rep.name == "sparsity" and rep.params_before == rep.params_after == count(clip) and rep.layers == rows
    frac = total / mags.numel()
    assert round(frac, 4) != round(frac, 5)        # so the report's rounding is checked too
    assert rep.extra == {"amount": 0.3, "scope": scope, "dense_gain": "none", "weights_zeroed": total,
                         "fraction_zeroed": round(frac, 4)}
    none, rep0 = sparsity.apply(clip, SparsityConfig(0.0, scope))
    assert rep0.extra["weights_zeroed"] == 0 and all(torch.equal(v, none.state_dict()[k]) for k, v in before.items())


def test_sparsity_refuses_a_tower_the_model_does_not_have():
    """Before: a vision-only model with --prune-tower text crashed in torch.cat (global scope) or silently zeroed
    nothing (layer scope)."""
    import timm

    vit = timm.create_model("vit_tiny_patch16_224", pretrained=False, depth=1, img_size=32, patch_size=8)
    for scope in ("global", "layer"):
        with pytest.raises(EdgeclipError, match=r"^--prune-tower text: this model has no text tower \(has: vision\)$"):
            sparsity.apply(vit, SparsityConfig(0.3, scope, towers=("text",)))
