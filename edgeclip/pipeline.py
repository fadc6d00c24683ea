"""The public Python API: ``export``, ``evaluate``, ``bench``.  The CLI is a thin layer over these.

Each accepts a model spec string (see ``edgeclip.models.factory``) or the user's own
``torch.nn.Module`` with its preprocessing and labels, so a custom ViT with a custom head goes
through exactly the same export -> verify -> measure path as a hub model.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any, Sequence

import torch

from edgeclip.errors import EdgeclipError
from edgeclip.exporter.atomic import check_out_dir
from edgeclip.exporter.export import write_artifact
from edgeclip.exporter.quantize.mixed import check_float_layers
from edgeclip.exporter.recipe import ExportRecipe
from edgeclip.manifest import Artifact, collect_artifacts, open_artifact
from edgeclip.models.datasets import load_dataset
from edgeclip.models.factory import RANDOM_WEIGHTS_NOTE
from edgeclip.models.preprocess import Preprocess
from edgeclip.preparation import (Prepared, attach_calibration, calibration_images, torch_threads, check_label_match,
                                  check_labels, compression_images, gate_compression, export_subject, prepare,
                                  preprocessed_images, progress_bar, read_labels, rebuild_baseline, run_all)

__all__ = ["export", "evaluate", "verify", "bench", "sweep", "search", "prepare", "Prepared", "read_labels", "check_labels"]


def export(model: str | torch.nn.Module | None = None, example_input: torch.Tensor | None = None,
           recipe: ExportRecipe | None = None, *, preprocess: Preprocess | None = None,
           labels: Sequence[str] | None = None, progress: bool = False, model_kwargs: dict | None = None,
           **overrides: Any) -> list[Artifact]:
    """Export ``model`` per ``recipe`` (fields can be overridden as keywords); returns the verified artifacts."""
    recipe = replace(recipe or ExportRecipe(), **overrides)
    if isinstance(model, str):
        recipe = replace(recipe, model=model)
    if recipe.formats and tuple(recipe.formats) == ("auto",):   # measure the CPU routes here, keep the fastest
        from functools import partial

        from edgeclip.fastest import export_fastest

        one = partial(export, model, example_input, preprocess=preprocess, labels=labels, model_kwargs=model_kwargs)
        return [export_fastest(one, recipe, progress=progress)]
    recipe = recipe.validated().check_machine()   # a route this machine cannot compile: refused before any work
    check_out_dir(Path(recipe.out))  # an unusable --out is refused before minutes of work, not after
    with torch_threads(recipe.threads):
        return _export(model, example_input, recipe, preprocess, labels, progress, model_kwargs)


def _export(model, example_input, recipe: ExportRecipe, preprocess, labels, progress: bool, model_kwargs) -> list[Artifact]:
    data = load_dataset(recipe.data, "test") if recipe.data else None
    calib, holdout = calibration_images(recipe.task, recipe)
    prep = prepare(model if isinstance(model, torch.nn.Module) else recipe.model, task=recipe.task, pretrained=recipe.pretrained,
                   data=data, labels=labels, preprocess=preprocess, templates=recipe.templates, model_kwargs=model_kwargs,
                   compress=recipe.compress, calib=compression_images(recipe), calib_size=recipe.calib_size,
                   progress=progress)
    if isinstance(model, torch.nn.Module):
        recipe = replace(recipe, model=prep.source["model"])
    subject = export_subject(prep, data, recipe.verify_size, example_input, progress)
    if recipe.float_layers:   # a name that keeps nothing float is refused once, before calibration and every format
        check_float_layers(subject.module, recipe.float_layers)
    if prep.compression is not None:   # refused here, before any file, when compression cost too much
        subject.compression = gate_compression(prep, subject, data, recipe)
        prep.stages = None   # the intermediate models are only needed to name a refused pass
    if recipe.scheme == "static" or (recipe.needs_calibration and (calib is not None or prep.task == "text-encoder")):
        attach_calibration(subject, prep, recipe, calib, data, progress, holdout)
    artifacts = []
    with progress_bar(progress, len(recipe.formats), "export") as bar:
        for fmt in recipe.formats:
            artifacts.append(write_artifact(subject, recipe, fmt, Path(recipe.out)))
            if bar:
                bar.update(1)
    return artifacts


# ------------------------------------------------------------------------------------------ sweep

def sweep(model: str = "edgeclip-fmnist", *, pretrained: str | None = None, data: str = "fashion-mnist",
          calib_data: str | None = None, calib_size: int = 256, series: Sequence[str] | None = None,
          eval_size: int | None = 2000, out: str | Path = "sweep", timing=None, templates: Sequence[str] | None = None,
          progress: bool = False, workers: int | None = None, ray_address: str | None = None) -> dict:
    """The compression sensitivity study (benchmarks/sweep.py): writes sweep.json and two PNGs into ``out``.
    ``workers`` / ``ray_address``: run the points as Ray tasks (benchmarks/executor.py), as ``search`` does."""
    from contextlib import nullcontext

    from edgeclip.benchmarks.sweep import SERIES, SweepJob, plan, run_sweep, sweep_context, write_report
    from edgeclip.benchmarks.timing import TimingConfig

    series = tuple(series or SERIES)
    for s in series:
        if s not in SERIES:
            raise EdgeclipError(f"unknown sweep series {s!r}; use one of {', '.join(SERIES)}")
    if eval_size is not None and eval_size < 1:
        raise EdgeclipError(f"--eval-size must be positive (got {eval_size}); omit it to use the whole test split")
    out = check_out_dir(Path(out))   # created when the report is written: a failed sweep leaves nothing
    job = SweepJob(model, pretrained, data, calib_data, calib_size, eval_size, tuple(templates) if templates else None,
                   aware=any("aware" in s for s in series))
    ctx = sweep_context(job, progress)
    total = sum(len(pts) for pts in plan(ctx.loaded.model, series)[0].values())
    distributed = workers is not None or ray_address is not None
    if distributed:
        from edgeclip.benchmarks.executor import RayExecutor
    with (RayExecutor(ray_address, workers) if distributed else nullcontext()) as ex, \
            progress_bar(progress, total, "sweep") as bar:
        report = run_sweep(job, series, timing or TimingConfig(warmup=5, rounds=10, reps_per_round=5),
                           bar.update if bar else None, ex)
    report["files"] = [str(p) for p in write_report(report, out)]
    return report


# ------------------------------------------------------------------------------------------ search

def search(model: str = "edgeclip-fmnist", *, progress: bool = False, **settings: Any) -> dict:
    """The fastest recipe within ``max_drop`` top-1 points (edgeclip/search): every setting of
    ``SearchConfig`` as a keyword; writes search.json, search.md, search_pareto.png, best.toml and best/ into ``out``."""
    from edgeclip.search import SearchConfig, run_search

    return run_search(SearchConfig(model=model, **settings), progress=progress)


# ------------------------------------------------------------------------------------------ evaluate

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
        check_label_match(artifact.manifest["labels"], ds, artifact.name)
        session = load_session(artifact, threads)
        pre = Preprocess.from_dict(artifact.manifest["preprocessing"])
        what, random_weights = artifact.name, artifact.manifest.get("random_weights", False)
    else:
        prep = prepare(model, pretrained=pretrained, data=ds, labels=labels, preprocess=preprocess, templates=templates)
        check_label_match(prep.classes, ds, "the model")
        session, pre, what, random_weights = TorchEagerSession(prep.module, threads), prep.preprocess, prep.source["model"], prep.random_weights
    from edgeclip.benchmarks.accuracy import accuracy_metrics

    x = preprocessed_images(ds, pre, {}, progress)
    logits = run_all(session, x, progress, f"evaluate {what}")
    # figures a person reads: percentages to 2 decimals (88.99, not 88.99000000000001); bench.json keeps full precision
    metrics = {k: round(v, 2) if isinstance(v, float) else v for k, v in accuracy_metrics(logits, ds.labels).items()}
    out = {"model": str(what), "runtime": session.name, "dataset": f"{ds.name} {ds.split} ({ds.source})", "threads": threads,
           **metrics}
    if random_weights:
        out["note"] = RANDOM_WEIGHTS_NOTE
    return out


# ------------------------------------------------------------------------------------------ verify

def verify(artifact: str | Path | Artifact, *, data: str | None = None, verify_size: int | None = None,
           threads: int | None = None, progress: bool = False, min_cosine: float | None = None,
           min_agreement: float | None = None) -> dict:
    """Re-check an artifact on demand: its file against the manifest's sha256 (raises on a mismatch), then
    its outputs against the fp32 eager model rebuilt from the manifest, on real inputs, against the bar
    edgeclip's own rule for the recorded recipe (a manifest may only tighten it; one edited to loosen it is refused
    as tampered).  Returns the measurement; ``passed`` is False when the bar is missed."""
    from edgeclip.exporter.fidelity import compare, trusted_bar
    from edgeclip.runtimes import load as load_session, run_batched

    a = artifact if isinstance(artifact, Artifact) else open_artifact(artifact)
    a.verify_integrity()
    m = a.manifest
    result = {"artifact": str(a.dir), "format": a.format, "integrity": "ok", "sha256": m["file"]["sha256"],
              "recorded_fidelity": m.get("fidelity"), "threshold": m.get("fidelity_threshold")}
    r = m.get("recipe") or {}
    spec = data or r.get("data")
    ds = load_dataset(spec, "test") if spec else None
    prep = rebuild_baseline(a, ds, compressed=True)
    if prep is None:
        result.update(passed=True, fidelity=None, note="integrity only: the artifact came from a user module, which edgeclip "
                                                       "cannot rebuild; re-run edgeclip.export(module, ...) to re-measure fidelity")
        return result
    if m.get("task") == "classifier" and list(prep.classes) != list(m.get("labels") or []):
        raise EdgeclipError(f"the rebuilt model's classes differ from {a.name}'s labels; verify with the dataset it was exported "
                            f"for (--data {r.get('data')})")
    subject = export_subject(prep, ds, verify_size or r.get("verify_size") or 256, None, progress)
    session = load_session(a, threads or torch.get_num_threads())
    outputs = run_batched(session, subject.verify_inputs)
    reference = subject.reference_outputs()
    if outputs.shape != reference.shape:
        result.update(passed=False, fidelity=None, failures=[f"outputs have shape {list(outputs.shape)} but the model's are "
                                                             f"{list(reference.shape)}: this file is another model"])
        return result
    fid = compare(reference, outputs, subject.verify_desc, subject.classification, device=getattr(session, "device", "cpu"))
    bar, notes = trusted_bar(m, prep.random_weights, min_cosine, min_agreement)
    failures = bar.failures(fid, prep.random_weights)
    result.update(fidelity=fid.to_dict(), passed=not failures, failures=failures,
                  threshold={**bar.to_dict(fid, prep.random_weights),
                             "from": "edgeclip's rule for the recorded recipe, tightened by the manifest"},
                  notes=notes)
    return result


# ------------------------------------------------------------------------------------------ bench

def bench(artifacts: str | Path | Sequence[str | Path | Artifact] = "out", *, data: str = "fashion-mnist",
          target: str = "cpu", threads: int | Sequence[int] | None = None, limit: int | None = None, timing=None,
          report_dir: str | Path | None = None, baseline: bool = True, peers: bool = False, progress: bool = False,
          compile_variant: bool = False, timeout_s: float = 600.0, max_drop: float = 1.0, device: str | None = None) -> dict:
    """Measure artifacts (and the fp32 eager model they came from) on one target; returns the report dict.

    ``threads``: one count or a sweep (e.g. ``[1, 2, 4]``; default: all cores, and 1/2/4 for ``mobile``).
    ``peers`` adds the routes a user would take without edgeclip (benchmarks/peers.py), measured in the same run.
    ``timeout_s`` bounds every step of every artifact (a hung runtime becomes an error row).
    ``device``: for ``target="arm64"``, ``ssh://user@host[:port]`` runs the files on that board instead of emulated.
    """
    from edgeclip.benchmarks.targets import BenchOptions, check_options, get_target, run_target
    from edgeclip.benchmarks.timing import TimingConfig

    tgt = get_target(target)
    threads_list = tgt.default_threads() if threads is None else [threads] if isinstance(threads, int) else list(threads)
    if not threads_list or min(threads_list) < 1:
        raise EdgeclipError(f"--threads must be at least 1 (got {threads_list})")
    opts = BenchOptions(threads=threads_list, timing=timing or TimingConfig(throughput_batch=tgt.throughput_batch),
                        baseline=baseline, peers=peers, compile_variant=compile_variant, timeout_s=timeout_s,
                        max_drop=max_drop, progress=progress, device=device)
    check_options(tgt, opts)
    return run_target(tgt, collect_artifacts(artifacts), load_dataset(data, "test", limit), opts, report_dir)
