"""``--format auto``: build the candidate CPU routes, measure them on this machine, keep the fastest that holds.

Why measure instead of rule: which route is fastest depends on the CPU (the README's figures moved by 1.3x between
two machines of the same kind: AVX-512 VNNI, AMX, the core count), on the model, and on the thread count.  So every
candidate is exported and verified as usual (its fidelity gate applies), then one interleaved bench run on this CPU
times each at batch 1 and scores it on real labelled images against the fp32 eager model; the fastest whose top-1
is within ``max_drop`` points of eager is published, with every candidate's figures and the reason for the choice in
its manifest (``selection``).  Nothing else is written to ``--out``; a candidate that fails its gate or its bench
row is listed with why.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import replace
from pathlib import Path

from edgeclip.errors import EdgeclipError
from edgeclip.exporter.recipe import ExportRecipe
from edgeclip.manifest import Artifact, open_artifact, write_manifest

# (quant, scheme, backend, formats): every CPU route whose file runs on x86/ARM CPUs through its runtime; the
# TorchScript-lite int8 engine is x86's (qnnpack is for phones, 0.46x eager here), fp32 .ptl is eager's speed.  The
# .pt2 package is tried only where this machine can build it (x86 with a C++ compiler: the route's own check)
CANDIDATES = (("none", None, None, ("onnx", "pte")),
              ("int8", "dynamic", None, ("onnx", "pte")),
              ("int8", "dynamic", "x86", ("ptl",)),
              ("int8", "dynamic", "x86", ("pt2",)))
MAX_DROP = 0.3          # top-1 points below the fp32 eager model on the bench images (the bar for speed routes)
LIMIT = 1000            # images the bench scores each candidate on


def default_timing():
    """Batch-1 latency is what decides; 10 rounds x 10 calls after warm-up, interleaved (bench's default), and a
    small throughput batch since throughput is only reported."""
    from edgeclip.benchmarks.timing import TimingConfig

    return TimingConfig(throughput_batch=8)


def candidates(recipe: ExportRecipe) -> list[ExportRecipe]:
    """The recipes to try: all of ``CANDIDATES`` this machine can build, or only int8 ones (of the recipe's scheme)
    when it asks for int8."""
    if recipe.target not in (None, "cpu"):
        raise EdgeclipError(f"--format auto measures the candidates on this machine's CPU, so it needs --target cpu (got "
                            f"{recipe.target}); for a phone, export --format pte --quant int8 and bench it on the device")
    if recipe.quant not in ("none", "int8"):
        raise EdgeclipError(f"--format auto chooses among fp32 and int8 CPU routes; drop --quant {recipe.quant} or name a --format")
    if recipe.backend is not None:
        raise EdgeclipError("--format auto chooses the backend itself; drop --backend or name a --format")
    out = []
    for quant, scheme, backend, formats in CANDIDATES:
        if recipe.quant == "int8" and quant != "int8":
            continue
        if quant == "int8" and recipe.scheme == "static":
            scheme = "static"
        cand = replace(recipe, quant=quant, scheme=scheme, backend=backend, formats=formats, target="cpu").validated()
        try:
            out.append(cand.check_machine())
        except EdgeclipError:       # e.g. no C++ compiler for .pt2: the other candidates still are
            continue
    return out


def choose(rows: list[dict], max_drop: float) -> tuple[dict, str]:
    """The fastest batch-1 row within ``max_drop`` top-1 points of the eager baseline, and why it was chosen."""
    base = next((r for r in rows if r.get("baseline")), None)
    usable = [r for r in rows if not r.get("baseline") and "error" not in r and r.get("latency_ms_median")]
    if not usable:
        errors = "; ".join(f"{r['artifact']}: {r['error']}" for r in rows if r.get("error"))
        raise EdgeclipError(f"--format auto: no candidate could be measured ({errors or 'no rows'}); export a --format by name")
    scored = base is not None and base.get("top1") is not None and not base.get("random_weights")
    if scored:
        held = [r for r in usable if r.get("top1") is not None and base["top1"] - r["top1"] <= max_drop]
        if not held:
            raise EdgeclipError(f"--format auto: every candidate lost more than {max_drop:g} top-1 points against eager fp32 "
                                "on this data; export --format onnx (fp32) by name")
    else:   # no labels to score, or random weights: each candidate's fidelity gate is the only bar
        held = usable
    best = min(held, key=lambda r: r["latency_ms_median"])
    why = f"fastest at batch 1 ({best['latency_ms_median']:.2f} ms median, {best['threads']} thread(s))"
    if scored:
        why += f" of the {len(held)} within {max_drop:g} top-1 points of eager fp32 ({base['top1']:.2f}%)"
    else:
        why += f" of the {len(held)} that passed their fidelity gates (no top-1 to compare: unlabelled data or random weights)"
    return best, why


def export_fastest(export, recipe: ExportRecipe, *, threads: int | None = None, limit: int = LIMIT,
                   max_drop: float = MAX_DROP, timing=None, progress: bool = False, **export_kwargs) -> Artifact:
    """Export every candidate into a private folder, bench them in one run, publish the chosen one into
    ``recipe.out``; ``export`` is ``edgeclip.pipeline.export`` (passed in to keep the import graph one-way)."""
    from edgeclip.exporter.atomic import check_out_dir, staged_dir
    from edgeclip.errors import FidelityError
    from edgeclip.pipeline import bench

    tries = candidates(recipe)
    out = check_out_dir(Path(recipe.out))
    work = Path(tempfile.mkdtemp(prefix="edgeclip-auto-"))
    refused: list[dict] = []
    try:
        for cand in tries:
            try:
                export(recipe=replace(cand, out=str(work)), progress=progress, **export_kwargs)
            except FidelityError as e:     # a route that misses its own bar is not a choice; the others still are
                refused.append({"quant": cand.quant, "scheme": cand.scheme, "formats": list(cand.formats), "why": str(e)})
        if not any(work.iterdir()):
            raise EdgeclipError("--format auto: no candidate passed its fidelity gate: " + "; ".join(r["why"] for r in refused))
        report = bench(work, data=recipe.data or "fashion-mnist", target="cpu", threads=threads, limit=limit,
                       timing=timing or default_timing(), progress=progress)
        best, why = choose(report["rows"], max_drop)
        chosen = open_artifact(work / best["artifact"])
        keys = ("artifact", "format", "quant", "latency_ms_median", "throughput_img_s", "top1", "agreement", "file_mb", "error")
        manifest = {**chosen.manifest, "selection": {
            "rule": f"--format auto: fastest at batch 1 within {max_drop:g} top-1 points of eager fp32",
            "why": why, "cpu": report["environment"].get("cpu"), "cpu_flags": report["environment"].get("cpu_flags"),
            "threads": best["threads"], "images": best.get("images"),
            "candidates": [{k: r.get(k) for k in keys} for r in report["rows"]], "refused": refused}}
        final = out / chosen.dir.name
        with staged_dir(final) as stage:
            shutil.copytree(chosen.dir, stage, dirs_exist_ok=True)
            write_manifest(stage, manifest)
        return Artifact(final, manifest)
    finally:
        shutil.rmtree(work, ignore_errors=True)
