"""What a bench target is: which artifacts it measures, how it builds their rows, and its defaults.

Every target goes through the same engine -- ``timing.time_interleaved`` over ``Runner``s (worker processes for
the CPU targets, in-process sessions on a GPU), ``timing.speedups`` against the fp32 eager row timed in the
same rounds, ``harness.recommendation`` and ``report.finish_report`` -- so a target only says what is
particular to it.  Adding one (an ARM board, a phone) is a module here plus its ``register`` call.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Sequence

from edgeclip.errors import EdgeclipError
from edgeclip.runtimes.cpu_features import usable_cores

from ..timing import TimingConfig, speedups


@dataclass(frozen=True)
class BenchOptions:
    """One ``bench`` call's settings, as the target receives them (threads already resolved)."""

    threads: list[int]
    timing: TimingConfig
    baseline: bool = True
    peers: bool = False
    compile_variant: bool = False
    timeout_s: float = 600.0
    max_drop: float = 1.0
    progress: bool = False
    device: str | None = None         # a target's device, e.g. ssh://user@host for arm64


class BenchTarget:
    """Subclass, set the class attributes, implement ``measure``; ``select`` may narrow the artifacts."""

    name: str = ""
    summary: str = ""                 # one line for --help
    throughput_batch: int = 64        # the batch throughput is measured at unless --batch says otherwise
    devices: bool = False             # whether --device (a board over SSH) makes sense here
    peers: bool = False               # whether --peers (plain ONNX / ORT defaults / torch.ao rows) make sense here

    def default_threads(self) -> list[int]:
        return [usable_cores()]

    def unavailable(self, opts: "BenchOptions") -> str | None:
        """Why this target cannot measure anything on this machine (reported, not raised); None when it can."""
        return None

    def select(self, arts: Sequence) -> tuple[list, dict]:
        """The artifacts this target measures and what the report should say about the others."""
        return list(arts), {}

    def adjust_timing(self, timing: TimingConfig) -> TimingConfig:
        return timing

    def measure(self, arts: list, ds, opts: BenchOptions) -> tuple[list[dict], dict]:
        """Rows (one per artifact and thread count, plus baselines) and extra report fields."""
        raise NotImplementedError

    def recommend(self, rows: list[dict], max_drop: float) -> str | None:
        from ..harness import recommendation

        return recommendation(rows, max_drop)


_TARGETS: dict[str, BenchTarget] = {}


def register(target: BenchTarget) -> BenchTarget:
    if not target.name or target.name in _TARGETS:
        raise ValueError(f"bench target {target.name!r} is unnamed or registered twice")
    _TARGETS[target.name] = target
    return target


def target_names() -> list[str]:
    return list(_TARGETS)


def get_target(name: str) -> BenchTarget:
    if name not in _TARGETS:
        raise EdgeclipError(f"unknown --target {name!r}; use {', '.join(_TARGETS)}")
    return _TARGETS[name]


def check_options(target: BenchTarget, opts: BenchOptions) -> None:
    """Refuse settings the target cannot honour -- before any artifact or dataset is read."""
    if opts.device and not target.devices:
        allowed = ", ".join(n for n, t in _TARGETS.items() if t.devices)
        raise EdgeclipError(f"--device is for --target {allowed}; drop --device or use --target {allowed.split(',')[0]}")
    if opts.peers and not target.peers:
        allowed = ", ".join(n for n, t in _TARGETS.items() if t.peers)
        raise EdgeclipError(f"--peers are CPU routes, measured on --target {allowed} only; drop --peers or use --target {allowed.split(',')[0]}")


def run_target(target: BenchTarget, arts: Sequence, ds, opts: BenchOptions, report_dir) -> dict:
    """The engine's one path from artifacts to a report, for every target."""
    from ..report import finish_report

    check_options(target, opts)
    opts = replace(opts, timing=target.adjust_timing(opts.timing))
    reason = target.unavailable(opts)
    if reason:
        return finish_report([], target.name, ds, max(opts.threads), opts.timing, None, skipped=reason)
    arts, extra = target.select(arts)
    rows, more = target.measure(arts, ds, opts)
    extra.update(more)
    extra["recommendation"] = target.recommend(rows, opts.max_drop)
    return finish_report(rows, target.name, ds, max(opts.threads), opts.timing, report_dir, **extra)


def attach_speedups(rows: list[dict], summaries: dict[str, dict], ref_of: dict[str, str]) -> None:
    """Each timed row's speed-up against the baseline it was timed with (its own name for a baseline row)."""
    for r in rows:
        n = r["artifact"]
        base = ref_of.get(n) or (n if r.get("baseline") else None)
        if n in summaries and base in summaries:
            r.update(speedups(summaries[n], summaries[base]))
