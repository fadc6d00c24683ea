"""The unlabelled data the data-aware passes look at: calibration images (a train split, never the
evaluation images), real captions for the text tower, and -- for CLIP -- how to turn a model into
zero-shot logits, so a pass can score a candidate by top-1 agreement with the uncompressed model
(what the user will see), not by a proxy such as weight norms.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .structure import family

BATCH = 128


@dataclass
class Calibration:
    images: torch.Tensor                                   # [N,3,H,W] preprocessed: what scores and statistics use
    captions: torch.Tensor | None = None                   # [M,L] token ids (CLIP)
    head: Callable[[nn.Module], torch.Tensor] | None = field(default=None, repr=False)  # CLIP -> [C,D] class embeddings
    desc: str = ""
    train_images: torch.Tensor | None = field(default=None, repr=False)   # a larger set for healing (default: images)

    @torch.no_grad()
    def features(self, model: nn.Module, images: torch.Tensor | None = None) -> torch.Tensor:
        """L2-normalised image embeddings (CLIP) or logits (timm: its head is the task)."""
        x = self.images if images is None else images
        fam = family(model)
        fwd = fam.vision(model)
        out = torch.cat([fwd(x[i:i + BATCH]) for i in range(0, len(x), BATCH)])
        return out if fam.outputs_logits(model) else F.normalize(out, dim=-1)

    @torch.no_grad()
    def logits(self, model: nn.Module, feats: torch.Tensor | None = None, head: torch.Tensor | None = None) -> torch.Tensor | None:
        feats = self.features(model) if feats is None else feats
        fam = family(model)
        if fam.outputs_logits(model):
            return feats
        if not fam.has_text:
            return None
        if head is None:
            if self.head is None:
                return None
            head = self.head(model)
        return feats @ head.T

    def scorer(self, reference: nn.Module, tower: str) -> Callable[[nn.Module], float]:
        """``candidate -> similarity to reference`` on the calibration set: top-1 agreement when the model
        classifies, else mean cosine of the tower's embeddings.  The side the tower does not touch is computed once."""
        fam = family(reference)
        if tower == "text":
            feats = self.features(reference)
            ref = self.logits(reference, feats=feats)
            if ref is None:                                   # no classes: compare caption embeddings
                ref_t = _text(reference, self.captions)
                return lambda m: float(F.cosine_similarity(_text(m, self.captions), ref_t).mean())
            top = ref.argmax(-1)
            return lambda m: float((self.logits(m, feats=feats).argmax(-1) == top).float().mean())
        head = self.head(reference) if (fam.has_text and self.head is not None) else None
        ref = self.logits(reference, head=head)
        if ref is None:
            ref_f = self.features(reference)
            return lambda m: float(F.cosine_similarity(self.features(m), ref_f).mean())
        top = ref.argmax(-1)
        return lambda m: float((self.logits(m, head=head).argmax(-1) == top).float().mean())

    def inputs_for(self, tower: str) -> torch.Tensor | None:
        return self.images if tower == "vision" else self.captions


@torch.no_grad()
def _text(model: nn.Module, captions: torch.Tensor) -> torch.Tensor:
    fam = family(model)
    return torch.cat([fam.encode_text(model, captions[i:i + BATCH], normalize=True) for i in range(0, len(captions), BATCH)])


@torch.no_grad()
def run_tower(model: nn.Module, tower: str, inputs: torch.Tensor) -> None:
    """One pass of the calibration inputs through a tower (for hooks to observe)."""
    fam = family(model)
    for i in range(0, len(inputs), BATCH):
        x = inputs[i:i + BATCH]
        fam.vision(model)(x) if tower == "vision" else fam.encode_text(model, x)


@torch.no_grad()
def collect_inputs(model: nn.Module, tower: str, inputs: torch.Tensor, modules: dict[str, nn.Module],
                   reduce: Callable[[torch.Tensor], torch.Tensor]) -> dict[str, torch.Tensor]:
    """Run the tower once and accumulate ``reduce(input of module)`` (flattened to [tokens, features]) per module."""
    acc: dict[str, torch.Tensor] = {}
    hooks = []
    for name, mod in modules.items():
        def hook(_m, args, _out, name=name):
            x = args[0].detach().reshape(-1, args[0].shape[-1])
            r = reduce(x)
            acc[name] = acc[name] + r if name in acc else r
        hooks.append(mod.register_forward_hook(hook))
    try:
        run_tower(model, tower, inputs)
    finally:
        for h in hooks:
            h.remove()
    return acc
