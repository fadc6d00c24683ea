"""--calib-method auto in the torch quantizers (.pte's PT2E, .ptl's torch.ao): ranges chosen per tensor by
output-weighted error beat the stock HistogramObserver on an activation with an outlier channel."""

import numpy as np
import pytest
import torch

from edgeclip.exporter.quantize.range_choice import quantization_mse
from edgeclip.exporter.recipe import ExportRecipe


class _Block(torch.nn.Module):
    """LayerNorm -> Linear -> GELU -> Linear with channel 0 of the LayerNorm x50 and the first Linear's column 0
    divided by 50: the fp32 function of the plain block, the activation statistics of a pre-trained ViT's."""

    def __init__(self):
        super().__init__()
        self.ln, self.fc1, self.fc2 = torch.nn.LayerNorm(64), torch.nn.Linear(64, 128), torch.nn.Linear(128, 10)

    def forward(self, x):
        return self.fc2(torch.nn.functional.gelu(self.fc1(self.ln(x))))


@pytest.fixture(scope="module")
def outlier_block():
    torch.manual_seed(0)
    m = _Block().eval()
    with torch.no_grad():
        m.ln.weight[0] *= 50
        m.ln.bias[0] *= 50
        m.fc1.weight[:, 0] /= 50
    x = torch.randn(512, 16, 64)
    return m, x[:256].numpy(), x[256:]      # calibration and held-out inputs are disjoint


def _quantize(kind, m, calib, method):
    if kind == "pt2":
        from edgeclip.exporter.formats.aoti import quantize_x86

        return quantize_x86(m, torch.from_numpy(calib[:2]), "static", calib, calib_method=method)
    if kind == "pte":
        from edgeclip.exporter.quantize.pt2e_xnnpack import quantize_pt2e_xnnpack

        return quantize_pt2e_xnnpack(m, torch.from_numpy(calib[:2]), "static", calib, calib_method=method)
    from edgeclip.exporter.quantize.torch_ao import quantize_torch_ao

    return quantize_torch_ao(m, kind.split("-")[1], "static", calib, calib_method=method)


@pytest.mark.parametrize("kind", ["pte", "ptl-qnnpack", "ptl-fbgemm", "pt2"])
def test_auto_ranges_beat_the_stock_observer_on_an_outlier_channel(outlier_block, kind):
    from edgeclip.exporter.quantize.torch_ao import quantized_engine

    m, calib, test = outlier_block
    with torch.no_grad():
        ref = m(test)
    err = {}
    for method in ("histogram", "auto"):
        q, info = _quantize(kind, m, calib, method)
        with quantized_engine(kind.split("-")[1] if "-" in kind else "qnnpack"), torch.no_grad():
            err[method] = float(((q(test) - ref) ** 2).mean() / (ref ** 2).mean())
        if method == "auto":
            facts = info["activation_ranges"]
            # the x86 quantizer observes the Linears' inputs only (its outputs stay float until the next quantized op)
            tensors = 2 if kind == "pt2" else 4
            assert facts["output_weighted"] == 2 and facts["tensors"] == tensors
            assert sum(facts["range_choice"].values()) == tensors
            assert "chosen per tensor" in info["activations"]
        else:
            assert "activation_ranges" not in info
    # measured 2026-12-06: pte 0.124 -> 0.0086, ptl qnnpack 0.124 -> 0.0085, ptl fbgemm (7-bit) 0.483 -> 0.0087;
    # 2026-12-07: pt2 (x86 quantizer, uint8 activations) 0.124 -> 0.0084;
    # unweighted (the activation's own error) the choice keeps the outlier's range: 0.114 on pte
    assert err["auto"] < err["histogram"] / 5, err


def test_fewer_levels_cost_more_and_reduce_range_is_scored_with_its_128():
    x = np.random.default_rng(0).standard_normal(10_000)
    w = np.ones_like(x)
    e256, e128 = quantization_mse(x, w, -4, 4), quantization_mse(x, w, -4, 4, levels=128)
    assert 3.5 < e128 / e256 < 4.5          # step doubles: rounding error x4


def test_torch_routes_get_auto_only_when_asked():
    assert ExportRecipe(calib_method="auto").torch_calib_method == "auto"
    for other in ("percentile", "entropy", "minmax"):     # onnxruntime's calibrators: the torch quantizers keep theirs
        assert ExportRecipe(calib_method=other).torch_calib_method == "histogram"


@pytest.mark.parametrize("fmt", ["pte", "ptl", "pt2"])
def test_routes_pass_the_method_to_their_quantizer(fmt, monkeypatch, tmp_path):
    from types import SimpleNamespace

    import edgeclip.exporter.formats.aoti as aoti
    import edgeclip.exporter.formats.executorch as et
    import edgeclip.exporter.quantize.torch_ao as ao
    from edgeclip.exporter.routes import pt2, pte, ptl

    seen = {}
    monkeypatch.setattr(et, "export_pte", lambda *a, **k: seen.update(k) or {})
    monkeypatch.setattr(aoti, "export_pt2", lambda *a, **k: seen.update(k) or {})
    monkeypatch.setattr(ao, "quantize_torch_ao", lambda *a, **k: seen.update(k) or (None, {}))
    subject = SimpleNamespace(module=None, example=None, calib_inputs=None)
    recipe = ExportRecipe(quant="int8", scheme="static", calib_method="auto", formats=(fmt,))
    if fmt == "pte":
        pte.produce(subject, recipe, tmp_path)
    elif fmt == "pt2":
        pt2.produce(subject, recipe, tmp_path)
    else:
        ptl.int8(None, subject, recipe)
    assert seen["calib_method"] == "auto"
