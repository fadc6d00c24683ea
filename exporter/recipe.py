"""The export recipe: one typed record of every choice, validated before any work starts.

It is built from CLI flags, from a TOML / JSON / YAML file, or in Python, and it is written into
every manifest so an artifact can be rebuilt and its numbers explained.  The support table below
(derived from the route registry in ``exporter/routes``) says which (format, quant, scheme, backend)
combinations exist; anything else is refused here, naming a combination that does work.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

from edgeclip.errors import EdgeclipError, refuse_unknown_keys

from .compress.config import CompressRecipe
from .quantize.onnxruntime_static import CALIBRATIONS

from .routes import choices, find, refusal_reason, routes

# Derived from the route registry (exporter/routes/), live: what exists is what is registered.
FORMATS = choices("format")       # the model-file kinds (each has a writer, a runtime and a manifest file name)
TASKS = ("classifier", "image-encoder", "text-encoder")
TARGETS = ("cpu", "mobile", "cuda")       # where the artifact will run; fp16/bf16 only make sense on CUDA
HALF = ("fp16", "bf16")


def supported() -> dict[tuple[str, str, str | None, str], str]:
    """(format, quant, scheme, backend) -> how it is produced; scheme is None for float artifacts."""
    return {r.key: r.how for r in routes()}


def default_backend(fmt: str) -> str:
    return next(r.backend for r in routes() if r.format == fmt)


def format_of_backend(backend: str) -> str:
    return next(r.format for r in routes() if r.backend == backend)


_SLUG_BAD = re.compile(r"[^A-Za-z0-9._+-]+")


def slug(text: str) -> str:
    """A filesystem-safe folder name: letters, digits and ``. _ + -``; every other run becomes one ``-``."""
    return _SLUG_BAD.sub("-", text).strip("-.") or "model"


@dataclass
class ExportRecipe:
    model: str = "edgeclip-fmnist"
    pretrained: str | None = None
    task: str = "classifier"
    quant: str = "none"
    scheme: str | None = None            # default: dynamic for int8, None for float
    backend: str | None = None           # default: the format's natural backend
    formats: tuple[str, ...] | None = None   # default: the backend's format, else onnx
    data: str | None = "fashion-mnist"   # class names + real images for fidelity checks
    calib_data: str | None = None
    calib_size: int = 256
    verify_size: int = 256
    out: str = "out"
    name: str | None = None
    templates: list[str] | None = field(default=None)
    calib_method: str = "percentile"      # static: minmax | entropy | percentile (onnxruntime) | auto (per tensor, every
                                          # format but .pt2)
    keep_float: tuple[str, ...] = ()      # onnxruntime static: node names kept in float
    bias_correction: bool = False         # onnxruntime static: correct each int8 Linear's mean output shift
    sensitive_float: int = 3              # onnxruntime static: also keep the K nodes with the worst measured error float
    max_drop: float | None = None         # int8: keep the most sensitive layers float until top-1 on held-out calibration
                                          # images is within this many points of fp32 (accuracy control)
    float_layers: tuple[str, ...] = ()    # int8: module paths kept float in every format (e.g. from edgeclip inspect)
    group_size: int = 32                  # int4: weights per scale
    smoothquant: float | None = 0.5       # int8: SmoothQuant migration strength alpha (0 or None: off); needs calibration images
    target: str | None = None            # cpu | mobile | cuda; default: cuda for fp16/bf16, else cpu
    optimize: bool = False                # onnx: onnxruntime transformer optimizer (LayerNorm / GELU fusion) first
    fused_attention: bool = False         # onnx: attention as onnxruntime's MultiHeadAttention contrib op
    min_cosine: float | None = None       # override the stated fidelity bar (exporter/fidelity.py THRESHOLDS)
    min_agreement: float | None = None    # fraction 0..1
    compress: CompressRecipe | None = None   # passes run before quantization (exporter/compress)
    accept_drop: float | None = None      # compression: top-1 points of cost vs the uncompressed model accepted
                                          # (default: max_drop, else 1.0; exporter/compress/gate.py)
    threads: int | None = None            # torch threads for the whole export (None: all cores).  Data-aware passes,
                                          # healing and calibration reduce in thread-count-dependent order, so the same
                                          # recipe gives the same bytes only at the same count (and CPU kernels)

    def validated(self) -> "ExportRecipe":
        """A copy with defaults resolved; raises EdgeclipError naming a valid alternative."""
        if self.formats:
            r = replace(self, formats=tuple(self.formats))
        elif self.quant == "bf16" and self.target == "cpu" and self.backend is None:
            r = replace(self, formats=("ptl",))     # the one format with CPU bf16 kernels (oneDNN through the lite interpreter)
        else:
            r = replace(self, formats=(format_of_backend(self.backend) if self.backend in choices("backend") else "onnx",))
        if "all" in r.formats:  # every format that can serve this precision (a --backend applies to its own format),
            # except those built only when named (.pt2: compiled for this CPU with a C++ compiler, ~20 s and up each)
            r.formats = tuple(f for f in choices("format") if any(x.format == f and x.quant == r.quant and x.in_all
                                                                   for x in routes()))
        for f in r.formats:
            if f == "auto":
                raise EdgeclipError("--format auto measures the CPU routes and keeps the fastest: use it alone, not with "
                                    "other formats")
            if f not in choices("format"):
                raise EdgeclipError(f"unknown format {f!r}; use one of {', '.join(choices('format'))}, all or auto")
        if r.quant not in choices("quant"):
            raise EdgeclipError(f"unknown --quant {r.quant!r}; use one of {', '.join(choices('quant'))}")
        if r.task not in TASKS:
            raise EdgeclipError(f"unknown task {r.task!r}; use one of {', '.join(TASKS)}")
        if r.scheme is not None and r.scheme not in choices("scheme"):
            raise EdgeclipError(f"unknown --scheme {r.scheme!r}; use dynamic or static")
        if r.backend is not None and r.backend not in choices("backend"):
            raise EdgeclipError(f"unknown --backend {r.backend!r}; use one of {', '.join(choices('backend'))}")
        if r.target is not None and r.target not in TARGETS:
            raise EdgeclipError(f"unknown --target {r.target!r}; use one of {', '.join(TARGETS)}")
        r.target = r.target or ("cuda" if r.quant in HALF and r.backend != "onednn" else "cpu")
        if r.quant == "bf16" and r.target == "cpu":
            from edgeclip.runtimes.cpu_features import BF16_UNITS, bf16_units

            if not bf16_units():
                raise EdgeclipError(f"--quant bf16 --target cpu: this CPU has no bf16 matrix units ({', '.join(BF16_UNITS)}), so "
                                    "bf16 would run emulated and save nothing; use --quant int8, or export on a CPU with "
                                    "AMX-BF16 / AVX512-BF16 (edgeclip checks the machine it exports on)")
        elif r.quant in HALF and r.target != "cuda":
            raise EdgeclipError(f"--quant {r.quant} builds CUDA artifacts and saves nothing on a {r.target} target (no fast "
                                f"{r.quant} kernels there); use --target cuda, or --quant int8 for {r.target}"
                                + ("; bf16 runs on CPUs with bf16 units: --quant bf16 --target cpu" if r.target == "cpu" else ""))
        if r.quant == "int4":
            from .quantize.onnxruntime_int4 import GROUP_SIZES

            if r.group_size not in GROUP_SIZES:
                raise EdgeclipError(f"--group-size {r.group_size} is not available; int4 groups are "
                                    f"{', '.join(map(str, GROUP_SIZES))} weights (32 is the usual choice)")
        if r.quant in ("int8", "int4") and r.target == "cuda":
            raise EdgeclipError(f"--quant {r.quant} artifacts run on CPU kernels (onnxruntime / qnnpack / fbgemm / XNNPACK), not CUDA; "
                                "use --quant fp16 or bf16 with --target cuda, or --target cpu for int8")
        if r.quant in ("none", "fp16", "bf16"):
            if r.scheme is not None:
                raise EdgeclipError(f"--scheme {r.scheme} only applies to --quant int8; drop --scheme or add --quant int8")
        else:
            r.scheme = r.scheme or "dynamic"
        if isinstance(r.compress, dict):
            r.compress = CompressRecipe.from_dict(r.compress)
        if r.compress is not None:
            r.compress = r.compress.validated() if r.compress.active else None
        if r.smoothquant is not None and not (0.0 <= r.smoothquant < 1.0):
            raise EdgeclipError(f"--smoothquant must be at least 0 and below 1 (got {r.smoothquant}); 0.5 is the usual "
                                "strength, 0 turns it off")
        if r.quant != "int8" or not r.smoothquant:
            r.smoothquant = None
        if r.max_drop is not None:
            if r.quant != "int8":
                raise EdgeclipError(f"--max-drop controls int8 accuracy; it does nothing for --quant {r.quant} (drop it or "
                                    "add --quant int8)")
            if not (0.0 <= r.max_drop <= 100.0):
                raise EdgeclipError(f"--max-drop is top-1 points and must be between 0 and 100 (got {r.max_drop}); e.g. 0.5")
            if r.task != "classifier":
                raise EdgeclipError(f"--max-drop measures top-1 on labelled images, so it needs --task classifier (got "
                                    f"{r.task}); export the classifier, or drop --max-drop")
        if r.accept_drop is not None:
            if r.compress is None:
                raise EdgeclipError("--accept-drop sets how much top-1 compression may cost; no compression pass was asked "
                                    "(--svd, --prune-blocks, --mlp-keep, ...): drop --accept-drop")
            if not (0.0 <= r.accept_drop <= 100.0):
                raise EdgeclipError(f"--accept-drop is top-1 points and must be between 0 and 100 (got {r.accept_drop}); "
                                    "e.g. 2")
        r.float_layers = tuple(r.float_layers)
        if r.float_layers and r.quant not in ("int8", "int4"):
            raise EdgeclipError("--float-layer applies to --quant int8 / int4 only; drop it for float exports")
        if r.calib_data is not None and not r.needs_calibration and not (r.compress and r.compress.needs_calibration):
            raise EdgeclipError("--calib-data is only used by --quant int8 (static ranges, SmoothQuant) and data-aware "
                                "compression; drop it for float exports")
        if r.calib_method not in CALIBRATIONS:
            raise EdgeclipError(f"unknown --calib-method {r.calib_method!r}; use {', '.join(CALIBRATIONS[:-1])} or {CALIBRATIONS[-1]}")
        if r.bias_correction and (r.scheme != "static" or r.formats != ("onnx",)):
            raise EdgeclipError("--bias-correction applies to --quant int8 --scheme static --format onnx only (the .pte and "
                                ".ptl quantizers fold their biases into int8 kernels); drop it or export that format alone")
        if r.fused_attention and "onnx" not in r.formats:
            raise EdgeclipError("--fused-attention writes onnxruntime's MultiHeadAttention op into .onnx files; ExecuTorch "
                                "and TorchScript-lite have their own attention kernels: drop it or add --format onnx")
        if not (0 <= r.sensitive_float <= 1000):
            raise EdgeclipError(f"--sensitive-float must be between 0 and 1000 (got {r.sensitive_float})")
        r.keep_float = tuple(r.keep_float)
        if r.task == "text-encoder" and r.scheme == "static" and "onnx" in r.formats:
            raise EdgeclipError("static int8 ONNX of the text encoder is not supported (token ids cannot be calibrated "
                                "like images); use --scheme dynamic, or --format ptl/pte for static")
        for key in ("min_cosine", "min_agreement"):
            v = getattr(r, key)
            if v is not None and not (0.0 <= v <= 1.0):
                raise EdgeclipError(f"--{key.replace('_', '-')} must be between 0 and 1 (got {v})")
        if r.name is not None and slug(r.name) != r.name:
            raise EdgeclipError(f"--name {r.name!r} is not a safe folder name; use letters, digits and . _ + - "
                                f"(e.g. {slug(r.name)!r})")
        if r.threads is not None and r.threads < 1:
            raise EdgeclipError(f"--threads must be at least 1 (got {r.threads}); omit it for all cores")
        if not (1 <= r.verify_size <= 100_000):
            raise EdgeclipError(f"--verify-size must be between 1 and 100000 (got {r.verify_size})")
        if not (1 <= r.calib_size <= 100_000):
            raise EdgeclipError(f"--calib-size must be between 1 and 100000 (got {r.calib_size})")
        for f in r.formats:
            backend = r.backend_for(f)
            if find(f, r.quant, r.scheme, backend) is None:
                raise EdgeclipError(self._refusal(f, backend, r))
        return r

    def check_machine(self) -> "ExportRecipe":
        """Refuse (before any model is loaded) a route this machine cannot build, e.g. a ``.pt2`` without a C++
        compiler; kept out of ``validated()`` so a recipe read back from a manifest validates on any machine."""
        for f in self.formats or ():
            route = find(f, self.quant, self.scheme, self.backend_for(f))
            why = route.unavailable_here() if route is not None else None
            if why:
                raise EdgeclipError(f"--format {f} --quant {self.quant}: {why}")
        return self

    @property
    def torch_calib_method(self) -> str:
        """The .pte / .ptl / .pt2 static quantizers' activation-range rule: "auto" (per tensor, by output-weighted error)
        or their stock HistogramObserver search ("histogram"); minmax / entropy / percentile are onnxruntime's."""
        return "auto" if self.calib_method == "auto" else "histogram"

    @property
    def needs_calibration(self) -> bool:
        """Static int8 ranges and SmoothQuant's channel ranges are measured on calibration images."""
        return self.scheme == "static" or (self.quant == "int8" and (bool(self.smoothquant) or self.max_drop is not None))

    def backend_for(self, fmt: str) -> str:
        """The backend a format is built for: --backend when it belongs to that format (or only one format was
        asked for, so a mismatch is refused), else the format's default."""
        if self.backend and (format_of_backend(self.backend) == fmt or len(self.formats or ()) <= 1):
            return self.backend
        if fmt == "ptl" and self.quant in HALF:
            return "onednn" if self.quant == "bf16" and self.target == "cpu" else "cuda"
        return default_backend(fmt)

    def _refusal(self, fmt: str, backend: str, r: "ExportRecipe") -> str:
        asked = f"--format {fmt} --quant {r.quant}" + (f" --scheme {r.scheme}" if r.scheme else "") + f" --backend {backend}"
        if not any(x.format == fmt and x.backend == backend for x in routes()):   # a backend of another format
            why = f"the {backend} backend builds {MODEL_KIND[format_of_backend(backend)]} files, not {MODEL_KIND[fmt]}"
        else:
            why = refusal_reason(fmt, r.quant, backend)
        table = supported()
        alts = [k for k in table if k[0] == fmt and k[1] == r.quant] or [k for k in table if k[1] == r.quant] \
            or [k for k in table if k[0] == fmt] or list(table)
        ok = "; ".join(f"--format {f} --quant {q}" + (f" --scheme {s}" if s else "") + f" --backend {b}" for (f, q, s, b) in alts[:4])
        return f"{asked}: {why}; valid: {ok}"

    def to_dict(self) -> dict:
        d = asdict(self)
        d["formats"] = list(self.formats) if self.formats else None
        d["keep_float"] = list(self.keep_float)
        d["float_layers"] = list(self.float_layers)
        d["compress"] = self.compress.to_dict() if isinstance(self.compress, CompressRecipe) else self.compress
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "ExportRecipe":
        refuse_unknown_keys(d, {f.name for f in fields(cls)}, "recipe")
        d = dict(d)
        if isinstance(d.get("formats"), str):
            d["formats"] = (d["formats"],)
        if isinstance(d.get("compress"), dict):
            d["compress"] = CompressRecipe.from_dict(d["compress"])
        return cls(**d)

    @classmethod
    def from_file(cls, path: str | Path) -> "ExportRecipe":
        p = Path(path).expanduser()
        if not p.is_file():
            raise EdgeclipError(f"recipe file {p} does not exist; pass a .toml, .json or .yaml recipe")
        text = p.read_text()
        try:
            if p.suffix == ".toml":
                import tomllib

                d = tomllib.loads(text)
            elif p.suffix in (".yaml", ".yml"):
                import yaml

                d = yaml.safe_load(text)
            else:
                d = json.loads(text)
        except Exception as e:
            raise EdgeclipError(f"cannot parse recipe {p} ({type(e).__name__}: {str(e)[:120]}); fix its syntax") from None
        if not isinstance(d, dict):
            raise EdgeclipError(f"recipe {p} must be a table of keys (model, quant, formats, ...)")
        return cls.from_dict(d.get("recipe", d))


MODEL_KIND = {"onnx": "ONNX (.onnx)", "ptl": "TorchScript-lite (.ptl)", "pte": "ExecuTorch (.pte)",
              "pt2": "AOTInductor (.pt2)"}


def support_table() -> list[dict]:
    return [{"format": f, "quant": q, "scheme": s or "-", "backend": b, "how": how} for (f, q, s, b), how in supported().items()]
