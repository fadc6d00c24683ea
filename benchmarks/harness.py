"""``bench --target cpu|mobile``: every subject in its own worker process, timed interleaved, one report.

Flow: preprocess the labelled images once per preprocessing (shared with the workers as .npy files),
start one worker per subject (the fp32 eager model behind each artifact family, the peers, every
artifact), load, run the whole dataset for accuracy and peak memory, then time in rounds -- each worker
in turn, batch 1 then the throughput batch -- for each thread count of the sweep.  A worker that fails,
crashes or passes its deadline becomes an error row; the others carry on.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import numpy as np

from edgeclip.errors import EdgeclipError

from .timing import RunnerFailed, TimingConfig, time_interleaved
from .worker import Subject, Worker, WorkerFailed, close_all


# Engines built for one CPU family; a row measured on the other family says so (qnnpack on x86 runs its
# reference paths: 0.46-0.79x eager was seen here, which says nothing about a phone).
ENGINE_ARCH = {"qnnpack": "arm", "fbgemm": "x86", "x86": "x86"}


def host_arch(machine: str | None = None) -> str:
    import platform

    m = (machine or platform.machine()).lower()
    return "arm" if m.startswith(("arm", "aarch64")) else "x86" if m in ("x86_64", "amd64", "i686", "i386") else m


def foreign_engine_note(backend: str | None, machine: str | None = None) -> str | None:
    """A warning for a row whose engine targets another CPU family than this host's."""
    want = ENGINE_ARCH.get(backend or "")
    if want is None or want == host_arch(machine):
        return None
    import platform

    return f"{backend} is an {'ARM' if want == 'arm' else 'x86'} engine; measured on {machine or platform.machine()}"


def _artifact_row(a) -> dict:
    q = a.manifest.get("quantization") or {}
    quant = "fp32" if q.get("dtype") in (None, "fp32") else f"{q['dtype']} {q.get('scheme', '')}".strip()
    row = {"artifact": a.name, "format": a.format, "task": a.manifest.get("task", "classifier"), "runtime": None,
           "quant": quant, "file_mb": a.file.stat().st_size / 1e6 if a.file.is_file() else None,
           "random_weights": a.manifest.get("random_weights", False)}
    note = foreign_engine_note(q.get("backend")) if a.format == "ptl" else None
    if note:
        row["note"] = note
    return row


ENCODER_NOTE = "embeddings: no classes to score, so no accuracy; cosine vs the fp32 eager encoder instead"


def _fidelity_metrics(task: str, out: np.ndarray, labels, ref: np.ndarray | None) -> dict:
    """Accuracy and agreement for a classifier; for an encoder, cosine with its fp32 eager twin on the same inputs."""
    from edgeclip.benchmarks.accuracy import accuracy_metrics
    from edgeclip.exporter.fidelity import cosine_rows

    if task == "classifier":
        return accuracy_metrics(out, labels, ref)
    res: dict = {"inputs": int(len(out)), "accuracy_note": ENCODER_NOTE}
    if ref is not None:
        res["mean_cosine"] = float(cosine_rows(ref, out).mean())
    return res


class InputFiles:
    """The inputs each artifact is measured on, saved once per preprocessing as .npy files in ``workdir``."""

    def __init__(self, workdir: Path, ds, progress: bool = False):
        self.workdir, self.ds, self.progress = workdir, ds, progress
        self.images: dict = {}
        self.npy: dict[str, str] = {}

    def _save(self, key: str, arr: np.ndarray) -> str:
        if key not in self.npy:
            self.npy[key] = str(self.workdir / f"inputs-{len(self.npy)}.npy")
            np.save(self.npy[key], arr)
        return self.npy[key]

    def for_artifact(self, a) -> str:
        """Preprocessed images for image models; real captions (class names x templates) as token ids for a
        text encoder, tokenized by the model's own tokenizer."""
        from edgeclip.models.preprocess import Preprocess
        from edgeclip.preparation import baseline_key, caption_texts, preprocessed_images, rebuild_baseline

        if a.manifest.get("task") == "text-encoder":
            key = "text:" + baseline_key(a)
            if key not in self.npy:
                prep = rebuild_baseline(a, self.ds)
                if prep is None or prep.tokenizer is None:
                    raise EdgeclipError("the text encoder came from a user module, whose tokenizer edgeclip cannot rebuild")
                return self._save(key, prep.tokenizer(caption_texts(prep, self.ds)).numpy().astype(np.int64))
            return self.npy[key]
        arr = preprocessed_images(self.ds, Preprocess.from_dict(a.manifest["preprocessing"]), self.images, self.progress)
        return self._save(str(id(arr)), arr)


