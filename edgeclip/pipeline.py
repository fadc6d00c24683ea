"""The public Python API: ``export``, ``evaluate``, ``bench``.  The CLI is a thin layer over these.

Each accepts a model spec string (see ``edgeclip.models.factory``) or the user's own
``torch.nn.Module`` with its preprocessing and labels, so a custom ViT with a custom head goes
through exactly the same export -> verify -> measure path as a hub model.
"""

from __future__ import annotations

import copy
import json
import os
import platform
from contextlib import nullcontext
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from edgeclip.errors import EdgeclipError
from edgeclip.exporter.atomic import check_out_dir
from edgeclip.exporter.compress import Calibration, CompressRecipe, compress as run_passes
from edgeclip.exporter.export import ExportSubject, write_artifact
from edgeclip.exporter.manifest import Artifact, collect_artifacts, open_artifact
from edgeclip.exporter.recipe import ExportRecipe
from edgeclip.models.datasets import LabeledImages, load_dataset
from edgeclip.models.factory import RANDOM_WEIGHTS_NOTE, LoadedModel, load_model
from edgeclip.models.families import patch_for_export
from edgeclip.models.preprocess import Preprocess


def _bar(progress: bool, total: int, desc: str):
    if not progress:
        return nullcontext(None)
    from tqdm.auto import tqdm

    from edgeclip.native_output import terminal

    return tqdm(total=total, desc=desc, unit="it", leave=False, dynamic_ncols=True, file=terminal())


