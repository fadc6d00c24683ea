"""The layering the design relies on: the public API (``edgeclip.pipeline``, the CLI) sits on top; the bench
engine, exporter, runtimes and model code never import it back, not even inside a function (the hidden
cycle the family/route redesign removed); runtimes read the manifest contract (``edgeclip.manifest``), never
the exporter that writes it.  Checked on the source, so a lazy import is caught too."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LOWER = ["benchmarks", "exporter", "runtimes", "models", "edgeclip/preparation.py", "edgeclip/manifest.py"]
UPPER = {"edgeclip.pipeline", "edgeclip.cli"}


def _imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            if node.module == "edgeclip":   # from edgeclip import pipeline
                found |= {f"edgeclip.{a.name}" for a in node.names}
    return found


def _files():
    for part in LOWER:
        p = ROOT / part
        yield from ([p] if p.is_file() else sorted(p.rglob("*.py")))


@pytest.mark.parametrize("path", list(_files()), ids=lambda p: str(p.relative_to(ROOT)))
def test_lower_layers_never_import_the_api(path):
    bad = {m for m in _imports(path) if any(m == u or m.startswith(u + ".") for u in UPPER)}
    assert not bad, f"{path.relative_to(ROOT)} imports {sorted(bad)}: move what it needs into edgeclip/preparation.py"


@pytest.mark.parametrize("path", sorted((ROOT / "runtimes").rglob("*.py")), ids=lambda p: str(p.relative_to(ROOT)))
def test_runtimes_read_the_manifest_contract_not_the_exporter(path):
    bad = {m for m in _imports(path) if m.startswith("edgeclip.exporter")}
    assert not bad, f"{path.relative_to(ROOT)} imports {sorted(bad)}: runtimes depend on edgeclip.manifest only"


def test_the_checker_sees_lazy_imports(tmp_path):
    f = tmp_path / "m.py"
    f.write_text("def f():\n    from edgeclip.pipeline import _x\n    from edgeclip import cli\n")
    assert {"edgeclip.pipeline", "edgeclip.cli"} <= _imports(f)


def test_pipeline_is_orchestration_only():
    lines = len((ROOT / "edgeclip" / "pipeline.py").read_text().splitlines())
    assert lines <= 250, f"edgeclip/pipeline.py has {lines} lines; helpers belong in preparation.py or the packages below"
