"""Deliberate bugs in the quality logic, each run against the tests that should catch it.

    python -m edgeclip.benchmarks.mutation_audit [--no-shared] [--only NAME] [--json]

Each mutant edits one line of the tree in place (the file is restored afterwards, also on Ctrl-C), runs its tests
with ``pytest -x``, and counts as *caught* when they fail.  ``--no-shared`` runs them as a clone without
../shared beside it would (EDGECLIP_TEST_SHARED points at a missing folder), which is how the plumbing-level
twins are proven.  This is the issue's mutation audit (the eight bugs it found, plus the gates added since),
not a generated mutant set: it runs in ~5 minutes outside the suite, and exits 1 when any mutant survives.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Mutant:
    name: str
    file: str
    old: str
    new: str
    tests: tuple[str, ...]
    needs_shared: bool = False     # only caught with the real data / fixture (the "with ../shared" bugs)


MUTANTS = (
    Mutant("fidelity agreement always 1.0", "exporter/fidelity.py",
           "agree = float((reference.argmax(-1) == candidate.argmax(-1)).mean()) if classification else None",
           "agree = 1.0 if classification else None", ("tests/exporter/test_fidelity.py",)),
    Mutant("agreement check removed from the gate", "exporter/fidelity.py",
           "if self.enforces_agreement(f, random_weights) and f.top1_agreement < self.min_top1_agreement:",
           "if False:", ("tests/exporter/test_fidelity.py",)),
    Mutant("healing by gradient ascent", "exporter/compress/heal.py", "        loss.backward()", "        (-loss).backward()",
           ("tests/exporter/compress/test_selection_quality.py::test_healing_lowers_the_distillation_loss_and_raises_agreement",)),
    Mutant("token reduction keeps the least attended", "exporter/compress/tokens.py",
           "idx = select.keep_top(score, self.keep)", "idx = select.keep_top(-score, self.keep)",
           ("tests/exporter/compress/test_selection_quality.py::test_token_reduction_keeps_the_attended_tokens_over_the_inattentive",)),
    Mutant("structured pruning keeps the lowest-scored MLP neurons", "exporter/compress/structured.py",
           "keep = select.keep_top(score, k).sort().values", "keep = select.keep_top(-score, k).sort().values",
           ("tests/exporter/compress/test_selection_quality.py::test_structured_pruning_keeps_the_neurons_and_heads_that_matter",)),
    Mutant("structured pruning keeps the lowest-scored heads", "exporter/compress/structured.py",
           "kept = select.keep_top(score, k).sort().values", "kept = select.keep_top(-score, k).sort().values",
           ("tests/exporter/compress/test_selection_quality.py::test_structured_pruning_keeps_the_neurons_and_heads_that_matter",)),
    Mutant("sweep findings comparison flipped (attention)", "benchmarks/sweep.py",
           "vision_better = [r for r in common if dv[r] < dt[r]]", "vision_better = [r for r in common if dv[r] > dt[r]]",
           ("tests/benchmarks/test_sweep.py",)),
    Mutant("sweep findings verdict flipped (layers)", "benchmarks/sweep.py",
           'verdict = "holds" if mean > 0.25', 'verdict = "holds" if mean < -0.25', ("tests/benchmarks/test_sweep.py",)),
    Mutant("SVD rank forced to 1", "exporter/compress/svd.py",
           "rank = choose_rank(dec[1] if dec is not None else None, out_f, in_f, cfg)", "rank = 1",
           ("tests/exporter/compress/test_compress_svd.py",)),
    Mutant("ONNX int8 route ships the fp32 file", "exporter/routes/onnx.py",
           'info = quantize_onnx_dynamic(src, model_path(stage, "onnx"), config)',
           'info = (__import__("shutil").copy(src, model_path(stage, "onnx")), {})[1]',
           ("tests/exporter/test_export_onnx.py", "tests/exporter/test_onnx_quant.py")),
    Mutant("compression-cost gate never refuses", "exporter/compress/gate.py",
           "    failed = over(cost, bar)", "    failed = False", ("tests/exporter/compress/test_compression_gate.py",)),
    Mutant("cost gate blames the first pass", "exporter/compress/gate.py",
           "        if best is None or step > best[1]:", "        if best is None:",
           ("tests/exporter/compress/test_compression_gate.py",)),
    Mutant("verify trusts the manifest's bar", "exporter/fidelity.py",
           "    loose = recorded.looser_than(written)", "    loose = []", ("tests/exporter/test_fidelity.py",)),
    Mutant("verify trusts the manifest's random-weights claim", "exporter/fidelity.py",
           'if bool(manifest.get("random_weights", False)) != bool(random_weights):', "if False:",
           ("tests/exporter/test_fidelity.py",)),
)


def run(m: Mutant, no_shared: bool) -> dict:
    path = ROOT / m.file
    original = path.read_text()
    if original.count(m.old) != 1:
        return {"mutant": m.name, "caught": None, "error": f"the line to mutate is not (once) in {m.file}: update the audit"}
    env = dict(os.environ)
    if no_shared:
        env["EDGECLIP_TEST_SHARED"] = str(ROOT / ".no-shared-for-mutation-audit")
    t0 = time.perf_counter()
    try:
        path.write_text(original.replace(m.old, m.new))
        p = subprocess.run([sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *m.tests], cwd=ROOT,
                           env=env, capture_output=True, text=True)
    finally:
        path.write_text(original)
    tail = (p.stdout.strip().splitlines() or [""])[-1]
    return {"mutant": m.name, "file": m.file, "caught": p.returncode != 0, "pytest": tail,
            "seconds": round(time.perf_counter() - t0, 1), "needs_shared": m.needs_shared}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--no-shared", action="store_true", help="run as a clone without ../shared would")
    ap.add_argument("--only", default=None, help="run the mutants whose name contains this text")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args(argv)
    chosen = [m for m in MUTANTS if a.only is None or a.only in m.name]
    if a.no_shared:
        chosen = [m for m in chosen if not m.needs_shared]
    results = []
    for m in chosen:
        results.append(run(m, a.no_shared))
        if not a.json:
            r = results[-1]
            print(f"{'caught  ' if r['caught'] else 'SURVIVED' if r['caught'] is False else 'ERROR   '} {r['mutant']}  "
                  f"({r.get('seconds', 0)} s; {r.get('pytest') or r.get('error')})", flush=True)
    caught = sum(bool(r["caught"]) for r in results)
    summary = {"mode": "without ../shared" if a.no_shared else "with ../shared", "caught": caught, "total": len(results),
               "kill_rate": round(caught / max(1, len(results)), 3), "results": results}
    if a.json:
        print(json.dumps(summary, indent=2))
    else:
        print(f"{caught} of {len(results)} mutants caught ({summary['mode']})")
    return 0 if caught == len(results) else 1


if __name__ == "__main__":
    sys.exit(main())
