"""Plots of bench and sweep reports: top-1 against latency, file size and parameters.

In the bench plots the points on the front (nothing else is both faster/smaller and at least as accurate) are joined, so the
artifacts worth shipping stand out; everything below the line is dominated.  The sweep plots draw one line per
series.  Drawing is kept apart from the measuring modules: it decides nothing, so it is no part of what the
mutation run (benchmarks/mutmut_run.py) holds to its kill rate.
"""

from __future__ import annotations

import statistics
from pathlib import Path


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the points not dominated under (lower x, higher y), sorted by x."""
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1]))
    front, best = [], float("-inf")
    for i in order:
        if points[i][1] > best:
            front.append(i)
            best = points[i][1]
    return front


def pareto_png(report: dict, path: Path) -> Path | None:
    """Write the two-panel plot; None when no row has both accuracy and latency (e.g. all errors)."""
    threads = max((r.get("threads") or 0 for r in report["rows"]), default=0)
    rows = [r for r in report["rows"] if (r.get("threads") or 0) == threads and "top1" in r and "latency_ms_median" in r]
    if not rows:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(13, 5))
    panels = [("latency_ms_median", "batch-1 median latency (ms)"), ("file_mb", "file size (MB)")]
    for ax, (key, label) in zip(axes, panels):
        pts = [(r[key], r["top1"], r) for r in rows if r.get(key)]
        for x, y, r in pts:
            marker = "s" if r.get("baseline") else "^" if r.get("peer") else "o"
            ax.scatter(x, y, marker=marker, s=40)
            ax.annotate(r["artifact"].split("-classifier-")[-1][:40], (x, y), fontsize=7, xytext=(4, 3), textcoords="offset points")
        front = pareto_front([(x, y) for x, y, _ in pts])
        if len(front) > 1:
            ax.plot([pts[i][0] for i in front], [pts[i][1] for i in front], "k--", lw=0.8, label="Pareto front")
            ax.legend(loc="lower right", fontsize=8)
        ax.set_xlabel(label)
        ax.set_ylabel("top-1 %")
        ax.grid(alpha=0.3)
    note = " (RANDOM WEIGHTS: accuracy meaningless)" if report.get("random_weights") else ""
    fig.suptitle(f"edgeclip bench, target {report['target']}, {threads} thread(s), {report['dataset']}{note}", fontsize=9)
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)
    return path


def sweep_pngs(report: dict, out_dir: Path) -> list[Path]:
    """accuracy vs parameters (one panel per tower) and accuracy vs latency (vision series)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pts, base = [p for p in report["points"] if "top1" in p], report["baseline"]
    series = list(dict.fromkeys(p["series"] for p in pts))
    paths = []
    fig, axes = plt.subplots(1, 2, figsize=(13, 5))
    for ax, tower in zip(axes, ("vision", "text")):
        for s in series:
            sp = [p for p in pts if p["series"] == s and p["tower"] == tower]
            if sp:
                ax.plot([p["params"][tower] / 1e6 for p in sp], [p["top1"] for p in sp], "o-", label=s, ms=4)
        if base["params"].get(tower):
            ax.scatter([base["params"][tower] / 1e6], [base["top1"]], marker="*", s=160, c="k", zorder=5, label="uncompressed")
        ax.set_xlabel(f"{tower} tower parameters (M)")
        ax.set_ylabel("top-1 %")
        ax.set_title(f"accuracy vs {tower} parameters")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:      # a tower no series changed has nothing to label
            ax.legend(fontsize=7)
    fig.suptitle(f"{report['model'].get('model')} on {report['data']}", fontsize=9)
    fig.tight_layout()
    paths.append(out_dir / "sweep_accuracy_vs_params.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(7, 5))
    for s in series:
        sp = [p for p in pts if p["series"] == s and "latency_ms_median" in p]
        if sp:
            ax.plot([p["latency_ms_median"] for p in sp], [p["top1"] for p in sp], "o-", label=s, ms=4)
    lat = [p["baseline_latency_ms_median"] for p in pts if "baseline_latency_ms_median" in p]
    if lat:
        ax.scatter([statistics.median(lat)], [base["top1"]], marker="*", s=160, c="k", zorder=5, label="uncompressed")
    ax.set_xlabel(f"eager batch-1 latency, ms ({report['environment']['threads']} threads)")
    ax.set_ylabel("top-1 %")
    ax.set_title("accuracy vs latency (vision series; text changes leave the image path unchanged)", fontsize=9)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7)
    fig.tight_layout()
    paths.append(out_dir / "sweep_accuracy_vs_latency.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)
    return paths
