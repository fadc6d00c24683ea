"""Latency and throughput, measured the way a noisy shared machine forces: warm-up, many
repetitions, medians, and every variant timed interleaved in rounds within one run so that
background load hits all of them alike and their ratios stay honest."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

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


def time_interleaved(sessions: dict[str, tuple[Session, np.ndarray, np.ndarray | None]],
                     cfg: TimingConfig = TimingConfig(), progress: Callable[[int], None] | None = None) -> dict[str, Timing]:
    """Time every ``name -> (session, batch-1 input, large-batch input)``, alternating between them round by round."""
    results = {k: Timing([], [], 0 if many is None else len(many)) for k, (_, _, many) in sessions.items()}
    for s, one, many in sessions.values():
        for _ in range(cfg.warmup):
            s.run(one)
        if many is not None:
            s.run(many)
    for _ in range(cfg.rounds):
        for key, (s, one, many) in sessions.items():
            for _ in range(cfg.reps_per_round):
                t0 = time.perf_counter()
                s.run(one)
                results[key].latency_ms.append((time.perf_counter() - t0) * 1e3)
            if many is not None:
                for _ in range(cfg.throughput_reps_per_round):
                    t0 = time.perf_counter()
                    s.run(many)
                    results[key].throughput_s.append(time.perf_counter() - t0)
        if progress:
            progress(1)
    return results


def speedups(summary: dict, baseline: dict) -> dict:
    """Ratios against a baseline timed in the same interleaved rounds (never across runs): ``speedup`` =
    baseline batch-1 median / this median, ``throughput_speedup`` = this throughput / the baseline's."""
    out = {"speedup": baseline["latency_ms_median"] / summary["latency_ms_median"]}
    if summary.get("throughput_img_s") and baseline.get("throughput_img_s"):
        out["throughput_speedup"] = summary["throughput_img_s"] / baseline["throughput_img_s"]
    return out
