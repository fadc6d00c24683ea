"""The CPU features that decide int8 / bf16 speed, read from /proc/cpuinfo.

The same file can be 2x apart between machines of one "kind" (seen: an AMD EPYC without VNNI and an Intel Xeon
with AVX-512 VNNI and AMX), so every report states them and the exporter builds bf16 only where the CPU has units
for it.  x86 names as /proc/cpuinfo "flags" spells them; ARM names from its "Features" line (asimd = NEON,
asimddp = dot product, i8mm = int8 matrix multiply, bf16).
"""

from __future__ import annotations

import os
from pathlib import Path

SPEED_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_tile", "amx_int8", "amx_bf16",
               "asimd", "asimddp", "i8mm", "bf16", "sve")
BF16_UNITS = ("amx_bf16", "avx512_bf16", "bf16")   # oneDNN runs bf16 GEMMs natively on these (x86 AMX / AVX-512, ARM)


def cpu_flags(cpuinfo: str | None = None) -> list[str]:
    """The ``SPEED_FLAGS`` this CPU has, in that order (empty when /proc/cpuinfo cannot be read)."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return []
    have: set[str] = set()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            have.update(value.split())
    return [f for f in SPEED_FLAGS if f in have]


def usable_cores() -> int:
    """The cores this process may run on: its CPU affinity (taskset, a cgroup cpuset, a pinned test worker), not
    every core the machine has.  "All cores" means these, so a default thread count never oversubscribes them."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):   # no affinity API (macOS, Windows)
        return os.cpu_count() or 1


def bf16_units(flags: list[str] | None = None) -> list[str]:
    """Which bf16 matrix units this CPU has (empty: bf16 would be emulated in fp32 and save nothing)."""
    flags = cpu_flags() if flags is None else flags
    return [f for f in BF16_UNITS if f in flags]
