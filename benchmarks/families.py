"""Per-family export report: for each model, its family, parameters, and per artifact the export seconds,
XNNPACK's delegated share (.pte) and the int8 file's cosine vs the fp32 model on the verification images.

Reads the out folders ``reproduce_families.sh`` writes (``edgeclip export --format all`` per model, plain and
compressed) and the error lines of the routes that were refused; writes Markdown.  Random-weight models
(``--pretrained none``, the offline case) prove that every route runs and stays faithful, not accuracy.

    python -m edgeclip.benchmarks.families /tmp/edgeclip-families > benchmarks/results/families.md
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def _params(spec: str) -> tuple[str, float, float]:
    """(family, vision params in M, total params in M) of the model as ``--pretrained none`` builds it."""
    from edgeclip.exporter.compress.structure import tower_params
    from edgeclip.models.factory import load_model
    from edgeclip.models.families import find_family

    from edgeclip.errors import EdgeclipError

    try:
        model = load_model(spec, "none").model
    except EdgeclipError:      # e.g. a tokenizer extra not installed: the run's own error line says so
        return "—", float("nan"), float("nan")
    fam = find_family(model)
    p = tower_params(model) if fam else {"vision": sum(x.numel() for x in model.parameters()), "total": 0}
    return (fam.name if fam else "(none)"), p["vision"] / 1e6, p["total"] / 1e6


def rows(work: Path) -> list[dict]:
    out = []
    for run in sorted(work.glob("*.json")):
        tag = run.stem
        spec = (work / f"{tag}.model").read_text().strip() if (work / f"{tag}.model").is_file() else tag
        err = (work / f"{tag}.err").read_text() if (work / f"{tag}.err").is_file() else ""
        errors = [line for line in err.splitlines() if line.startswith(("Error:", "RuntimeError", "edgeclip"))]
        for man in sorted((work / f"out_{tag}").glob("*/manifest.json")):
            m = json.loads(man.read_text())
            q = m.get("quantization") or {}
            comp = m.get("compression") or {}
            out.append({"run": tag, "model": spec, "artifact": m["name"], "format": m["format"],
                        "seconds": m.get("export_seconds"), "cosine": m["fidelity"]["mean_cosine"],
                        "delegated": q.get("delegated_fraction"), "patches": len((m.get("source") or {}).get("export_patches") or []),
                        "vision_after": (comp.get("params_after") or {}).get("vision")})
        if errors:
            out.append({"run": tag, "model": spec, "artifact": "—", "format": "refused/failed", "error": errors[-1][:160]})
    return out


def markdown(work: Path) -> str:
    import os

    from .report import cpu_flags, cpu_name

    lines = [f"Export on {cpu_name()} ({', '.join(cpu_flags())}), {os.cpu_count()} cores; `--pretrained none` (random "
             "weights: every route runs and stays faithful, accuracy is not measured); cosine vs the fp32 eager model "
             "on 256 Fashion-MNIST test images. Export s: wall time of that artifact's export (produce + verify), "
             "indicative only: at times other work shared the machine.", "",
             "| run | family | vision / total params M | artifact | export s | XNNPACK share | cosine vs fp32 | note |",
             "|---|---|---|---|---|---|---|---|"]
    cache: dict[str, tuple] = {}
    for r in rows(work):
        if r["model"] not in cache:
            cache[r["model"]] = _params(r["model"])
        fam, vis, tot = cache[r["model"]]
        params = "—" if vis != vis else f"{vis:.2f} / {tot:.2f}"   # nan: the model could not be built here
        if "error" in r:
            lines.append(f"| {r['run']} | {fam} | {params} | — | — | — | — | {r['error']} |")
            continue
        share = f"{100 * r['delegated']:.1f} %" if r["delegated"] is not None else "—"
        note = []
        if r["patches"]:
            note.append("export patch (manifest source.export_patches)")
        if r["vision_after"]:
            note.append(f"vision {r['vision_after'] / 1e6:.2f} M after compression")
        lines.append(f"| {r['run']} | {fam} | {params} | {r['artifact']} | {r['seconds']} | {share} | "
                     f"{r['cosine']:.5f} | {'; '.join(note)} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.stdout.write(markdown(Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/edgeclip-families")))