def read_labels(path: str | Path) -> list[str]:
    """Class names from a text file (one per line) or a JSON list; refuses empty and duplicated lists."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise EdgeclipError(f"labels file {p} does not exist; pass a text file with one class name per line")
    text = p.read_text().strip()
    labels = json.loads(text) if text.startswith("[") else [line.strip() for line in text.splitlines() if line.strip()]
    return check_labels(labels, str(p))


def check_labels(labels: Sequence[str], where: str = "labels") -> list[str]:
    labels = [str(x) for x in labels]
    if not labels:
        raise EdgeclipError(f"{where} is empty; give one class name per output of the model")
    dup = sorted({x for x in labels if labels.count(x) > 1})
    if dup:
        raise EdgeclipError(f"{where} repeats class names ({', '.join(dup[:3])}); each class must appear once")
    return labels


@dataclass
class Prepared:
    """A module ready to export or run, with the facts that travel with it."""

    module: torch.nn.Module
    task: str
    preprocess: Preprocess | None
    classes: list[str]
    source: dict
    random_weights: bool
    tokenizer: Any = None
    tokenizer_info: dict | None = None
    templates: list[str] | None = None
    prompt_names: list[str] | None = None
    compression: dict | None = None           # the compression report, when passes ran
    uncompressed: torch.nn.Module | None = None   # the same wrapper around the uncompressed model, to measure the cost


def prepare(model: str | torch.nn.Module, *, task: str = "classifier", pretrained: str | None = None,
            data: LabeledImages | None = None, labels: Sequence[str] | None = None,
            preprocess: Preprocess | None = None, templates: Sequence[str] | None = None,
            model_kwargs: dict | None = None, compress: CompressRecipe | None = None,
            calib: LabeledImages | None = None, calib_size: int = 256, progress: bool = False) -> Prepared:
    """Load (or accept) a model, compress it if ``compress`` asks to, and wrap it for ``task``: classifier,
    image-encoder or text-encoder.  ``calib`` feeds the data-aware passes (a train split, never ``data``)."""
    compress = compress if compress is not None and compress.active else None
    if isinstance(model, torch.nn.Module):
        pre = preprocess or getattr(model, "preprocess", None)
        if task != "text-encoder" and not isinstance(pre, Preprocess):
            raise EdgeclipError("a custom module needs its preprocessing: pass preprocess=Preprocess(size=..., mean=..., std=...)")
        classes = list(labels) if labels is not None else list(getattr(model, "classes", None) or (data.classes if data else []))
        if task == "classifier":
            check_labels(classes, "labels")
        module, report, original = model.eval(), None, None
        if compress is not None:
            module, report = _compress_module(model.eval(), compress, _calibration(compress, calib, pre, None, None, progress,
                                                                                   calib_size), _flop_inputs(pre, None))
            original = model.eval()
        return Prepared(module, task, pre, classes, {"model": f"user module {type(model).__name__}", "pretrained": None},
                        bool(getattr(model, "random_weights", False)), compression=report, uncompressed=original)
    loaded: LoadedModel = load_model(model, pretrained, **(model_kwargs or {}))
    templates = list(templates) if templates else None
    prompt_names = (data.prompt_names if labels is None and data is not None else None)
    classes = list(labels) if labels is not None else (data.classes if data else None)
    if task == "classifier" and classes:
        check_labels(classes, "labels")
    report, original = None, None
    if compress is not None:
        if task == "text-encoder" and compress.towers_touched() - {"text"}:
            raise EdgeclipError("this compression changes the vision tower, which a text-encoder export does not contain; "
                                "use --svd-tower text / --prune-blocks text:... / --prune-tower text")
        calibration = _calibration(compress, calib, loaded.preprocess, loaded, (classes, prompt_names, templates), progress,
                                   calib_size)
        original = loaded.model
        compressed, report = run_passes(loaded.model, compress, calibration, _flop_inputs(loaded.preprocess, loaded))
        loaded = replace(loaded, model=compressed)
    if task == "classifier":
        module = loaded.classifier(classes, prompt_names, templates)
        classes = module.classes
    elif task == "image-encoder":
        module, classes = loaded.image_encoder(), []
    else:
        module, classes = loaded.text_encoder(), []
    uncompressed = None
    if original is not None:
        base = replace(loaded, model=original)
        uncompressed = (base.classifier(classes, prompt_names, templates) if task == "classifier" else
                        base.image_encoder() if task == "image-encoder" else base.text_encoder())
    return Prepared(module, task, loaded.preprocess if task != "text-encoder" else None, list(classes), loaded.source,
                    loaded.random_weights, loaded.tokenizer, loaded.tokenizer_info,
                    templates or loaded.templates, (data.prompt_names if data else None) or loaded.prompt_names,
                    compression=report, uncompressed=uncompressed)


def _compress_module(model: torch.nn.Module, compress: CompressRecipe, calibration, flop_inputs):
    """Compress a user's module through the family of the backbone it contains (itself, or e.g. a timm ViT
    as ``self.backbone`` under a custom head): the backbone is compressed and put back into a copy of the
    module, so the head is untouched.  A module without a known backbone gets the error naming the families."""
    from edgeclip.models.families import family_of, find_backbone

    found = find_backbone(model)
    if found is None:
        family_of(model)   # raises: which families the passes know
    path, fam = found
    if not path:
        return run_passes(model, compress, calibration, flop_inputs)
    compressed, report = run_passes(model.get_submodule(path), compress, calibration, flop_inputs)
    out = copy.deepcopy(model)
    parent, _, attr = path.rpartition(".")
    setattr(out.get_submodule(parent) if parent else out, attr, compressed)
    report["backbone"] = {"path": path, "family": fam.name}
    return out.eval(), report


def _flop_inputs(pre: Preprocess | None, loaded: LoadedModel | None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One image-shaped input and one caption: FLOPs do not depend on the values."""
    size = pre.size if pre is not None else 224
    caption = loaded.tokenizer(["a photo of a thing."]) if loaded is not None and loaded.tokenizer is not None else None
    return torch.zeros(1, 3, size, size), caption


def _calibration(c: CompressRecipe, calib: LabeledImages | None, pre: Preprocess | None, loaded: LoadedModel | None,
                 zero_shot: tuple | None, progress: bool, score_size: int):
    """The ``Calibration`` the data-aware passes need (None when no pass looks at data)."""
    if not c.needs_calibration:
        return None
    if calib is None:
        raise EdgeclipError("this compression looks at data (activation scores, --svd-aware, auto block choice or healing); "
                            "pass --calib-data SPEC (a train split or folder), or --data so its train split is used")
    return _build_calibration(calib, pre, loaded, zero_shot, progress, score_size)


