"""Benchmark results as versioned JSON and a Markdown table a human can paste into a PR."""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path

from edgeclip.manifest import library_versions

from edgeclip.runtimes.cpu_features import SPEED_FLAGS, cpu_flags, usable_cores  # noqa: F401  (reports state them)

SCHEMA = "edgeclip.bench/2"   # /2: one row per artifact x threads, worker-process memory, recommendation

COLUMNS = [  # (key, header, format)
    ("artifact", "artifact", "{}"),
    ("runtime", "runtime", "{}"),
    ("machine", "arch", "{}"),
    ("kernels_summary", "kernels", "{}"),
    ("threads", "threads", "{}"),
    ("quant", "quant", "{}"),
    ("file_mb", "size MB", "{:.2f}"),
    ("load_s", "load s", "{:.2f}"),
    ("peak_rss_mb", "peak RSS MB", "{:.0f}"),
    ("gpu_peak_mb", "GPU MB", "{:.0f}"),
    ("latency_ms_median", "b1 median ms", "{:.2f}"),
    ("latency_ms_p90", "b1 p90 ms", "{:.2f}"),
    ("latency_ms_p99", "b1 p99 ms", "{:.2f}"),
    ("emulated_latency_ms_median", "emulated b1 ms (not device time)", "{:.1f}"),
    ("speedup", "speed-up vs eager", "{:.2f}x"),
    ("throughput_img_s", "img/s", "{:.0f}"),
    ("top1", "top-1 %", "{:.2f}"),
    ("top5", "top-5 %", "{:.2f}"),
    ("agreement", "agree %", "{:.2f}"),
    ("mean_cosine", "cosine vs fp32", "{:.4f}"),
]


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_label(env: dict) -> str:
    """``AMD EPYC (avx2, avx512_vnni, ...)``: the CPU as every table states it."""
    flags = env.get("cpu_flags")
    return f"{env['cpu']} ({', '.join(flags) if flags else 'no int8/bf16 extensions found'})" if flags is not None else env["cpu"]


def environment(threads: int) -> dict:
    return {"cpu": cpu_name(), "cpu_flags": cpu_flags(), "machine": platform.machine(), "cores": os.cpu_count(),
            "usable_cores": usable_cores(), "threads": threads, "platform": platform.platform(),
            "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "default (active)"), "ort_spinning": "off",
            "versions": library_versions()}


