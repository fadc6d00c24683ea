"""``bench --compare old.json``: what changed between two reports, row by row (matched by artifact and threads)."""

from __future__ import annotations

import json
from pathlib import Path

from edgeclip.errors import EdgeclipError

METRICS = [("latency_ms_median", "b1 median", "{:.2f} ms", True), ("throughput_img_s", "throughput", "{:.0f} img/s", False),
           ("top1", "top-1", "{:.2f} %", False), ("agreement", "agreement", "{:.2f} %", False),
           ("file_mb", "size", "{:.2f} MB", True), ("peak_rss_mb", "peak RSS", "{:.0f} MB", True)]


def load_report(path: str | Path) -> dict:
    p = Path(path).expanduser()
    try:
        report = json.loads(p.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise EdgeclipError(f"cannot read {p} as a bench report ({type(e).__name__}); pass a bench.json written by 'edgeclip bench'") from None
    if not str(report.get("schema", "")).startswith("edgeclip.bench/"):
        raise EdgeclipError(f"{p} is not an edgeclip bench report (no edgeclip.bench schema); pass a bench.json")
    return report


def compare(old: dict, new: dict, min_change: float = 0.03) -> list[str]:
    """Lines describing changes larger than ``min_change`` (relative) or any accuracy change >= 0.05 pt."""
    def key(r):
        return (r["artifact"], r.get("threads") or old.get("environment", {}).get("threads"))

    before = {key(r): r for r in old["rows"]}
    lines = []
    for r in new["rows"]:
        k = key(r)
        o = before.pop(k, None)
        label = f"{r['artifact']} ({k[1]} threads)" if k[1] else r["artifact"]
        if o is None:
            lines.append(f"+ {label}: new row")
            continue
        changes = []
        for m, name, fmt, lower_better in METRICS:
            a, b = o.get(m), r.get(m)
            if a is None or b is None:
                continue
            if m in ("top1", "agreement"):
                if abs(b - a) >= 0.05:
                    changes.append(f"{name} {fmt.format(a)} -> {fmt.format(b)} ({b - a:+.2f} pt)")
            elif a and abs(b - a) / abs(a) >= min_change:
                better = (b < a) == lower_better
                changes.append(f"{name} {fmt.format(a)} -> {fmt.format(b)} ({100 * (b - a) / a:+.1f} %, {'better' if better else 'worse'})")
        if r.get("error") and not o.get("error"):
            changes.append(f"now fails: {r['error']}")
        if changes:
            lines.append(f"~ {label}: " + "; ".join(changes))
    lines += [f"- {k[0]}: row gone" for k in before]
    if not lines:
        lines.append(f"no change above {100 * min_change:.0f} % (timing) / 0.05 pt (accuracy)")
    return lines
