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


# What each word of Inductor's vector ISA name (an AOTInductor package's ``AOTI_CPU_ISA``, e.g. "AVX512 AVX512_VNNI")
# needs from the CPU: the -m flags its C++ was compiled with (torch/_inductor/cpu_vec_isa.py), as cpuinfo spells them.
# Not judged: Inductor's AVX-512 build adds -mavx512bf16 where the compiling CPU has it, which the name does not say.
ISA_FLAGS = {"AVX2": ("avx2", "fma", "f16c"), "AVX512": ("avx512f", "avx512dq", "avx512vl", "avx512bw", "fma"),
             "AVX512_VNNI": ("avx512_vnni",), "AMX_TILE": ("amx_tile", "amx_bf16", "amx_int8"),
             "ASIMD": ("asimd",), "NEON": ("asimd",)}


def all_cpu_flags(cpuinfo: str | None = None) -> set[str] | None:
    """Every flag /proc/cpuinfo lists (x86 "flags", ARM "Features"); None when it cannot be read (not Linux)."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return None
    have: set[str] = set()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            have.update(value.split())
    return have


def cpu_flags(cpuinfo: str | None = None) -> list[str]:
    """The ``SPEED_FLAGS`` this CPU has, in that order (empty when /proc/cpuinfo cannot be read)."""
    have = all_cpu_flags(cpuinfo) or set()
    return [f for f in SPEED_FLAGS if f in have]


def missing_for_isa(isa: str, flags: set[str]) -> list[str]:
    """The CPU flags code compiled for ``isa`` (Inductor's name) uses and ``flags`` lacks; words it does not know
    are not judged."""
    need = [f for word in isa.upper().split() for f in ISA_FLAGS.get(word, ())]
    return sorted({f for f in need if f not in flags})


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
