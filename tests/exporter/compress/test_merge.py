"""Token merging (ToMe, exporter/compress/merge.py): the matching merges the most similar tokens, sizes and
proportional attention make merging exact duplicates lossless, static shapes export to every format, and on real
images the rule beats its inverse."""

import copy

import pytest
import torch

import edgeclip
from edgeclip.errors import EdgeclipError
from edgeclip.exporter.compress import compress, merge
from edgeclip.exporter.compress.config import CompressRecipe, MergeConfig
from edgeclip.exporter.compress.structure import convert_attention
from edgeclip.models.families.base import OPEN_CLIP_BLOCK

from compress_fixtures import clip, image_out  # noqa: F401  (fixtures)


def test_bipartite_merge_averages_the_most_similar_pairs_by_size():
    # prefix token 0, then A = tokens 1,3,5,7 and B = tokens 2,4,6,8 (alternating); A1 ~ B2 and A5 ~ B6 by key
    torch.manual_seed(0)
    keys = torch.randn(1, 9, 4)
    keys[0, 3] = keys[0, 4] + 0.01 * torch.randn(4)       # A[1] matches B[1] (tokens 3 -> 4)
    keys[0, 5] = keys[0, 8] + 0.01 * torch.randn(4)       # A[2] matches B[3] (tokens 5 -> 8)
    x = torch.arange(9 * 2, dtype=torch.float32).reshape(1, 9, 2)
    size = torch.tensor([1., 1., 1., 3., 1., 1., 1., 1., 2.]).reshape(1, 9, 1)
    out, out_size = merge.bipartite_merge(x, size, keys, prefix=1, r=2)
    assert out.shape == (1, 7, 2) and out_size.shape == (1, 7, 1)
    torch.testing.assert_close(out[0, 0], x[0, 0])                                 # the prefix token stays first
    # B comes last, in order: token 4 absorbed token 3 (sizes 1 + 3), token 8 absorbed token 5 (2 + 1)
    b = out[0, -4:]
    torch.testing.assert_close(b[0], (x[0, 2]))
    torch.testing.assert_close(b[1], (x[0, 4] * 1 + x[0, 3] * 3) / 4)
    torch.testing.assert_close(b[3], (x[0, 8] * 2 + x[0, 5] * 1) / 3)
    assert out_size[0, -4:, 0].tolist() == [1., 4., 1., 3.]
    # the unmerged A tokens (1 and 7) survive untouched; nothing is lost: total size and size-weighted sum hold
    assert sorted(out[0, 1:3, 0].tolist()) == [x[0, 1, 0].item(), x[0, 7, 0].item()]
    assert out_size.sum() == size.sum()
    torch.testing.assert_close((out * out_size).sum(1), (x * size).sum(1))


def _two_blocks(clip):
    ref = convert_attention(copy.deepcopy(clip))
    return list(ref.visual.transformer.resblocks)[:2]


def test_merging_exact_duplicates_with_proportional_attention_changes_nothing(clip):
    """Each patch token appears twice (A and B copies): merging every pair, then attending with log-size
    weights, gives the class token exactly what the unmerged blocks give.  Without the sizes it would not."""
    b0, b1 = _two_blocks(clip)
    torch.manual_seed(0)
    half = torch.randn(2, 8, 64)
    x = torch.cat([torch.randn(2, 1, 64), half.repeat_interleave(2, dim=1)], dim=1)   # [cls, t0, t0, t1, t1, ...]
    m0 = merge.TokenMergeBlock(b0, OPEN_CLIP_BLOCK.parts, prefix=1, r=7, size_in=False, size_out=True)
    m1 = merge.TokenMergeBlock(b1, OPEN_CLIP_BLOCK.parts, prefix=1, r=0, size_in=True, size_out=False)
    with torch.no_grad():
        ref = b1(b0(x))
        mid = m0(x)
        got = m1(mid)
        unweighted = merge.TokenMergeBlock(b1, OPEN_CLIP_BLOCK.parts, prefix=1, r=0, size_in=False, size_out=False)(mid[..., :-1])
    assert mid.shape == (2, 17 - 7, 65) and got.shape == (2, 10, 64)
    assert sorted(mid[0, :, -1].tolist()) == [1.0] * 3 + [2.0] * 7                  # 7 pairs merged, 1 pair left
    torch.testing.assert_close(got[:, 0], ref[:, 0], atol=1e-5, rtol=1e-4)
    assert (unweighted[:, 0] - ref[:, 0]).abs().max() > 1e-3                       # the sizes are what makes it exact


def test_a_merging_block_with_r_0_is_the_block(clip):
    """r = 0 and no sizes: the rewritten block (explicit attention) computes what the original block does."""
    b0, _ = _two_blocks(clip)
    x = torch.randn(2, 17, 64)
    m0 = merge.TokenMergeBlock(b0, OPEN_CLIP_BLOCK.parts, prefix=1, r=0, size_in=False, size_out=False)
    with torch.no_grad():
        torch.testing.assert_close(m0(x), b0(x), atol=1e-5, rtol=1e-4)
    assert compress(clip, CompressRecipe(token_merge=0))[1]["passes"] == []     # --token-merge 0 is no pass at all


