"""Model families, one module each, registered on import (see ``base``).  Match order: the
registration order below, most specific first."""

from . import open_clip_vit, open_clip_timm, fastvit, timm_eva, timm_vit  # noqa: F401  (registration)
from .base import BlockLayout, Family, Tower, families, family_of, find_backbone, find_family, patch_for_export, register, resolve

__all__ = ["BlockLayout", "Family", "Tower", "families", "family_of", "find_backbone", "find_family", "patch_for_export", "register", "resolve"]
