"""onnxruntime on the CPU execution provider, threads pinned so timings say what they measured."""

from __future__ import annotations

import numpy as np

from edgeclip.errors import EdgeclipError
from edgeclip.exporter.manifest import Artifact

from .base import register


class OnnxRuntimeSession:
    name = "onnxruntime-cpu"

    def __init__(self, path: str, threads: int):
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # no busy-waiting between calls: spinning threads would steal the cores from the next variant
        # timed in an interleaved round (and from the app's other work on a device)
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self.session = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
        except Exception as e:
            raise EdgeclipError(f"onnxruntime cannot load {path} ({str(e).strip().splitlines()[0][:200]}); re-export it") from None
        self.input_name = self.session.get_inputs()[0].name
        self.threads = threads

    def run(self, batch: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: np.ascontiguousarray(batch)})[0]


@register("onnx")
def load_onnx(artifact: Artifact | str, threads: int = 1, check: bool = True) -> OnnxRuntimeSession:
    """Load an ONNX artifact (integrity-checked against its manifest) or a bare .onnx path."""
    if isinstance(artifact, Artifact):
        if check:
            artifact.verify_integrity()
        return OnnxRuntimeSession(str(artifact.file), threads)
    return OnnxRuntimeSession(str(artifact), threads)
