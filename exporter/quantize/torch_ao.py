"""torch.ao int8 for TorchScript-lite: dynamic (weights int8, activations quantized per call) and
static (activation scales calibrated on real images) for the qnnpack, fbgemm and x86 engines.

Why this path: the lite interpreter runs ``quantized::linear`` / ``quantized::linear_dynamic`` kernels,
which only torch.ao's eager/FX *converted* modules emit; a PT2E-converted graph traces to float
(de)quantize ops with float matmuls, so it would save nothing in a ``.ptl``.  torch.ao eager mode
is deprecated in torch 2.x but still works in 2.14; FX needs symbolic tracing, which open_clip's
``nn.MultiheadAttention`` call sites defeat, so we quantize in eager mode module by module:

* every ``nn.MultiheadAttention`` is first split into q/k/v/out ``nn.Linear`` (numerically the
  same), because MHA keeps its fused ``in_proj_weight`` as a bare Parameter that no quantizer
  touches -- otherwise a third of a ViT's matmul FLOPs would silently stay float;
* static: each Linear is wrapped as QuantStub -> Linear -> DeQuantStub, so matmuls run int8
  while LayerNorm, softmax, GELU and residual adds stay float (the ops whose int8 error hurts
  transformers most and whose cost is small).
"""

from __future__ import annotations

import contextlib
import warnings

import numpy as np
import torch
from torch import nn

from .attention import SplitAttention, split_attention  # noqa: F401  (re-exported)

ENGINES = ("qnnpack", "fbgemm", "x86")


@contextlib.contextmanager
def quantized_engine(engine: str):
    if engine not in torch.backends.quantized.supported_engines:
        from edgeclip.errors import EdgeclipError

        raise EdgeclipError(f"this torch build has no {engine} engine (has {', '.join(torch.backends.quantized.supported_engines)}); "
                            "pick another --backend")
    old = torch.backends.quantized.engine
    torch.backends.quantized.engine = engine
    try:
        yield
    finally:
        torch.backends.quantized.engine = old


class _StaticLinear(nn.Module):
    def __init__(self, linear: nn.Linear):
        super().__init__()
        self.quant = torch.ao.quantization.QuantStub()
        self.linear = linear
        self.dequant = torch.ao.quantization.DeQuantStub()

    def forward(self, x):
        return self.dequant(self.linear(self.quant(x)))


LINEARS = (nn.Linear, nn.modules.linear.NonDynamicallyQuantizableLinear)


def linears_not_called(module: nn.Module, example: torch.Tensor | None) -> list[str]:
    """Names of the Linears whose forward never runs: their owner reads ``.weight`` directly (EVA's attention
    calls ``F.linear(x, qkv.weight, bias)``).  Swapping them for quantized modules, whose ``weight`` is a
    method, breaks that call; they stay float instead."""
    if example is None:
        return []
    called: set[str] = set()
    handles = [m.register_forward_hook(lambda mod, i, o, n=name: called.add(n))
               for name, m in module.named_modules() if type(m) in LINEARS]
    try:
        with torch.no_grad():
            module(example[:1])
    finally:
        for h in handles:
            h.remove()
    return [name for name, m in module.named_modules() if type(m) in LINEARS and name not in called]


def _wrap_linears(module: nn.Module, qconfig, skip: frozenset[str] = frozenset()) -> int:
    """Wrap every Linear (but ``skip``); only the wrappers get a qconfig, so convs and norms stay float."""
    count = 0
    for prefix, child in list(module.named_modules()):
        for attr, sub in list(child.named_children()):
            if type(sub) in LINEARS and (f"{prefix}.{attr}" if prefix else attr) not in skip:
                wrapper = _StaticLinear(sub)
                wrapper.qconfig = qconfig
                setattr(child, attr, wrapper)
                count += 1
    return count


