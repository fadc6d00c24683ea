"""Generated mutation testing of the quality logic with mutmut, outside the suite.

    pip install -e ".[mutation]"
    python -m edgeclip.benchmarks.mutmut_run [--work DIR] [--max-children N] [--fresh] [--only GLOB] [--json]

What it mutates (issue: quality gates): the fidelity gate (exporter/fidelity.py), the compression passes
(exporter/compress/), the sweep's findings (benchmarks/sweep.py) and the route registry (exporter/routes/base.py),
against the tests that cover them (``TESTS``).  mutmut writes every mutant of a function into a copy of the source
and switches between them at run time, then runs, per mutant, only the tests that called that function.

Why a workspace: mutmut derives a module's import name from its file path and imports the copy under
``mutants/``; this repository maps ``edgeclip.exporter`` to ``exporter/`` (and so on, pyproject's package-dir), so
mutmut run here would mutate ``exporter.fidelity`` while the tests import ``edgeclip.exporter.fidelity`` from the
untouched tree.  The workspace lays the same files out as the installed package (``edgeclip/exporter/...``), so the
names agree and the mutated copy shadows the editable install (its finder comes after sys.path).

Survivors a test cannot kill (a change with no observable effect) are listed in ``EQUIVALENT`` with the reason;
the kill rate is killed / (mutants - equivalent), and the command exits 1 below ``--min-kill-rate`` (default 90).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# import name -> folder in this repository (pyproject.toml's package-dir)
PACKAGE_DIRS = {"edgeclip": "edgeclip", "edgeclip/models": "models", "edgeclip/exporter": "exporter",
                "edgeclip/runtimes": "runtimes", "edgeclip/benchmarks": "benchmarks"}
# the route registry is routes/base.py (+ __init__); routes/onnx.py, ptl.py, pte.py are the producers it registers,
# covered by the export tests (minutes per mutant), not by the registry's
MUTATE = ["edgeclip/exporter/fidelity.py", "edgeclip/exporter/compress/*", "edgeclip/benchmarks/sweep.py",
          "edgeclip/exporter/routes/base.py", "edgeclip/exporter/routes/__init__.py"]
TESTS = ["tests/exporter/test_fidelity.py", "tests/exporter/compress", "tests/benchmarks/test_sweep.py",
         "tests/benchmarks/test_sweep_logic.py",
         "tests/exporter/test_routes.py", "tests/exporter/test_recipe.py"]
# Whole-export integration tests (10-25 s each) that mutmut would re-run for every mutant that survives the fast
# tests: with them a run of the ~4,300 mutants takes many hours on 2 cores (measured: 15 mutants a minute in merge.py).
# Every module they touch has unit tests of its own; leaving them out can only lower the kill rate (a mutant they
# alone would kill counts as a survivor), never raise it.  --all-tests puts them back.
SLOW_TESTS = ["tests/exporter/compress/test_compress_export.py::test_compressed_int8_export_in_every_format_round_trips",
              "tests/benchmarks/test_sweep.py::test_sweep_on_the_trained_fixture",
              "tests/exporter/compress/test_compression_gate.py::"
              "test_removing_the_first_text_block_of_the_fixture_is_refused_unless_accepted"]
# mutant name -> why no test can tell it from the original (reviewed by hand; see the issue note)
EQUIVALENT: dict[str, str] = {
    "edgeclip.exporter.fidelity.x_trusted_bar__mutmut_8":
        'r.get("quant", None) for r.get("quant", "none"): rule() reads None as fp32, exactly like "none"',
    "edgeclip.exporter.fidelity.x_trusted_bar__mutmut_10": 'r.get("quant") for r.get("quant", "none"): the same None',
    "edgeclip.exporter.fidelity.x_trusted_bar__mutmut_31": 'bool(m.get("random_weights", None)): bool(None) == bool(False)',
    "edgeclip.exporter.fidelity.x_trusted_bar__mutmut_33": 'bool(m.get("random_weights")): bool(None) == bool(False)',
    "edgeclip.exporter.fidelity.x_trusted_bar__mutmut_94":
        "a missing recorded cosine read as -2.0 instead of -1.0: both below every rule, so both read as tampered",
    "edgeclip.exporter.fidelity.x_trusted_bar__mutmut_103": "the same for a missing recorded agreement (-2.0 for -1.0)",
    "edgeclip.exporter.compress.sparsity.x_apply__mutmut_48":
        "threshold -2.0 for -1.0 when nothing is pruned (k = 0): any negative threshold keeps every weight (|w| >= 0)",
    "edgeclip.exporter.compress.sparsity.x_apply__mutmut_62": "the same, per layer",
    "edgeclip.exporter.compress.sparsity.x_apply__mutmut_9":
        "the towers a model has, joined by 'XX, XX': a model lacks a tower only when it has one (vision), so one name",
    "edgeclip.exporter.compress.merge.x_bipartite_merge__mutmut_66":
        "torch.arange(nb, device=None) for device=x.device: the same tensor on the CPU, where merging runs and is exported",
    "edgeclip.exporter.compress.merge.x_bipartite_merge__mutmut_68": "the same, device argument dropped",
    "edgeclip.exporter.compress.merge.xǁTokenMergeBlockǁforward__mutmut_17":
        "the size bias also in the first merging block (size_in False): its sizes are all 1, log 1 = 0, the bias adds zeros",
    "edgeclip.exporter.compress.merge.xǁTokenMergeBlockǁforward__mutmut_25":
        "unsqueeze(2) for unsqueeze(1) on [B, 1, N]: both give [B, 1, 1, N]",
    "edgeclip.benchmarks.sweep.x_series_points__mutmut_1":
        "patches default 1 for 0: merge_rs(0, n) and merge_rs(1, n) are both [1]",
    "edgeclip.benchmarks.sweep.x_plan__mutmut_24": "the same, for a family without a token layout (patches 1 for 0)",
    "edgeclip.benchmarks.sweep.x_plan__mutmut_5":
        "'vision' in towers forced true: every family edgeclip loads has a vision tower (the else branch is unreachable)",
    "edgeclip.benchmarks.sweep.x_plan__mutmut_9": "the same branch's value (1 for 0)",
    "edgeclip.benchmarks.sweep.x_plan__mutmut_19": "image_tokens asked even without vision blocks: unreachable, as above",
    "edgeclip.benchmarks.sweep.x_plan__mutmut_22": "the same branch's value (1 for 0)",
    "edgeclip.exporter.fidelity.x_compare__mutmut_16":
        "argmax(+1) for argmax(-1) on [N, classes] logits: the same axis (the classifier's outputs are 2-D)",
    "edgeclip.exporter.fidelity.x_compare__mutmut_22": "the same, on the candidate's logits",
    "edgeclip.exporter.fidelity.x_cosine_rows__mutmut_2": "astype(None) for astype(float64): numpy reads None as float64",
    "edgeclip.exporter.fidelity.x_cosine_rows__mutmut_10": "the same, on the candidate's rows",
    "edgeclip.exporter.fidelity.x_cosine_rows__mutmut_8":
        "reshape(n, -2) for reshape(n, -1): numpy reads any negative size as 'the rest' (numpy 2.4)",
    "edgeclip.exporter.fidelity.x_cosine_rows__mutmut_16": "the same, on the candidate's rows",
    "edgeclip.exporter.fidelity.x_compare__mutmut_20": "argmax(+1) for argmax(-1) on the candidate's 2-D logits: the same axis",
    "edgeclip.exporter.fidelity.x_trusted_bar__mutmut_132":
        "the earlier-bar note joins at most one item: EARLIER_BARS loosens agreement only, so a recorded cosine below "
        "the rule is also below the written bar and refused as tampered before the note",
    "edgeclip.benchmarks.sweep.x__build_context__mutmut_5": 'load_dataset(job.data) for (job.data, "test"): "test" is the default',
    "edgeclip.benchmarks.sweep.x__build_context__mutmut_85": "argmax(+1) for argmax(-1) on the baseline's 2-D logits",
    "edgeclip.benchmarks.sweep.x_sweep_point__mutmut_34": "argmax(+1) for argmax(-1) on a point's 2-D logits",
}


def build_workspace(work: Path, mutate: list[str], all_tests: bool = False) -> None:
    """Copy the package into ``work`` in its installed layout, with the tests and a mutmut configuration."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "results", "*.egg-info")
    for name, src in PACKAGE_DIRS.items():
        dst = work / name
        if name == "edgeclip":     # the core package: its own files only (the sub-packages come from their folders)
            dst.mkdir(parents=True, exist_ok=True)
            for f in (ROOT / src).glob("*.py"):
                shutil.copy2(f, dst / f.name)
        else:
            shutil.rmtree(dst, ignore_errors=True)
            shutil.copytree(ROOT / src, dst, ignore=ignore)
    shutil.rmtree(work / "tests", ignore_errors=True)
    shutil.copytree(ROOT / "tests", work / "tests", ignore=ignore)
    shutil.copy2(ROOT / "README.md", work / "README.md")
    toml_list = lambda xs: "[" + ", ".join(json.dumps(x) for x in xs) + "]"  # noqa: E731
    (work / "pyproject.toml").write_text(f"""[tool.mutmut]
source_paths = ["edgeclip"]
only_mutate = {toml_list(mutate)}
also_copy = ["tests", "README.md"]
pytest_add_cli_args = {toml_list(["-p", "no:cacheprovider", "-q", "-p", "no:randomly"]
                                  + [a for t in ([] if all_tests else SLOW_TESTS) for a in ("--deselect", t)])}
pytest_add_cli_args_test_selection = {toml_list(TESTS)}

[tool.pytest.ini_options]
testpaths = ["tests"]
markers = ["slow: evaluates the shared fixture on real images"]
""")


