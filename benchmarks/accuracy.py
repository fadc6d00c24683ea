"""Accuracy on real labelled images, and agreement with the fp32 model on the same images."""

from __future__ import annotations

import numpy as np

from edgeclip.exporter.fidelity import cosine_rows


def topk_accuracy(logits: np.ndarray, labels: np.ndarray, k: int) -> float:
    k = min(k, logits.shape[1])
    top = np.argpartition(-logits, kth=k - 1, axis=1)[:, :k]
    return float(100.0 * (top == labels[:, None]).any(1).mean())


def accuracy_metrics(logits: np.ndarray, labels: np.ndarray, reference: np.ndarray | None = None) -> dict:
    out = {"top1": topk_accuracy(logits, labels, 1), "top5": topk_accuracy(logits, labels, 5), "images": int(len(labels))}
    if reference is not None:
        out["agreement"] = float(100.0 * (logits.argmax(1) == reference.argmax(1)).mean())
        out["mean_cosine"] = float(cosine_rows(reference, logits).mean())
    return out
