"""Accuracy-controlled mixed precision: the search keeps the fewest, most sensitive layers float; every format
honours float layers; and on the trained fixture with outliers, --max-drop turns a failing int8 file into one
within the bar."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from edgeclip.errors import FidelityError
from edgeclip.exporter.accuracy_control import control, smallest_passing, top1_lost
from edgeclip.exporter.quantize.mixed import FakeInt8
from edgeclip.exporter.quantize.outliers import inject_outliers, norm_feeds
from tests.conftest import tiny_visual


def test_control_builds_few_files_and_keeps_the_fewest_layers():
    ranked = [f"l{i}" for i in range(20)]
    built = []

    def build(layers):       # the real file passes once the 6 worst layers are float
        built.append(len(layers))
        return {"k": len(layers)}, 0.0 if len(layers) >= 6 else 2.0

    layers, best, tried = control(lambda: ranked, 0.5, build, "x", predict=lambda r: 4)
    # predicted 4 missed: grown by half to 6 (passes), 5 tried (misses), the passing file rebuilt last
    assert layers == tuple(ranked[:6]) and best.facts == {"k": 6} and built == [0, 4, 6, 5, 6]
    built.clear()
    layers, _, _ = control(lambda: ranked, 0.5, build, "x", predict=lambda r: 12)     # an over-cautious guess is bisected down
    assert layers == tuple(ranked[:6]) and built == [0, 12, 6, 3, 4, 5, 6]
    def no_rank():
        raise AssertionError("ranked although full int8 passed")
    assert control(no_rank, 3.0, build, "x")[0] == ()                # full int8 passes: nothing measured
    with pytest.raises(FidelityError, match=r"even with all 20 layers float \(bar 0.5 pt\)"):
        control(lambda: ranked, 0.5, lambda layers: ({}, 1.0), "x", predict=lambda r: 1)
    # what no candidate covers is named, from the last file's facts
    facts = {"int8_weight_ops": {"conv2d": 1, "linear": 0}, "int8_activation_ops": {"add": 1, "cat": 1}}
    with pytest.raises(FidelityError, match=r"even with all 20 layers float \(still int8: 1 add, 1 cat, 1 conv2d\) "):
        control(lambda: ranked, 0.5, lambda layers: (facts, 1.0), "x", predict=lambda r: 1)


def test_smallest_passing_and_loss_counts_only_losses():
    assert smallest_passing(37, lambda k: k >= 11) == 11
    assert smallest_passing(5, lambda k: False) == 5
    ref = np.eye(4)[[0, 1, 2, 3]]
    out = np.eye(4)[[1, 0, 2, 3]]           # one right -> wrong, one wrong -> right: net 0, lost 25 pt
    assert top1_lost(ref, out, np.array([0, 0, 2, 3])) == 25.0


def test_sensitivity_ranks_the_layer_behind_an_outlier_first():
    model = tiny_visual()
    x = torch.randn(32, 3, 32, 32)
    feeds = norm_feeds(model, x[:2])
    target = next(f for f in feeds if f.norm.endswith("1.ln_2"))      # only block 1's MLP input gets an outlier
    mods = dict(model.named_modules())
    with torch.no_grad():
        mods[target.norm].weight[5] *= 80
        mods[target.norm].bias[5] *= 80
        mods[target.consumers[0]].weight[:, 5] /= 80
    sens = FakeInt8(model, x.numpy(), "static").sensitivity()
    assert sens[0].layer == "transformer.resblocks.1.mlp.c_fc" and sens[0].act_outlier_ratio > 20
    assert sens[0].rel_error > 5 * sens[1].rel_error
    assert [s.rel_error for s in sens] == sorted((s.rel_error for s in sens), reverse=True)


def test_float_layer_names_that_keep_nothing_float_are_refused():
    from edgeclip.errors import EdgeclipError
    from edgeclip.exporter.quantize.mixed import check_float_layers

    model = tiny_visual()
    check_float_layers(model, ("transformer.resblocks.0.mlp.c_fc", "transformer.resblocks.1.mlp",
                               "transformer.resblocks.1:add", "transformer.resblocks.0.attn.q"))   # split-attention path
    with pytest.raises(EdgeclipError, match=r"^--float-layer transformer.resblocks.2:add: 'transformer.resblocks.2' is "
                       r"not a transformer block of this model; blocks are named like transformer.resblocks.0:add$"):
        check_float_layers(model, ("transformer.resblocks.2:add",))
    with pytest.raises(EdgeclipError, match=r"^--float-layer transformer.resblocks.0.mlp.c_fx: no module of this model by "
                       r"that path holds a quantizable Linear; use a path such as transformer.resblocks.0.attn.q"):
        check_float_layers(model, ("transformer.resblocks.0.mlp.c_fx",))
    with pytest.raises(EdgeclipError, match="transformer.resblocks.0.ln_1: no module"):     # a module, but no Linear in it
        check_float_layers(model, ("transformer.resblocks.0.ln_1",))


@pytest.fixture(scope="module")
def tiny_subject_module():
    return tiny_visual()


def test_every_format_keeps_float_layers_float(tiny_subject_module, tmp_path):
    """A float layer's weights reach the file untouched (fp32 in .onnx and .ptl; outside any int8 pattern in .pte)."""
    import onnx
    from onnx import numpy_helper

    from edgeclip.exporter.quantize.torch_ao import quantize_torch_ao
    from edgeclip.exporter.quantize.pt2e_xnnpack import quantize_pt2e_xnnpack
    from edgeclip.exporter.quantize.attention import split_attention

    layer = "transformer.resblocks.0.mlp.c_fc"
    x = torch.randn(4, 3, 32, 32)
    q, info = quantize_torch_ao(tiny_subject_module, "fbgemm", "dynamic", example=x, float_layers=(layer,))
    kept = q.get_submodule(layer)
    assert type(kept) is torch.nn.Linear and info["float_layers"] == [layer]
    assert torch.equal(kept.weight, tiny_subject_module.get_submodule(layer).weight)
    assert "quantized" in type(q.get_submodule("transformer.resblocks.0.mlp.c_proj")).__module__

    _, with_float = quantize_pt2e_xnnpack(split_attention(tiny_subject_module), x, "dynamic", None, float_layers=(layer,))
    _, plain = quantize_pt2e_xnnpack(split_attention(tiny_subject_module), x, "dynamic", None)
    assert with_float["int8_weight_ops"]["linear"] == plain["int8_weight_ops"]["linear"] - 1
    assert with_float["float_ops"].get("linear", 0) == plain["float_ops"].get("linear", 0) + 1

    import edgeclip
    from edgeclip.models.preprocess import Preprocess

    arts = edgeclip.export(tiny_subject_module, example_input=torch.randn(2, 3, 32, 32), task="image-encoder",
                           preprocess=Preprocess(size=32), data=None, quant="int8", formats=("onnx",),
                           float_layers=(layer,), out=str(tmp_path))
    q = arts[0].manifest["quantization"]
    assert q["float_layers"] == [layer] and len(q["excluded_nodes"]) == 1
    g = onnx.load(str(arts[0].file)).graph
    node = next(n for n in g.node if n.name == q["excluded_nodes"][0])
    assert node.op_type == "MatMul"
    weights = {i.name: numpy_helper.to_array(i) for i in g.initializer}
    w = tiny_subject_module.get_submodule(layer).weight.detach().numpy()
    assert any(v.shape == w.T.shape and np.array_equal(v, w.T) for v in weights.values())


