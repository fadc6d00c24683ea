"""A transformer block's residual adds as one unit (``<block>:add``): found by structure, ranked by accuracy control
where the route makes them int8 (static .pte), kept float exactly (and only) where named, and kept float by default
in a static .pte where the residual stream carries outlier channels, which naive int8 adds wreck."""

from __future__ import annotations

from types import SimpleNamespace

import torch

from edgeclip.exporter.quantize.mixed import FakeInt8, residual_blocks, residual_outliers
from tests.conftest import row_cosine, tiny_visual


def _images(n: int) -> torch.Tensor:
    return torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(1))


def _stream_outlier(block: int, size: float = 200.0):
    """The tiny tower with a large channel added to the residual stream after ``block`` (it stays in the stream
    through every later block; each LayerNorm hides it from the Linears).  Changes the fp32 function: tests compare
    int8 against this model's own fp32 outputs."""
    model = tiny_visual()
    with torch.no_grad():
        model.transformer.resblocks[block].mlp.c_proj.bias[5] += size
    return model


def test_a_residual_stream_outlier_ranks_the_blocks_adds_first_when_the_route_makes_them_int8():
    """A large channel in the residual stream (LayerNorm then hides it from every Linear) hurts only where the adds
    are int8: with ``residual_adds`` the blocks carrying it rank first; without, no add unit is offered."""
    model = _stream_outlier(0)                                          # stream channel 5 ~200, the rest ~1
    x = _images(32).numpy()
    sens = FakeInt8(model, x, "static", residual_adds=True).sensitivity()
    adds = {"transformer.resblocks.0:add", "transformer.resblocks.1:add"}
    assert {s.layer for s in sens[:2]} == adds and sens[0].act_range > 150
    assert sens[1].rel_error > 10 * sens[2].rel_error                   # far above every Linear
    plain = FakeInt8(model, x, "static").sensitivity()
    assert not adds & {s.layer for s in plain} and len(plain) == len(sens) - 2


def test_residual_blocks_are_the_stacked_blocks_not_their_mlps():
    import timm

    from edgeclip.exporter.quantize.attention import split_attention

    assert list(residual_blocks(split_attention(tiny_visual()))) == ["transformer.resblocks.0", "transformer.resblocks.1"]
    # a model wrapped with its head in a Sequential: the wrapper's member is not a block (its output is not a stream)
    wrapped = torch.nn.Sequential(tiny_visual(), torch.nn.Linear(8, 3))
    assert list(residual_blocks(wrapped)) == ["0.transformer.resblocks.0", "0.transformer.resblocks.1"]
    vit = timm.create_model("vit_tiny_patch16_224", pretrained=False, depth=3, img_size=32, patch_size=8)
    assert list(residual_blocks(vit)) == ["blocks.0", "blocks.1", "blocks.2"]


def test_a_blocks_add_unit_keeps_exactly_its_own_residual_adds_float_in_the_static_pte():
    from edgeclip.exporter.formats.aoti import quantize_x86
    from edgeclip.exporter.quantize.attention import split_attention
    from edgeclip.exporter.quantize.pt2e_xnnpack import quantize_pt2e_xnnpack

    model = split_attention(tiny_visual())
    x = _images(16)
    _, plain = quantize_pt2e_xnnpack(model, x[:2], "static", x.numpy())
    _, one = quantize_pt2e_xnnpack(model, x[:2], "static", x.numpy(), float_layers=("transformer.resblocks.1:add",))
    # two residual adds per block + the position embedding; block 1's two leave, its Linears stay int8
    assert plain["int8_activation_ops"]["add"] == 5 and one["int8_activation_ops"]["add"] == 3
    assert one["float_ops"]["add"] == plain["float_ops"].get("add", 0) + 2
    assert one["int8_weight_ops"] == plain["int8_weight_ops"]
    # Inductor's x86 quantizer leaves adds float already: the unit is accepted and changes nothing there
    g_plain, _ = quantize_x86(model, x[:2], "static", x[:8].numpy())
    g_one, facts = quantize_x86(model, x[:2], "static", x[:8].numpy(), float_layers=("transformer.resblocks.1:add",))
    assert facts["float_layers"] == ["transformer.resblocks.1:add"]
    assert torch.equal(g_plain(x[:4]), g_one(x[:4]))