def _build_calibration(calib: LabeledImages, pre: Preprocess | None, loaded: LoadedModel | None, zero_shot: tuple | None,
                       progress: bool, score_size: int) -> Calibration:
    """Preprocessed calibration images (``score_size`` of them for scores and statistics, all for healing),
    real captions and the zero-shot head builder for a CLIP."""
    from edgeclip.models.wrappers import DEFAULT_TEMPLATES, zero_shot_head

    with _bar(progress, len(calib), "preprocess calibration images") as bar:
        images = calib.tensors(pre, bar.update if bar else None)
    captions, head = None, None
    if loaded is not None and loaded.tokenizer is not None:
        classes, prompt_names, templates = zero_shot
        names = prompt_names or classes or loaded.prompt_names or loaded.classes
        temps = templates or loaded.templates or DEFAULT_TEMPLATES
        if names:
            captions = loaded.tokenizer([t.format(c=n) for n in names for t in temps])
            head = lambda clip: zero_shot_head(clip, loaded.tokenizer, names, temps).weight.detach()  # noqa: E731
    score = images
    if len(images) > score_size:   # scores and statistics use calib_size of them; healing trains on all
        score = images[np.sort(np.random.default_rng(0).choice(len(images), score_size, replace=False))]
    return Calibration(score, captions, head, f"{calib.name} {calib.split} ({len(score)} images)", train_images=images)


def _captions(prep: Prepared, data: LabeledImages | None) -> list[str]:
    from edgeclip.models.wrappers import DEFAULT_TEMPLATES

    names = prep.prompt_names or (data.prompt_names or data.classes if data else ["cat", "dog", "car", "tree"])
    return [t.format(c=n) for n in names for t in (prep.templates or DEFAULT_TEMPLATES)]


def _subject(prep: Prepared, data: LabeledImages | None, verify_size: int, example_input: torch.Tensor | None,
             progress: bool) -> ExportSubject:
    if prep.task == "text-encoder":
        if prep.tokenizer is None:
            raise EdgeclipError("text export of a custom module needs a tokenizer; export an open_clip model by name")
        caps = _captions(prep, data)[:verify_size]
        inputs, desc = prep.tokenizer(caps).numpy().astype(np.int64), f"{len(caps)} real captions (class names x templates)"
        in_name, out_name = "input_ids", "text_embeddings"
    else:
        if data is not None:
            sub = data.take(verify_size)
            with _bar(progress, len(sub), "preprocess verification images") as bar:
                inputs = sub.tensors(prep.preprocess, bar.update if bar else None).numpy()
            desc = f"{data.name} {data.split}[:{len(sub)}]"
        elif example_input is not None:
            inputs, desc = example_input.detach().float().cpu().numpy(), "the caller's example input only (no labelled images given)"
        else:
            raise EdgeclipError("no images to verify the artifact on; pass data='fashion-mnist' / --data SPEC or an example input")
        in_name, out_name = "pixel_values", "logits" if prep.task == "classifier" else "image_embeddings"
    subject = ExportSubject(prep.module, prep.task, prep.classes, prep.preprocess.to_dict() if prep.preprocess else None,
                            prep.source, prep.random_weights, in_name, out_name, inputs, desc, prep.tokenizer_info)
    ref = subject.reference_outputs()
    patched, notes = patch_for_export(prep.module)
    if notes:   # the file ships the patched form; the fidelity bar stays the model as loaded (``ref`` above)
        subject = replace(subject, module=patched, source={**prep.source, "export_patches": notes})
    if prep.task == "classifier" and ref.shape[-1] != len(prep.classes):
        raise EdgeclipError(f"the model has {ref.shape[-1]} outputs but {len(prep.classes)} labels were given; "
                            "pass one label per output")
    return subject


