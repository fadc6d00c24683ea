"""Bias correction of static int8 ONNX: each int8 Linear gets the fp32 layer's mean output back.

A small MLP fed heavy-tailed, one-signed activations: percentile ranges clip the top tail, so quantized outputs
are biased low.  The corrected file's mean output error on fresh images of the same distribution must be a small
fraction of the uncorrected one (fails if the correction is skipped, or applied with the wrong sign).
"""

import numpy as np
import pytest
import torch

from edgeclip.exporter.quantize.onnxruntime_static import OrtStaticConfig, _run_all, quantize_onnx_static


class _MLP(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.fc1, self.fc2, self.fc3 = torch.nn.Linear(16, 64), torch.nn.Linear(64, 64), torch.nn.Linear(64, 8)

    def forward(self, x):
        return self.fc3(torch.relu(self.fc2(torch.relu(self.fc1(x)))) ** 1.5)


@pytest.fixture(scope="module")
def mlp_onnx(tmp_path_factory):
    path = tmp_path_factory.mktemp("mlp") / "fp32.onnx"
    # tokens x features, as a ViT's Linears see them: torch.onnx writes MatMul + Add(bias), like edgeclip's exports
    torch.onnx.export(_MLP().eval(), (torch.rand(2, 4, 16),), str(path), input_names=["x"], output_names=["y"],
                      dynamic_shapes=({0: torch.export.Dim("n")},))
    return path


def _inputs(seed: int, n: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.exponential(1.0, (n, 4, 16)).astype(np.float32) ** 2     # heavy right tail


def test_corrected_biases_remove_the_mean_output_shift(mlp_onnx, tmp_path):
    calib, fresh = _inputs(0, 512), _inputs(1, 2048)
    config = OrtStaticConfig(calibration="percentile", percentile=99.0, op_types=("MatMul", "Gemm"), preprocess=False)
    shifts, facts = {}, {}
    for on in (False, True):
        out = tmp_path / f"q{on}.onnx"
        facts[on] = quantize_onnx_static(mlp_onnx, out, calib, "x", OrtStaticConfig(**{**config.__dict__, "bias_correction": on}))
        ref, got = _run_all(mlp_onnx, fresh, "x"), _run_all(out, fresh, "x")
        shifts[on] = np.abs((got - ref).mean(0)).mean() / np.abs(ref).mean()
    bc = facts[True]["calibration"]["bias_correction"]
    assert bc["layers"] == 3 and bc["images"] == 512 and bc["max_abs_shift"] >= bc["mean_abs_shift"] > 0
    assert "bias_correction" not in facts[False]["calibration"]
    assert shifts[False] > 0.01, shifts                  # the clipped tail really biases the int8 file
    assert shifts[True] < 0.5 * shifts[False], shifts    # and the correction takes most of it away (measured 0.34x)


def test_bias_correction_is_refused_where_it_does_not_apply():
    from edgeclip.errors import EdgeclipError
    from edgeclip.exporter.recipe import ExportRecipe

    with pytest.raises(EdgeclipError, match="--bias-correction applies to --quant int8 --scheme static --format onnx"):
        ExportRecipe(quant="int8", scheme="dynamic", bias_correction=True).validated()
    with pytest.raises(EdgeclipError, match="--bias-correction applies to"):
        ExportRecipe(quant="int8", scheme="static", formats=("pte",), bias_correction=True).validated()
    ExportRecipe(quant="int8", scheme="static", formats=("onnx",), bias_correction=True).validated()
