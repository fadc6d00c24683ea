"""int4 weights for ExecuTorch: torchao's 8da4w (int8 dynamic per-token activations, int4 symmetric weights with
one scale per ``group_size`` inputs), the scheme ExecuTorch's XNNPACK delegate runs for on-device LLMs.

torchao rewrites each Linear's weight into its "unpacked to int8" form, which torch.export captures as
quantize / dequantize patterns that the XNNPACK partitioner fuses into its 4-bit GEMM.  A Linear whose input width
is not a multiple of the group stays float (torchao's groups cannot straddle rows), as do the ones the user names
(``--float-layer``); the facts list both.  The patch-embedding conv keeps float weights (8da4w covers Linears).
"""

from __future__ import annotations

import copy

import torch


def quantize_8da4w(module: torch.nn.Module, group_size: int, float_layers: tuple[str, ...] = ()) -> tuple[torch.nn.Module, dict]:
    from torchao.quantization import Int8DynamicActivationIntxWeightConfig, quantize_
    from torchao.quantization.granularity import PerGroup

    module = copy.deepcopy(module).eval()
    uneven, chosen = [], []

    def wanted(m: torch.nn.Module, name: str) -> bool:
        if not isinstance(m, torch.nn.Linear):
            return False
        if any(name == f or name.startswith(f + ".") for f in float_layers):
            return False
        if m.in_features % group_size:
            uneven.append(name)
            return False
        chosen.append(name)
        return True

    quantize_(module, Int8DynamicActivationIntxWeightConfig(weight_dtype=torch.int4, weight_granularity=PerGroup(group_size)),
              filter_fn=wanted)
    return module, {"method": "torchao Int8DynamicActivationIntxWeightConfig (8da4w), lowered to XNNPACK",
                    "weights": f"int4 symmetric, one scale per {group_size} inputs", "group_size": group_size,
                    "activations": "int8 dynamic, per token (asymmetric)", "int4_linears": len(chosen),
                    "float_linears": {"uneven_width": uneven, "float_layers": list(float_layers)}}
