"""How closely an artifact reproduces the eager fp32 model, and the bar it must clear to be written.

Measured on real images: max abs error, per-sample cosine of the output vectors, and top-1
agreement (the fraction of images whose arg-max is unchanged) -- the number a user feels.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np


@dataclass(frozen=True)
class Fidelity:
    samples: int
    max_abs_err: float
    mean_cosine: float
    min_cosine: float
    top1_agreement: float | None      # None for embedding outputs (no classes)
    inputs: str                        # what the comparison ran on, e.g. "fashion-mnist test[:256]"
    device: str = "cpu"                # where the artifact ran for the check (fp16 artifacts: cuda when present)
    machine: str = field(default_factory=lambda: __import__("platform").machine())   # the CPU architecture it ran on

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Threshold:
    """An artifact below either bar is not written.  Agreement is waived for random-weight models,
    whose near-tied logits make it meaningless (cosine still applies)."""

    min_cosine: float
    min_top1_agreement: float

    def failures(self, f: Fidelity, random_weights: bool) -> list[str]:
        bad = []
        if f.mean_cosine < self.min_cosine:
            bad.append(f"mean cosine {f.mean_cosine:.5f} < {self.min_cosine}")
        if f.top1_agreement is not None and not random_weights and f.top1_agreement < self.min_top1_agreement:
            bad.append(f"top-1 agreement {100 * f.top1_agreement:.2f}% < {100 * self.min_top1_agreement:.1f}%")
        return bad


# Stated bars: float artifacts must be numerically the same model; int8 may move logits a little.
THRESHOLDS = {
    "fp32": Threshold(min_cosine=0.9999, min_top1_agreement=0.995),
    "fp16": Threshold(min_cosine=0.999, min_top1_agreement=0.98),
    "bf16": Threshold(min_cosine=0.995, min_top1_agreement=0.95),
    "int8": Threshold(min_cosine=0.98, min_top1_agreement=0.93),
    "int4": Threshold(min_cosine=0.97, min_top1_agreement=0.90),
}


def cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a.reshape(len(a), -1).astype(np.float64)
    b = b.reshape(len(b), -1).astype(np.float64)
    num = (a * b).sum(1)
    den = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return num / np.maximum(den, 1e-12)


def compare(reference: np.ndarray, candidate: np.ndarray, inputs: str, classification: bool = True,
            device: str = "cpu") -> Fidelity:
    """Fidelity of ``candidate`` outputs against ``reference`` outputs of the same inputs."""
    if reference.shape != candidate.shape:
        raise ValueError(f"output shapes differ: reference {reference.shape}, artifact {candidate.shape}")
    cos = cosine_rows(reference, candidate)
    agree = float((reference.argmax(-1) == candidate.argmax(-1)).mean()) if classification else None
    return Fidelity(samples=int(len(reference)), max_abs_err=float(np.abs(reference - candidate).max()),
                    mean_cosine=float(cos.mean()), min_cosine=float(cos.min()), top1_agreement=agree, inputs=inputs,
                    device=device)
