"""Which layers int8 hurts most, measured before any file is built, and how each format keeps a layer float.

Sensitivity is the error one layer alone adds when it is int8 and every other layer stays fp32: its input
activations are fake-quantized the way the scheme will (static: one per-tensor range from calibration;
dynamic: the range of each call) and its weights per output channel, and the relative mean squared change
of the model's output is measured on calibration images.  The ranking is format-agnostic (module paths of
the split-attention model every int8 route quantizes), so accuracy control and ``edgeclip inspect`` use
one measurement for .pte, .ptl and .onnx.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from edgeclip.errors import EdgeclipError

from .attention import split_attention
from .outliers import LINEARS, channel_amax
from .smooth import MIN_RANGE_RATIO


@dataclass(frozen=True)
class Sensitivity:
    layer: str          # module path in the split-attention model, or "<block>:add" (its residual adds)
    rel_error: float    # ||y_int8 - y|| ^ 2 / ||y|| ^ 2 with only this layer int8
    act_range: float    # max |input| seen on calibration images (of a block's output, for "<block>:add")
    act_outlier_ratio: float   # max channel range / median channel range of that activation


def _fake_quant_weight(w: torch.Tensor, bits: int = 8) -> torch.Tensor:
    q = 2 ** (bits - 1) - 1
    scale = w.abs().amax(1, keepdim=True).clamp(min=1e-12) / q
    return (w / scale).round().clamp(-q, q) * scale


def _fake_quant_act(x: torch.Tensor, lo: float | None, hi: float | None, bits: int = 8) -> torch.Tensor:
    if lo is None:   # dynamic: this call's range
        lo, hi = float(x.min()), float(x.max())
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    levels = 2 ** bits - 1
    scale = max(hi - lo, 1e-12) / levels
    zero = round(-lo / scale)
    return ((x / scale).round() + zero).clamp(0, levels).sub(zero).mul(scale)


def simulated_bits(fmt: str, backend: str) -> tuple[int, int]:
    """(weight bits, activation bits) a route really uses: onnxruntime dynamic int8 keeps 7-bit weights
    (``reduce_range``, see onnxruntime_dynamic), torch.ao's fbgemm / x86 engines 7-bit activations."""
    if fmt == "onnx":
        return 7, 8
    if fmt == "ptl" and backend in ("fbgemm", "x86"):
        return 8, 7
    return 8, 8


def residual_adds_int8(fmt: str, scheme: str) -> bool:
    """Whether a route makes the blocks' residual adds int8: XNNPACK's static quantizer does (.pte); onnxruntime
    static quantizes MatMul/Gemm/Conv only, torch.ao eager mode and Inductor's x86 quantizer leave adds float."""
    return fmt == "pte" and scheme == "static"


def quantizable_layers(module: nn.Module) -> dict[str, nn.Module]:
    """The Linears every int8 route quantizes, by their path in the split-attention model."""
    return {n: m for n, m in module.named_modules() if type(m) in LINEARS}


RESIDUAL = ":add"   # "<block>:add" names a transformer block's residual adds as one float-able unit


def add_unit_block(name: str) -> str | None:
    """The block path of a ``<block>:add`` unit name; None for a module path."""
    return name[:-len(RESIDUAL)] if name.endswith(RESIDUAL) else None


def residual_blocks(module: nn.Module) -> dict[str, nn.Module]:
    """The transformer blocks, by path: members of a ModuleList / Sequential stack of at least two modules of one
    class that hold Linears (open_clip's ``transformer.resblocks.N``, timm's ``blocks.N``).

    Why blocks matter besides their Linears: XNNPACK's static quantizer also makes each block's two residual adds
    int8 (one range for the whole residual stream), and where that stream carries large activations no choice
    of Linears kept float brings the file back (measured: the built-in model's x50-outlier twin lost 0.40 pt
    with all 25 Linears float).  The adds run in the block's own forward, so the block path names them."""
    found = {}
    for name, stack in module.named_modules():
        if not isinstance(stack, (nn.ModuleList, nn.Sequential)):
            continue
        kids = [(k, c) for k, c in stack.named_children()
                if type(c) not in LINEARS and any(type(m) in LINEARS for m in c.modules())]
        if len(kids) >= 2 and len({type(c) for _, c in kids}) == 1:
            found.update({f"{name}.{k}" if name else k: c for k, c in kids})
    return found


