"""ONNX writer: ``torch.onnx.export`` through the dynamo (torch.export) path, opset 18, dynamic batch.

Why dynamo and not the TorchScript exporter: the TorchScript exporter is deprecated in torch 2.x
and frozen; the dynamo path is the maintained one, gives the same numbers on CLIP/ViT here
(max abs error ~5e-6 vs eager on the fixture) and the same onnxruntime latency, at the price of a
slower export (seconds, not a problem for a one-off build step).
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from pathlib import Path

import torch

from edgeclip.errors import EdgeclipError, first_line

from . import FREE_BATCH_FIX, batch_of_two

OPSET = 18


def export_onnx(module: torch.nn.Module, example: torch.Tensor, path: Path, input_name: str, output_name: str,
                opset: int = OPSET, fused_attention: bool = False) -> None:
    """Write ``module`` as a single-file ONNX model whose first input dimension is a free batch size.

    ``fused_attention``: attention as onnxruntime's ``MultiHeadAttention`` contrib op (``onnx_attention``)."""
    module = module.eval()
    batch = torch.export.Dim("batch", min=1, max=4096)
    example = batch_of_two(example)
    noise = io.StringIO()
    table, tracing = None, contextlib.nullcontext()
    if fused_attention:
        from .onnx_attention import attention_as_contrib_op, translation_table

        table, tracing = translation_table(), attention_as_contrib_op()
    try:
        with torch.no_grad(), warnings.catch_warnings(), contextlib.redirect_stdout(noise), tracing:
            warnings.simplefilter("ignore")
            logging.getLogger("torch.onnx").setLevel(logging.ERROR)
            program = torch.onnx.export(module, (example,), dynamo=True, input_names=[input_name], output_names=[output_name],
                                        dynamic_shapes=({0: batch},), opset_version=opset, verbose=False,
                                        custom_translation_table=table)
    except Exception as e:  # torch.export raises many types; the first line is what the user needs
        msg = first_line(e)
        raise EdgeclipError(f"torch.onnx.export could not export {type(module).__name__} ({msg}); "
                            "the model's forward must be traceable by torch.export") from None
    shape = program.model.graph.inputs[0].shape
    if shape and isinstance(shape[0], int):
        # torch.onnx falls back to a static graph when torch.export cannot keep the batch free; shipped, that file
        # fails at any other batch size with an onnxruntime shape error
        raise EdgeclipError(f"{type(module).__name__}'s forward fixes the batch size (the exported graph only takes a batch "
                            f"of {shape[0]}): {FREE_BATCH_FIX}")
    program.save(str(path), external_data=False)


def strip_exporter_metadata(path: Path) -> None:
    """Drop the exporter's per-node provenance (``pkg.torch.onnx.*`` stack traces, module paths, FX names) from an
    ONNX file about to ship.  It is ~0.5-2 KB per node -- a third of a small int4 file, 0.3 MB of the fixture's
    int8 file with fused attention -- and names the exporting machine's source paths.  The quantizers read the
    module paths (``quantize.mixed.onnx_nodes_of``) from the fp32 intermediate, never from the shipped file."""
    import onnx

    model = onnx.load(str(path))
    for node in model.graph.node:
        del node.metadata_props[:]
        node.doc_string = ""
    onnx.save_model(model, str(path))