def _calibration_images(prep_task: str, recipe: ExportRecipe) -> LabeledImages | None:
    """The static-int8 calibration set, opened before any model is loaded so a bad one fails at once:
    a train split or separate folder, never the images accuracy is measured on."""
    from edgeclip.models.datasets import load_calibration

    if recipe.scheme != "static" or prep_task == "text-encoder":
        return None
    spec = recipe.calib_data or recipe.data
    if spec is None:
        raise EdgeclipError("static int8 needs calibration images; pass --calib-data SPEC (a train split or a folder)")
    return load_calibration(spec, recipe.calib_size, eval_spec=recipe.data)


def _compression_images(recipe: ExportRecipe) -> LabeledImages | None:
    """Images for the data-aware compression passes (same source rules as static int8 calibration);
    healing gets ``heal_images`` of them, the other passes ``calib_size``."""
    from edgeclip.models.datasets import load_calibration

    c = recipe.compress
    if c is None or not c.needs_calibration:
        return None
    spec = recipe.calib_data or recipe.data
    if spec is None:
        raise EdgeclipError("data-aware compression needs calibration images; pass --calib-data SPEC (a train split or a folder)")
    size = max(recipe.calib_size, c.heal_images if c.heal() else 0)
    return load_calibration(spec, size, eval_spec=recipe.data)


def _attach_calibration(subject: ExportSubject, prep: Prepared, recipe: ExportRecipe, calib: LabeledImages | None,
                        data: LabeledImages | None, progress: bool) -> None:
    if prep.task == "text-encoder":
        caps = _captions(prep, data)
        subject.calib_inputs = prep.tokenizer(caps[:recipe.calib_size]).numpy().astype(np.int64)
        subject.calib_desc = f"{len(subject.calib_inputs)} captions (class names x templates)"
        return
    with _bar(progress, len(calib), "preprocess calibration images") as bar:
        subject.calib_inputs = calib.tensors(prep.preprocess, bar.update if bar else None).numpy()
    subject.calib_desc = f"{calib.name} {calib.split} ({len(calib)} images, stratified, seed 0)"


def _compression_cost(prep: Prepared, subject: ExportSubject, data: LabeledImages | None) -> dict:
    """How far the compressed eager model is from the uncompressed one on the verification inputs
    (and their top-1 accuracy when those are labelled images): the artifact is verified against the
    compressed model, so this is where the cost of compression itself is recorded."""
    from edgeclip.exporter.fidelity import compare

    with torch.inference_mode():
        x = torch.from_numpy(subject.verify_inputs)
        before = torch.cat([prep.uncompressed(x[i:i + 256]) for i in range(0, len(x), 256)]).float().numpy()
    after = subject.reference_outputs()
    out = compare(before, after, subject.verify_desc, subject.classification).to_dict()
    if subject.classification and data is not None and subject.task != "text-encoder":
        labels = np.asarray(data.take(len(x)).labels)
        out["top1_uncompressed"] = round(100 * float((before.argmax(-1) == labels).mean()), 2)
        out["top1_compressed"] = round(100 * float((after.argmax(-1) == labels).mean()), 2)
    return out


def export(model: str | torch.nn.Module | None = None, example_input: torch.Tensor | None = None,
           recipe: ExportRecipe | None = None, *, preprocess: Preprocess | None = None,
           labels: Sequence[str] | None = None, progress: bool = False, model_kwargs: dict | None = None,
           **overrides: Any) -> list[Artifact]:
    """Export ``model`` per ``recipe`` (fields can be overridden as keywords); returns the verified artifacts."""
    recipe = replace(recipe or ExportRecipe(), **overrides)
    if isinstance(model, str):
        recipe = replace(recipe, model=model)
    recipe = recipe.validated()
    check_out_dir(Path(recipe.out))  # an unusable --out is refused before minutes of work, not after
    data = load_dataset(recipe.data, "test") if recipe.data else None
    calib = _calibration_images(recipe.task, recipe)
    prep = prepare(model if isinstance(model, torch.nn.Module) else recipe.model, task=recipe.task, pretrained=recipe.pretrained,
                   data=data, labels=labels, preprocess=preprocess, templates=recipe.templates, model_kwargs=model_kwargs,
                   compress=recipe.compress, calib=_compression_images(recipe), calib_size=recipe.calib_size,
                   progress=progress)
    if isinstance(model, torch.nn.Module):
        recipe = replace(recipe, model=prep.source["model"])
    subject = _subject(prep, data, recipe.verify_size, example_input, progress)
    if prep.compression is not None:
        subject.compression = {**prep.compression, "vs_uncompressed": _compression_cost(prep, subject, data)}
    if recipe.scheme == "static":
        _attach_calibration(subject, prep, recipe, calib, data, progress)
    artifacts = []
    with _bar(progress, len(recipe.formats), "export") as bar:
        for fmt in recipe.formats:
            artifacts.append(write_artifact(subject, recipe, fmt, Path(recipe.out)))
            if bar:
                bar.update(1)
    return artifacts


