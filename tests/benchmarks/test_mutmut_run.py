"""The mutmut runner: the workspace has the installed package's layout, and the kill rate leaves out only the
reviewed equivalent mutants."""

import json

import pytest

from edgeclip.benchmarks import mutmut_run as mr


def test_workspace_lays_the_package_out_as_installed(tmp_path):
    mr.build_workspace(tmp_path, ["edgeclip/exporter/fidelity.py"])
    for rel in ("edgeclip/__init__.py", "edgeclip/exporter/fidelity.py", "edgeclip/exporter/compress/select.py",
                "edgeclip/benchmarks/sweep.py", "edgeclip/models/factory.py", "tests/conftest.py"):
        assert (tmp_path / rel).is_file(), rel
    assert not list(tmp_path.rglob("__pycache__"))
    conf = (tmp_path / "pyproject.toml").read_text()
    assert 'only_mutate = ["edgeclip/exporter/fidelity.py"]' in conf and 'source_paths = ["edgeclip"]' in conf


def test_kill_rate_counts_survivors_and_untested_but_not_listed_equivalents(tmp_path, monkeypatch):
    pytest.importorskip("mutmut")
    meta = tmp_path / "mutants" / "edgeclip" / "m.py.meta"
    meta.parent.mkdir(parents=True)
    codes = {"m.x_f__mutmut_1": 1, "m.x_f__mutmut_2": 1, "m.x_f__mutmut_3": 0, "m.x_f__mutmut_4": 33,
             "m.x_f__mutmut_5": 0, "m.x_f__mutmut_6": 36, "m.x_f__mutmut_7": None}
    meta.write_text(json.dumps({"exit_code_by_key": codes}))
    monkeypatch.setattr(mr, "EQUIVALENT", {"m.x_f__mutmut_5": "same value"})
    s = mr.summarise(tmp_path)
    assert s["mutants"] == 7 and s["killed"] == 2                       # two failing runs; a timeout is not a kill
    assert s["survivors"] == ["m.x_f__mutmut_3", "m.x_f__mutmut_4"]     # "no tests" is a survivor, not a pass
    assert s["timeouts"] == ["m.x_f__mutmut_6"]
    # 2 / (7 - 1 equivalent - 1 not run yet): the timeout stays in the denominator until a rerun decides it
    assert s["equivalent"] == ["m.x_f__mutmut_5"] and s["kill_rate"] == 40.0
