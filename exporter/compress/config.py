"""What to compress, as one flat typed record (CLI flags and a recipe's ``[compress]`` table map onto it 1:1),
validated before any model is loaded, and split into one typed config per pass.

Ranges that depend on the model (block indices, ranks) are checked by the passes themselves, against
the loaded model, before any export work starts.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace

from edgeclip.errors import EdgeclipError, refuse_unknown_keys

TOWERS = ("vision", "text")
LAYER_KINDS = ("attn_in", "attn_out", "fc1", "fc2")
LAYER_ALIASES = {"attn": ("attn_in", "attn_out"), "mlp": ("fc1", "fc2"), "all": LAYER_KINDS}
SCORES = ("magnitude", "activation")
SCOPES = ("global", "layer")


def towers_of(spec: str, flag: str) -> tuple[str, ...]:
    spec = spec.strip().lower()
    if spec == "both":
        return TOWERS
    if spec not in TOWERS:
        raise EdgeclipError(f"{flag} {spec!r} is not a tower; use vision, text or both")
    return (spec,)


def layer_kinds(spec: str | tuple[str, ...] | list[str]) -> tuple[str, ...]:
    parts = [p.strip() for p in (spec.split(",") if isinstance(spec, str) else spec) if p.strip()]
    out: list[str] = []
    for p in parts:
        kinds = LAYER_ALIASES.get(p, (p,))
        for k in kinds:
            if k not in LAYER_KINDS:
                raise EdgeclipError(f"--svd-layers {p!r} is not a layer kind; use attn, mlp, all or "
                                    f"{', '.join(LAYER_KINDS)} (comma-separated)")
            if k not in out:
                out.append(k)
    if not out:
        raise EdgeclipError("--svd-layers is empty; use attn, mlp or all")
    return tuple(out)


def select_blocks(spec: str, n_blocks: int, flag: str) -> list[int]:
    """``all`` | ``first:N`` | ``last:N`` | ``0-3,5,-1`` -> sorted block indices of a tower with ``n_blocks`` blocks."""
    spec = str(spec).strip().lower()
    if spec == "all":
        return list(range(n_blocks))
    if spec.startswith(("first:", "last:")):
        end, _, count = spec.partition(":")
        try:
            k = int(count)
        except ValueError:
            raise EdgeclipError(f"{flag} {spec!r}: the count after '{end}:' must be an integer") from None
        if not 1 <= k <= n_blocks:
            raise EdgeclipError(f"{flag} {spec!r}: the tower has {n_blocks} blocks; use {end}:1 to {end}:{n_blocks}")
        return list(range(k)) if end == "first" else list(range(n_blocks - k, n_blocks))
    out: set[int] = set()
    for part in spec.split(","):
        part = part.strip()
        try:
            if "-" in part[1:]:
                a, b = part.split("-", 1) if not part.startswith("-") else (part, "")
                lo, hi = int(a), int(b)
                idx = list(range(lo, hi + 1))
            else:
                idx = [int(part)]
        except ValueError:
            raise EdgeclipError(f"{flag} {spec!r} is not a block list; use all, first:N, last:N or indices like 0-3,5") from None
        for i in idx:
            if not -n_blocks <= i < n_blocks:
                raise EdgeclipError(f"{flag}: block {i} does not exist; the tower has {n_blocks} blocks (0-{n_blocks - 1}, "
                                    f"or -1 for the last)")
            out.add(i % n_blocks)
    return sorted(out)


# ------------------------------------------------------------------------------------------ per-pass configs

@dataclass(frozen=True)
class SvdConfig:
    ratio: float | None = None          # fraction of each factorised layer's parameters kept
    energy: float | None = None         # smallest rank keeping this fraction of the squared singular values
    rank: int | None = None
    towers: tuple[str, ...] = ("vision",)
    layers: tuple[str, ...] = LAYER_KINDS
    blocks: str = "all"
    aware: bool = False                 # whiten by the calibration inputs' covariance (data-aware SVD)


@dataclass(frozen=True)
class BlockPruneConfig:
    tower: str
    indices: tuple[int, ...] = ()       # explicit blocks to drop
    auto: int = 0                       # or: drop this many, chosen greedily by measured agreement


@dataclass(frozen=True)
class StructuredConfig:
    mlp_keep: float = 1.0               # fraction of MLP hidden neurons kept
    heads_keep: float = 1.0             # fraction of attention heads kept
    score: str = "activation"
    towers: tuple[str, ...] = ("vision",)


@dataclass(frozen=True)
class SparsityConfig:
    amount: float
    scope: str = "global"
    towers: tuple[str, ...] = ("vision",)


@dataclass(frozen=True)
class TokenConfig:
    keep: float                         # fraction of patch tokens kept at each reduction block
    blocks: tuple[int, ...] | None = None   # default: blocks L/3 and 2L/3


@dataclass(frozen=True)
class MergeConfig:
    r: int                              # patch tokens merged away at each merging block (ToMe's r)
    blocks: str = "all"                 # which blocks merge (select_blocks spec)


@dataclass(frozen=True)
class HealConfig:
    steps: int
    lr: float = 1e-4
    batch: int = 64


def parse_block_spec(spec: str) -> BlockPruneConfig:
    """``vision:4,5`` | ``text:-1`` | ``vision:auto:2``"""
    tower, _, rest = str(spec).partition(":")
    tower = tower.strip().lower()
    if tower not in TOWERS or not rest:
        raise EdgeclipError(f"--prune-blocks {spec!r}: use TOWER:INDICES (vision:4,5) or TOWER:auto:N (text:auto:2), TOWER being vision or text")
    if rest.startswith("auto:"):
        try:
            n = int(rest[5:])
        except ValueError:
            raise EdgeclipError(f"--prune-blocks {spec!r}: the count after auto: must be an integer") from None
        if n < 1:
            raise EdgeclipError(f"--prune-blocks {spec!r}: remove at least 1 block")
        return BlockPruneConfig(tower, auto=n)
    try:
        idx = tuple(int(x) for x in rest.split(","))
    except ValueError:
        raise EdgeclipError(f"--prune-blocks {spec!r}: use block indices like vision:4,5 or vision:auto:2") from None
    return BlockPruneConfig(tower, indices=idx)


# ------------------------------------------------------------------------------------------ the recipe

@dataclass
class CompressRecipe:
    """Every compression choice.  Passes run in a fixed order: block pruning, structured pruning, SVD,
    unstructured sparsity, token dropping, token merging, then healing -- removal before factorisation (factorising a
    block that is then dropped wastes the calibration), healing last so it repairs all of them at once."""

    svd_ratio: float | None = None
    svd_energy: float | None = None
    svd_rank: int | None = None
    svd_tower: str = "vision"
    svd_layers: str = "all"
    svd_blocks: str = "all"
    svd_aware: bool = False
    prune_blocks: list[str] = field(default_factory=list)
    mlp_keep: float | None = None
    heads_keep: float | None = None
    prune_score: str = "activation"
    prune_tower: str = "vision"
    sparsity: float | None = None
    sparsity_scope: str = "global"
    token_keep: float | None = None
    token_blocks: str | None = None
    token_merge: int | None = None
    token_merge_blocks: str = "all"
    heal_steps: int = 0
    heal_lr: float = 1e-4
    heal_batch: int = 64
    heal_images: int = 1000

    # -- derived
    def svd(self) -> SvdConfig | None:
        if self.svd_ratio is None and self.svd_energy is None and self.svd_rank is None:
            return None
        return SvdConfig(self.svd_ratio, self.svd_energy, self.svd_rank, towers_of(self.svd_tower, "--svd-tower"),
                         layer_kinds(self.svd_layers), self.svd_blocks, self.svd_aware)

    def blocks(self) -> list[BlockPruneConfig]:
        return [parse_block_spec(s) for s in self.prune_blocks]

    def structured(self) -> StructuredConfig | None:
        if self.mlp_keep in (None, 1.0) and self.heads_keep in (None, 1.0):
            return None
        return StructuredConfig(self.mlp_keep or 1.0, self.heads_keep or 1.0, self.prune_score,
                                towers_of(self.prune_tower, "--prune-tower"))

    def sparse(self) -> SparsityConfig | None:
        return None if not self.sparsity else SparsityConfig(self.sparsity, self.sparsity_scope,
                                                             towers_of(self.prune_tower, "--prune-tower"))

    def tokens(self) -> TokenConfig | None:
        if self.token_keep is None or self.token_keep == 1.0:
            return None
        blocks = None
        if self.token_blocks:
            try:
                blocks = tuple(int(x) for x in str(self.token_blocks).split(","))
            except ValueError:
                raise EdgeclipError(f"--token-blocks {self.token_blocks!r}: use block indices like 2,4") from None
        return TokenConfig(self.token_keep, blocks)

    def merge(self) -> MergeConfig | None:
        return MergeConfig(self.token_merge, self.token_merge_blocks) if self.token_merge else None

    def heal(self) -> HealConfig | None:
        return HealConfig(self.heal_steps, self.heal_lr, self.heal_batch) if self.heal_steps else None

    def towers_touched(self) -> set[str]:
        """Which towers the passes change (token reduction and healing work on the vision tower only)."""
        out = {b.tower for b in self.blocks()}
        for cfg in (self.svd(), self.structured(), self.sparse()):
            if cfg is not None:
                out.update(cfg.towers)
        if self.tokens() or self.merge() or self.heal():
            out.add("vision")
        return out

    @property
    def active(self) -> bool:
        return any(x for x in (self.svd(), self.blocks(), self.structured(), self.sparse(), self.tokens(), self.merge(), self.heal()))

    @property
    def needs_calibration(self) -> bool:
        s, st = self.svd(), self.structured()
        return bool((s and s.aware) or (st and st.score == "activation") or any(b.auto for b in self.blocks())
                    or self.heal())

    def validated(self) -> "CompressRecipe":
        r = replace(self, prune_blocks=list(self.prune_blocks or []))
        given = [k for k in ("svd_ratio", "svd_energy", "svd_rank") if getattr(r, k) is not None]
        if len(given) > 1:
            raise EdgeclipError(f"give one of --svd, --svd-energy, --svd-rank (got {', '.join('--' + g.replace('_', '-') for g in given)})")
        if r.svd_ratio is not None and not 0 < r.svd_ratio < 1:
            raise EdgeclipError(f"--svd must be a fraction of each layer's parameters to keep, between 0 and 1 "
                                f"exclusive (got {r.svd_ratio}); e.g. --svd 0.5")
        if r.svd_energy is not None and not 0 < r.svd_energy < 1:
            raise EdgeclipError(f"--svd-energy must be between 0 and 1 exclusive (got {r.svd_energy}); e.g. --svd-energy 0.95")
        if r.svd_rank is not None and r.svd_rank < 1:
            raise EdgeclipError(f"--svd-rank must be a positive integer (got {r.svd_rank})")
        for key in ("mlp_keep", "heads_keep"):
            v = getattr(r, key)
            if v is not None and not 0 < v <= 1:
                raise EdgeclipError(f"--{key.replace('_', '-')} is the fraction kept, between 0 (exclusive) and 1 (got {v}); "
                                    "e.g. 0.5 keeps half")
        if r.sparsity is not None and not 0 <= r.sparsity < 1:
            raise EdgeclipError(f"--sparsity is the fraction of weights zeroed, between 0 and 1 exclusive (got {r.sparsity})")
        if r.token_keep is not None and not 0 < r.token_keep <= 1:
            raise EdgeclipError(f"--token-keep is the fraction of patch tokens kept, between 0 (exclusive) and 1 (got {r.token_keep})")
        if r.token_merge is not None and r.token_merge < 0:
            raise EdgeclipError(f"--token-merge is the number of tokens merged at each block, 0 or more (got {r.token_merge}); "
                                "e.g. 8")
        if r.prune_score not in SCORES:
            raise EdgeclipError(f"unknown --prune-score {r.prune_score!r}; use magnitude or activation")
        if r.sparsity_scope not in SCOPES:
            raise EdgeclipError(f"unknown --sparsity-scope {r.sparsity_scope!r}; use global or layer")
        if r.heal_steps < 0 or r.heal_batch < 1 or not r.heal_lr > 0 or r.heal_images < 1:
            raise EdgeclipError(f"--heal-steps must be >= 0, --heal-batch >= 1 and --heal-lr > 0 "
                                f"(got {r.heal_steps}, {r.heal_batch}, {r.heal_lr})")
        r.svd(), r.blocks(), r.structured(), r.sparse(), r.tokens(), r.merge()   # parse every spec now: bad ones fail here
        if r.heal_steps and not any((r.svd(), r.blocks(), r.structured(), r.sparse(), r.tokens(), r.merge())):
            raise EdgeclipError("--heal-steps heals a compressed model; add a compression pass (--svd, --prune-blocks, "
                                "--mlp-keep, ...) or drop --heal-steps")
        return r

    def tag(self) -> str:
        """A short readable name part (``svd0.5-mlp0.5-heal300-1c9e``); the hash of every field keeps two
        different compressions of one model from overwriting each other's artifacts."""
        import hashlib
        import json

        parts = []
        if self.svd_ratio is not None:
            parts.append(f"svd{self.svd_ratio:g}")
        elif self.svd_energy is not None:
            parts.append(f"svde{self.svd_energy:g}")
        elif self.svd_rank is not None:
            parts.append(f"svdr{self.svd_rank}")
        for b in self.blocks():
            parts.append(f"pb{b.tower[0]}{b.auto if b.auto else len(b.indices)}")
        if self.mlp_keep not in (None, 1.0):
            parts.append(f"mlp{self.mlp_keep:g}")
        if self.heads_keep not in (None, 1.0):
            parts.append(f"heads{self.heads_keep:g}")
        if self.sparsity:
            parts.append(f"sp{self.sparsity:g}")
        if self.token_keep not in (None, 1.0):
            parts.append(f"tok{self.token_keep:g}")
        if self.token_merge:
            parts.append(f"tome{self.token_merge}")
        if self.heal_steps:
            parts.append(f"heal{self.heal_steps}")
        digest = hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:4]
        return "-".join([*parts, digest])

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict | None) -> "CompressRecipe":
        d = dict(d or {})
        refuse_unknown_keys(d, {f.name for f in fields(cls)}, "compress")
        if isinstance(d.get("prune_blocks"), str):
            d["prune_blocks"] = [d["prune_blocks"]]
        return cls(**d)
