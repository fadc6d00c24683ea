"""The artifact manifest: everything an app (or ``edgeclip bench``) needs beside the model file.

``out/<name>/manifest.json`` records the file's sha256 and size, input/output names, shapes and
dtypes, preprocessing, labels, the recipe and source model that produced it, library versions and
the measured fidelity against fp32.  Runtimes refuse a file whose bytes no longer match it.
"""

from __future__ import annotations

import hashlib
import json
import platform
from dataclasses import dataclass
from pathlib import Path

from edgeclip.errors import EdgeclipError

MANIFEST = "manifest.json"
SCHEMA_VERSION = 1
MODEL_FILES = {"onnx": "model.onnx", "ptl": "model.ptl", "pte": "model.pte"}


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def library_versions() -> dict:
    import importlib.metadata as md

    versions = {"python": platform.python_version()}
    for dist in ("edgeclip", "torch", "onnx", "onnxruntime", "onnxscript", "open_clip_torch", "timm", "executorch"):
        try:
            versions[dist] = md.version(dist)
        except md.PackageNotFoundError:
            pass
    return versions


@dataclass(frozen=True)
class Artifact:
    """An artifact folder on disk with its parsed manifest."""

    dir: Path
    manifest: dict

    @property
    def format(self) -> str:
        return self.manifest["format"]

    @property
    def file(self) -> Path:
        return self.dir / self.manifest["file"]["name"]

    @property
    def name(self) -> str:
        return self.dir.name

    def __repr__(self) -> str:
        """One line a person can read (``print(artifacts)`` used to dump every manifest); the whole record is
        ``artifact.manifest``."""
        m = self.manifest
        q = m.get("quantization") or {}
        quant = " ".join(x for x in (q.get("dtype") or "fp32", q.get("scheme"), q.get("backend")) if x)
        parts = [f"{self.name!r}", f"format={m.get('format')}", f"task={m.get('task')}", f"quant={quant!r}"]
        if (m.get("file") or {}).get("bytes") is not None:
            parts.append(f"size={m['file']['bytes'] / 1e6:.2f} MB")
        f = m.get("fidelity") or {}
        if f.get("mean_cosine") is not None:
            parts.append(f"cosine={f['mean_cosine']:.4f}")
        if f.get("top1_agreement") is not None:
            parts.append(f"agreement={100 * f['top1_agreement']:.2f}%")
        return f"Artifact({', '.join(parts)}, dir={str(self.dir)!r})"

    def verify_integrity(self) -> None:
        """Refuse a model file that is missing, truncated or changed since export."""
        f, expected = self.file, self.manifest["file"]
        if not f.is_file():
            raise EdgeclipError(f"{f} is missing; re-export the artifact")
        size = f.stat().st_size
        if size != expected["bytes"]:
            raise EdgeclipError(f"{f} is {size} bytes but its manifest says {expected['bytes']} (truncated or replaced); re-export it")
        if sha256_file(f) != expected["sha256"]:
            raise EdgeclipError(f"{f} does not match the sha256 in its manifest (tampered or corrupted); re-export it")


def write_manifest(folder: Path, manifest: dict) -> None:
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=False) + "\n")


def open_artifact(path: str | Path) -> Artifact:
    """An artifact from its folder, its manifest.json or its model file."""
    p = Path(path).expanduser()
    folder = p if p.is_dir() else p.parent
    mpath = folder / MANIFEST
    if not p.exists():
        raise EdgeclipError(f"artifact {p} does not exist; pass an artifact folder written by 'edgeclip export'")
    if not mpath.is_file():
        raise EdgeclipError(f"{p} is not an edgeclip artifact (no {MANIFEST} beside it); pass a folder written by 'edgeclip export'")
    try:
        manifest = json.loads(mpath.read_text())
        manifest["format"], manifest["file"]["name"]
    except (json.JSONDecodeError, KeyError, TypeError):
        raise EdgeclipError(f"{mpath} is not a valid edgeclip manifest; re-export the artifact") from None
    return Artifact(folder, manifest)


def find_artifacts(root: Path) -> list[Artifact]:
    """Every artifact folder directly under ``root``, sorted by name (hidden staging folders are not artifacts)."""
    return [open_artifact(d) for d in sorted(root.iterdir()) if d.is_dir() and not d.name.startswith(".") and (d / MANIFEST).is_file()]


def collect_artifacts(paths: str | Path | list) -> list[Artifact]:
    """What ``bench`` and ``verify`` accept, in the CLI and in Python alike: artifact folders (or their manifest or
    model file), ``Artifact`` objects, and folders of artifacts such as the ``--out`` that ``export`` wrote into."""
    items = [paths] if isinstance(paths, (str, Path, Artifact)) else list(paths)
    found: list[Artifact] = []
    for item in items:
        if isinstance(item, Artifact):
            found.append(item)
            continue
        p = Path(item).expanduser()
        if not p.exists():
            raise EdgeclipError(f"no artifacts under {p} (it does not exist); run 'edgeclip export' first or pass artifact folders")
        if p.is_dir() and not (p / MANIFEST).is_file():
            inner = find_artifacts(p)
            if not inner:
                raise EdgeclipError(f"no artifacts under {p}; run 'edgeclip export' first or pass artifact folders")
            found.extend(inner)
        else:
            found.append(open_artifact(p))   # explains what is wrong with a bad path
    return found
