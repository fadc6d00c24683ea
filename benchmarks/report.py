"""Benchmark results as versioned JSON and a Markdown table a human can paste into a PR."""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path

from edgeclip.exporter.manifest import library_versions

SCHEMA = "edgeclip.bench/1"

COLUMNS = [  # (key, header, format)
    ("artifact", "artifact", "{}"),
    ("runtime", "runtime", "{}"),
    ("quant", "quant", "{}"),
    ("file_mb", "size MB", "{:.2f}"),
    ("load_s", "load s", "{:.2f}"),
    ("latency_ms_median", "b1 median ms", "{:.2f}"),
    ("latency_ms_p90", "b1 p90 ms", "{:.2f}"),
    ("speedup", "speed-up vs eager", "{:.2f}x"),
    ("throughput_img_s", "img/s", "{:.0f}"),
    ("top1", "top-1 %", "{:.2f}"),
    ("top5", "top-5 %", "{:.2f}"),
    ("agreement", "agree %", "{:.2f}"),
]


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment(threads: int) -> dict:
    return {"cpu": cpu_name(), "cores": os.cpu_count(), "threads": threads, "platform": platform.platform(),
            "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "default (active)"), "ort_spinning": "off",
            "versions": library_versions()}


def markdown(report: dict) -> str:
    head = "| " + " | ".join(h for _, h, _ in COLUMNS) + " |"
    sep = "|" + "|".join("---" for _ in COLUMNS) + "|"
    lines = [head, sep]
    for row in report["rows"]:
        cells = []
        for key, _, fmt in COLUMNS:
            v = row.get(key)
            cells.append("—" if v is None else fmt.format(v))
        if row.get("error"):
            cells[-1] = f"error: {row['error']}"
        elif row.get("skipped"):
            cells[-1] = f"skipped: {row['skipped']}"
        lines.append("| " + " | ".join(cells) + " |")
    env = report["environment"]
    where = f"{env['threads']} thread(s), {env['cpu']} ({env['cores']} cores)"
    if report.get("gpu"):
        g = report["gpu"]
        where = f"{g['gpu']} (CUDA {g['cuda']}), inputs resident on the GPU, each call synchronised; host {env['cpu']}"
    notes = [f"target {report['target']}, {where}; "
             f"batch-1 latency over {report['timing']['rounds']} interleaved rounds x {report['timing']['reps_per_round']} calls "
             f"after {report['timing']['warmup']} warm-up calls; throughput at batch {report['timing']['throughput_batch']}; "
             f"accuracy on {report['dataset']}; speed-up = eager median / artifact median, same run."]
    if report.get("skipped_cpu_artifacts"):
        notes.append(f"Not run on CUDA (built for CPU/mobile): {', '.join(report['skipped_cpu_artifacts'])}.")
    if report.get("random_weights"):
        notes.append("RANDOM WEIGHTS: accuracy columns prove plumbing only; timings are real.")
    return "\n".join(lines) + "\n\n" + "\n".join(notes) + "\n"


def write_report(report: dict, folder: Path) -> tuple[Path, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    j, m = folder / "bench.json", folder / "bench.md"
    tmp_j, tmp_m = j.with_suffix(".json.tmp"), m.with_suffix(".md.tmp")
    tmp_j.write_text(json.dumps(report, indent=2) + "\n")
    tmp_m.write_text(markdown(report))
    os.replace(tmp_j, j)
    os.replace(tmp_m, m)
    return j, m
