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
