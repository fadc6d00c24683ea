"""A search's files: the ranked table (search.md), the Pareto plot, ``best.toml`` and the winning artifact."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from edgeclip.errors import EdgeclipError
from edgeclip.exporter.atomic import replace_file


def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise EdgeclipError(f"cannot write {type(v).__name__} into a TOML recipe")


def recipe_toml(recipe: dict, comment: list[str]) -> str:
    """``recipe`` (an ExportRecipe dict; ``compress`` a sub-table) as TOML that ``ExportRecipe.from_file`` reads back."""
    lines = [f"# {c}" for c in comment]
    tables = {k: v for k, v in recipe.items() if isinstance(v, dict)}
    lines += [f"{k} = {_toml_value(v)}" for k, v in recipe.items() if v is not None and k not in tables]
    for name, table in tables.items():
        lines += ["", f"[{name}]"] + [f"{k} = {_toml_value(v)}" for k, v in table.items() if v is not None]
    return "\n".join(lines) + "\n"


def ranked_table(report: dict) -> str:
    ref, cfg = report["reference"], report["config"]
    head = ["| rank | artifact | route | compression | b1 median ms | vs best plain int8 | top-1 % | drop pt | agree % | "
            "size MB | vision FLOPs | within budget | Pareto |", "|" + "---|" * 13]
    rows = []
    for i, c in enumerate(report["candidates"], 1):
        f = c.get("vision_flops_removed_pct")
        rows.append(f"| {i} | {c['artifact']} | {c['route']} | {c['compression']} | "
                    f"{_f(c['latency_ms_median'], '.3f')} | {_f(c.get('speedup_vs_best_plain'), '.2f', 'x')} | "
                    f"{_f(c['top1'], '.2f')} | {_f(c['drop'], '+.2f')} | {_f(c['agreement'], '.2f')} | {c['file_mb']:.2f} | "
                    f"{'-' if f is None else f'-{f:.1f} %'} | {'yes' if c['within_budget'] else 'no'} | "
                    f"{'*' if c['pareto'] else ''} |")
    env = report["environment"]
    flags = ", ".join(env.get("cpu_flags") or []) or "no int8/bf16 extensions found"
    best, bp = report["best"], report["best_plain"]
    lines = [f"# edgeclip search: {cfg['model']} on {cfg['target']}, max drop {cfg['max_drop']:g} pt", "",
             f"fp32 eager top-1 {ref['top1']:.2f} % on {ref['split']}; timed on {env.get('cpu')} ({flags}), "
             f"{env['threads']}, batch 1, {cfg['rounds']} interleaved rounds, all artifacts in one bench run.", ""]
    if best:
        lines.append(f"**Best**: {best['artifact']} ({best['route']}, {best['compression']}): "
                     f"{best['latency_ms_median']:.3f} ms, top-1 {best['top1']:.2f} % ({best['drop']:+.2f} pt), "
                     f"{report['speedup_best_vs_best_plain']:.2f}x the best plain int8 file ({bp['artifact']}, "
                     f"{bp['latency_ms_median']:.3f} ms).  Rebuild it: `edgeclip export --recipe best.toml`.")
    else:
        lines.append(f"**No artifact within {cfg['max_drop']:g} pt of fp32.**")
    lines += ["", *head, *rows, ""]
    if report["refused"]:
        lines += ["Refused by their gates:", *[f"- {r['task']}: {r['why']}" for r in report["refused"]], ""]
    if report["skipped_rungs"]:
        lines.append(f"Budget ran out before: {', '.join(report['skipped_rungs'])}.")
    lines.append("Sensitivity (each knob alone, eager fp32, " + ref["estimate_split"] + "):")
    routes = report.get("routes_by_speed", [])
    lines += ["", "| knob | value | top-1 cost pt | vision FLOPs kept | " + " | ".join(f"latency vs plain, {r}" for r in routes) + " |",
              "|---|---|---|---|" + "---|" * len(routes)]
    for s in report["sensitivity"]:
        lat = " | ".join(_f(s.get("latency_ratio", {}).get(r), ".3f") for r in routes)
        lines.append(f"| {s['knob']} | {s['value']} | {_f(s.get('drop'), '+.2f')} | {_f(s.get('flops'), '.3f')} | {lat} |"
                     + (f" {s['error']}" if s.get("error") else ""))
    lines += ["", "Combinations measured, per route (predicted cost = sum of the levels' costs; predicted latency = product "
              "of the levels' measured latency ratios on that route; noise = one standard error of the estimate):", "",
              "| route | combination | predicted cost pt | measured cost pt | noise pt | predicted latency vs plain | FLOPs kept |",
              "|---|---|---|---|---|---|---|"]
    for c in report["combinations"]:
        lines.append(f"| {c['route']} | {c['combination']} | {c['predicted_drop']:+.2f} | {c['drop']:+.2f} | {c['noise']:.2f} | "
                     f"{c['predicted_ratio']:.3f} | {c['flops']:.3f} |")
    return "\n".join(lines) + "\n"


def _f(v, fmt: str, suffix: str = "") -> str:
    return "-" if v is None else f"{v:{fmt}}{suffix}"


def pareto_png(report: dict, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pts = [c for c in report["candidates"] if c["top1"] is not None and c["latency_ms_median"]]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8))
    for ax, key, xlabel in ((axes[0], "latency_ms_median", "batch-1 latency, ms (median)"), (axes[1], "file_mb", "file size, MB")):
        for plain in (True, False):
            sel = [c for c in pts if c["plain"] == plain]
            ax.scatter([c[key] for c in sel], [c["top1"] for c in sel], marker="s" if plain else "o", s=30,
                       label="plain int8 files" if plain else "compressed", alpha=0.8)
        front = sorted((c for c in pts if c["pareto"]), key=lambda c: c["latency_ms_median"])
        if key == "latency_ms_median" and front:
            ax.plot([c[key] for c in front], [c["top1"] for c in front], "k--", lw=1, label="Pareto frontier")
        best = report["best"]
        if best:
            ax.scatter([best[key]], [best["top1"]], marker="*", s=220, c="red", zorder=5, label="best within budget")
        ax.axhline(report["reference"]["top1"] - report["config"]["max_drop"], color="gray", lw=0.8, ls=":",
                   label=f"fp32 - {report['config']['max_drop']:g} pt")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("top-1 % (evaluation split)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(f"edgeclip search: {report['config']['model']} on {report['config']['target']}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_outputs(report: dict, out: Path, ckpt) -> list[Path]:
    """search.md, search_pareto.png, and for a winner best.toml + best/<artifact> (replacing a previous winner)."""
    from .tasks import unpack

    files = []
    files.append(replace_file(out / "search.md", ranked_table(report)))
    files.append(pareto_png(report, out / "search_pareto.png"))
    best = report["best"]
    if best:
        toml = replace_file(out / "best.toml", recipe_toml(best["recipe"], [
            f"edgeclip search: fastest artifact within {report['config']['max_drop']:g} top-1 points of fp32 "
            f"({best['top1']:.2f} % vs {report['reference']['top1']:.2f} % on {report['reference']['split']})",
            f"{best['route']}, {best['compression']}: {best['latency_ms_median']:.3f} ms at batch 1 on "
            f"{report['environment'].get('cpu')}",
            "rebuild: edgeclip export --recipe best.toml"]))
        files.append(toml)
        dest = out / "best"
        with tempfile.TemporaryDirectory(dir=out) as tmp:
            art = unpack(ckpt.tar(best["key"]), Path(tmp))
            if dest.exists():
                shutil.rmtree(dest)
            dest.mkdir()
            art.rename(dest / art.name)
        files.append(dest / best["artifact"])
    return files
