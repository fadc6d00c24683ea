"""PT2E int8 for ExecuTorch/XNNPACK: ``torch.export`` -> torchao ``prepare_pt2e`` -> (calibrate) -> ``convert_pt2e``.

The XNNPACKQuantizer from executorch decides what is quantized; this module only picks its
config and feeds calibration data:

* ``static``: int8 per-channel symmetric weights and int8 per-tensor activations whose ranges
  are observed (HistogramObserver) on the calibration images; XNNPACK then runs the linears,
  the patch-embedding conv and the residual adds on int8 kernels.
* ``dynamic``: int8 per-channel weights, activations quantized at run time per call
  (no calibration); only linears/convs are quantized, everything else stays float.

LayerNorm, softmax, GELU and attention's batched matmuls stay float in both schemes (the
quantizer has no int8 patterns for them).  The result is a GraphModule in Q/DQ form that
``exporter.formats.executorch.export_pte`` exports again and lowers to XNNPACK.
"""

from __future__ import annotations

import contextlib
import time
from collections import Counter

import numpy as np
import torch

from edgeclip.errors import EdgeclipError, first_line
from edgeclip.exporter.formats import batch_of_two

SCHEMES = ("static", "dynamic")
CALIB_BATCH = 128   # HistogramObserver costs ~25 ms per observer per call: few large batches are ~3x faster than many small


def check_calibration(calib, example) -> None:
    """Static int8 needs calibration inputs shaped like the model's input (shared by the PT2E quantizers: XNNPACK
    here, x86 Inductor in formats/aoti.py)."""
    if calib is None or len(calib) == 0:
        raise EdgeclipError("static int8 needs calibration inputs; pass --calib-data SPEC (a train split or a folder)")
    if tuple(calib.shape[1:]) != tuple(example.shape[1:]):
        raise EdgeclipError(f"calibration inputs have shape {tuple(calib.shape[1:])} per sample but the model "
                            f"takes {tuple(example.shape[1:])}; preprocess them like the verification inputs")


def calibrate(prepared: torch.fx.GraphModule, calib: np.ndarray, batch: int = CALIB_BATCH, *, chosen_ranges: bool = False,
              per_row: bool = False) -> tuple[int, dict]:
    """Run the calibration inputs through a prepared PT2E graph in batches of ``batch`` (one row at a time where the
    graph fixes the batch at 1: ``per_row``); with ``chosen_ranges`` (``--calib-method auto``) a second, weighted pass
    picks each activation's range (observer_ranges).  Returns (inputs seen, the range choice's facts or {}); shared by
    the PT2E quantizers (XNNPACK here, x86 Inductor in formats/aoti.py)."""
    def one_pass() -> int:
        n = 0
        with torch.no_grad():
            for i in range(0, len(calib), batch):
                chunk = torch.from_numpy(np.ascontiguousarray(calib[i:i + batch]))
                for part in (chunk.split(1) if per_row else (chunk,)):
                    prepared(part)
                n += len(chunk)
        return n

    n = one_pass()
    if not chosen_ranges:
        return n, {}
    from edgeclip.exporter.quantize.observer_ranges import choose_graph_ranges

    return n, choose_graph_ranges(prepared, one_pass)


def _q_dq_counts(gm: torch.fx.GraphModule) -> dict[str, int]:
    ops: Counter = Counter()
    for n in gm.graph.nodes:
        if n.op == "call_function":
            name = getattr(n.target, "__name__", str(n.target))
            if "quantize" in name or "choose_qparams" in name:
                ops[name.split(".")[0]] += 1
    return dict(sorted(ops.items()))


def _op_name(n: torch.fx.Node) -> str:
    return getattr(n.target, "__name__", str(n.target)).split(".")[0]


# ops the XNNPACKQuantizer has int8 activation patterns for, and the compute ops worth listing
_INT8_ACT_OPS = {"add", "mul", "cat", "adaptive_avg_pool2d"}
_COMPUTE_OPS = {"linear", "conv2d", "conv1d", "add", "mul", "cat", "layer_norm", "gelu", "softmax",
                "scaled_dot_product_attention", "matmul", "bmm", "mm", "embedding"}


