"""The units of work a search hands to its executor: plain functions of picklable arguments, returning dicts.

Each runs anywhere a worker runs (this machine or another node of a Ray cluster): it reads the model and the
labelled images itself (the same ``--model`` / ``--data`` specs must resolve on every node) and passes artifacts
as bytes (a tar of the artifact folder), never as paths, so a file exported on one node is evaluated or timed on
another.  Nothing here knows about Ray.
"""

from __future__ import annotations

import io
import os
import socket
import tarfile
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class Job:
    """What every task of one search shares (the search's settings that change what a task measures)."""

    model: str
    pretrained: str | None
    data: str
    calib_data: str | None
    calib_size: int
    heal_images: int
    estimate_size: int
    eval_size: int | None
    target: str
    device: str | None = None
    threads: int | None = None        # timing threads [all cores of the timing node]
    rounds: int = 10
    reps: int = 10

    @property
    def calib_spec(self) -> str:
        return self.calib_data or self.data

    @property
    def compression_pool(self) -> int:
        """How many calibration images compression may look at (the rest of the draw is the estimate's)."""
        return max(self.calib_size, self.heal_images)


def _where() -> dict:
    node = None
    try:
        import ray

        if ray.is_initialized():
            node = ray.get_runtime_context().get_node_id()
    except ImportError:
        pass
    return {"node": node, "host": socket.gethostname(), "pid": os.getpid()}


def _threads() -> int:
    import torch

    n = int(os.environ.get("OMP_NUM_THREADS") or 1)   # Ray sets it to the task's CPUs
    torch.set_num_threads(max(1, n))
    return torch.get_num_threads()


def _estimate_images(job: Job):
    from edgeclip.models.datasets import load_calibration_holdout

    _, held = load_calibration_holdout(job.calib_spec, job.compression_pool, job.estimate_size, eval_spec=job.data)
    return held


def _predict(module_or_artifact, images: np.ndarray, threads: int) -> np.ndarray:
    from edgeclip.runtimes import load as load_session, run_batched

    return run_batched(load_session(module_or_artifact, threads), images)


def _prepared(job: Job, compress_fields: dict | None):
    from edgeclip.exporter.compress import CompressRecipe
    from edgeclip.exporter.recipe import ExportRecipe
    from edgeclip.models.datasets import load_dataset
    from edgeclip.preparation import compression_images, prepare

    compress = CompressRecipe.from_dict({**compress_fields, "heal_images": job.heal_images}) if compress_fields else None
    recipe = ExportRecipe(model=job.model, pretrained=job.pretrained, data=job.data, calib_data=job.calib_data,
                          calib_size=job.calib_size, compress=compress)
    ds = load_dataset(job.data, "test")
    return prepare(job.model, pretrained=job.pretrained, data=ds, compress=compress, calib=compression_images(recipe),
                   calib_size=job.calib_size), ds


def reference(job: Job) -> dict:
    """The uncompressed fp32 model: its structure (for the knob levels) and its predictions on the estimate images,
    against which every estimate is scored."""
    from edgeclip.benchmarks.accuracy import accuracy_metrics
    from edgeclip.errors import EdgeclipError
    from edgeclip.exporter.compress.structure import heads_of, image_tokens, towers

    t0, threads = time.perf_counter(), _threads()
    prep, _ = _prepared(job, None)
    if prep.random_weights:
        raise EdgeclipError("a search of random weights measures nothing; pass trained weights (--pretrained)")
    held = _estimate_images(job)
    if len(held) < 50:
        raise EdgeclipError(f"only {len(held)} calibration images are left for the estimates after the {job.compression_pool} "
                            "compression and healing use; pass a larger --calib-data, or a smaller --estimate-size")
    logits = _predict(prep.module, held.tensors(prep.preprocess).numpy(), threads)
    model = prep.model
    vision = towers(model).get("vision")
    n_vision = len(vision.blocks) if vision is not None else 0
    try:
        patches = image_tokens(model)[0] if n_vision else 0
    except EdgeclipError:      # a family without a token layout (FastViT): the token knobs do not apply
        patches = 0
    heads = heads_of(vision.blocks[0].attn)[0] if n_vision and hasattr(vision.blocks[0], "attn") else 1
    return {"n_vision": n_vision, "patches": patches, "heads": heads,
            "estimate": {"top1": accuracy_metrics(logits, held.labels)["top1"], "images": len(held),
                         "pred": logits.argmax(1).tolist()},
            "estimate_split": f"{held.name} {held.split} ({len(held)} held-out calibration images)",
            "seconds": round(time.perf_counter() - t0, 2), "threads": threads, **_where()}


def reference_eval(job: Job) -> dict:
    """The uncompressed fp32 eager model on the evaluation split: the top-1 every artifact is held against."""
    from edgeclip.benchmarks.accuracy import accuracy_metrics

    t0, threads = time.perf_counter(), _threads()
    prep, ds = _prepared(job, None)
    ev = ds.take(job.eval_size)
    logits = _predict(prep.module, ev.tensors(prep.preprocess).numpy(), threads)
    m = accuracy_metrics(logits, ev.labels)
    return {"top1": m["top1"], "top5": m["top5"], "images": len(ev), "pred": logits.argmax(1).tolist(),
            "split": f"{ev.name} {ev.split}[:{len(ev)}]", "seconds": round(time.perf_counter() - t0, 2),
            "threads": threads, **_where()}