def summarise(work: Path) -> dict:
    """Count mutant outcomes from mutmut's per-file records (``mutants/**/*.py.meta``)."""
    from mutmut.stats import status_by_exit_code

    status: dict[str, str] = {}
    for meta in (work / "mutants").rglob("*.py.meta"):
        for name, code in json.loads(meta.read_text())["exit_code_by_key"].items():
            status[name] = status_by_exit_code[code]
    counts = Counter(status.values())
    survivors = sorted(n for n, s in status.items() if s in ("survived", "no tests") and n not in EQUIVALENT)
    equivalent = sorted(n for n, s in status.items() if s in ("survived", "no tests") and n in EQUIVALENT)
    # a timeout is not a kill: here it was a forked test process deadlocked in OpenMP as often as a mutant that loops,
    # so it counts against the rate until a rerun (``--only`` / mutmut run NAME) decides it
    killed = sum(1 for s in status.values() if s in ("killed", "segfault", "caught by type check"))
    timeouts = sorted(n for n, s in status.items() if s == "timeout")
    judged = len(status) - len(equivalent) - sum(1 for s in status.values() if s == "not checked")
    return {"mutants": len(status), "by_status": dict(counts), "killed": killed, "equivalent": equivalent,
            "survivors": survivors, "timeouts": timeouts,
            "kill_rate": round(100 * killed / judged, 1) if judged else None}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", type=Path, default=Path.home() / ".cache" / "edgeclip" / "mutmut",
                    help="workspace folder (reused: mutmut only re-runs mutants of changed functions)")
    ap.add_argument("--max-children", type=int, default=os.cpu_count() or 1, help="mutants tested at once")
    ap.add_argument("--fresh", action="store_true", help="forget earlier results")
    ap.add_argument("--min-kill-rate", type=float, default=90.0)
    ap.add_argument("--only", action="append", default=None, metavar="GLOB",
                    help="mutate only these files of the workspace (e.g. edgeclip/exporter/fidelity.py); repeatable")
    ap.add_argument("--all-tests", action="store_true", help="also run the slow whole-export tests (SLOW_TESTS) per mutant")
    ap.add_argument("--json", action="store_true", help="print the summary as JSON")
    a = ap.parse_args(argv)
    try:
        import mutmut  # noqa: F401
    except ImportError:
        print('mutmut is not installed: pip install -e ".[mutation]"', file=sys.stderr)
        return 2
    shared = (ROOT / ".." / "shared").resolve()
    if a.fresh:
        shutil.rmtree(a.work, ignore_errors=True)
    a.work.mkdir(parents=True, exist_ok=True)
    build_workspace(a.work, a.only or MUTATE, a.all_tests)
    # one OpenMP thread: mutmut forks each mutant's test process from a parent that has run torch, and a forked
    # child of a process with a live OpenMP pool can deadlock (seen: mutants sleeping at 0 % CPU until mutmut's
    # timeout, which would have counted as kills)
    env = {**os.environ, "EDGECLIP_TEST_SHARED": os.environ.get("EDGECLIP_TEST_SHARED", str(shared)),
           "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, "-m", "mutmut", "run", "--max-children", str(a.max_children)], cwd=a.work,
                       env=env, stdout=sys.stderr)
    if r.returncode != 0:
        print(f"mutmut run failed (exit {r.returncode}); its output is above", file=sys.stderr)
        return r.returncode
    s = summarise(a.work)
    if a.json:
        print(json.dumps(s, indent=2))
    else:
        print(f"{s['mutants']} mutants: " + ", ".join(f"{v} {k}" for k, v in sorted(s["by_status"].items())))
        print(f"kill rate {s['kill_rate']} % (killed / mutants run and not listed as equivalent); "
              f"{len(s['equivalent'])} equivalent, {len(s['survivors'])} survivors")
        for n in s["survivors"]:
            print("  survived:", n)
        for n in s["timeouts"]:
            print("  timed out (rerun to decide):", n)
    return 0 if s["kill_rate"] is not None and s["kill_rate"] >= a.min_kill_rate else 1


if __name__ == "__main__":
    sys.exit(main())