def test_outlier_blocks_are_found_by_their_output_and_tame_ones_left_alone():
    x = _images(24).numpy()
    tame = residual_outliers(tiny_visual(), x)
    assert tame["float"] == [] and all(r < 8 for r in tame["block_output_range_ratios"].values())
    late = residual_outliers(_stream_outlier(1), x)        # the stream is tame until block 1 adds the channel
    assert late["float"] == ["transformer.resblocks.1:add"]
    assert late["block_output_range_ratios"]["transformer.resblocks.1"] > 50
    early = residual_outliers(_stream_outlier(0), x)
    assert early["float"] == ["transformer.resblocks.0:add", "transformer.resblocks.1:add"]
    assert early["calibration_images"] == 24 and early["threshold"] == 8.0


def test_static_pte_keeps_outlier_blocks_adds_float_by_default_and_that_is_what_holds_int8(monkeypatch, tmp_path):
    """The route passes the outlier blocks' add units to the quantizer (tame model: none); quantized that way the
    outlier model's int8 graph stays close to fp32, where int8 residual adds lose the stream's other channels."""
    from edgeclip.exporter.quantize.attention import split_attention
    from edgeclip.exporter.quantize.pt2e_xnnpack import quantize_pt2e_xnnpack
    from edgeclip.exporter.recipe import ExportRecipe
    from edgeclip.exporter.routes.pte import produce

    seen = []
    monkeypatch.setattr("edgeclip.exporter.formats.executorch.export_pte",
                        lambda *a, float_layers=(), **k: seen.append(float_layers) or {})
    x = _images(32)
    recipe = ExportRecipe(quant="int8", scheme="static", formats=("pte",), float_layers=("transformer.resblocks.0.mlp.c_fc",))
    for model in (tiny_visual(), _stream_outlier(0)):
        facts = produce(SimpleNamespace(module=model, example=x[:2], calib_inputs=x.numpy(), rewrites={}), recipe, tmp_path)
    assert seen == [("transformer.resblocks.0.mlp.c_fc",),
                    ("transformer.resblocks.0.mlp.c_fc", "transformer.resblocks.0:add", "transformer.resblocks.1:add")]
    assert facts["residual_adds_float"]["float"] == ["transformer.resblocks.0:add", "transformer.resblocks.1:add"]
    produce(SimpleNamespace(module=model, example=x[:2], calib_inputs=x.numpy(), rewrites={}),
            ExportRecipe(quant="int8", scheme="dynamic", formats=("pte",)), tmp_path)
    assert seen[-1] == ()                                   # dynamic int8 has no int8 adds: nothing to keep float

    split = split_attention(model)
    ref = split(x).detach().numpy()
    naive, _ = quantize_pt2e_xnnpack(split, x[:2], "static", x.numpy())
    held, _ = quantize_pt2e_xnnpack(split, x[:2], "static", x.numpy(), float_layers=tuple(facts["residual_adds_float"]["float"]))
    with torch.no_grad():
        cos_naive, cos_held = (row_cosine(g(x).numpy(), ref).mean() for g in (naive, held))
    assert 1 - cos_naive > 3 * (1 - cos_held)     # 8.0e-5 against 1.6e-5 here (2-core AMD EPYC, 2026-12-07)


def test_conv_blocks_are_measured_per_channel_not_per_column():
    """FastViT / MobileCLIP stages output ``[B, C, H, W]``: a hot channel is found along C (per W it is invisible)."""
    import timm

    from edgeclip.exporter.quantize.outliers import channel_amax, range_ratio
    from tests.models.tiny_trunks import FASTVIT_KW

    fmap = torch.ones(2, 16, 4, 4)
    fmap[:, 3] = 50.0
    assert range_ratio(channel_amax(fmap).numpy()) == 50.0
    assert range_ratio(channel_amax(torch.ones(2, 5, 16)).numpy()) == 1.0     # tokens x channels: the last dim
    torch.manual_seed(0)
    net = timm.create_model("fastvit_sa12", pretrained=False, **FASTVIT_KW).eval()
    blocks = list(residual_blocks(net))
    assert blocks == ["stages.3.blocks.0", "stages.3.blocks.1"]     # the attention stage: the stages holding Linears
    with torch.no_grad():
        block = net.get_submodule(blocks[0])                         # a hot channel in the stream of block 0 onwards
        block.mlp.fc2.bias[7] += 500.0
        block.layer_scale_2.gamma[7] = 1.0                           # (the layer scale starts at 1e-5)
    found = residual_outliers(net, _images(4).numpy())
    assert found["float"] == [f"{b}:add" for b in blocks], found["block_output_range_ratios"]