# ------------------------------------------------------------------------------------------ sweep

def sweep(model: str = "edgeclip-fmnist", *, pretrained: str | None = None, data: str = "fashion-mnist",
          calib_data: str | None = None, calib_size: int = 256, series: Sequence[str] | None = None,
          eval_size: int | None = 2000, out: str | Path = "sweep", timing=None, templates: Sequence[str] | None = None,
          progress: bool = False) -> dict:
    """The compression sensitivity study (benchmarks/sweep.py): writes sweep.json and two PNGs into ``out``."""
    from edgeclip.benchmarks.sweep import SERIES, plan, run_sweep, write_report
    from edgeclip.benchmarks.timing import TimingConfig
    from edgeclip.models.datasets import load_calibration

    series = tuple(series or SERIES)
    for s in series:
        if s not in SERIES:
            raise EdgeclipError(f"unknown sweep series {s!r}; use one of {', '.join(SERIES)}")
    if eval_size is not None and eval_size < 1:
        raise EdgeclipError(f"--eval-size must be positive (got {eval_size}); omit it to use the whole test split")
    out = check_out_dir(Path(out))   # created when the report is written: a failed sweep leaves nothing
    ds = load_dataset(data, "test")
    calib = load_calibration(calib_data or data, calib_size, eval_spec=data) if any("aware" in s for s in series) else None
    loaded = load_model(model, pretrained)
    if loaded.random_weights:
        raise EdgeclipError("a sensitivity sweep of random weights measures nothing; pass trained weights (--pretrained)")
    sub = ds.take(eval_size)
    with _bar(progress, len(sub), f"preprocess {ds.name}") as bar:
        images = sub.tensors(loaded.preprocess, bar.update if bar else None)
    classes, prompt_names = ds.classes, ds.prompt_names
    temps = list(templates) if templates else None
    calibration = None
    if calib is not None:
        calibration = _build_calibration(calib, loaded.preprocess, loaded, (classes, prompt_names, temps), progress, calib_size)
    total = sum(len(pts) for pts in plan(loaded.model, series)[0].values())
    with _bar(progress, total, "sweep") as bar:
        report = run_sweep(loaded, sub, series, images, np.asarray(sub.labels), classes, prompt_names, temps,
                           timing or TimingConfig(warmup=5, rounds=10, reps_per_round=5),
                           bar.update if bar else None, calibration)
    report["files"] = [str(p) for p in write_report(report, out)]
    return report


# ------------------------------------------------------------------------------------------ evaluate

def _images(data: LabeledImages, pre: Preprocess, cache: dict, progress: bool) -> np.ndarray:
    key = (data.spec(), data.split, len(data), json.dumps(pre.to_dict(), sort_keys=True))
    if key not in cache:
        with _bar(progress, len(data), f"preprocess {data.name}") as bar:
            cache[key] = data.tensors(pre, bar.update if bar else None).numpy()
    return cache[key]


def _run_all(session, inputs: np.ndarray, progress: bool, desc: str) -> np.ndarray:
    from edgeclip.runtimes import run_batched

    with _bar(progress, len(inputs), desc) as bar:
        return run_batched(session, inputs, 256, bar.update if bar else None)


