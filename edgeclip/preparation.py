"""A model made ready to export, evaluate or measure, with the facts that travel with it.

Loading (or accepting) a model, compressing it, wrapping it for its task, the verification subject and
calibration sets an export needs, and rebuilding the fp32 model an artifact came from.  Both the public
API (``edgeclip.pipeline``) and the bench engine (``edgeclip.benchmarks``) use these; this module imports
neither, so the benchmarks sit below the API instead of importing it back.
"""

from __future__ import annotations

import copy
import json
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from edgeclip.errors import EdgeclipError
from edgeclip.exporter.compress import Calibration, CompressRecipe, compress as run_passes
from edgeclip.exporter.export import ExportSubject
from edgeclip.exporter.recipe import ExportRecipe
from edgeclip.manifest import Artifact
from edgeclip.models.datasets import LabeledImages, load_dataset
from edgeclip.models.factory import LoadedModel, load_model
from edgeclip.models.facts import FactsView, ModelFacts
from edgeclip.models.families import patch_for_export
from edgeclip.models.preprocess import Preprocess
from edgeclip.runtimes.base import run_batched
from edgeclip.runtimes.torch_eager import TorchEagerSession


@contextmanager
def torch_threads(n: int | None):
    """torch's thread count set to ``n`` inside (unchanged when None), restored after."""
    ambient = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(ambient)


def progress_bar(progress: bool, total: int, desc: str):
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
class Prepared(FactsView):
    """A module ready to export or run: its manifest facts, what builds captions for it (a CLIP's tokenizer,
    templates and prompt names) and, when it was compressed, what measures the cost."""

    module: torch.nn.Module
    facts: ModelFacts
    tokenizer: Any = None
    templates: list[str] | None = None
    prompt_names: list[str] | None = None
    compression: dict | None = None           # the compression report, when passes ran
    uncompressed: torch.nn.Module | None = None   # the same wrapper around the uncompressed model, to measure the cost
    # (pass name, builds the task module as it stood after that pass), cumulative; only when two or more passes ran,
    # so the compression-cost gate can name the pass that cost the most (with one pass, it is that one)
    stages: list[tuple[str, Callable[[], torch.nn.Module]]] | None = None
    # the whole (compressed) model the task module was cut from, both towers: what a caller reads structure from
    # without loading the checkpoint a second time (None for a user's own module, which is its own model)
    model: torch.nn.Module | None = None


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
        module, report, original, stages = model.eval(), None, None, None
        if compress is not None:
            raw: list = []
            module, report, put_back = _compress_module(model.eval(), compress, _calibration(compress, calib, pre, None, None,
                                                                                              progress, calib_size),
                                                        _flop_inputs(pre, None), raw)
            original = model.eval()
            stages = _stage_builders(raw, put_back)
        facts = ModelFacts(task, classes if task == "classifier" else [],
                           {"model": f"user module {type(model).__name__}", "pretrained": None},
                           bool(getattr(model, "random_weights", False)), pre if task != "text-encoder" else None)
        return Prepared(module, facts, compression=report, uncompressed=original, stages=stages)
    # the image encoder needs no tokenizer: one that cannot be loaded here is noted in the manifest's source
    loaded: LoadedModel = load_model(model, pretrained, tokenizer_optional=task == "image-encoder", **(model_kwargs or {}))
    templates = list(templates) if templates else None
    prompt_names = (data.prompt_names if labels is None and data is not None else None)
    classes = list(labels) if labels is not None else (data.classes if data else None)
    if task == "classifier" and classes:
        check_labels(classes, "labels")
    report, original, raw = None, None, []
    if compress is not None:
        if task == "text-encoder" and compress.towers_touched() - {"text"}:
            raise EdgeclipError("this compression changes the vision tower, which a text-encoder export does not contain; "
                                "use --svd-tower text / --prune-blocks text:... / --prune-tower text")
        calibration = _calibration(compress, calib, loaded.preprocess, loaded, (classes, prompt_names, templates), progress,
                                   calib_size)
        original = loaded.model
        compressed, report = run_passes(loaded.model, compress, calibration, _flop_inputs(loaded.preprocess, loaded),
                                        stages=raw)
        loaded = replace(loaded, model=compressed)

    def wrap(lm: LoadedModel) -> torch.nn.Module:
        return (lm.classifier(classes, prompt_names, templates) if task == "classifier" else
                lm.image_encoder() if task == "image-encoder" else lm.text_encoder())

    module = wrap(loaded)
    classes = module.classes if task == "classifier" else []
    stages = _stage_builders(raw, lambda m: wrap(replace(loaded, model=m))) if original is not None else None
    uncompressed = None
    if original is not None:
        uncompressed = wrap(replace(loaded, model=original))
    return Prepared(module, loaded.facts(task, classes), loaded.tokenizer, templates or loaded.templates, (data.prompt_names if data else None) or loaded.prompt_names,
                    compression=report, uncompressed=uncompressed, stages=stages, model=loaded.model)


