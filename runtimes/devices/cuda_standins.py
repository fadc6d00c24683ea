"""Stand-ins for the CUDA libraries that PyPI's aarch64 torch build names but a CPU machine does not have.

The dynamic loader needs every NEEDED library, every symbol version node a library asks for, and (torch loads
with RTLD_NOW) every symbol.  Each stand-in has the missing library's SONAME, its version nodes, and one
function per symbol that returns 100 (``cudaErrorNoDevice``); none is called on a CPU-only run.  Built from
``readelf`` facts with aarch64 binutils: no compiler, no CUDA download.
"""

from __future__ import annotations

import re
import subprocess
from collections import defaultdict
from pathlib import Path


def _readelf(*args: str) -> str:
    return subprocess.run(["readelf", "-W", *args], capture_output=True, text=True).stdout


def _shared_objects(folder: Path) -> list[Path]:
    return [p for p in sorted(folder.glob("*.so*")) if p.is_file()]


def _needs(lib_dir: Path, sys_dirs: list[Path]) -> tuple[dict[str, set], dict[str, set]]:
    """{missing soname: {(symbol, version or None)}}, {missing soname: {version nodes}}."""
    have = {p.name for d in [lib_dir, *sys_dirs] if d.is_dir() for p in d.iterdir()}
    defined: set[str] = set()
    for d in [lib_dir, *sys_dirs]:
        for p in _shared_objects(d):
            for line in _readelf("--dyn-syms", str(p)).splitlines():
                f = line.split()
                if len(f) >= 8 and f[6] not in ("UND", "Ndx"):
                    defined.add(f[7].split("@")[0])
    syms: dict[str, set] = defaultdict(set)
    nodes: dict[str, set] = defaultdict(set)
    for p in _shared_objects(lib_dir):
        missing = [m for m in re.findall(r"NEEDED.*\[(.*)\]", _readelf("-d", str(p))) if m not in have]
        if not missing:
            continue
        owner, cur = {}, None
        for line in _readelf("-V", str(p)).split("Version needs", 1)[-1].splitlines():
            m = re.search(r"File: (\S+)", line)
            if m:
                cur = m.group(1)
                continue
            m = re.search(r"Name: (\S+)", line)
            if m and cur in missing:
                nodes[cur].add(m.group(1))
                owner[m.group(1)] = cur
        for line in _readelf("--dyn-syms", str(p)).splitlines():
            f = line.split()
            if len(f) < 8 or f[6] != "UND" or f[4] == "WEAK":
                continue
            name, _, ver = f[7].partition("@")
            ver = ver.lstrip("@")
            if ver in owner:
                syms[owner[ver]].add((name, ver))
            elif not ver and name not in defined:      # unversioned: any missing library of this one will do
                syms[missing[-1]].add((name, None))
        for m in missing:
            syms.setdefault(m, set())
    return syms, nodes


def write_standins(lib_dir: Path, sys_dirs: list[Path], out: Path) -> list[str]:
    """Write a stand-in for each library that ``lib_dir``'s objects need and nobody has; returns their names."""
    syms, nodes = _needs(lib_dir, sys_dirs)
    out.mkdir(parents=True, exist_ok=True)
    for soname, pairs in sorted(syms.items()):
        by_version: dict = defaultdict(list)
        asm = [".text"]
        for name, ver in sorted(pairs, key=lambda t: (t[0], t[1] or "")):
            asm += [f".globl {name}", f".type {name}, %function", f"{name}:", "  mov w0, #100", "  ret"]
            by_version[ver].append(name)
        by_version.pop(None, None)
        versions = sorted(nodes[soname] | set(by_version))
        # the first node also takes every other symbol ('*'): explicit names win over the wildcard, and an
        # unversioned reference binds to a versioned definition
        script = "".join(f"{v} {{ global: {' '.join(s + ';' for s in by_version[v])}{' *;' if i == 0 else ''} }};\n"
                         for i, v in enumerate(versions)) or "{ global: *; };\n"
        base = out / soname
        Path(f"{base}.s").write_text("\n".join(asm) + "\n")
        Path(f"{base}.map").write_text(script)
        for argv in (["aarch64-linux-gnu-as", "-o", f"{base}.o", f"{base}.s"],
                     ["aarch64-linux-gnu-ld", "-shared", "-soname", soname, "--version-script", f"{base}.map", "-o", str(base), f"{base}.o"]):
            r = subprocess.run(argv, capture_output=True, text=True)
            if r.returncode != 0:
                from .base import DeviceError

                raise DeviceError(f"building the stand-in {soname} failed: {r.stderr.strip()[:200]}")
        for ext in (".s", ".map", ".o"):
            Path(f"{base}{ext}").unlink()
    return sorted(syms)