def estimate(job: Job, compress_fields: dict, base_pred: list[int]) -> dict:
    """A compression recipe's cheap estimate: the eager compressed fp32 model on the held-out calibration images."""
    from edgeclip.errors import EdgeclipError

    t0, threads = time.perf_counter(), _threads()
    try:
        prep, _ = _prepared(job, compress_fields)
    except EdgeclipError as e:        # the recipe does not apply to this model (e.g. too few blocks): a result
        return {"error": str(e), "seconds": round(time.perf_counter() - t0, 2), **_where()}
    held = _estimate_images(job)
    logits = _predict(prep.module, held.tensors(prep.preprocess).numpy(), threads)
    pred, base, labels = logits.argmax(1), np.asarray(base_pred), np.asarray(held.labels)
    rep = prep.compression or {}
    fb, fa = (rep.get("flops_before") or {}).get("vision"), (rep.get("flops_after") or {}).get("vision")
    return {"top1": float(100 * (pred == labels).mean()), "base_top1": float(100 * (base == labels).mean()),
            "disagree": float((pred != base).mean()), "images": len(labels),
            "flops": (fa / fb) if fa and fb else 1.0, "vision_flops": fa,
            "params_removed_pct": rep.get("params_removed_pct"),
            "seconds": round(time.perf_counter() - t0, 2), "threads": threads, **_where()}


def pack(folder: Path) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        tar.add(folder, arcname=folder.name)
    return buf.getvalue()


def unpack(data: bytes, into: Path) -> Path:
    """The artifact folder a ``pack`` made, extracted into ``into``: plain files and folders only, nothing outside it
    (checked here: Debian 12's Python 3.11.2 predates tarfile's extraction filters)."""
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        members = tar.getmembers()
        for m in members:
            p = Path(m.name)
            if p.is_absolute() or ".." in p.parts or not (m.isfile() or m.isdir()):
                raise ValueError(f"artifact archive member {m.name!r} is not a plain file inside the artifact folder")
        names = {m.name.split("/", 1)[0] for m in members}
        tar.extractall(into, members=members)
    (name,) = names
    return into / name


def export(job: Job, recipe: dict) -> dict:
    """One candidate as a real, fidelity-gated artifact (``edgeclip.export`` with the recipe); a gate's refusal is a
    result (``refused``), not a failure to retry."""
    from edgeclip.errors import EdgeclipError
    from edgeclip.exporter.recipe import ExportRecipe
    from edgeclip.pipeline import export as run_export

    t0, threads = time.perf_counter(), _threads()
    with tempfile.TemporaryDirectory(prefix="edgeclip-search-") as tmp:
        try:
            (art,) = run_export(recipe=ExportRecipe.from_dict({**recipe, "out": tmp}))
        except EdgeclipError as e:
            return {"refused": str(e), "seconds": round(time.perf_counter() - t0, 2), **_where()}
        return {"name": art.dir.name, "manifest": art.manifest, "tar": pack(art.dir),
                "seconds": round(time.perf_counter() - t0, 2), "threads": threads, **_where()}


def accuracy(job: Job, tar: bytes, ref_pred: list[int]) -> dict:
    """An artifact's top-1 / top-5 on the evaluation split and its top-1 agreement with the fp32 eager model."""
    from edgeclip.benchmarks.accuracy import accuracy_metrics
    from edgeclip.manifest import open_artifact
    from edgeclip.models.datasets import load_dataset
    from edgeclip.models.preprocess import Preprocess

    t0, threads = time.perf_counter(), _threads()
    with tempfile.TemporaryDirectory(prefix="edgeclip-search-") as tmp:
        art = open_artifact(unpack(tar, Path(tmp)))
        ev = load_dataset(job.data, "test").take(job.eval_size)
        logits = _predict(art, ev.tensors(Preprocess.from_dict(art.manifest["preprocessing"])).numpy(), threads)
    m = accuracy_metrics(logits, ev.labels)
    pred = logits.argmax(1)
    return {"top1": m["top1"], "top5": m["top5"], "images": m["images"],
            "agreement": float(100 * (pred == np.asarray(ref_pred)).mean()),
            "seconds": round(time.perf_counter() - t0, 2), "threads": threads, **_where()}


def latency(job: Job, tars: dict[str, bytes]) -> dict:
    """Batch-1 latency of every given artifact, timed interleaved in one bench run on this node (the bench engine
    of ``--target``, with the fp32 eager baseline row), so their ratios are same-run ratios."""
    from edgeclip.benchmarks.timing import TimingConfig
    from edgeclip.pipeline import bench
    from edgeclip.runtimes.cpu_features import usable_cores

    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="edgeclip-search-") as tmp:
        arts = Path(tmp, "artifacts")
        arts.mkdir()
        for data in tars.values():
            unpack(data, arts)
        # one thread count, so one row per file: --threads, else every core of this node (arm64: the board's default)
        threads = job.threads or (None if job.target == "arm64" else usable_cores())
        report = bench(arts, data=job.data, target=job.target, threads=threads, limit=16,
                       timing=TimingConfig(rounds=job.rounds, reps_per_round=job.reps, throughput_batch=8),
                       report_dir=Path(tmp, "report"), device=job.device)
    if report.get("skipped"):
        from edgeclip.errors import EdgeclipError

        raise EdgeclipError(f"--target {job.target} cannot time here: {report['skipped']}")
    env = report.get("environment", {})
    rows = {}
    for r in report["rows"]:
        key = "fp32 eager" if r.get("baseline") else r.get("artifact")
        rows[key] = {k: r.get(k) for k in ("latency_ms_median", "latency_ms_p90", "file_mb", "threads", "error")}
    return {"rows": rows, "cpu": env.get("cpu"), "cpu_flags": env.get("cpu_flags"),
            "seconds": round(time.perf_counter() - t0, 2), **_where()}