def _stage_builders(raw: list[tuple[str, torch.nn.Module]], wrap: Callable[[torch.nn.Module], torch.nn.Module]):
    """Lazy task modules for each intermediate model (None for a single pass: nothing to attribute)."""
    if len(raw) < 2:
        return None
    return [(name, (lambda m=m: wrap(m))) for name, m in raw]


def _compress_module(model: torch.nn.Module, compress: CompressRecipe, calibration, flop_inputs, stages: list):
    """Compress a user's module through the family of the backbone it contains (itself, or e.g. a timm ViT
    as ``self.backbone`` under a custom head): the backbone is compressed and put back into a copy of the
    module, so the head is untouched.  A module without a known backbone gets the error naming the families.
    Returns (module, report, put_back: backbone -> whole module) and fills ``stages`` with the backbones."""
    from edgeclip.models.families import family_of, find_backbone

    found = find_backbone(model)
    if found is None:
        family_of(model)   # raises: which families the passes know
    path, fam = found
    if not path:
        return (*run_passes(model, compress, calibration, flop_inputs, stages=stages), lambda m: m)

    def put_back(backbone: torch.nn.Module) -> torch.nn.Module:
        out = copy.deepcopy(model)
        parent, _, attr = path.rpartition(".")
        setattr(out.get_submodule(parent) if parent else out, attr, backbone)
        return out.eval()

    compressed, report = run_passes(model.get_submodule(path), compress, calibration, flop_inputs, stages=stages)
    report["backbone"] = {"path": path, "family": fam.name}
    return put_back(compressed), report, put_back


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
    return build_calibration(calib, pre, loaded, zero_shot, progress, score_size)


def build_calibration(calib: LabeledImages, pre: Preprocess | None, loaded: LoadedModel | None, zero_shot: tuple | None,
                       progress: bool, score_size: int) -> Calibration:
    """Preprocessed calibration images (``score_size`` of them for scores and statistics, all for healing),
    real captions and the zero-shot head builder for a CLIP."""
    from edgeclip.models.wrappers import DEFAULT_TEMPLATES, zero_shot_head

    with progress_bar(progress, len(calib), "preprocess calibration images") as bar:
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


def caption_texts(prep: Prepared, data: LabeledImages | None) -> list[str]:
    from edgeclip.models.wrappers import DEFAULT_TEMPLATES

    names = prep.prompt_names or (data.prompt_names or data.classes if data else ["cat", "dog", "car", "tree"])
    return [t.format(c=n) for n in names for t in (prep.templates or DEFAULT_TEMPLATES)]


def export_subject(prep: Prepared, data: LabeledImages | None, verify_size: int, example_input: torch.Tensor | None,
             progress: bool) -> ExportSubject:
    if prep.task == "text-encoder":
        if prep.tokenizer is None:
            raise EdgeclipError("text export of a custom module needs a tokenizer; export an open_clip model by name")
        caps = caption_texts(prep, data)[:verify_size]
        inputs, desc = prep.tokenizer(caps).numpy().astype(np.int64), f"{len(caps)} real captions (class names x templates)"
        in_name, out_name = "input_ids", "text_embeddings"
    else:
        if data is not None:
            sub = data.take(verify_size)
            with progress_bar(progress, len(sub), "preprocess verification images") as bar:
                inputs = sub.tensors(prep.preprocess, bar.update if bar else None).numpy()
            desc = f"{data.name} {data.split}[:{len(sub)}]"
        elif example_input is not None:
            inputs, desc = example_input.detach().float().cpu().numpy(), "the caller's example input only (no labelled images given)"
        else:
            raise EdgeclipError("no images to verify the artifact on; pass data='fashion-mnist' / --data SPEC or an example input")
        in_name, out_name = "pixel_values", "logits" if prep.task == "classifier" else "image_embeddings"
    subject = ExportSubject(prep.module, prep.facts, in_name, out_name, inputs, desc)
    ref = subject.reference_outputs()
    patched, notes = patch_for_export(prep.module)
    if notes:   # the file ships the patched form; the fidelity bar stays the model as loaded (``ref`` above)
        subject = replace(subject, module=patched, facts=prep.facts.noting(export_patches=notes))
    if prep.task == "classifier" and ref.shape[-1] != len(prep.classes):
        raise EdgeclipError(f"the model has {ref.shape[-1]} outputs but {len(prep.classes)} labels were given; "
                            "pass one label per output")
    return subject


