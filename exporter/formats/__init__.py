"""One module per artifact format; each only produces a file, export.py verifies and publishes it."""

import contextlib

# what every writer says when a model's forward pins the batch size (the file would fail at any other batch)
FREE_BATCH_FIX = ("it turns the batch dimension into a Python int, e.g. len(x) or int(x.shape[0]); use x.shape[0] / "
                  "x.size(0) directly in tensor ops so the batch stays free")


def batch_of_two(example):
    """``example`` cut or repeated to exactly 2 rows: traced at batch 1, torch.export and the ONNX exporter specialise
    the batch size to 1 (a constant they may fold), so every writer that keeps the batch free traces at 2."""
    return example[:2] if example.shape[0] >= 2 else example.repeat(2, *([1] * (example.dim() - 1)))


@contextlib.contextmanager
def sdpa_replaced_by(fn):
    """While tracing, ``torch.nn.functional.scaled_dot_product_attention`` is ``fn``, so a writer can capture attention
    in the form its format runs best (every attention edgeclip exports calls it through ``torch.nn.functional``).
    The swap is process-wide for the export's duration: export from one thread."""
    import torch.nn.functional as F

    original = F.scaled_dot_product_attention
    F.scaled_dot_product_attention = fn
    try:
        yield
    finally:
        F.scaled_dot_product_attention = original
