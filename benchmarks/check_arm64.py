"""The ARM bars on a ``bench --target arm64`` report: what .ci/run checks after the test suite.

Against the x86 fp32 model: int8 files agree on >= 99 % of top-1 predictions and stay within 0.3 pt of its
top-1; fp32 files agree on >= 99.9 %.  On a small set one image moves top-1 by more than 0.3 pt (0.5 pt at
200 images), so the top-1 bar is max(0.3 pt, one image); the 1,000-image table holds the 0.3 pt bar as is.

    python -m edgeclip.benchmarks.check_arm64 REPORT_DIR/bench.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

BARS = {"fp32": 99.9, "int8": 99.0}
MAX_TOP1_DROP = 0.3


def failures(report: dict) -> list[str]:
    rows = report["rows"]
    base = next((r for r in rows if r.get("baseline") and "top1" in r), None)
    if base is None:
        return ["no x86 fp32 reference row"]
    dev = [r for r in rows if not r.get("baseline")]
    if not dev:
        return ["no artifact ran on aarch64"]
    bad = []
    one_image = 100.0 / base["images"]
    for r in dev:
        name = r["artifact"]
        if r.get("error"):
            bad.append(f"{name}: {r['error']}")
            continue
        if r.get("machine") != "aarch64":
            bad.append(f"{name}: ran on {r.get('machine')}, not aarch64")
        kind = "fp32" if r.get("quant") == "fp32" else "int8"
        if r.get("agreement", 0) < BARS[kind]:
            bad.append(f"{name}: agreement {r.get('agreement')} % < {BARS[kind]} %")
        if kind == "int8" and base["top1"] - r.get("top1", 0) > max(MAX_TOP1_DROP, one_image) + 1e-9:
            bad.append(f"{name}: top-1 {r.get('top1')} % vs x86 fp32 {base['top1']} %")
    return bad


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    report = json.loads(Path(argv[0]).read_text())
    bad = failures(report)
    n = len([r for r in report["rows"] if not r.get("baseline")])
    for b in bad:
        print(f"arm64 check FAILED: {b}", file=sys.stderr)
    if not bad:
        print(f"arm64 check: {n} artifacts on aarch64 kernels within the bars ({report['dataset']})")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