HOLDOUT_IMAGES = 500   # accuracy control's held-out calibration images: 0.2 pt per image


def calibration_images(prep_task: str, recipe: ExportRecipe) -> tuple[LabeledImages | None, LabeledImages | None]:
    """(the int8 calibration set (static ranges, SmoothQuant), the held-out images accuracy control measures
    on), opened before any model is loaded so a bad source fails at once: a train split or separate folder,
    never the images accuracy is measured on.  Dynamic int8 without a calibration source goes without
    (SmoothQuant is then skipped and the manifest says so); ``--max-drop`` cannot."""
    from edgeclip.models.datasets import load_calibration, load_calibration_holdout

    if not recipe.needs_calibration or prep_task == "text-encoder":
        return None, None
    spec = recipe.calib_data or recipe.data
    if recipe.max_drop is not None:
        if spec is None:
            raise EdgeclipError("--max-drop measures top-1 on held-out calibration images; pass --calib-data SPEC")
        calib, holdout = load_calibration_holdout(spec, recipe.calib_size, HOLDOUT_IMAGES, eval_spec=recipe.data)
        if len(holdout) < 100:
            raise EdgeclipError(f"--max-drop needs at least 100 labelled calibration images beyond the {recipe.calib_size} "
                                f"it calibrates on ({spec} has {len(calib) + len(holdout)}); lower --calib-size or pass "
                                "a larger --calib-data")
        return calib, holdout
    if recipe.scheme != "static" and recipe.calib_data is None:
        # SmoothQuant by default: measured where the data source has a calibration split, else skipped (noted)
        try:
            return (load_calibration(spec, recipe.calib_size, eval_spec=recipe.data) if spec is not None else None), None
        except EdgeclipError:
            return None, None
    if spec is None:
        raise EdgeclipError("static int8 needs calibration images; pass --calib-data SPEC (a train split or a folder)")
    return load_calibration(spec, recipe.calib_size, eval_spec=recipe.data), None


def compression_images(recipe: ExportRecipe) -> LabeledImages | None:
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


def attach_calibration(subject: ExportSubject, prep: Prepared, recipe: ExportRecipe, calib: LabeledImages | None,
                        data: LabeledImages | None, progress: bool, holdout: LabeledImages | None = None) -> None:
    if prep.task == "text-encoder":
        caps = caption_texts(prep, data)
        subject.calib_inputs = prep.tokenizer(caps[:recipe.calib_size]).numpy().astype(np.int64)
        subject.calib_desc = f"{len(subject.calib_inputs)} captions (class names x templates)"
        return
    with progress_bar(progress, len(calib), "preprocess calibration images") as bar:
        subject.calib_inputs = calib.tensors(prep.preprocess, bar.update if bar else None).numpy()
    subject.calib_desc = f"{calib.name} {calib.split} ({len(calib)} images, stratified, seed 0)"
    if holdout is not None:
        check_label_match(prep.classes, holdout, "the model")
        with progress_bar(progress, len(holdout), "preprocess held-out calibration images") as bar:
            subject.holdout_inputs = holdout.tensors(prep.preprocess, bar.update if bar else None).numpy()
        subject.holdout_labels = np.asarray(holdout.labels)
        subject.holdout_desc = f"{holdout.name} {holdout.split} ({len(holdout)} held-out images, not calibrated on)"


