"""Write one verified artifact: produce the file in a staging folder, reload it with its own runtime,
compare it with the eager model on real inputs, and only then move it into place with its manifest.

Formats and quantizers only produce files; this module is the one place that decides whether a
file is good enough to ship, so every format gets the same guarantee.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path

import numpy as np
import torch

from edgeclip.errors import FidelityError
from edgeclip.manifest import (MODEL_FILES, Artifact, FileEntry, Manifest, TensorSpec, library_versions, sha256_file,
                               write_manifest)
from edgeclip.models.facts import FactsView, ModelFacts
from edgeclip.runtimes.base import run_batched
from edgeclip.runtimes.torch_eager import TorchEagerSession

from .accuracy_control import accuracy_controlled
from .atomic import staged_dir
from .fidelity import bar_for, compare
from .formats.onnx import OPSET
from .quantize.embedding import int8_embeddings
from .quantize.smooth import smooth
from .recipe import FORMATS, ExportRecipe, slug
from .routes import find


@dataclass
class ExportSubject(FactsView):
    """The module to export, its manifest facts (shared with the prepared model it came from, not copied) and
    the real inputs every format is verified, calibrated and accuracy-controlled on."""

    module: torch.nn.Module
    facts: ModelFacts
    input_name: str
    output_name: str
    verify_inputs: np.ndarray          # real images (preprocessed) or real captions (token ids)
    verify_desc: str
    calib_inputs: np.ndarray | None = field(default=None, repr=False)   # for static int8; never the eval split
    calib_desc: str | None = None
    reference: np.ndarray | None = field(default=None, repr=False)
    compression: dict | None = None    # what the compression passes removed and what it cost vs the uncompressed model
    holdout_inputs: np.ndarray | None = field(default=None, repr=False)   # accuracy control: labelled calibration-source
    holdout_labels: np.ndarray | None = field(default=None, repr=False)   # images not calibrated on
    holdout_desc: str | None = None
    rewrites: dict = field(default_factory=dict, repr=False)   # model-level int8 rewrites, built once for all formats

    @property
    def example(self) -> torch.Tensor:
        """Two real inputs: what every format traces / exports with (batch 2 so batch is not a constant 1)."""
        return torch.from_numpy(self.verify_inputs[:2])

    def reference_outputs(self) -> np.ndarray:
        if self.reference is None:
            self.reference = run_batched(TorchEagerSession(self.module), self.verify_inputs)
        return self.reference


def artifact_name(subject: ExportSubject, recipe: ExportRecipe, fmt: str) -> str:
    """The artifact's folder name: ``--name`` (already checked to be a safe slug), else derived from the model,
    task, format and precision and slugged, since a user module's source reads ``user module <Class>``."""
    if recipe.name:
        return recipe.name if len(recipe.formats) == 1 else f"{recipe.name}-{fmt}"
    model = slug(Path(str(subject.source.get("model", "model"))).name)
    quant = ("fp32" if recipe.quant == "none" else f"int8-{recipe.scheme}" if recipe.quant == "int8"
             else f"int4-g{recipe.group_size}" if recipe.quant == "int4" else recipe.quant)
    backend = recipe.backend_for(fmt)
    suffix = f"-{backend}" if (recipe.quant == "int8" and fmt == "ptl") or backend in ("portable", "onednn") else ""
    if recipe.compress is not None:
        suffix += f"-{recipe.compress.tag()}"
    return f"{model}-{subject.task}-{fmt}-{quant}{suffix}"


def _produce(subject: ExportSubject, recipe: ExportRecipe, stage: Path, fmt: str) -> dict:
    """The registered route's producer (``recipe`` is validated, so the route exists)."""
    return find(fmt, recipe.quant, recipe.scheme, recipe.backend_for(fmt)).produce(subject, recipe, stage)


# one entry per format (a seam the failure-injection tests patch); each dispatches to the registered route
PRODUCERS = {f: partial(_produce, fmt=f) for f in FORMATS}