def _int8_ops(gm: torch.fx.GraphModule) -> tuple[dict[str, int], dict[str, int], dict[str, int]]:
    """(ops with int8 weights, int8 activation-only ops, compute ops left in float) of a converted graph."""
    weights: Counter = Counter()
    acts: Counter = Counter()
    floats: Counter = Counter()
    for n in gm.graph.nodes:
        name = _op_name(n) if n.op == "call_function" else ""
        if name not in _COMPUTE_OPS:
            continue
        ins = [_op_name(a) for a in n.all_input_nodes if a.op == "call_function"]
        if "dequantize_per_channel" in ins:
            weights[name] += 1
        elif (name in _INT8_ACT_OPS and ins and all(i == "dequantize_per_tensor" for i in ins)
              and any(_op_name(u) == "quantize_per_tensor" for u in n.users)):
            acts[name] += 1
        else:
            floats[name] += 1
    return dict(sorted(weights.items())), dict(sorted(acts.items())), dict(sorted(floats.items()))


_ADDS = (torch.ops.aten.add.Tensor, torch.ops.aten.add_.Tensor)


def _innermost_module(n: torch.fx.Node) -> str | None:
    """The path of the module whose own forward made ``n`` (the last ``nn_module_stack`` entry)."""
    stack = list(n.meta.get("nn_module_stack", {}).values())
    if not stack:
        return None
    path = stack[-1][0]
    return path[len("L['self']."):] if path.startswith("L['self'].") else path


def float_filter(float_layers: tuple[str, ...]):
    """``node -> True`` for the nodes ``float_layers`` keeps float: every node inside a named module (torchao's
    module-name filter), and for ``<block>:add`` the adds the block's own forward makes (its residual adds, not
    the adds inside its submodules)."""
    from torchao.quantization.pt2e.quantizer.utils import get_module_name_filter

    from edgeclip.exporter.quantize.mixed import add_unit_block

    modules = [get_module_name_filter(name) for name in float_layers if add_unit_block(name) is None]
    blocks = {add_unit_block(name) for name in float_layers} - {None}

    def keep_float(n: torch.fx.Node) -> bool:
        return any(f(n) for f in modules) or (n.target in _ADDS and _innermost_module(n) in blocks)
    return keep_float


def _quantizer_without_bn_patterns():
    """XNNPACKQuantizer minus its conv+BatchNorm patterns, for graphs that have no BatchNorm.

    For static int8 the stock quantizer traces 12 conv/BN pattern graphs with torch.export on
    every prepare (~2-3 s here, not cached); they cannot match a graph without BatchNorm (ViTs),
    so the result is identical and prepare takes ~0.05 s.
    """
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import XNNPACKQuantizer

    class _XNNPACKQuantizerNoBN(XNNPACKQuantizer):
        SUPPORTED_PATTERNS = [p for p in XNNPACKQuantizer.SUPPORTED_PATTERNS if "_bn" not in p.name]

    return _XNNPACKQuantizerNoBN()


