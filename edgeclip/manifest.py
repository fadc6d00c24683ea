"""The artifact manifest: everything an app (or ``edgeclip bench``) needs beside the model file.

``out/<name>/manifest.json`` records the file's sha256 and size, input/output names, shapes and
dtypes, preprocessing, labels, the recipe and source model that produced it, library versions and
the measured fidelity against fp32.  Runtimes refuse a file whose bytes no longer match it.

This is the contract between the exporter (which writes it) and the runtimes and benchmarks (which read
it), so it sits below both: ``Manifest`` is the typed, versioned schema; a file from a newer edgeclip is
refused with one line instead of being half-read.
"""

from __future__ import annotations

import hashlib
import json
import platform
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path

from edgeclip.errors import EdgeclipError

MANIFEST = "manifest.json"
SCHEMA_VERSION = 1
MODEL_FILES = {"onnx": "model.onnx", "ptl": "model.ptl", "pte": "model.pte", "pt2": "model.pt2"}


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: list            # "batch" for the free dimension, ints elsewhere
    dtype: str


@dataclass(frozen=True)
class FileEntry:
    name: str
    bytes: int
    sha256: str


@dataclass
class Manifest:
    """``manifest.json``, schema version ``SCHEMA_VERSION``.  ``quantization`` holds the facts of the route
    that built the file (dtype, scheme, backend / engine, delegate, batch bound, ...): they differ per route,
    so they stay a mapping.  Keys a newer edgeclip of the same schema version adds are kept in ``extra``."""

    name: str
    format: str
    task: str
    target: str
    file: FileEntry
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    quantization: dict
    recipe: dict
    source: dict
    fidelity: dict
    fidelity_threshold: dict
    opset: int | None = None
    preprocessing: dict | None = None
    labels: list[str] = field(default_factory=list)
    tokenizer: dict | None = None
    random_weights: bool = False
    compression: dict | None = None
    versions: dict = field(default_factory=dict)
    export_seconds: float | None = None
    created: str | None = None
    schema_version: int = SCHEMA_VERSION
    extra: dict = field(default_factory=dict)

    _ORDER = ("schema_version", "name", "format", "task", "target", "file", "inputs", "outputs", "opset", "preprocessing",
              "labels", "tokenizer", "quantization", "source", "random_weights", "compression", "recipe", "fidelity",
              "fidelity_threshold", "versions", "export_seconds", "created")

    def to_dict(self) -> dict:
        d = {k: getattr(self, k) for k in self._ORDER}
        d["file"] = {"name": self.file.name, "bytes": self.file.bytes, "sha256": self.file.sha256}
        d["inputs"] = [{"name": t.name, "shape": list(t.shape), "dtype": t.dtype} for t in self.inputs]
        d["outputs"] = [{"name": t.name, "shape": list(t.shape), "dtype": t.dtype} for t in self.outputs]
        return {**d, **self.extra}

    @classmethod
    def from_dict(cls, d: dict, where: str = "manifest") -> "Manifest":
        """Parse and check; raises EdgeclipError naming what is wrong and what to do."""
        if not isinstance(d, dict):
            raise EdgeclipError(f"{where} is not a valid edgeclip manifest (not a JSON object); re-export the artifact")
        version = d.get("schema_version", 1)
        if not isinstance(version, int) or version > SCHEMA_VERSION:
            raise EdgeclipError(f"{where} has manifest schema {version!r}, newer than this edgeclip reads ({SCHEMA_VERSION}); "
                                "upgrade edgeclip or re-export the artifact with this version")
        known = {f.name for f in fields(cls)} - {"extra"}
        required = [f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING]
        missing = [k for k in required if k not in d]
        if missing:
            raise EdgeclipError(f"{where} is not a valid edgeclip manifest (missing {', '.join(missing)}); re-export the artifact")
        if d["format"] not in MODEL_FILES:
            raise EdgeclipError(f"{where} is for format {d['format']!r}, which this edgeclip cannot run "
                                f"({', '.join(MODEL_FILES)}); upgrade edgeclip")
        try:
            args = {k: d[k] for k in known if k in d}
            args["file"] = FileEntry(d["file"]["name"], int(d["file"]["bytes"]), str(d["file"]["sha256"]))
            args["inputs"] = [TensorSpec(t["name"], list(t["shape"]), t["dtype"]) for t in d["inputs"]]
            args["outputs"] = [TensorSpec(t["name"], list(t["shape"]), t["dtype"]) for t in d["outputs"]]
        except (KeyError, TypeError, ValueError):
            raise EdgeclipError(f"{where} is not a valid edgeclip manifest (bad file / inputs / outputs entry); "
                                "re-export the artifact") from None
        for k in ("quantization", "recipe", "source", "fidelity", "fidelity_threshold"):
            args[k] = args.get(k) or {}
        args["labels"] = list(args.get("labels") or [])
        return cls(**args, extra={k: v for k, v in d.items() if k not in known})


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

    @property
    def quantization(self) -> dict:
        """The route's facts that runtimes act on (engine, delegate, batch bound, dtype)."""
        return self.manifest.get("quantization") or {}

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
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise EdgeclipError(f"{mpath} is not a valid edgeclip manifest (not JSON); re-export the artifact") from None
    Manifest.from_dict(manifest, str(mpath))   # refuses an incomplete or newer-schema manifest in one line
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