def markdown(report: dict) -> str:
    always = {"artifact", "top1", "agreement"}   # the error / skipped text goes in the last column
    cols = [c for c in COLUMNS if c[0] in always or any(r.get(c[0]) is not None for r in report["rows"])]
    head = "| " + " | ".join(h for _, h, _ in cols) + " |"
    sep = "|" + "|".join("---" for _ in cols) + "|"
    lines = [head, sep]
    for row in report["rows"]:
        cells = []
        for key, _, fmt in cols:
            v = row.get(key)
            cells.append("—" if v is None else fmt.format(v))
        if row.get("note"):
            cells[0] += " (*)"
        if row.get("accuracy_note") and "top1" in [c[0] for c in cols]:
            cells[[c[0] for c in cols].index("top1")] = "n/a (embeddings)"
        if row.get("error"):
            cells[-1] = f"error: {row['error']}"
        elif row.get("skipped"):
            cells[-1] = f"skipped: {row['skipped']}"
        lines.append("| " + " | ".join(cells) + " |")
    env = report["environment"]
    where = f"{env['threads']} thread(s), {cpu_label(env)}, {env['cores']} cores"
    if report.get("gpu"):
        g = report["gpu"]
        where = f"{g['gpu']} (CUDA {g['cuda']}), inputs resident on the GPU, each call synchronised; host {env['cpu']}"
    sweep = report.get("threads_sweep")
    if sweep and len(sweep) > 1:
        where = f"threads {', '.join(map(str, sweep))} (one row each), {cpu_label(env)}, {env['cores']} cores"
    dev = report.get("device")
    if dev:
        timing = (f"{dev['note']}" if dev.get("emulated") else
                  f"batch-1 latency on {dev['name']} ({dev['arch']}), {report['timing']['rounds'] * report['timing']['reps_per_round']} "
                  f"calls per artifact after {report['timing']['warmup']} warm-up calls, artifacts one after another")
        notes = [f"target {report['target']}: {timing}; the fp32 eager reference ran on this host ({where}); "
                 f"accuracy on {report['dataset']}, agreement and cosine against that x86 fp32 model."]
    else:
        notes = [f"target {report['target']}, {where}; "
             f"batch-1 latency over {report['timing']['rounds']} interleaved rounds x {report['timing']['reps_per_round']} calls "
             f"after {report['timing']['warmup']} warm-up calls; throughput at batch {report['timing']['throughput_batch']}; "
             f"accuracy on {report['dataset']}; speed-up = eager median / artifact median, same run."]
    if report.get("skipped_non_arm_artifacts"):
        notes.append("Not run on ARM: " + ", ".join(f"{k} ({v})" for k, v in report["skipped_non_arm_artifacts"].items()) + ".")
    if report.get("mobile_profile"):
        notes.append(f"Mobile profile: {report['mobile_profile']}.")
    if dev and any(r.get("peak_rss_mb") for r in report["rows"]):
        notes.append("Peak RSS: of the device's runner process (numpy, the row's runtime, the model, the accuracy pass)"
                     + ("; under emulation it includes qemu's own memory." if dev.get("emulated") else "."))
    elif report.get("rows") and any(r.get("peak_rss_mb") for r in report["rows"]):
        notes.append("Peak RSS: of a process that imported only that row's runtime, loaded the model and served batch-1 "
                     "calls (one process per row, measured before the accuracy pass); before loading, the imports took "
                     f"{_base_rss(report)}. ExecuTorch's and the lite interpreter's Python bindings load torch with the "
                     "model (an app embedding their C++ runtimes does not).")
    flagged = [r for r in report["rows"] if r.get("note")]
    for name in dict.fromkeys(f"{r['artifact']} (*): {r['note']}" for r in flagged):
        notes.append(f"{name}; its latency here says nothing about the CPU it was built for.")
    if any(r.get("accuracy_note") for r in report["rows"]):
        notes.append("Encoder rows (image or text embeddings) have no classes to score, so their accuracy columns are empty; "
                     "their fidelity is the cosine with the fp32 eager encoder on the same inputs (text: real captions, "
                     "class names x templates).")
    if report.get("recommendation"):
        notes.append(f"**Recommendation**: {report['recommendation']}.")
    if report.get("skipped_cpu_artifacts"):
        notes.append(f"Not run on CUDA (built for CPU/mobile): {', '.join(report['skipped_cpu_artifacts'])}.")
    if report.get("random_weights"):
        notes.append("RANDOM WEIGHTS: accuracy columns prove plumbing only; timings are real.")
    return "\n".join(lines) + "\n\n" + "\n".join(notes) + "\n"


def _base_rss(report: dict) -> str:
    by_runtime: dict[str, float] = {}
    for r in report["rows"]:
        if r.get("rss_base_mb") and r.get("runtime"):
            by_runtime[r["runtime"]] = min(by_runtime.get(r["runtime"], 1e9), r["rss_base_mb"])
    return ", ".join(f"{k} {v:.0f} MB" for k, v in sorted(by_runtime.items())) or "-"


def write_report(report: dict, folder: Path) -> list[Path]:
    """bench.json, bench.md and bench_pareto.png (when any row has accuracy and latency), each replaced atomically."""
    from .plot import pareto_png

    from edgeclip.exporter.atomic import replace_file

    folder.mkdir(parents=True, exist_ok=True)
    j = replace_file(folder / "bench.json", json.dumps(report, indent=2, default=str) + "\n")
    m = replace_file(folder / "bench.md", markdown(report))
    png = pareto_png(report, folder / "bench_pareto.png")
    return [j, m] + ([png] if png else [])


def finish_report(rows: list[dict], target: str, ds, threads: int, timing, report_dir, **extra) -> dict:
    """The report dict every target returns: rows, environment, timing, and the files when ``report_dir`` is given."""
    from edgeclip.models.factory import RANDOM_WEIGHTS_NOTE

    report = {"schema": SCHEMA, "target": target, "dataset": f"{ds.name} {ds.split}, {len(ds)} images ({ds.source})",
              "environment": environment(threads), "timing": timing.__dict__, "rows": rows,
              "random_weights": any(r.get("random_weights") for r in rows), **extra}
    if report["random_weights"]:
        report["note"] = RANDOM_WEIGHTS_NOTE
    if report_dir is not None:
        report["files"] = [str(p) for p in write_report(report, Path(report_dir))]
    return report
