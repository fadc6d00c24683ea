"""Plain eager PyTorch: the fp32 reference every artifact is measured against."""

from __future__ import annotations

import numpy as np
import torch


class TorchEagerSession:
    name = "torch-eager"

    def __init__(self, module: torch.nn.Module, threads: int | None = None):
        self.module = module.eval()
        self.threads = threads or torch.get_num_threads()

    def run(self, batch: np.ndarray) -> np.ndarray:
        torch.set_num_threads(self.threads)
        with torch.inference_mode():
            return self.module(torch.from_numpy(np.ascontiguousarray(batch))).float().numpy()