def bench_processes(arts, ds, *, threads_list: list[int], timing: TimingConfig, baseline: bool, peers: bool,
                    timeout_s: float, progress: bool) -> list[dict]:
    from edgeclip.preparation import baseline_key, check_label_match, progress_bar

    workdir = Path(tempfile.mkdtemp(prefix="edgeclip-bench-"))
    inputs_for = InputFiles(workdir, ds, progress).for_artifact

    rows: list[dict] = []
    subjects: list[Subject] = []
    ref_of: dict[str, str] = {}
    baselines: dict[str, str] = {}
    try:
        for a in arts:
            row = _artifact_row(a)
            rows.append(row)
            try:
                if row["task"] == "classifier":
                    check_label_match(a.manifest["labels"], ds, a.name)
                inputs = inputs_for(a)
            except EdgeclipError as e:
                row["error"] = str(e)
                continue
            key = baseline_key(a)
            user_module = str((a.manifest.get("source") or {}).get("model", "")).startswith("user module")
            if baseline and key not in baselines and not user_module:
                base_row = baseline_row(a, row)
                name = baselines[key] = base_row["artifact"]
                rows.insert(len(rows) - 1, base_row)
                subjects.append(Subject(name, "eager", str(a.dir), inputs, _registered_config(a)))
                if peers and row["task"] == "classifier":
                    subjects += _peer_subjects(a, ds, inputs, workdir, rows, row["random_weights"], name, ref_of)
            if key in baselines:
                ref_of[a.name] = baselines[key]
            subjects.append(Subject(a.name, "artifact", str(a.dir), inputs))
        by_name = {r["artifact"]: r for r in rows}
        workers = {s.name: Worker(s, timeout_s) for s in subjects}
        try:
            outputs = _load_and_run(workers, by_name, max(threads_list), progress, progress_bar)
            for name, out in outputs.items():
                ref = outputs.get(ref_of.get(name, "")) if not by_name[name].get("baseline") else None
                by_name[name].update(_fidelity_metrics(by_name[name].get("task", "classifier"), out, ds.labels, ref))
            return _timed_rows(workers, rows, by_name, ref_of, threads_list, timing, progress, progress_bar)
        finally:
            close_all(workers.values())
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def baseline_row(a, row: dict) -> dict:
    """The fp32 eager row of the model an artifact came from (its name is the model's and the task's)."""
    model = Path(str(a.manifest["source"]["model"])).name
    name = f"{model} fp32 eager" if row["task"] == "classifier" else f"{model} {row['task']} fp32 eager"
    return {"artifact": name, "format": "eager", "task": row["task"], "runtime": "torch-eager", "quant": "fp32",
            "file_mb": None, "random_weights": row["random_weights"], "baseline": True}


def _registered_config(a) -> dict:
    """What the caller registered at run time exists only in this process; hand it to the worker that rebuilds
    the eager model: an open_clip architecture's config (``open_clip.add_model_config``), and the module that
    registered a timm model the spec builds (``timm.models.register_model``), which the worker imports."""
    from edgeclip.models.factory import open_clip_config, timm_architecture, timm_registrar

    name = str((a.manifest.get("source") or {}).get("model", ""))
    cfg = open_clip_config(name)
    extra = {"open_clip_config": (name, cfg)} if cfg is not None else {}
    trunk = timm_architecture(name)
    registrar = timm_registrar(trunk) if trunk else None
    if registrar is not None:
        extra["timm_registrar"] = registrar
    return extra


def _peer_subjects(a, ds, inputs: str, workdir: Path, rows: list[dict], random_weights: bool, base: str,
                   ref_of: dict) -> list[Subject]:
    from edgeclip.preparation import rebuild_baseline

    from .peers import AO_EAGER, build_peer_files

    prep = rebuild_baseline(a, ds)
    files = build_peer_files(prep.module, np.load(inputs, mmap_mode="r")[:2], workdir / f"peers-{len(ref_of)}")
    subjects = []
    for name, (path, quant) in files.items():
        subjects.append(Subject(name, "onnx-file", str(path), inputs))
        rows.insert(len(rows) - 1, {"artifact": name, "format": "peer", "runtime": None, "quant": quant,
                                    "file_mb": path.stat().st_size / 1e6, "random_weights": random_weights, "peer": True})
        ref_of[name] = base
    subjects.append(Subject(AO_EAGER, "eager-ao-dynamic", str(a.dir), inputs, _registered_config(a)))
    rows.insert(len(rows) - 1, {"artifact": AO_EAGER, "format": "peer", "runtime": None, "quant": "int8 dynamic",
                                "file_mb": None, "random_weights": random_weights, "peer": True})
    ref_of[AO_EAGER] = base
    return subjects


def _load_and_run(workers: dict[str, Worker], by_name: dict, threads: int, progress: bool, bar_fn) -> dict[str, np.ndarray]:
    outputs = {}
    with bar_fn(progress, 2 * len(workers), "load + accuracy (one process each)") as bar:
        for name, w in workers.items():      # loads are sequential so load times are not contended
            try:
                by_name[name].update(w.call("load", threads=threads))
            except WorkerFailed as e:
                by_name[name]["error"] = str(e)
            if bar:
                bar.update(1)
        for name, w in workers.items():
            if "error" not in by_name[name]:
                try:
                    outputs[name] = w.call("run", threads=threads)["outputs"]
                except WorkerFailed as e:
                    by_name[name]["error"] = str(e)
            if bar:
                bar.update(1)
    return outputs