def test_apply_reports_static_token_counts_and_fewer_flops(clip):
    model, rep = merge.apply(clip, MergeConfig(r=3))
    # 16 patches: blocks 0, 1, 2 merge 3 each -> 13, 10, 7 (+1 class token)
    assert [(layer["tokens_before"], layer["tokens_after"]) for layer in rep.layers] == [(17, 14), (14, 11), (11, 8)]
    assert rep.extra["tokens_at_output"] == 8
    x = torch.randn(2, 3, 32, 32)
    assert image_out(model, x).shape == image_out(clip, x).shape
    assert all(isinstance(b, merge.TokenMergeBlock) for b in model.visual.transformer.resblocks)
    # r larger than the tokens allow is clipped per block and said; a block list picks where
    _, rep = merge.apply(clip, MergeConfig(r=20))
    assert rep.layers[0]["merged"] == 7 and rep.skipped and "merged 7, not 20" in rep.skipped[0]["why"]
    _, rep = merge.apply(clip, MergeConfig(r=2, blocks="-1"))
    assert [layer["block"] for layer in rep.layers] == [2]
    with pytest.raises(EdgeclipError, match="block 5 does not exist"):
        merge.apply(clip, MergeConfig(r=2, blocks="5"))
    _, report = compress(clip, CompressRecipe(token_merge=3), flop_inputs=(x[:1], None))
    assert report["flops_removed_pct"]["vision"] >= 20 and report["params_removed_pct"]["vision"] == 0


def test_merging_composes_with_token_dropping(clip):
    model, report = compress(clip, CompressRecipe(token_keep=0.5, token_blocks="1", token_merge=2))
    assert [p["name"] for p in report["passes"]] == ["tokens", "token-merge"]
    layers = report["passes"][1]["layers"]
    # block 0 merges 16 -> 14; block 1 drops half of 14 (-> 7), then merges 2 -> 5; block 2 merges 2 -> 3
    assert [(la["tokens_before"], la["tokens_after"]) for la in layers] == [(17, 15), (8, 6), (6, 4)]
    x = torch.randn(2, 3, 32, 32)
    assert image_out(model, x).shape == image_out(clip, x).shape


def test_bad_merge_settings_are_refused(clip):
    with pytest.raises(EdgeclipError, match="--token-merge is the number of tokens"):
        CompressRecipe(token_merge=-1).validated()
    with pytest.raises(EdgeclipError, match="--token-merge-blocks 'x' is not a block list"):
        merge.apply(clip, CompressRecipe(token_merge=2, token_merge_blocks="x").merge())
    with pytest.raises(EdgeclipError, match="already applied"):
        merge.apply(merge.apply(clip, MergeConfig(r=1))[0], MergeConfig(r=1))


def test_merged_model_exports_with_its_fidelity_gate(tiny_clip_dir, tiny_images, tmp_path):
    """Static shapes: the merged tower goes through torch.export and TorchScript (ONNX, TorchScript-lite here;
    ExecuTorch and int8 in every format with every other pass in tests/exporter/compress/test_compress_export.py),
    through the fidelity gate against the merged eager model."""
    arts = edgeclip.export(str(tiny_clip_dir), formats=("onnx", "ptl"), data=tiny_images, verify_size=18,
                           out=str(tmp_path), compress=CompressRecipe(token_merge=3))
    for a in arts:
        passes = {p["name"]: p for p in a.manifest["compression"]["passes"]}
        assert passes["token-merge"]["extra"]["tokens_at_output"] == 17 - 6 and "tome3" in a.name
        assert a.manifest["fidelity"]["top1_agreement"] == 1.0 and a.manifest["fidelity"]["mean_cosine"] >= 0.9999


@pytest.mark.parametrize("flags, needle", [
    (["--token-merge", "2", "--token-merge-blocks", "x"], "--token-merge-blocks 'x' is not a block list"),
    (["--token-merge", "2", "--token-merge-blocks", "7"], "block 7 does not exist"),
    (["--token-merge", "-1"], "-1 is not in the range x>=0"),
])
def test_cli_refuses_bad_merge_flags_in_one_line_and_writes_nothing(flags, needle, tiny_clip_dir, tiny_images, tmp_path):
    from click.testing import CliRunner

    from edgeclip.cli import main

    out = tmp_path / "out"
    r = CliRunner().invoke(main, ["export", "--model", str(tiny_clip_dir), "--data", tiny_images, "--out", str(out), *flags])
    assert r.exit_code == 2 and needle in r.output and "Traceback" not in r.output, r.output
    assert not out.exists()


