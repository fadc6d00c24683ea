"""The routes a user takes without edgeclip, built in the same run so the report can compare against them.

* ``onnx-fp32-plain``: ``torch.onnx.export`` + onnxruntime, no quantization;
* ``onnx-int8-ort-defaults``: that file through ``onnxruntime.quantization.quantize_dynamic`` with its
  default settings (per-tensor weights, every quantizable op, no pre-processing);
* ``torch-ao-dynamic-eager``: ``torch.ao.quantization.quantize_dynamic(model, {nn.Linear})`` run eagerly
  (open_clip's fused attention in-projection stays float, as it does for anyone who calls it).

They are never written to ``out/``: they are measuring sticks, not artifacts.
"""

from __future__ import annotations

import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch

from edgeclip.runtimes.onnxruntime_cpu import OnnxRuntimeSession
from edgeclip.runtimes.torch_eager import TorchEagerSession


def build_peers(module: torch.nn.Module, example: np.ndarray, threads: int, workdir: Path | None = None) -> dict:
    """name -> Session for each peer route, built from the fp32 eager ``module``."""
    from onnxruntime.quantization import quantize_dynamic

    from edgeclip.exporter.formats.onnx import export_onnx

    workdir = Path(workdir or tempfile.mkdtemp(prefix="edgeclip-peers-"))
    fp32 = workdir / "peer_fp32.onnx"
    export_onnx(module, torch.from_numpy(example[:2]), fp32, "pixel_values", "logits")
    int8 = workdir / "peer_int8_ort_defaults.onnx"
    quantize_dynamic(str(fp32), str(int8))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ao = torch.ao.quantization.quantize_dynamic(module, {torch.nn.Linear}, dtype=torch.qint8)
    return {
        "peer: torch.onnx.export + ORT fp32": (OnnxRuntimeSession(str(fp32), threads), "fp32", fp32.stat().st_size),
        "peer: ORT quantize_dynamic defaults": (OnnxRuntimeSession(str(int8), threads), "int8 dynamic", int8.stat().st_size),
        "peer: torch.ao quantize_dynamic eager": (TorchEagerSession(ao, threads), "int8 dynamic", None),
    }