class WorkerRunner:
    """A worker process as a timing ``Runner``: the child times its own calls at ``threads``."""

    def __init__(self, worker: Worker, threads: int, throughput_batch: int):
        self.worker, self.threads, self.throughput_batch = worker, threads, throughput_batch

    def _call(self, **arg):
        try:
            return self.worker.call("time", threads=self.threads, **arg)
        except WorkerFailed as e:
            raise RunnerFailed(str(e)) from None

    def warm(self, cfg: TimingConfig) -> None:   # also the reload at this thread count, for a sweep
        self._call(batch=1, reps=0, warmup=cfg.warmup)
        self._call(batch=self.throughput_batch, reps=0, warmup=1)

    def time(self, kind: str, reps: int) -> list[float]:
        return self._call(batch=1 if kind == "latency" else self.throughput_batch, reps=reps)


def _timed_rows(workers, rows, by_name, ref_of, threads_list, timing: TimingConfig, progress, bar_fn) -> list[dict]:
    from .targets.base import attach_speedups

    out_rows: list[dict] = []
    with bar_fn(progress, timing.rounds * len(threads_list), "timing (interleaved rounds)") as bar:
        for threads in threads_list:
            runners = {n: WorkerRunner(w, threads, timing.throughput_batch) for n, w in workers.items()
                       if "error" not in by_name[n]}
            failed: dict[str, str] = {}
            timed = time_interleaved(runners, timing, bar.update if bar else None, failed)
            for n, msg in failed.items():
                by_name[n]["error"] = msg
            summaries = {n: t.summary() for n, t in timed.items()}
            these = []
            for r in rows:
                row = {**r, "threads": threads}
                n = r["artifact"]
                if n in summaries:
                    row.update(summaries[n])
                elif "error" in by_name[n]:
                    row["error"] = by_name[n]["error"]
                these.append(row)
            attach_speedups(these, summaries, ref_of)
            out_rows += these
    return out_rows


def _threads_phrase(n: int) -> str:
    return f"{n} thread" + ("" if n == 1 else "s")


def recommendation(rows: list[dict], max_drop: float = 1.0) -> str | None:
    """One line: the fastest shippable classifier artifact (at any thread count of the run) whose top-1 is within
    ``max_drop`` points of fp32 eager; accuracy is measured once per artifact, so any thread row carries it.

    It never presents a file slower than the fp32 eager model as a win (it says so), flags an engine measured
    on the wrong CPU family, and blames random weights only when the rows really are random."""
    classifiers = [r for r in rows if r.get("task", "classifier") == "classifier"]
    base = next((r for r in classifiers if r.get("baseline") and "top1" in r), None)
    failed_base = next((r for r in classifiers if r.get("baseline") and r.get("error")), None)
    cands = [r for r in classifiers if r.get("format") not in ("eager", "peer") and "error" not in r and "latency_ms_median" in r]
    if not cands:
        return None
    sweep = len({r.get("threads") for r in rows}) > 1

    def where(r):
        return f" with {_threads_phrase(r['threads'])}" if sweep else ""

    def caveats(r) -> str:
        out = ""
        if r.get("speedup") is not None and r["speedup"] < 1.0:
            out += (f"; slower than the fp32 eager model on this host ({r['speedup']:.2f}x): no artifact here beats "
                    "fp32 eager, so this saves size, not time")
        if r.get("note"):
            out += f"; {r['note']}, so its speed on the target device is unknown"
        return out

    if any(r.get("random_weights") for r in rows):
        best = min(cands, key=lambda r: r["latency_ms_median"])
        return (f"fastest artifact: {best['artifact']} ({best['latency_ms_median']:.2f} ms at batch 1{where(best)}); random "
                f"weights, so accuracy was not part of the choice{caveats(best)}")
    if base is None:
        why = f"the fp32 eager row failed ({failed_base['error']})" if failed_base else "there is no fp32 eager row"
        best = min(cands, key=lambda r: r["latency_ms_median"])
        return (f"fastest artifact: {best['artifact']} ({best['latency_ms_median']:.2f} ms at batch 1{where(best)}); accuracy "
                f"could not be compared with fp32 because {why}{caveats(best)}")
    ok = [r for r in cands if "top1" in r and r["top1"] >= base["top1"] - max_drop]
    if not ok:
        return f"no artifact is within {max_drop:g} pt of fp32 top-1 ({base['top1']:.2f} %); ship fp32 or relax the recipe"
    best = min(ok, key=lambda r: r["latency_ms_median"])
    speed = f", {best['speedup']:.2f}x eager" if best.get("speedup") else ""
    return (f"fastest artifact within {max_drop:g} pt of fp32 top-1: {best['artifact']} ({best['latency_ms_median']:.2f} ms "
            f"at batch 1{where(best)}{speed}, top-1 {best['top1']:.2f} % vs {base['top1']:.2f} %, "
            f"{best.get('file_mb') or 0:.2f} MB){caveats(best)}")


def is_mobile_artifact(a) -> bool:
    """What ``--target mobile`` measures: files of a route registered as ``mobile`` (XNNPACK .pte, qnnpack .ptl)."""
    from edgeclip.exporter.routes import route_of

    route = route_of(a.manifest)
    return route is not None and route.mobile
