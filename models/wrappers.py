"""The three exportable modules edgeclip builds from a CLIP or ViT: classifier, image encoder, text encoder.

Each takes plain tensors and returns plain tensors (no tokenizer, no dicts), so every exporter can
trace it, and each carries the facts an app needs beside the file: preprocessing and class names.
CLIP zero-shot classification is baked into the classifier as a fixed linear head: the text tower
runs once at build time, not on the device.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .preprocess import Preprocess

DEFAULT_TEMPLATES = [
    "a photo of a {c}.",
    "a blurry photo of a {c}.",
    "a photo of the large {c}.",
    "a photo of the small {c}.",
    "a bad photo of the {c}.",
    "a good photo of a {c}.",
    "a close-up photo of the {c}.",
    "a low resolution photo of a {c}.",
]


class ImageClassifier(nn.Module):
    """``[B,3,H,W]`` normalised images -> ``[B,num_classes]`` logits."""

    def __init__(self, backbone: nn.Module, head: nn.Module, preprocess: Preprocess, classes: Sequence[str],
                 normalize_features: bool, random_weights: bool = False):
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.normalize_features = normalize_features
        self.preprocess = preprocess
        self.classes = list(classes)
        self.random_weights = random_weights

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.backbone(x)
        if self.normalize_features:
            f = F.normalize(f, dim=-1)
        return self.head(f)


class ImageEncoder(nn.Module):
    """``[B,3,H,W]`` normalised images -> ``[B,D]`` L2-normalised embeddings."""

    def __init__(self, backbone: nn.Module, preprocess: Preprocess, random_weights: bool = False):
        super().__init__()
        self.backbone = backbone
        self.preprocess = preprocess
        self.classes: list[str] = []
        self.random_weights = random_weights

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.backbone(x), dim=-1)


class TextEncoder(nn.Module):
    """``[B,L]`` int64 token ids -> ``[B,D]`` L2-normalised embeddings (open_clip ``encode_text``).

    Holds only the text tower's modules, so an exported text artifact does not carry the image tower.
    """

    def __init__(self, clip: nn.Module, tokenizer_info: dict, random_weights: bool = False):
        super().__init__()
        self.custom = getattr(clip, "text", None) if not hasattr(clip, "token_embedding") else None
        if self.custom is None:
            self.token_embedding = clip.token_embedding
            self.positional_embedding = clip.positional_embedding
            self.transformer = clip.transformer
            self.ln_final = clip.ln_final
            self.text_projection = clip.text_projection
            self.register_buffer("attn_mask", clip.attn_mask, persistent=False)
            self.pool_type = clip.text_pool_type
            self.eos_id = getattr(clip, "text_eos_id", None)
        self.tokenizer_info = tokenizer_info
        self.preprocess = None
        self.classes: list[str] = []
        self.random_weights = random_weights

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        if self.custom is not None:
            return F.normalize(self.custom(tokens), dim=-1)
        from open_clip.transformer import text_global_pool

        x = self.token_embedding(tokens) + self.positional_embedding
        x = self.transformer(x, attn_mask=self.attn_mask)
        x = self.ln_final(x)
        x = text_global_pool(x, tokens, self.pool_type, eos_token_id=self.eos_id)
        if self.text_projection is not None:
            x = self.text_projection(x) if isinstance(self.text_projection, nn.Linear) else x @ self.text_projection
        return F.normalize(x, dim=-1)


def zero_shot_head(clip: nn.Module, tokenizer: Callable, prompt_names: Sequence[str],
                   templates: Sequence[str], batch: int = 256) -> nn.Linear:
    """A bias-free Linear whose rows are ``logit_scale * normalize(mean_t normalize(text(t(c))))``.

    The standard CLIP zero-shot recipe (mean of normalised template embeddings, renormalised);
    folding ``logit_scale`` into the weights keeps the artifact's outputs proper logits.
    """
    if not templates:
        raise ValueError("zero-shot head needs at least one prompt template")
    rows = []
    with torch.no_grad():
        for name in prompt_names:
            texts = [t.format(c=name) for t in templates]
            emb = torch.cat([clip.encode_text(tokenizer(texts[i:i + batch]), normalize=True)
                             for i in range(0, len(texts), batch)])
            rows.append(F.normalize(emb.mean(0), dim=-1))
        w = torch.stack(rows) * clip.logit_scale.exp()
        bias = getattr(clip, "logit_bias", None)
    head = nn.Linear(w.shape[1], w.shape[0], bias=bias is not None)
    with torch.no_grad():
        head.weight.copy_(w)
        if bias is not None:
            head.bias.fill_(float(bias))
    return head.eval()