def int8_model(subject: ExportSubject, recipe: ExportRecipe) -> tuple[torch.nn.Module, dict]:
    """The module every int8 route quantizes, with its manifest facts: SmoothQuant migration (exact in fp32;
    needs calibration inputs) and per-row int8 token tables.  Built once per subject and alpha."""
    key = ("int8", recipe.smoothquant)
    if key not in subject.rewrites:
        module, facts = subject.module, {}
        if recipe.smoothquant:
            if subject.calib_inputs is None:
                facts["smoothquant"] = {"skipped": "no calibration images (the data source has no train split); pass --calib-data "
                                                  "to measure channel ranges"}
            else:
                smoothed = smooth(module, subject.calib_inputs, subject.example, recipe.smoothquant)
                module, facts["smoothquant"] = smoothed.module, smoothed.facts
        module, emb_info = int8_embeddings(module)
        subject.rewrites[key] = (module, {**facts, **emb_info})
    return subject.rewrites[key]


def _staged_session(stage: Path, fmt: str, quant_info: dict, target: str):
    """The staged model file loaded by its own runtime (before it has a manifest)."""
    from edgeclip.runtimes import load as load_session

    staged = Artifact(stage, {"format": fmt, "file": {"name": MODEL_FILES[fmt]}, "quantization": quant_info, "target": target})
    return load_session(staged, threads=torch.get_num_threads(), check=False)


def write_artifact(subject: ExportSubject, recipe: ExportRecipe, fmt: str, out_dir: Path) -> Artifact:
    """Produce, verify and atomically publish ``out_dir/<name>/``; raises FidelityError if it misses its bar."""
    name = artifact_name(subject, recipe, fmt)
    final = Path(out_dir) / name
    t0 = time.perf_counter()
    with staged_dir(final) as stage:
        produced, emb_info = subject, {}
        if recipe.quant == "int8":   # model-level rewrites every format's int8 pass starts from
            subject.reference_outputs()   # the bar stays the fp32 model
            module, emb_info = int8_model(subject, recipe)
            produced = replace(subject, module=module)
        if recipe.quant == "int8" and recipe.max_drop is not None:
            produce = partial(PRODUCERS[fmt], produced, stage=stage)
            quant_info, recipe = accuracy_controlled(produced, subject.module, recipe, fmt, name, produce,
                                                     partial(_staged_session, stage, fmt, target=recipe.target))
        else:
            quant_info = PRODUCERS[fmt](produced, recipe, stage)
        quant_info = {**quant_info, **emb_info}
        if recipe.scheme == "static":  # one key for every format: where the calibration images came from
            quant_info["calibration_set"] = subject.calib_desc
        model_file = stage / MODEL_FILES[fmt]
        session = _staged_session(stage, fmt, quant_info, recipe.target)
        outputs = run_batched(session, subject.verify_inputs)
        fid = compare(subject.reference_outputs(), outputs, subject.verify_desc, subject.classification,
                      device=getattr(session, "device", "cpu"))
        threshold = bar_for(recipe.quant, recipe.scheme, recipe.min_cosine, recipe.min_agreement)
        failures = threshold.failures(fid, subject.random_weights)
        if failures:
            ref = "the compressed eager fp32 model" if subject.compression else "eager fp32"
            fix = ("keep the layers int8 hurts most float with --max-drop PT, or use --quant none"
                   if recipe.quant == "int8" and recipe.max_drop is None else "use a milder quantization (e.g. --quant none)")
            raise FidelityError(f"{name} not written: {'; '.join(failures)} vs {ref} on {fid.inputs}; {fix} or check the model")
        out_shape = ["batch", *outputs.shape[1:]]
        manifest = Manifest(
            name=name, format=fmt, task=subject.task, target=recipe.target,
            file=FileEntry(model_file.name, model_file.stat().st_size, sha256_file(model_file)),
            inputs=[TensorSpec(subject.input_name, ["batch", *subject.verify_inputs.shape[1:]], str(subject.verify_inputs.dtype))],
            outputs=[TensorSpec(subject.output_name, out_shape, "float32")],
            opset=OPSET if fmt == "onnx" else None, preprocessing=subject.preprocess.to_dict() if subject.preprocess else None,
            labels=subject.classes, tokenizer=subject.tokenizer_info, quantization=quant_info, source=subject.source,
            random_weights=subject.random_weights, compression=subject.compression, recipe=recipe.to_dict(),
            fidelity=fid.to_dict(),
            fidelity_threshold=threshold.to_dict(fid, subject.random_weights),
            versions=library_versions(), export_seconds=round(time.perf_counter() - t0, 2),
            created=time.strftime("%Y-%m-%dT%H:%M:%S%z")).to_dict()
        write_manifest(stage, manifest)
    return Artifact(final, manifest)
