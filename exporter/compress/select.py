"""The one selection rule of the pruning passes: keep the highest-scored units (neurons, heads, tokens).

One function, so every pass ranks the same way and the tests can hold the rule against its inverse and a random
choice on real images (tests/exporter/compress/test_selection_quality.py): a pass that kept the *lowest*
scores would still run, shrink the model and export, and only the accuracy would say it is wrong.
"""

from __future__ import annotations

import torch


def keep_top(score: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of the ``k`` highest scores along the last dimension (static ``k``: exports as TopK)."""
    return score.topk(k, dim=-1).indices
