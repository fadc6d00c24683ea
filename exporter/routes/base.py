"""The route record, the registry and the refusal table (see the package docstring)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Protocol

from edgeclip.manifest import MODEL_FILES

if TYPE_CHECKING:
    import torch

    from edgeclip.exporter.export import ExportSubject
    from edgeclip.exporter.recipe import ExportRecipe

Producer = Callable[["ExportSubject", "ExportRecipe", Path], dict]


class ModelRewrite(Protocol):
    """A model-level precision pass (torch.ao, half casts): the torch module in, the module the format's writer
    traces out, with the manifest facts of what it did.  It never sees a file."""

    def __call__(self, module: "torch.nn.Module", subject: "ExportSubject", recipe: "ExportRecipe") -> tuple["torch.nn.Module", dict]: ...


class ModelWriter(Protocol):
    """A format's writer: traces ``module`` and writes the model file at ``path``; returns the file's facts."""

    def __call__(self, module: "torch.nn.Module", subject: "ExportSubject", recipe: "ExportRecipe", path: Path) -> dict: ...


class FileRewrite(Protocol):
    """A file-level precision pass (onnxruntime's quantizers, fp16 conversion): reads the fp32 file at ``src`` that
    the format's writer made, writes the file that ships at ``dst``; returns its manifest facts.  It never sees
    the torch module, so it is the place for a quantizer that works on files."""

    def __call__(self, src: Path, dst: Path, subject: "ExportSubject", recipe: "ExportRecipe") -> dict: ...


FileSource = Callable[["ExportSubject", "ExportRecipe", Path], "tuple[Path, dict]"]   # writes the fp32 file to rewrite


def model_path(stage: Path, fmt: str) -> Path:
    """Where a route writes its model file in the staging folder (the name the manifest records)."""
    return stage / MODEL_FILES[fmt]


@dataclass(frozen=True)
class Route:
    """One buildable artifact kind.  ``scheme`` is None for float routes; ``produce(subject, recipe, stage)``
    writes the model file into ``stage`` and returns the manifest's ``quantization`` facts.  ``level``:
    "model" when the precision is applied to the torch module before the file is written (torch.ao, PT2E,
    half casts), "file" when a written file is rewritten (onnxruntime's quantizers, fp16 conversion).
    ``machine``: a check of the exporting machine, run before any model is loaded (``ExportRecipe.check_machine``),
    for routes that compile for the CPU they are exported on."""

    format: str
    quant: str
    scheme: str | None
    backend: str
    how: str
    produce: Producer
    level: str = "model"
    mobile: bool = False        # what phones run: ``bench --target mobile`` measures these
    machine: Callable[[], str | None] | None = None   # can this machine build it? None if so, else why not + the fix
    in_all: bool = True         # ``--format all`` builds it (False: only when its format is named)

    def unavailable_here(self) -> str | None:
        """Why the exporting machine cannot build this route (a compiler it lacks, another CPU), or None."""
        return self.machine() if self.machine is not None else None

    @property
    def key(self) -> tuple[str, str, str | None, str]:
        return (self.format, self.quant, self.scheme, self.backend)


_ROUTES: dict[tuple, Route] = {}
_REFUSALS: list[tuple[dict, str]] = []


def model_route(fmt: str, quant: str, scheme: str | None, backend: str, how: str, write: ModelWriter,
                rewrite: ModelRewrite | None = None, *, mobile: bool = False) -> Route:
    """A route that applies ``rewrite`` to the module (no rewrite: the fp32 module as it is), then writes it with
    the format's writer."""
    def produce(subject, recipe, stage: Path) -> dict:
        module, facts = rewrite(subject.module, subject, recipe) if rewrite else (subject.module, {"dtype": "fp32", "method": "none"})
        return {**facts, **write(module, subject, recipe, model_path(stage, fmt))}

    return Route(fmt, quant, scheme, backend, how, produce, mobile=mobile)      # level "model", the default


def file_route(fmt: str, quant: str, scheme: str | None, backend: str, how: str, source: FileSource, rewrite: FileRewrite,
               *, mobile: bool = False) -> Route:
    """A route that writes the fp32 file with ``source``, rewrites it with ``rewrite`` into the shipped file and
    removes the fp32 one (also when the rewrite fails: the staging folder holds only what ships)."""
    def produce(subject, recipe, stage: Path) -> dict:
        src, facts = source(subject, recipe, stage)
        try:
            return {**rewrite(src, model_path(stage, fmt), subject, recipe), **facts}
        finally:
            src.unlink(missing_ok=True)

    return Route(fmt, quant, scheme, backend, how, produce, level="file", mobile=mobile)


def register(route: Route) -> Route:
    if route.key in _ROUTES:
        raise ValueError(f"export route {route.key} registered twice")
    _ROUTES[route.key] = route
    return route


def refuse(why: str, **when: object) -> None:
    """Why no route exists where ``when`` matches (keys: format, quant, backend; a value may be a tuple of
    alternatives).  First match wins, so register specific reasons before general ones."""
    _REFUSALS.append((when, why))


def routes() -> list[Route]:
    return list(_ROUTES.values())


def find(fmt: str, quant: str, scheme: str | None, backend: str) -> Route | None:
    return _ROUTES.get((fmt, quant, scheme, backend))


def refusal_reason(fmt: str, quant: str, backend: str) -> str:
    asked = {"format": fmt, "quant": quant, "backend": backend}
    for when, why in _REFUSALS:
        if all(asked[k] in (v if isinstance(v, tuple) else (v,)) for k, v in when.items()):
            return why.format(**asked)
    return "this combination is not available"


def route_of(manifest: dict) -> Route | None:
    """The route an artifact was built by, read from its manifest (None for a route no longer registered)."""
    r = manifest.get("recipe") or {}
    q = manifest.get("quantization") or {}
    fmt, quant = manifest.get("format"), r.get("quant") or "none"
    scheme = r.get("scheme") if quant in ("int8", "int4") else None
    backend = q.get("backend") or q.get("engine") or r.get("backend")
    if backend is None or find(fmt, quant, scheme, backend) is None:   # the format's default backend
        backend = next((x.backend for x in _ROUTES.values() if x.format == fmt and x.quant == quant), None)
    return find(fmt, quant, scheme, backend)


def choices(field: str) -> tuple[str, ...]:
    """Every value ``field`` (format, quant, scheme, backend) takes over the registered routes, in order."""
    return tuple(dict.fromkeys(getattr(r, field) for r in _ROUTES.values() if getattr(r, field) is not None))