def test_export_refuses_a_float_layer_name_that_keeps_nothing_float_and_writes_nothing(tiny_subject_module, tmp_path):
    import edgeclip
    from edgeclip.errors import EdgeclipError
    from edgeclip.models.preprocess import Preprocess

    with pytest.raises(EdgeclipError, match=r"^--float-layer transformer.resblocks.0.mlp.c_fx: no module of this model"):
        edgeclip.export(tiny_subject_module, example_input=torch.randn(2, 3, 32, 32), task="image-encoder",
                        preprocess=Preprocess(size=32), data=None, quant="int8", formats=("onnx", "pte"),
                        float_layers=("transformer.resblocks.0.mlp.c_fx",), out=str(tmp_path / "out"))
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_max_drop_meets_its_bar_on_outliers_where_full_int8_misses(fmnist_spec, tmp_path):
    """The built-in trained model with x50 outliers, SmoothQuant off (so layer fallback is what is tested): full
    int8 .ptl (fbgemm, dynamic) misses the bar on the held-out calibration images; --max-drop 0.5 keeps some layers
    float, loses <= 0.5 pt there, and agrees with fp32 on >= 98.5 % of 1,000 test images (naive: 90.2 %)."""
    import edgeclip
    from edgeclip.models.datasets import load_dataset
    from edgeclip.preparation import prepare

    data = load_dataset(fmnist_spec, "test", 2)
    prep = prepare("edgeclip-fmnist", data=data)
    n_layers = 4 * 6 + 1    # q, k, v, out, fc1, fc2 per block + the class head
    inject_outliers(prep.module, data.tensors(prep.preprocess), scale=50.0)
    a = edgeclip.export(prep.module, preprocess=prep.preprocess, labels=prep.classes, data=fmnist_spec, quant="int8",
                        formats=("ptl",), backend="fbgemm", smoothquant=0, max_drop=0.5, verify_size=1000,
                        out=str(tmp_path))[0]
    ac = a.manifest["quantization"]["accuracy_control"]
    assert ac["built"][0]["float_layers"] == 0 and ac["built"][0]["lost_pt"] > 0.5      # full int8 misses
    assert ac["lost_pt"] <= 0.5 and 0 < len(ac["float_layers"]) < n_layers
    assert a.manifest["recipe"]["float_layers"] == [f["layer"] for f in ac["float_layers"]]   # rebuildable
    assert a.manifest["fidelity"]["top1_agreement"] >= 0.985
    assert "held-out" in ac["measured_on"] and "train" in ac["measured_on"]