def quantize_pt2e_xnnpack(module: torch.nn.Module, example: torch.Tensor, scheme: str,
                          calib: np.ndarray | None, *, dynamic_batch: bool = True,
                          calib_batch: int = CALIB_BATCH,
                          float_layers: tuple[str, ...] = (),
                          calib_method: str = "histogram") -> tuple[torch.fx.GraphModule, dict]:
    """Quantize ``module`` for XNNPACK; returns the converted (Q/DQ) GraphModule and facts for the manifest.

    ``example`` is one input batch (float images or int64 token ids).  ``calib`` ([N, ...], same
    dtype and trailing shape as ``example``) is required for ``static`` and ignored for ``dynamic``.
    The module is captured with a free batch dimension (``dynamic_batch``) so calibration runs in
    batches of ``calib_batch``; the returned GraphModule accepts any batch size.  ``calib_method`` (static):
    "histogram", the stock HistogramObserver's search, or "auto", a range per tensor chosen by output-weighted
    error (``observer_ranges``; calibration runs twice).
    """
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer,
        get_symmetric_quantization_config,
    )
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    if scheme not in SCHEMES:
        raise EdgeclipError(f"unknown int8 scheme {scheme!r} for XNNPACK; use static or dynamic")
    if scheme == "static":
        check_calibration(calib, example)
    module = module.eval()
    t0 = time.perf_counter()
    if dynamic_batch:
        example = batch_of_two(example)
    dyn = ({0: torch.export.Dim("batch", min=1, max=4096)},) if dynamic_batch else None
    from edgeclip.exporter.formats.executorch import sdpa_as_bmm

    # dynamic: capture attention in the bmm form export_pte lowers, so it need not retrace to decompose it (same
    # program, outputs bit-identical on the fixture).  static keeps it whole: the quantizer would annotate the
    # decomposed score scaling (a ``mul``) as an int8 activation op (outputs moved by 0.04 on the fixture).
    trace_form = sdpa_as_bmm() if scheme == "dynamic" else contextlib.nullcontext()
    with torch.no_grad(), trace_form:
        try:
            captured = torch.export.export(module, (example,), dynamic_shapes=dyn).module()
        except Exception as e:
            msg = first_line(e)
            raise EdgeclipError(f"torch.export could not capture {type(module).__name__} for int8 ({msg}); "
                                "the model's forward must be traceable by torch.export") from None
    t_export = time.perf_counter() - t0

    config = get_symmetric_quantization_config(is_per_channel=True, is_dynamic=scheme == "dynamic")
    chosen_ranges = scheme == "static" and calib_method == "auto"
    if chosen_ranges:
        from edgeclip.exporter.quantize.observer_ranges import with_chosen_ranges

        config = with_chosen_ranges(config)
    has_bn = any("batch_norm" in str(n.target) for n in captured.graph.nodes if n.op == "call_function")
    quantizer = (XNNPACKQuantizer() if has_bn else _quantizer_without_bn_patterns()).set_global(config)
    if float_layers:   # accuracy control / --float-layer: these modules' nodes, and these blocks' adds, stay float
        in_float = float_filter(float_layers)
        quantizer.set_filter_function(lambda n: not in_float(n))
    t1 = time.perf_counter()
    prepared = prepare_pt2e(captured, quantizer)
    t_prepare = time.perf_counter() - t1

    n_calib = 0
    t2 = time.perf_counter()
    if scheme == "dynamic":
        # one forward so the per-channel weight observers see the weights (activations are
        # quantized at run time; without this the weight scales stay at their 1-element defaults)
        with torch.no_grad():
            prepared(example)
    else:
        n_calib, range_facts = calibrate(prepared, calib, calib_batch, chosen_ranges=chosen_ranges,
                                         per_row=not dynamic_batch)
    t_calib = time.perf_counter() - t2

    t3 = time.perf_counter()
    converted = convert_pt2e(prepared)
    t_convert = time.perf_counter() - t3

    weight_ops, act_ops, float_ops = _int8_ops(converted)
    info = {
        "method": "pt2e XNNPACKQuantizer",
        "scheme": scheme,
        "weights": "int8 symmetric",
        "per_channel": True,
        "activations": ("int8 per-tensor, quantized at run time per call" if scheme == "dynamic" else
                        "int8 per-tensor, ranges chosen per tensor by output-weighted error (--calib-method auto)"
                        if chosen_ranges else "int8 per-tensor, ranges calibrated (HistogramObserver)"),
        "calibration_images": n_calib,
        "int8_weight_ops": weight_ops,
        "int8_activation_ops": act_ops,
        "qdq_ops": _q_dq_counts(converted),
        "float_ops": float_ops,
        "float_layers": list(float_layers),
        **({"activation_ranges": range_facts} if chosen_ranges else {}),
        "seconds": {"capture": round(t_export, 2), "prepare": round(t_prepare, 2),
                    "calibrate": round(t_calib, 2), "convert": round(t_convert, 2)},
    }
    return converted, info