def _check_label_match(classes: Sequence[str], data: LabeledImages, what: str) -> None:
    if len(classes) != len(data.classes):
        raise EdgeclipError(f"{what} has {len(classes)} classes but {data.name} has {len(data.classes)}; "
                            "evaluate on the dataset it was exported for")


def evaluate(model: str | torch.nn.Module | Artifact = "edgeclip-fmnist", data: str = "fashion-mnist", *,
             pretrained: str | None = None, limit: int | None = None, threads: int | None = None,
             preprocess: Preprocess | None = None, labels: Sequence[str] | None = None,
             templates: Sequence[str] | None = None, progress: bool = False) -> dict:
    """Top-1 / top-5 of a model (spec or module, eager fp32) or of an exported artifact on a labelled set."""
    from edgeclip.runtimes import TorchEagerSession, load as load_session

    threads = threads or torch.get_num_threads()
    ds = load_dataset(data, "test", limit)
    artifact = model if isinstance(model, Artifact) else None
    if isinstance(model, (str, Path)) and Path(str(model)).expanduser().joinpath("manifest.json").is_file():
        artifact = open_artifact(model)
    if artifact is not None:
        if artifact.manifest.get("task") != "classifier":
            raise EdgeclipError(f"{artifact.name} is a {artifact.manifest.get('task')} artifact; accuracy needs a classifier")
        _check_label_match(artifact.manifest["labels"], ds, artifact.name)
        session = load_session(artifact, threads)
        pre = Preprocess.from_dict(artifact.manifest["preprocessing"])
        what, random_weights = artifact.name, artifact.manifest.get("random_weights", False)
    else:
        prep = prepare(model, pretrained=pretrained, data=ds, labels=labels, preprocess=preprocess, templates=templates)
        _check_label_match(prep.classes, ds, "the model")
        session, pre, what, random_weights = TorchEagerSession(prep.module, threads), prep.preprocess, prep.source["model"], prep.random_weights
    from edgeclip.benchmarks.accuracy import accuracy_metrics

    x = _images(ds, pre, {}, progress)
    logits = _run_all(session, x, progress, f"evaluate {what}")
    # figures a person reads: percentages to 2 decimals (88.99, not 88.99000000000001); bench.json keeps full precision
    metrics = {k: round(v, 2) if isinstance(v, float) else v for k, v in accuracy_metrics(logits, ds.labels).items()}
    out = {"model": str(what), "runtime": session.name, "dataset": f"{ds.name} {ds.split} ({ds.source})", "threads": threads,
           **metrics}
    if random_weights:
        out["note"] = RANDOM_WEIGHTS_NOTE
    return out


# ------------------------------------------------------------------------------------------ verify

