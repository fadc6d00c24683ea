"""The routes a user takes without edgeclip, built in the same run so the report can compare against them.

* ``onnx-fp32-plain``: ``torch.onnx.export`` + onnxruntime, no quantization;
* ``onnx-int8-ort-defaults``: that file through ``onnxruntime.quantization.quantize_dynamic`` with its
  default settings (per-tensor weights, every quantizable op, no pre-processing);
* ``torch-ao-dynamic-eager``: ``torch.ao.quantization.quantize_dynamic(model, {nn.Linear})`` run eagerly
  (open_clip's fused attention in-projection stays float, as it does for anyone who calls it).

They are never written to ``out/``: they are measuring sticks, not artifacts.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

PLAIN = "peer: torch.onnx.export + ORT fp32"
ORT_DEFAULTS = "peer: ORT quantize_dynamic defaults"
AO_EAGER = "peer: torch.ao quantize_dynamic eager"


def build_peer_files(module: torch.nn.Module, example: np.ndarray, workdir: Path) -> dict[str, tuple[Path, str]]:
    """name -> (ONNX file, quant label) for the two ONNX peers, built from the fp32 eager ``module``
    (the torch.ao peer is rebuilt inside its benchmark worker: it is a module, not a file)."""
    from onnxruntime.quantization import quantize_dynamic

    from edgeclip.exporter.formats.onnx import export_onnx

    workdir.mkdir(parents=True, exist_ok=True)
    fp32 = workdir / "peer_fp32.onnx"
    export_onnx(module, torch.from_numpy(np.ascontiguousarray(example[:2])), fp32, "pixel_values", "logits")
    int8 = workdir / "peer_int8_ort_defaults.onnx"
    quantize_dynamic(str(fp32), str(int8))
    return {PLAIN: (fp32, "fp32"), ORT_DEFAULTS: (int8, "int8 dynamic")}
