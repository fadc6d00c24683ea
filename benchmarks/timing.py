"""Latency and throughput, measured the way a noisy shared machine forces: warm-up, many
repetitions, medians, and every variant timed interleaved in rounds within one run so that
background load hits all of them alike and their ratios stay honest."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Protocol

import numpy as np

from edgeclip.runtimes.base import Session


@dataclass(frozen=True)
class TimingConfig:
    warmup: int = 10
    rounds: int = 10
    reps_per_round: int = 10          # batch-1 calls per session per round
    throughput_batch: int = 64
    throughput_reps_per_round: int = 1


@dataclass
class Timing:
    latency_ms: list[float]
    throughput_s: list[float]
    batch: int

    def summary(self) -> dict:
        lat = np.asarray(self.latency_ms)
        out = {"latency_ms_median": float(np.median(lat)), "latency_ms_p90": float(np.percentile(lat, 90)),
               "latency_ms_p99": float(np.percentile(lat, 99)), "latency_samples": int(lat.size)}
        if self.throughput_s:
            out["throughput_batch"] = self.batch
            out["throughput_img_s"] = float(self.batch / np.median(self.throughput_s))
        return out


class RunnerFailed(Exception):
    """A runner that can no longer be timed (its worker crashed or hung); the loop drops it and goes on."""


class Runner(Protocol):
    """What the interleaved loop times: ``time`` returns seconds per call for ``reps`` calls of ``kind``
    ("latency": batch 1, "throughput": ``throughput_batch`` rows; 0 means none).  A worker process times its own
    calls, so no inter-process round trip lands inside a measurement."""

    throughput_batch: int

    def warm(self, cfg: TimingConfig) -> None: ...

    def time(self, kind: str, reps: int) -> list[float]: ...


class SessionRunner:
    """An in-process session with its batch-1 input and (optionally) a large-batch input."""

    def __init__(self, session: Session, one, many=None):
        self.session, self.one, self.many = session, one, many
        self.throughput_batch = 0 if many is None else len(many)

    def warm(self, cfg: TimingConfig) -> None:
        for _ in range(cfg.warmup):
            self.session.run(self.one)
        if self.many is not None:
            self.session.run(self.many)

    def time(self, kind: str, reps: int) -> list[float]:
        x = self.one if kind == "latency" else self.many
        out = []
        for _ in range(reps):
            t0 = time.perf_counter()
            self.session.run(x)
            out.append(time.perf_counter() - t0)
        return out


def time_interleaved(runners: dict[str, Runner], cfg: TimingConfig = TimingConfig(),
                     progress: Callable[[int], None] | None = None, failed: dict[str, str] | None = None) -> dict[str, Timing]:
    """Time every runner, alternating between them round by round: the one timing loop of ``bench`` (worker
    processes), ``bench --target cuda`` and ``sweep`` (in-process ``SessionRunner``s).  A runner raising
    ``RunnerFailed`` is dropped (its message goes to ``failed``) and the others carry on."""
    live = dict(runners)
    results = {k: Timing([], [], r.throughput_batch) for k, r in live.items()}

    def attempt(key: str, fn) -> None:
        try:
            fn()
        except RunnerFailed as e:
            live.pop(key, None)
            if failed is not None:
                failed[key] = str(e)

    for key, r in list(live.items()):
        attempt(key, lambda r=r: r.warm(cfg))
    for _ in range(cfg.rounds):
        for key, r in list(live.items()):
            def one_round(key=key, r=r):
                results[key].latency_ms.extend(t * 1e3 for t in r.time("latency", cfg.reps_per_round))
                if r.throughput_batch:
                    results[key].throughput_s.extend(r.time("throughput", cfg.throughput_reps_per_round))
            attempt(key, one_round)
        if progress:
            progress(1)
    return {k: results[k] for k in live}


def speedups(summary: dict, baseline: dict) -> dict:
    """Ratios against a baseline timed in the same interleaved rounds (never across runs): ``speedup`` =
    baseline batch-1 median / this median, ``throughput_speedup`` = this throughput / the baseline's."""
    out = {"speedup": baseline["latency_ms_median"] / summary["latency_ms_median"]}
    if summary.get("throughput_img_s") and baseline.get("throughput_img_s"):
        out["throughput_speedup"] = summary["throughput_img_s"] / baseline["throughput_img_s"]
    return out