def verify(artifact: str | Path | Artifact, *, data: str | None = None, verify_size: int | None = None,
           threads: int | None = None, progress: bool = False) -> dict:
    """Re-check an artifact on demand: its file against the manifest's sha256 (raises on a mismatch), then
    its outputs against the fp32 eager model rebuilt from the manifest, on real inputs, against the bar
    recorded at export.  Returns the measurement; ``passed`` is False when the bar is missed."""
    from edgeclip.exporter.fidelity import Threshold, compare
    from edgeclip.runtimes import load as load_session, run_batched

    a = artifact if isinstance(artifact, Artifact) else open_artifact(artifact)
    a.verify_integrity()
    m = a.manifest
    result = {"artifact": str(a.dir), "format": a.format, "integrity": "ok", "sha256": m["file"]["sha256"],
              "recorded_fidelity": m.get("fidelity"), "threshold": m.get("fidelity_threshold")}
    r = m.get("recipe") or {}
    spec = data or r.get("data")
    ds = load_dataset(spec, "test") if spec else None
    prep = _baseline(a, ds, compressed=True)
    if prep is None:
        result.update(passed=True, fidelity=None, note="integrity only: the artifact came from a user module, which edgeclip "
                                                       "cannot rebuild; re-run edgeclip.export(module, ...) to re-measure fidelity")
        return result
    if m.get("task") == "classifier" and list(prep.classes) != list(m.get("labels") or []):
        raise EdgeclipError(f"the rebuilt model's classes differ from {a.name}'s labels; verify with the dataset it was exported "
                            f"for (--data {r.get('data')})")
    subject = _subject(prep, ds, verify_size or r.get("verify_size") or 256, None, progress)
    session = load_session(a, threads or torch.get_num_threads())
    outputs = run_batched(session, subject.verify_inputs)
    reference = subject.reference_outputs()
    if outputs.shape != reference.shape:
        result.update(passed=False, fidelity=None, failures=[f"outputs have shape {list(outputs.shape)} but the model's are "
                                                             f"{list(reference.shape)}: this file is another model"])
        return result
    fid = compare(reference, outputs, subject.verify_desc, subject.classification, device=getattr(session, "device", "cpu"))
    th = m.get("fidelity_threshold") or {}
    failures = Threshold(th.get("min_cosine", 0.0), th.get("min_top1_agreement", 0.0)).failures(fid, m.get("random_weights", False))
    result.update(fidelity=fid.to_dict(), passed=not failures, failures=failures)
    return result


# ------------------------------------------------------------------------------------------ bench

def _baseline_key(a: Artifact) -> str:
    r = a.manifest.get("recipe", {})
    return json.dumps([a.manifest.get("source"), a.manifest.get("task"), a.manifest.get("labels"), r.get("data"),
                       r.get("templates")], sort_keys=True, default=str)


def _baseline(a: Artifact, data: LabeledImages, compressed: bool = False) -> Prepared | None:
    """The fp32 eager model an artifact came from, rebuilt from its manifest (None for user modules).
    ``compressed``: with the artifact's compression passes re-run (what ``verify`` compares against);
    otherwise the uncompressed model (what ``bench`` reports accuracy and agreement against)."""
    src = a.manifest.get("source") or {}
    if str(src.get("model", "")).startswith("user module"):
        return None
    r = a.manifest.get("recipe", {})
    export_data = load_dataset(r["data"], "test") if r.get("data") else data
    compress, calib = None, None
    if compressed and r.get("compress"):
        recipe = ExportRecipe.from_dict(r).validated()
        compress, calib = recipe.compress, _compression_images(recipe)
    return prepare(src["model"], task=a.manifest["task"], pretrained=src.get("pretrained"), data=export_data,
                   templates=r.get("templates"), model_kwargs=src.get("kwargs") or None, compress=compress, calib=calib,
                   calib_size=r.get("calib_size") or 256)