def _op_census(module: nn.Module) -> dict:
    int8, float_ = {}, {}
    for m in module.modules():
        name = type(m).__module__ + "." + type(m).__name__
        if "quantized" in type(m).__module__:
            int8[type(m).__name__] = int8.get(type(m).__name__, 0) + 1
        elif isinstance(m, (nn.Linear, nn.LayerNorm, nn.Conv2d, nn.GELU)) or "GELU" in name:
            float_[type(m).__name__] = float_.get(type(m).__name__, 0) + 1
    return {"int8_modules": int8, "float_modules": float_}


def quantize_torch_ao(module: nn.Module, engine: str, scheme: str, calib: np.ndarray | None = None,
                      batch: int = 32, example: torch.Tensor | None = None,
                      float_layers: tuple[str, ...] = (), calib_method: str = "histogram") -> tuple[nn.Module, dict]:
    """int8 copy of ``module`` for ``engine``; ``calib`` (real images) is required for ``static``.  With an
    ``example`` input, Linears the forward never calls are found and kept float (see ``linears_not_called``).
    ``calib_method`` (static): "histogram", torch.ao's default HistogramObserver search, or "auto", a range per
    tensor by output-weighted error (``observer_ranges``; calibration runs twice)."""
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}")
    model = split_attention(module)
    unused = frozenset(linears_not_called(model, example))
    skip = unused | frozenset(float_layers)
    with quantized_engine(engine), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if scheme == "dynamic":
            spec = ({n: torch.ao.quantization.default_dynamic_qconfig for n, m in model.named_modules()
                     if type(m) in LINEARS and n not in skip} if skip else {nn.Linear})
            qmodel = torch.ao.quantization.quantize_dynamic(model, spec, dtype=torch.qint8)
            info = {"activations": "int8, quantized per call (dynamic)"}
        else:
            if calib is None or len(calib) == 0:
                from edgeclip.errors import EdgeclipError

                raise EdgeclipError("static int8 needs calibration images; pass --calib-data SPEC")
            qconfig = torch.ao.quantization.get_default_qconfig(engine)
            auto = calib_method == "auto"
            if auto:
                from torch.ao.quantization.observer import HistogramObserver

                from .observer_ranges import chosen_like

                qconfig = qconfig._replace(activation=chosen_like(qconfig.activation, HistogramObserver))
            n = _wrap_linears(model, qconfig, skip)
            prepared = torch.ao.quantization.prepare(model)

            def calibrate() -> None:
                with torch.no_grad():
                    for i in range(0, len(calib), batch):
                        prepared(torch.from_numpy(np.ascontiguousarray(calib[i:i + batch])))

            calibrate()
            info = {"activations": "int8 at every Linear input, scales from calibration (static)", "wrapped_linears": n,
                    "calibration_images": int(len(calib)), "qconfig": f"torch.ao default for {engine}"}
            if auto:
                from .observer_ranges import choose_ranges, linear_input_weights

                observed = []
                for w in prepared.modules():
                    if isinstance(w, _StaticLinear):
                        observed.append((w.quant.activation_post_process, linear_input_weights(w.linear.weight)))
                        observed.append((w.linear.activation_post_process, None))   # its int8 output
                info["activation_ranges"] = choose_ranges(observed, calibrate)
                info["activations"] = ("int8 at every Linear input, ranges chosen per tensor by output-weighted error "
                                       "(--calib-method auto, static)")
                info["qconfig"] += ", activation observers: chosen range"
            qmodel = torch.ao.quantization.convert(prepared)
    info.update({"method": f"torch.ao eager {scheme} ({engine})", "engine": engine, "weights": "int8",
                 "attention_split": "nn.MultiheadAttention -> q/k/v/out Linear", "float_ops": "LayerNorm, softmax, GELU, residual adds, patch-embedding conv",
                 **_op_census(qmodel)})
    if unused:
        info["float_linears"] = {"layers": sorted(unused), "why": "their owner uses .weight directly instead of calling them"}
    info["float_layers"] = list(float_layers)
    return qmodel.eval(), info
