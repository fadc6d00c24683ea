"""onnxruntime: the CPU execution provider (threads pinned so timings say what they measured), or the
CUDA execution provider for artifacts built for CUDA when ``onnxruntime-gpu`` is installed."""

from __future__ import annotations

import numpy as np

from edgeclip.errors import EdgeclipError, first_line
from edgeclip.manifest import Artifact

from .base import device_for, register


def cuda_provider_available() -> bool:
    import onnxruntime as ort

    return "CUDAExecutionProvider" in ort.get_available_providers()


class OnnxRuntimeSession:
    name = "onnxruntime-cpu"

    def __init__(self, path: str, threads: int, device: str = "cpu", half: bool = False):
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        # ORT_ENABLE_ALL's CPU layout passes crash (SIGSEGV, onnxruntime 1.32) on fp16 graphs; EXTENDED runs them
        level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED if half and device == "cpu" else ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.graph_optimization_level = level
        # no busy-waiting between calls: spinning threads would steal the cores from the next variant
        # timed in an interleaved round (and from the app's other work on a device)
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            providers = ["CPUExecutionProvider"]
            if device == "cuda":
                providers.insert(0, "CUDAExecutionProvider")
                self.name = "onnxruntime-cuda"
            self.session = ort.InferenceSession(str(path), sess_options=opts, providers=providers)
        except Exception as e:
            raise EdgeclipError(f"onnxruntime cannot load {path} ({first_line(e, 200)}); re-export it") from None
        self.input_name = self.session.get_inputs()[0].name
        self.threads, self.device = threads, device

    def run(self, batch: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: np.ascontiguousarray(batch)})[0]


@register("onnx")
def load_onnx(artifact: Artifact | str, threads: int = 1, check: bool = True) -> OnnxRuntimeSession:
    """Load an ONNX artifact (integrity-checked against its manifest) or a bare .onnx path."""
    if isinstance(artifact, Artifact):
        if check:
            artifact.verify_integrity()
        device = device_for(artifact.manifest)
        if device == "cuda" and not cuda_provider_available():
            device = "cpu"  # correct but slow; the CUDA benchmark reports the missing provider instead of timing this
        half = (artifact.manifest.get("quantization") or {}).get("dtype") in ("fp16", "bf16")
        return OnnxRuntimeSession(str(artifact.file), threads, device, half)
    return OnnxRuntimeSession(str(artifact), threads)