def test_matching_is_by_direction_not_by_key_length():
    """Keys are compared by cosine: a short key pointing the same way is a better match than a long one at an angle
    (unnormalised dot products would pick the long key, and merge the wrong pair)."""
    keys = torch.tensor([[[0.1, 0.0], [0.05, 0.0], [0.0, 2.0], [0.4, 0.3]]])   # A = tokens 0, 2; B = tokens 1, 3
    x = torch.tensor([[[1.0], [3.0], [10.0], [20.0]]])
    out, size = merge.bipartite_merge(x, torch.ones(1, 4, 1), keys, prefix=0, r=1)
    # token 0 (cosine 1 with token 1) merges into token 1; token 2 (cosine 0.6 with token 3) stays
    assert out[0, :, 0].tolist() == [10.0, 2.0, 20.0] and size[0, :, 0].tolist() == [1.0, 2.0, 1.0]


def test_merge_report_and_refusals_name_their_flag(clip, monkeypatch):
    from edgeclip.exporter.compress import tokens
    from edgeclip.exporter.compress.report import n_params

    merged, rep = merge.apply(clip, MergeConfig(r=2))
    assert rep.name == "token-merge" and rep.params_before == rep.params_after == n_params(merged)
    assert rep.extra["r"] == 2 and set(rep.extra) >= {"r", "blocks", "method"}
    with pytest.raises(EdgeclipError, match="^token merging was already applied to this model$"):
        merge.apply(merged, MergeConfig(r=2))
    monkeypatch.setattr(tokens, "refusal", lambda t, what: "this family has no token layout")
    with pytest.raises(EdgeclipError, match="^--token-merge: this family has no token layout; use SVD or block pruning"):
        merge.apply(clip, MergeConfig(r=2))


def test_a_merging_block_that_drops_keeps_the_tokens_the_dropping_block_keeps(clip):
    """A dropping block rebuilt by the merge pass (r = 0 here) ranks patch tokens by the class token's attention and
    keeps the prefix: exactly what the dropping block computes."""
    from edgeclip.exporter.compress.tokens import TokenDropBlock

    b0, _ = _two_blocks(clip)
    drop = TokenDropBlock(copy.deepcopy(b0), OPEN_CLIP_BLOCK.parts, keep=5, prefix=1, rate=0.3)
    rebuilt = merge.TokenMergeBlock(copy.deepcopy(drop), OPEN_CLIP_BLOCK.parts, prefix=1, r=0, keep=5, size_in=False,
                                    size_out=False)
    torch.manual_seed(3)
    x = torch.randn(2, 17, 64)
    with torch.no_grad():
        want = drop(x)
        assert want.shape == (2, 6, 64)
        torch.testing.assert_close(rebuilt(x), want, atol=1e-5, rtol=1e-4)


def test_merge_report_states_what_it_did_and_blocks_before_the_first_merge_stay_the_models(clip):
    _, rep = merge.apply(clip, MergeConfig(r=3))
    assert rep.skipped == [] and rep.extra["method"] == (
        "ToMe bipartite soft matching on attention keys, size-weighted merge, proportional attention")
    _, rep = merge.apply(clip, MergeConfig(r=20))
    assert rep.skipped[0] == {"block": 0, "why": "16 patch tokens reach the merge: merged 7, not 20"}
    model, rep = merge.apply(clip, MergeConfig(r=2, blocks="-1"))
    blocks = list(model.visual.transformer.resblocks)
    assert [isinstance(b, merge.TokenMergeBlock) for b in blocks] == [False, False, True]
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert image_out(model, x).shape == image_out(clip, x).shape


def test_merging_after_a_drop_to_one_token_merges_nothing_and_says_where(clip):
    """Block 0 keeps 1 of 16 patch tokens (rate 0.01): no later block has a pair to merge, so the pass changes
    nothing and reports each block and the whole."""
    from edgeclip.exporter.compress import tokens
    from edgeclip.exporter.compress.config import TokenConfig

    dropped, _ = tokens.apply(clip, TokenConfig(keep=0.01, blocks=(0,)))
    model, rep = merge.apply(dropped, MergeConfig(r=1, blocks="1,2"))
    assert rep.layers == [] and rep.skipped == [
        {"block": 1, "why": "1 patch tokens reach the merge: merged 0, not 1"},
        {"block": 2, "why": "1 patch tokens reach the merge: merged 0, not 1"},
        {"block": None, "why": "r=1 merges no token on this tower"}]
    assert rep.params_after == rep.params_before == sum(p.numel() for p in dropped.parameters())
    assert not any(isinstance(b, merge.TokenMergeBlock) for b in model.visual.transformer.resblocks)


@pytest.mark.parametrize("rate, keep", [(0.875, 14), (0.9375, None)])
def test_a_dropping_block_after_merging_recounts_its_keep_from_the_tokens_that_reach_it(clip, rate, keep):
    """Block 0 merges 16 -> 15 patch tokens; block 1's rate is applied to those 15: 0.875 keeps 14, and 0.9375 keeps
    all 15, so that block drops nothing (keep None) rather than reordering every token."""
    model, report = compress(clip, CompressRecipe(token_keep=rate, token_blocks="1", token_merge=1))
    b1 = model.visual.transformer.resblocks[1]
    assert isinstance(b1, merge.TokenMergeBlock) and b1.keep == keep
    layers = report["passes"][1]["layers"]
    assert layers[1]["tokens_before"] == (keep or 15) + 1