def compression_cost(prep: Prepared, subject: ExportSubject, data: LabeledImages | None,
                     after: np.ndarray | None = None, before: np.ndarray | None = None) -> dict:
    """How far the compressed eager model (or ``after``: the outputs of another stage of it) is from the
    uncompressed one on the verification inputs, and their top-1 accuracy when those are labelled images:
    the artifact is verified against the compressed model, so this is where compression's own cost is measured."""
    from edgeclip.exporter.fidelity import compare

    before = run_batched(TorchEagerSession(prep.uncompressed), subject.verify_inputs) if before is None else before
    after = subject.reference_outputs() if after is None else after
    out = compare(before, after, subject.verify_desc, subject.classification).to_dict()
    if subject.classification and data is not None:
        labels = np.asarray(data.take(len(subject.verify_inputs)).labels)
        out["top1_uncompressed"] = round(100 * float((before.argmax(-1) == labels).mean()), 2)
        out["top1_compressed"] = round(100 * float((after.argmax(-1) == labels).mean()), 2)
    return out


def gate_compression(prep: Prepared, subject: ExportSubject, data: LabeledImages | None, recipe: ExportRecipe) -> dict:
    """Measure compression's cost against the uncompressed model and refuse the export (FidelityError, exit 3,
    before any file is produced) when it is over the bar; returns the manifest's ``compression`` record with
    ``vs_uncompressed`` and ``gate``.  On a refusal the intermediate models are measured too, to name the pass."""
    from edgeclip.errors import FidelityError
    from edgeclip.exporter.compress import gate

    before = run_batched(TorchEagerSession(prep.uncompressed), subject.verify_inputs)
    cost = compression_cost(prep, subject, data, before=before)
    bar = gate.CostBar.for_recipe(recipe.accept_drop, recipe.max_drop)
    decision = gate.decide(cost, bar, subject.random_weights)
    record = {**prep.compression, "vs_uncompressed": cost, "gate": decision}
    if decision["passed"]:
        return record
    total = gate.cost_of(cost)
    names = [p["name"] for p in prep.compression.get("passes", [])]
    stage_costs = [(names[-1], total)] if names else []    # one pass: it is the one
    if prep.stages:
        stage_costs = [(name, gate.cost_of(compression_cost(prep, subject, data, run_batched(TorchEagerSession(build()),
                                                                                            subject.verify_inputs), before)))
                       for name, build in prep.stages]
    raise FidelityError(gate.refusal(total, bar, subject.verify_desc, gate.worst_pass(stage_costs, gate.no_cost(total)), cost))


def preprocessed_images(data: LabeledImages, pre: Preprocess, cache: dict, progress: bool) -> np.ndarray:
    key = (data.spec(), data.split, len(data), json.dumps(pre.to_dict(), sort_keys=True))
    if key not in cache:
        with progress_bar(progress, len(data), f"preprocess {data.name}") as bar:
            cache[key] = data.tensors(pre, bar.update if bar else None).numpy()
    return cache[key]


def run_all(session, inputs: np.ndarray, progress: bool, desc: str) -> np.ndarray:
    with progress_bar(progress, len(inputs), desc) as bar:
        return run_batched(session, inputs, None, bar.update if bar else None)


def check_label_match(classes: Sequence[str], data: LabeledImages, what: str) -> None:
    if len(classes) != len(data.classes):
        raise EdgeclipError(f"{what} has {len(classes)} classes but {data.name} has {len(data.classes)}; "
                            "evaluate on the dataset it was exported for")


def baseline_key(a: Artifact) -> str:
    r = a.manifest.get("recipe", {})
    return json.dumps([a.manifest.get("source"), a.manifest.get("task"), a.manifest.get("labels"), r.get("data"),
                       r.get("templates")], sort_keys=True, default=str)


def rebuild_baseline(a: Artifact, data: LabeledImages, compressed: bool = False) -> Prepared | None:
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
        compress, calib = recipe.compress, compression_images(recipe)
    return prepare(src["model"], task=a.manifest["task"], pretrained=src.get("pretrained"), data=export_data,
                   templates=r.get("templates"), model_kwargs=src.get("kwargs") or None, compress=compress, calib=calib,
                   calib_size=r.get("calib_size") or 256)
