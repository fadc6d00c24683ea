"""The preprocessing record every model and artifact carries.

An app that ships an artifact has to reproduce the exact pixels the model was
verified on, so preprocessing is data (size, mean, std, interpolation, crop),
written into every manifest, and the one transform below is built from it for
open_clip, timm and user models alike.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import torch
from PIL import Image

OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

_INTERPOLATIONS = {
    "bicubic": Image.Resampling.BICUBIC,
    "bilinear": Image.Resampling.BILINEAR,
    "nearest": Image.Resampling.NEAREST,
    "lanczos": Image.Resampling.LANCZOS,
}


@dataclass(frozen=True)
class Preprocess:
    """Resize the shorter side to ``size / crop_pct``, centre-crop ``size``, RGB, scale to [0,1], normalise."""

    size: int
    mean: tuple[float, float, float] = OPENAI_CLIP_MEAN
    std: tuple[float, float, float] = OPENAI_CLIP_STD
    interpolation: str = "bicubic"
    crop_pct: float = 1.0
    channels: int = 3

    def __post_init__(self):
        if self.interpolation not in _INTERPOLATIONS:
            raise ValueError(f"unknown interpolation {self.interpolation!r}; use one of {sorted(_INTERPOLATIONS)}")

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (self.channels, self.size, self.size)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Preprocess":
        keys = {"size", "mean", "std", "interpolation", "crop_pct", "channels"}
        kw = {k: v for k, v in d.items() if k in keys}
        if "mean" in kw:
            kw["mean"] = tuple(kw["mean"])
        if "std" in kw:
            kw["std"] = tuple(kw["std"])
        return cls(**kw)

    def __call__(self, image: Image.Image) -> torch.Tensor:
        """One PIL image -> normalised float tensor [3,H,W] (the open_clip / timm eval transform)."""
        image = image.convert("RGB")
        scale = self.size if self.crop_pct == 1.0 else int(math.floor(self.size / self.crop_pct))
        w, h = image.size
        if min(w, h) != scale:
            if w <= h:
                nw, nh = scale, int(scale * h / w)
            else:
                nw, nh = int(scale * w / h), scale
            image = image.resize((nw, nh), _INTERPOLATIONS[self.interpolation])
        w, h = image.size
        top = int(round((h - self.size) / 2.0))
        left = int(round((w - self.size) / 2.0))
        if (w, h) != (self.size, self.size):
            image = image.crop((left, top, left + self.size, top + self.size))
        arr = np.asarray(image, dtype=np.float32) / 255.0
        arr = (arr - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32)
        return torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1)))