def residual_outliers(module: nn.Module, calib: np.ndarray, min_ratio: float = MIN_RANGE_RATIO) -> dict:
    """The blocks whose residual stream carries outlier channels, so a static .pte keeps their adds float by default.

    Each block's output is its second residual add's result; where its largest channel range exceeds ``min_ratio``
    x the median channel's (SmoothQuant's test for a LayerNorm output, same threshold), one per-tensor int8 range
    sized for that channel leaves the others a few levels.  Long-pretrained ViTs have such channels in the residual
    stream ("massive activations"), which LayerNorm hides from the Linears, so SmoothQuant cannot move them; the
    trained fixtures measure 1.8-2.6 and keep every add int8.  Returns the ``<block>:add`` units to keep float and
    every block's ratio, for the manifest."""
    from .outliers import output_ranges, range_ratio

    # the module as given (no split-attention copy): splitting renames attention internals, never a block's path
    ranges = output_ranges(module, list(residual_blocks(module)), calib)
    ratios = {b: round(range_ratio(r), 1) for b, r in ranges.items()}
    return {"float": [f"{b}{RESIDUAL}" for b, r in ratios.items() if r > min_ratio],
            "block_output_range_ratios": ratios, "threshold": min_ratio, "calibration_images": int(len(calib)),
            "rule": "a block whose output (the residual stream) has a channel range above the threshold x the median "
                    "channel's keeps its residual adds float: one int8 range for that stream would starve the other channels"}


def check_float_layers(module: nn.Module, names: tuple[str, ...] | list[str]) -> None:
    """Refuse a ``--float-layer`` name that keeps nothing float (a typo would otherwise be silently ignored):
    each must be a module path holding a quantizable Linear, or ``<block>:add``, in the split-attention model."""
    model = split_attention(module)
    linears = quantizable_layers(model)
    holders = {n for n, m in model.named_modules() if any(type(x) in LINEARS for x in m.modules())}
    blocks = residual_blocks(model)
    for name in names:
        block = add_unit_block(name)
        if block is not None:
            if block not in blocks:
                some = next(iter(blocks), None)
                raise EdgeclipError(f"--float-layer {name}: {block!r} is not a transformer block of this "
                                    "model" + (f"; blocks are named like {some}{RESIDUAL}" if some else
                                               " (it has none; name a layer instead)"))
        elif name not in holders:
            some = next(iter(linears), "")
            raise EdgeclipError(f"--float-layer {name}: no module of this model by that path holds a quantizable "
                                f"Linear; use a path such as {some} (edgeclip inspect lists them)")