def bench(artifacts: str | Path | Sequence[str | Path | Artifact] = "out", *, data: str = "fashion-mnist",
          target: str = "cpu", threads: int | Sequence[int] | None = None, limit: int | None = None, timing=None,
          report_dir: str | Path | None = None, baseline: bool = True, peers: bool = False, progress: bool = False,
          compile_variant: bool = False, timeout_s: float = 600.0, max_drop: float = 1.0) -> dict:
    """Measure artifacts (and the fp32 eager model they came from) on one target; returns the report dict.

    ``threads``: one count or a sweep (e.g. ``[1, 2, 4]``; default: all cores, and 1/2/4 for ``mobile``).
    ``peers`` adds the routes a user would take without edgeclip (benchmarks/peers.py), measured in the same run.
    ``timeout_s`` bounds every step of every artifact (a hung runtime becomes an error row).
    """
    from edgeclip.benchmarks.timing import TimingConfig

    if target not in ("cpu", "mobile", "cuda"):
        raise EdgeclipError(f"unknown --target {target!r}; use cpu, mobile or cuda")
    if peers and target != "cpu":
        raise EdgeclipError("--peers are CPU routes; drop --peers or use --target cpu")
    timing = timing or TimingConfig(throughput_batch=256 if target == "cuda" else 64)
    if threads is None:
        threads_list = [1, 2, 4] if target == "mobile" else [os.cpu_count() or 1]
    else:
        threads_list = [threads] if isinstance(threads, int) else list(threads)
    if not threads_list or min(threads_list) < 1:
        raise EdgeclipError(f"--threads must be at least 1 (got {threads_list})")
    arts = collect_artifacts(artifacts)
    ds = load_dataset(data, "test", limit)
    if target == "cuda":
        return _bench_cuda(arts, ds, timing=timing, threads=max(threads_list), baseline=baseline,
                           compile_variant=compile_variant, report_dir=report_dir, progress=progress, max_drop=max_drop)
    from edgeclip.benchmarks.harness import bench_processes, recommendation

    extra: dict = {}
    if target == "mobile":
        mobile = [a for a in arts if _is_mobile(a)]
        extra["mobile_profile"] = ("the backends phones run (ExecuTorch XNNPACK .pte, lite-interpreter qnnpack .ptl) at "
                                   f"batch 1 with {', '.join(map(str, threads_list))} thread(s) -- run on this "
                                   f"{platform.machine()} host ({os.cpu_count()} cores), not on a phone: ARM engines "
                                   "(qnnpack) measured on x86 say nothing about a phone's speed")
        extra["skipped_non_mobile_artifacts"] = [a.name for a in arts if a not in mobile]
        if not mobile:
            raise EdgeclipError("no mobile artifacts (.pte with XNNPACK, .ptl with qnnpack) to measure; export with "
                                "--format pte or --backend qnnpack first")
        arts = mobile
        timing = TimingConfig(**{**timing.__dict__, "throughput_batch": min(timing.throughput_batch, 8)})
    rows = bench_processes(arts, ds, threads_list=threads_list, timing=timing, baseline=baseline, peers=peers,
                           timeout_s=timeout_s, progress=progress)
    extra["threads_sweep"] = threads_list
    extra["recommendation"] = recommendation(rows, max_drop)
    return _finish_report(rows, target, ds, max(threads_list), timing, report_dir, **extra)


def _is_mobile(a: Artifact) -> bool:
    q = a.manifest.get("quantization") or {}
    backend = q.get("backend") or q.get("engine") or (a.manifest.get("recipe") or {}).get("backend")
    if a.format == "pte":
        return q.get("backend", "xnnpack") == "xnnpack"
    return a.format == "ptl" and (backend in (None, "qnnpack") and q.get("dtype") in (None, "fp32", "int8"))


def _finish_report(rows: list[dict], target: str, ds: LabeledImages, threads: int, timing, report_dir, **extra) -> dict:
    from edgeclip.benchmarks.report import SCHEMA, environment, write_report

    report = {"schema": SCHEMA, "target": target, "dataset": f"{ds.name} {ds.split}, {len(ds)} images ({ds.source})",
              "environment": environment(threads), "timing": timing.__dict__, "rows": rows,
              "random_weights": any(r.get("random_weights") for r in rows), **extra}
    if report["random_weights"]:
        report["note"] = RANDOM_WEIGHTS_NOTE
    if report_dir is not None:
        report["files"] = [str(p) for p in write_report(report, Path(report_dir))]
    return report


def _bench_cuda(arts, ds, *, timing, threads, baseline, compile_variant, report_dir, progress, max_drop) -> dict:
    """The GPU report; without a CUDA device it says so and measures nothing (not an error)."""
    from edgeclip.benchmarks.cuda import bench_cuda, cuda_status

    reason = cuda_status()
    if reason:
        return _finish_report([], "cuda", ds, threads, timing, None, skipped=reason)
    from edgeclip.benchmarks.harness import recommendation

    rows, extra = bench_cuda(arts, ds, timing=timing, baseline=baseline, compile_variant=compile_variant, progress=progress)
    if not rows:
        raise EdgeclipError("no CUDA artifacts to measure; export with --quant fp16 (or bf16) --target cuda first")
    extra["recommendation"] = recommendation(rows, max_drop)
    return _finish_report(rows, "cuda", ds, threads, timing, report_dir, **extra)
