"""Per-tensor range choice (``--calib-method auto``): the error model is the real quantization error, and the
chosen range is the candidate with the lowest error -- clipping where outliers waste levels, not where they don't."""

import numpy as np
import pytest

from edgeclip.exporter.quantize.range_choice import (WeightedHistograms, _points, choose_range, coarser, consumer_weights,
                                                      quantization_mse)


def _hist(values: np.ndarray, bins: int = 4096):
    t = np.abs(values).max()
    hist, edges = np.histogram(values, bins, range=(-t, t))
    return hist, edges.astype(np.float32), (float(values.min()), float(values.max()))


def _true_mse(values: np.ndarray, lo: float, hi: float) -> float:
    """Quantize the raw values themselves (uint8 asymmetric over the range widened to include 0)."""
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    s = (hi - lo) / 255
    q = np.clip(np.round((values - lo) / s), 0, 255) * s + lo
    return float(((values - q) ** 2).mean())


@pytest.fixture(scope="module")
def outlier_activations():
    """Heavy-tailed (Student t, 4 degrees of freedom): rare extremes ~100x the typical value, finite variance."""
    return np.random.default_rng(0).standard_t(4, 400_000).astype(np.float32)


def test_histogram_error_matches_quantizing_the_values(outlier_activations):
    v = outlier_activations
    hist, edges, (lo, hi) = _hist(v)
    x, w = _points(hist, edges)
    for a, b in [(lo, hi), (0.2 * lo, 0.2 * hi), (-20.0, 20.0)]:
        est, true = quantization_mse(x, w, a, b), _true_mse(v, a, b)
        assert est == pytest.approx(true, rel=0.25), (a, b, est, true)


def test_outliers_make_it_clip_and_the_choice_is_the_least_error(outlier_activations):
    v = outlier_activations
    hist, edges, observed = _hist(v)
    c = choose_range(hist, edges, observed, {"percentile": (-5.0, 5.0)})
    assert c.errors[c.method] == min(c.errors.values())
    assert c.method == "mse" and c.highest < 0.7 * observed[1] and c.lowest > 0.7 * observed[0]
    # on the values themselves the chosen range beats both minmax and the over-clipping percentile
    assert _true_mse(v, c.lowest, c.highest) < 0.7 * _true_mse(v, *observed)
    assert _true_mse(v, c.lowest, c.highest) < 0.7 * _true_mse(v, -5.0, 5.0)


def test_without_outliers_it_keeps_the_extremes():
    """Uniform values: every clipped value costs more than the finer step saves, so nothing is clipped away."""
    v = np.random.default_rng(1).uniform(-1, 1, 200_000).astype(np.float32)
    hist, edges, observed = _hist(v)
    c = choose_range(hist, edges, observed, {"percentile": (-0.5, 0.5)})
    assert c.errors["percentile"] > c.errors["minmax"]
    assert c.highest >= 0.97 * observed[1] and c.lowest <= 0.97 * observed[0]
    assert _true_mse(v, c.lowest, c.highest) <= _true_mse(v, -0.5, 0.5)


def test_coarser_histogram_keeps_every_count_and_the_zero_bin_centred():
    v = np.random.default_rng(2).standard_normal(10_000).astype(np.float32)
    t = np.float32(np.abs(v).max())
    hist, edges = np.histogram(v, 4098, range=(-t, t))       # not a multiple of the factor, as merged histograms get
    merged, medges, lo, hi, thr = coarser((hist, edges.astype(np.float32), v.min(), v.max(), t), 8)
    assert merged.sum() == hist.sum() and len(medges) == len(merged) + 1 and len(merged) % 2 == 0
    assert medges[len(merged) // 2] == pytest.approx(0.0, abs=1e-5) and thr == pytest.approx(-medges[0], rel=1e-6)
    np.testing.assert_allclose(np.diff(medges), 8 * (edges[1] - edges[0]), rtol=1e-4)


def test_output_weighting_clips_a_channel_whose_weights_are_small():
    """A channel scaled x50 whose weights were divided by 50 (the fp32 function unchanged): its values dominate the
    activation's own error but barely reach the output, so the output-weighted choice clips it and the
    activation-only choice does not."""
    rng = np.random.default_rng(3)
    a = rng.standard_normal((4000, 16)).astype(np.float32)
    a[:, 0] *= 50
    w = rng.standard_normal((16, 8))
    w[0] /= 50
    norms = (w ** 2).sum(axis=1)
    t = float(np.abs(a).max())
    weighted = WeightedHistograms({"x": (-1, norms)}, {"x": t}, 4096)
    weighted.collect({"x": [a[:2000], a[2000:]]})
    plain, edges = np.histogram(a, 4096, range=(-t, t))
    observed = (float(a.min()), float(a.max()))
    by_output = choose_range(weighted.hist["x"], weighted.edges("x"), observed, {})
    by_activation = choose_range(plain, edges, observed, {})
    assert by_output.highest < 0.6 * by_activation.highest

    def output_mse(lo, hi):
        lo, hi = min(lo, 0.0), max(hi, 0.0)
        s = (hi - lo) / 255
        q = np.clip(np.round((a - lo) / s), 0, 255) * s + lo
        return float((((q - a) @ w) ** 2).mean())

    assert output_mse(by_output.lowest, by_output.highest) < 0.5 * output_mse(by_activation.lowest, by_activation.highest)


def test_consumer_weights_sum_over_the_linears_reading_a_tensor():
    import onnx
    from onnx import helper, numpy_helper

    rng = np.random.default_rng(4)
    wq, wk = rng.standard_normal((4, 3)).astype(np.float32), rng.standard_normal((4, 3)).astype(np.float32)
    wg = rng.standard_normal((5, 4)).astype(np.float32)            # Gemm with transB: [N, K]
    g = helper.make_graph(
        [helper.make_node("MatMul", ["x", "wq"], ["q"]), helper.make_node("MatMul", ["x", "wk"], ["k"]),
         helper.make_node("Gemm", ["y", "wg"], ["z"], transB=1)],
        "g", [helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, [2, 4]) for n in ("x", "y")],
        [helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, None) for n in ("q", "k", "z")],
        [numpy_helper.from_array(wq, "wq"), numpy_helper.from_array(wk, "wk"), numpy_helper.from_array(wg, "wg")])
    cw = consumer_weights(helper.make_model(g))
    np.testing.assert_allclose(cw["x"][1], (wq.astype(np.float64) ** 2).sum(1) + (wk.astype(np.float64) ** 2).sum(1), rtol=1e-6)
    np.testing.assert_allclose(cw["y"][1], (wg.astype(np.float64) ** 2).sum(0), rtol=1e-6)
    assert cw["x"][0] == cw["y"][0] == -1
