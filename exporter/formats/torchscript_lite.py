"""TorchScript-lite writer (``.ptl``): what an Android/iOS app loads with ``LiteModuleLoader`` /
``torch::jit::_load_for_mobile``.

Traced rather than scripted: tracing goes through torch.ao's quantized modules and open_clip's
Python control flow alike, and every shape that depends on the batch is recorded as a runtime
``size()`` so the file accepts any batch.  ``optimize_for_mobile`` is applied when this torch
build supports it; the stock x86 wheels are built without the XNNPACK JIT rewrite it needs, in
which case the manifest says it was skipped and why (the file is still a valid lite model).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch

from edgeclip.errors import EdgeclipError, first_line

from . import FREE_BATCH_FIX


def _check_free_batch(traced, module: torch.nn.Module, example: torch.Tensor) -> None:
    """A trace records any Python int taken from the input's shape as a constant; run one other batch size
    so such a file is refused here, with the fix, instead of failing at verification with a shape error."""
    one = example[:1]
    try:
        ok = traced(one).shape[0] == 1
    except RuntimeError:
        ok = False
    if not ok:
        raise EdgeclipError(f"{type(module).__name__}'s forward fixes the batch size (the trace only runs a batch of "
                            f"{len(example)}): {FREE_BATCH_FIX}")


def export_ptl(module: torch.nn.Module, example: torch.Tensor, path: Path, mobile_optimize: bool = True) -> dict:
    """``mobile_optimize=False`` for CUDA artifacts: the mobile passes (CPU conv/linear prepacking) do not apply."""
    module = module.eval()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(module, example, check_trace=False)
        _check_free_batch(traced, module, example)
        facts = {"tracer": "torch.jit.trace", "lite_interpreter": True}
        if not mobile_optimize:
            facts["optimize_for_mobile"] = "not applied (CUDA artifact)"
            traced._save_for_lite_interpreter(str(path))
            return facts
        try:
            from torch.utils.mobile_optimizer import optimize_for_mobile

            traced = optimize_for_mobile(traced)
            facts["optimize_for_mobile"] = "applied"
        except Exception as e:  # a torch build without XNNPACK/mobile passes raises an internal assert
            reason = first_line(e)
            if "XNNPACK" in str(e):
                reason = "this torch build has no XNNPACK mobile rewrite (optimize_for_mobile unavailable)"
            facts["optimize_for_mobile"] = f"skipped: {reason[:160]}"
        traced._save_for_lite_interpreter(str(path))
    return facts