class FakeInt8:
    """The split-attention model with any set of its Linears fake-quantized as the scheme will quantize them:
    a cheap stand-in for a real int8 file, used to rank layers and to predict how many must stay float (the
    real file then confirms; see accuracy_control).

    ``residual_adds``: also offer each transformer block's residual adds as a unit (``<block>:add``), for the
    routes that make them int8 (static .pte).  Simulated by fake-quantizing the block's output, the second add's
    result, with its calibration range; the first add's result (mid-block) has no module boundary to hook, so a
    unit's error is about half the real one -- the ranking orders units, and the real file decides the count."""

    def __init__(self, module: nn.Module, calib: np.ndarray, scheme: str, images: int = 64, batch: int = 64,
                 bits: tuple[int, int] = (8, 8), residual_adds: bool = False):
        self.model, self.scheme, self.batch = split_attention(module), scheme, batch
        self.weight_bits, self.act_bits = bits
        self.calib = np.ascontiguousarray(calib[:images])
        self.layers = quantizable_layers(self.model)
        self.blocks = ({f"{n}{RESIDUAL}": b for n, b in residual_blocks(self.model).items()} if residual_adds else {})
        self.stats: dict[str, tuple[float, float, torch.Tensor]] = {}

        def seen(name, a):
            if not isinstance(a, torch.Tensor):   # a block returning several tensors has no one activation to quantize
                return
            ch = channel_amax(a)
            lo, hi, c = self.stats.get(name, (np.inf, -np.inf, None))
            self.stats[name] = (min(lo, float(a.min())), max(hi, float(a.max())), ch if c is None else torch.maximum(c, ch))

        handles = [m.register_forward_pre_hook(lambda mod, args, n=n: seen(n, args[0])) for n, m in self.layers.items()]
        handles += [b.register_forward_hook(lambda mod, args, out, n=n: seen(n, out)) for n, b in self.blocks.items()]
        try:
            self.reference = self.outputs((), self.calib)
        finally:
            for h in handles:
                h.remove()
        # never called (see torch_ao.linears_not_called): no route quantizes them
        self.names = [n for n in (*self.layers, *self.blocks) if n in self.stats]

    def _act_range(self, name: str) -> tuple[float | None, float | None]:
        lo, hi, _ = self.stats[name]
        return (None, None) if self.scheme == "dynamic" else (lo, hi)

    def outputs(self, int8_layers, inputs: np.ndarray) -> torch.Tensor:
        """Model outputs ``[N, -1]`` with ``int8_layers`` (Linears and ``<block>:add`` units) fake-quantized and
        everything else fp32."""
        saved, handles = {}, []
        for name in int8_layers:
            act = self._act_range(name)
            if name in self.blocks:
                handles.append(self.blocks[name].register_forward_hook(
                    lambda mod, args, out, act=act: _fake_quant_act(out, *act, bits=self.act_bits)))
                continue
            layer = self.layers[name]
            saved[name] = layer.weight.data
            layer.weight.data = _fake_quant_weight(saved[name], self.weight_bits)
            handles.append(layer.register_forward_pre_hook(
                lambda mod, args, act=act: (_fake_quant_act(args[0], *act, bits=self.act_bits), *args[1:])))
        x = torch.from_numpy(np.ascontiguousarray(inputs))
        try:
            with torch.no_grad():
                return torch.cat([self.model(x[i:i + self.batch]).float().reshape(len(x[i:i + self.batch]), -1)
                                  for i in range(0, len(x), self.batch)])
        finally:
            for h in handles:
                h.remove()
            for name, w in saved.items():
                self.layers[name].weight.data = w

    def sensitivity(self) -> list[Sensitivity]:
        """Every quantizable unit's int8 error alone on the calibration images, worst first."""
        denom = float(self.reference.pow(2).sum()) or 1e-12
        out = []
        for name in self.names:
            err = float((self.outputs((name,), self.calib) - self.reference).pow(2).sum()) / denom
            lo, hi, ch = self.stats[name]
            out.append(Sensitivity(name, err, max(abs(lo), abs(hi)), float(ch.max()) / (float(ch.median()) or 1e-12)))
        return sorted(out, key=lambda s: -s.rel_error)


def layer_sensitivity(module: nn.Module, calib: np.ndarray, scheme: str, images: int = 64) -> list[Sensitivity]:
    """Every quantizable layer's int8 error alone, worst first (``module``: the model as the routes receive it)."""
    return FakeInt8(module, calib, scheme, images).sensitivity()


def onnx_nodes_of(onnx_path, layers: list[str] | tuple[str, ...]) -> list[str]:
    """Names of the ONNX nodes that compute the given module paths (the exporter's ``name_scopes`` metadata)."""
    import onnx

    wanted = set(layers)
    names = []
    for node in onnx.load(str(onnx_path), load_external_data=False).graph.node:
        scopes = next((p.value for p in node.metadata_props if p.key == "pkg.torch.onnx.name_scopes"), None)
        if scopes and node.op_type in ("MatMul", "Gemm") and wanted & set(ast.literal_eval(scopes)):
            names.append(node.name)
    return names

