"""What a pass did, in numbers: every pass returns one of these with its model, and the manifest keeps them."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from torch import nn


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@dataclass
class PassReport:
    name: str
    params_before: int
    params_after: int
    layers: list[dict] = field(default_factory=list)     # per layer / block: what changed there
    skipped: list[dict] = field(default_factory=list)    # what was asked but not done, and why
    notes: list[str] = field(default_factory=list)
    extra: dict = field(default_factory=dict)

    @property
    def params_removed(self) -> int:
        return self.params_before - self.params_after

    def to_dict(self) -> dict:
        d = asdict(self)
        d["params_removed"] = self.params_removed
        return d
