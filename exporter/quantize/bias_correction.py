"""Bias correction for static int8 QDQ ONNX: give each quantized Linear the fp32 layer's mean output back.

Quantization error is not zero-mean: per-channel weight rounding leaves a systematic error per output channel,
and clipped activation ranges (percentile, MSE, entropy) cut one tail more than the other.  Downstream layers
(LayerNorm, softmax, GELU) see that as a shift.  Because a Linear is linear, the shift of its output mean is

    E[Q(x)] @ W_q - E[x] @ W

where ``Q`` is the input's quantize-dequantize with the calibrated scale and zero point, ``W_q`` the dequantized
int8 weight and the expectations are over calibration images and tokens; subtracting it from the layer's float
bias (the ``Add`` after the ``MatMul``) makes the quantized layer's mean output equal the fp32 one on those images.
Each layer is corrected for its *own* error, measured on fp32 inputs, so corrections do not compound (the
"local" variant of empirical bias correction; Nagel et al. 2019, Finkelstein et al. 2019).

Only ``MatMul`` -> ``Add(bias)`` pairs whose weight is int8 are touched; convolutions and float layers are not.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np


def _dequantize(q: np.ndarray, scale: np.ndarray, zero: np.ndarray | None, axis: int) -> np.ndarray:
    q = q.astype(np.float64)
    zero = np.zeros_like(scale) if zero is None else zero.astype(np.float64)
    if scale.ndim == 0 or scale.size == 1:
        return (q - zero.reshape(())) * scale.reshape(())
    shape = [1] * q.ndim
    shape[axis] = -1
    return (q - zero.reshape(shape)) * scale.astype(np.float64).reshape(shape)


def _fake_quant(x: np.ndarray, scale: float, zero: int, dtype: np.dtype) -> np.ndarray:
    info = np.iinfo(dtype)
    q = np.clip(np.rint(x / scale) + zero, info.min, info.max)
    return (q - zero) * scale


def _targets(model) -> list[dict]:
    """The MatMul -> Add(bias) pairs with an int8 weight and a QDQ'd input, with the names needed to correct them."""
    from onnx import numpy_helper

    inits = {i.name: i for i in model.graph.initializer}
    producer = {o: n for n in model.graph.node for o in n.output}
    consumers: dict[str, list] = defaultdict(list)
    for n in model.graph.node:
        for i in n.input:
            consumers[i].append(n)
    found = []
    for mm in model.graph.node:
        if mm.op_type != "MatMul" or len(consumers[mm.output[0]]) != 1:
            continue
        wdq, xdq, add = producer.get(mm.input[1]), producer.get(mm.input[0]), consumers[mm.output[0]][0]
        if not (wdq is not None and wdq.op_type == "DequantizeLinear" and wdq.input[0] in inits
                and xdq is not None and xdq.op_type == "DequantizeLinear" and add.op_type == "Add"):
            continue
        xq = producer.get(xdq.input[0])
        if xq is None or xq.op_type != "QuantizeLinear":
            continue
        bias = next((i for i in add.input if i != mm.output[0]), None)
        if bias not in inits or len(consumers[bias]) != 1:
            continue
        if not all(i in inits for i in (*wdq.input[1:], *xdq.input[1:])):
            continue
        axis = next((a.i for a in wdq.attribute if a.name == "axis"), 1)
        original = wdq.input[0].removesuffix("_quantized")
        found.append({"matmul": mm.name, "input": xq.input[0], "bias": bias, "axis": axis,
                      "weight_q": numpy_helper.to_array(inits[wdq.input[0]]),
                      "weight_scale": numpy_helper.to_array(inits[wdq.input[1]]),
                      "weight_zero": numpy_helper.to_array(inits[wdq.input[2]]) if len(wdq.input) > 2 else None,
                      "x_scale": float(numpy_helper.to_array(inits[xdq.input[1]])),
                      "x_zero": numpy_helper.to_array(inits[xdq.input[2]]) if len(xdq.input) > 2 else np.zeros((), np.uint8),
                      "weight_fp32": original})
    return found


def _input_key(t: dict) -> tuple:
    """One mean per input tensor and its quantization: q, k and v read the same tensor through the same Q/DQ."""
    return t["input"], t["x_scale"], int(t["x_zero"]), t["x_zero"].dtype.str


def correct_bias(fp32_path: Path, quant_path: Path, calib: np.ndarray, input_name: str, *, batch: int = 32) -> dict:
    """Rewrite ``quant_path`` (made from ``fp32_path`` by QDQ quantization, tensor names shared) in place with
    corrected biases; returns facts for the manifest (layers corrected, the size of the shifts)."""
    import onnx
    from onnx import numpy_helper

    from edgeclip.exporter.formats.onnx_optimize import helper_session

    quant = onnx.load(str(quant_path))
    fp32 = onnx.load(str(fp32_path))
    weights = {i.name: i for i in fp32.graph.initializer}
    targets = [t for t in _targets(quant) if t["weight_fp32"] in weights]
    if not targets:
        return {"layers": 0, "note": "no MatMul + bias pairs with int8 weights"}
    known = {o.name for o in fp32.graph.output}
    for name in dict.fromkeys(t["input"] for t in targets):      # expose each corrected layer's fp32 input
        if name not in known:
            fp32.graph.output.append(onnx.helper.make_empty_tensor_value_info(name))
    sums = {_input_key(t): [0.0, 0.0, 0] for t in targets}      # sum of x, sum of Q(x), rows
    with_outputs = Path(quant_path).with_suffix(".bias-probe.onnx")
    try:
        onnx.save(fp32, str(with_outputs))
        sess = helper_session(with_outputs)
        wanted = list(dict.fromkeys(name for name, *_ in sums))
        for i in range(0, len(calib), batch):
            acts = dict(zip(wanted, sess.run(wanted, {input_name: np.ascontiguousarray(calib[i:i + batch])})))
            for (name, scale, zero, dtype), s in sums.items():
                x = acts[name].reshape(-1, acts[name].shape[-1]).astype(np.float64)
                s[0] = s[0] + x.sum(0)
                s[1] = s[1] + _fake_quant(x, scale, zero, np.dtype(dtype)).sum(0)
                s[2] += len(x)
    finally:
        with_outputs.unlink(missing_ok=True)

    inits = {i.name: i for i in quant.graph.initializer}
    shifts = []
    for t in targets:
        sum_x, sum_xq, n = sums[_input_key(t)]
        mean_x, mean_xq = sum_x / n, sum_xq / n
        w = numpy_helper.to_array(weights[t["weight_fp32"]]).astype(np.float64)
        wq = _dequantize(t["weight_q"], t["weight_scale"], t["weight_zero"], t["axis"])
        shift = mean_xq @ wq - mean_x @ w
        bias = numpy_helper.to_array(inits[t["bias"]])
        inits[t["bias"]].CopyFrom(numpy_helper.from_array((bias - shift).astype(bias.dtype), t["bias"]))
        shifts.append(np.abs(shift))
    onnx.save(quant, str(quant_path))
    return {"layers": len(targets), "images": int(len(calib)), "method": "local empirical (own input and weight error)",
            # absolute units: relative to the bias would divide by ~0 for key projections (softmax ignores their bias)
            "mean_abs_shift": round(float(np.mean(np.concatenate(shifts))), 6),
            "max_abs_shift": round(float(np.max(np.concatenate(shifts))), 6)}
