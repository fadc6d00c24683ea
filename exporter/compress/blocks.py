"""Transformer block pruning: a residual block can be removed outright (its input passes straight on),
which takes its parameters and FLOPs with it in every format.

Blocks are given by index, or chosen greedily: at each step, every remaining block is tried and the one
whose removal keeps the highest top-1 agreement with the unpruned model on calibration images is dropped.
"""

from __future__ import annotations

import copy

from torch import nn

from edgeclip.errors import EdgeclipError

from .calibration import Calibration
from .config import BlockPruneConfig
from .report import PassReport, n_params
from .structure import tower


def drop(model: nn.Module, tower_name: str, indices: list[int]) -> nn.Module:
    """A copy of ``model`` without the given blocks of one tower."""
    model = copy.deepcopy(model)
    t = tower(model, tower_name)
    t.set_blocks([b for i, b in enumerate(t.blocks) if i not in set(indices)])
    return model


def _check(indices: tuple[int, ...], n: int, name: str) -> list[int]:
    out = []
    for i in indices:
        if not -n <= i < n:
            raise EdgeclipError(f"--prune-blocks {name}:{i}: block {i} does not exist; the {name} tower has {n} blocks "
                                f"(0-{n - 1}, or -1 for the last)")
        out.append(i % n)
    out = sorted(set(out))
    if len(out) >= n:
        raise EdgeclipError(f"--prune-blocks would remove all {n} blocks of the {name} tower; keep at least one")
    return out


def apply(model: nn.Module, cfg: BlockPruneConfig, calib: Calibration | None = None) -> tuple[nn.Module, PassReport]:
    n = len(tower(model, cfg.tower).blocks)
    before = n_params(model)
    report = PassReport(f"prune-blocks:{cfg.tower}", before, before)
    if cfg.auto:
        if cfg.auto >= n:
            raise EdgeclipError(f"--prune-blocks {cfg.tower}:auto:{cfg.auto}: the {cfg.tower} tower has {n} blocks; "
                                f"remove at most {n - 1}")
        if calib is None:
            raise EdgeclipError("--prune-blocks ...:auto:N chooses blocks on calibration images; pass --calib-data")
        score = calib.scorer(model, cfg.tower)
        removed: list[int] = []
        for step in range(cfg.auto):
            trials = {i: score(drop(model, cfg.tower, removed + [i])) for i in range(n) if i not in removed}
            best = max(trials, key=lambda i: (trials[i], i))     # ties: the later block (deeper blocks are usually redundant)
            removed.append(best)
            report.layers.append({"step": step + 1, "removed_block": best, "calib_agreement": round(trials[best], 4),
                                  "candidates": {str(k): round(v, 4) for k, v in sorted(trials.items())}})
        indices = sorted(removed)
        report.extra["chosen_by"] = f"greedy, top-1 agreement with the unpruned model on {calib.desc or 'calibration images'}"
    else:
        indices = _check(cfg.indices, n, cfg.tower)
    blocks = tower(model, cfg.tower).blocks
    sizes = {i: n_params(blocks[i]) for i in indices}
    model = drop(model, cfg.tower, indices)
    if not cfg.auto:
        report.layers = [{"removed_block": i, "params": sizes[i]} for i in indices]
    report.extra.update(tower=cfg.tower, removed=indices, blocks_before=n, blocks_after=n - len(indices))
    report.params_after = n_params(model)
    return model, report
