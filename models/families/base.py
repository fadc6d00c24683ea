"""What every model family tells the rest of edgeclip, and the registry that finds a model's family.

A family knows where a model keeps its transformer towers and, per tower, the layout of a block: which
Linear layers compression may factorise or slice, the block's parts (for token reduction), and what
cannot be done to it and why.  The compression passes, calibration and healing ask the family; nothing
outside a family module asks which family a model is.  Adding a family is one module with one
``@register`` class (timm's ``register_model`` idea).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from edgeclip.errors import EdgeclipError


@dataclass(frozen=True)
class BlockLayout:
    """Where compression finds things inside one transformer block of a tower.

    ``linears``: layer kind (attn_in, attn_out, fc1, fc2) -> paths ``"parent.attr"`` of the Linears of that kind
    (a gated MLP has two fc1 halves).  ``parts``: (norm1, attn, scale1, norm2, mlp, scale2) attribute names,
    for blocks token reduction rebuilds.  ``refusals``: a structural edit ("heads", "mlp", "tokens" or a layer
    kind) -> why it cannot be done on this layout, said in the pass report or error."""

    linears: dict[str, tuple[str, ...]]
    parts: tuple[str, str, str, str, str, str]
    refusals: dict[str, str] = field(default_factory=dict)

    def paths(self, kind: str) -> tuple[str, ...]:
        return self.linears.get(kind, ())


OPEN_CLIP_BLOCK = BlockLayout(
    linears={"attn_in": ("attn.in_proj",), "attn_out": ("attn.out_proj",), "fc1": ("mlp.c_fc",), "fc2": ("mlp.c_proj",)},
    parts=("ln_1", "attn", "ls_1", "ln_2", "mlp", "ls_2"))

TIMM_VIT_BLOCK = BlockLayout(
    linears={"attn_in": ("attn.qkv",), "attn_out": ("attn.proj",), "fc1": ("mlp.fc1",), "fc2": ("mlp.fc2",)},
    parts=("norm1", "attn", "ls1", "norm2", "mlp", "ls2"))


@dataclass
class Tower:
    """One tower: the module holding its block list (``owner.<attr>``) and its blocks' layout."""

    name: str
    owner: nn.Module
    attr: str
    layout: BlockLayout

    @property
    def blocks(self) -> nn.Module:
        return getattr(self.owner, self.attr)

    def set_blocks(self, kept: list[nn.Module]) -> None:
        old = self.blocks
        setattr(self.owner, self.attr, nn.Sequential(*kept) if isinstance(old, nn.Sequential) else nn.ModuleList(kept))
        if hasattr(self.owner, "layers") and isinstance(self.owner.layers, int):
            self.owner.layers = len(kept)


def resolve(block: nn.Module, path: str) -> tuple[nn.Module, str]:
    """``"attn.qkv"`` -> (block.attn, "qkv"): the parent and attribute to read or replace."""
    *parents, attr = path.split(".")
    parent = block
    for p in parents:
        parent = getattr(parent, p)
    return parent, attr


class Family:
    """Base of every family; subclasses override what differs.  Methods take the family's root module
    (an open_clip ``CLIP``, a timm model), the object compression passes copy and return."""

    name = "?"
    summary = ""
    has_text = False

    def matches(self, model: nn.Module) -> bool:
        raise NotImplementedError

    def towers(self, model: nn.Module) -> dict[str, Tower]:
        raise NotImplementedError

    def vision(self, model: nn.Module) -> nn.Module:
        """The module that maps images to what compression is judged by (embeddings or logits); healing trains it."""
        return model

    def outputs_logits(self, model: nn.Module) -> bool:
        """True when ``vision(model)`` ends in a classifier (compare top-1), False for embeddings (compare cosine)."""
        return False

    def image_tokens(self, model: nn.Module) -> tuple[int, int]:
        """(patch tokens, prefix tokens such as CLS / registers / distillation) of the vision tower."""
        raise NotImplementedError

    def prepare(self, model: nn.Module) -> nn.Module:
        """In-place rewrites that make the blocks editable (same function); default: none needed."""
        return model

    def patch_for_export(self, model: nn.Module) -> list[str]:
        """Rewrite ``model`` in place into the same function in a form fit to ship (e.g. fold train-time
        branches); returns one line per change, for the manifest.  Default: nothing to change."""
        return []

    def encode_text(self, model: nn.Module, tokens: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        raise EdgeclipError(f"{self.name} models have no text tower")

    def text_params(self, model: nn.Module) -> int:
        return 0


class TimmFamily(Family):
    """A bare timm image model: one tower, ``vision_tower``; logits when it has a classifier head."""

    def vision_tower(self, model: nn.Module) -> Tower:
        raise NotImplementedError

    def towers(self, model: nn.Module) -> dict[str, Tower]:
        return {"vision": self.vision_tower(model)}

    def outputs_logits(self, model: nn.Module) -> bool:
        return int(getattr(model, "num_classes", 0)) > 0


_REGISTRY: dict[str, Family] = {}


def register(cls: type[Family]) -> type[Family]:
    """Class decorator: make a family findable.  Registration order is match order (specific first)."""
    if cls.name in _REGISTRY:
        raise ValueError(f"model family {cls.name!r} registered twice")
    _REGISTRY[cls.name] = cls()
    return cls


def families() -> dict[str, Family]:
    return dict(_REGISTRY)


def find_family(model: nn.Module) -> Family | None:
    return next((f for f in _REGISTRY.values() if f.matches(model)), None)


def family_of(model: nn.Module) -> Family:
    fam = find_family(model)
    if fam is None:
        found = find_backbone(model)
        hint = (f"; it contains a {found[1].name} backbone at .{found[0]}, which edgeclip.export(module, compress=...) "
                "compresses" if found else "")
        raise EdgeclipError(f"cannot compress a {type(model).__name__}: edgeclip's passes know "
                            f"{', '.join(f.summary for f in _REGISTRY.values())}{hint} "
                            "(export it without compression flags)")
    return fam


def find_backbone(module: nn.Module) -> tuple[str, Family] | None:
    """The first sub-module (pre-order: outermost first) that a registered family recognises, as
    (dotted path, family); ``("", family)`` when the module itself is one.  This is how a user's
    fine-tuned model -- a timm ViT or an open_clip model as ``self.backbone`` plus a custom head -- is
    compressed through its backbone's family."""
    for path, sub in module.named_modules():
        fam = find_family(sub)
        if fam is not None:
            return path, fam
    return None


def patch_for_export(module: nn.Module) -> tuple[nn.Module, list[str]]:
    """``module`` with every family's export patch applied to each backbone it contains, outermost first
    (a wrapper around an open_clip tower, a user's head around a timm trunk): a patched copy and the
    manifest notes, or ``module`` itself and ``[]`` when no family has anything to change."""
    import copy

    out, notes, done = None, [], []
    for path, sub in module.named_modules():
        if any(d == "" or path == d or path.startswith(d + ".") for d in done):   # inside a patched backbone
            continue
        fam = find_family(sub)
        if fam is None or type(fam).patch_for_export is Family.patch_for_export:
            continue
        if out is None:
            out = copy.deepcopy(module)
        notes += fam.patch_for_export(out.get_submodule(path))
        done.append(path)
    return (out.eval(), notes) if notes else (module, [])   # nothing to change: the caller's module itself
