"""``edgeclip search`` end to end on Ray: a local runtime, a 2-node cluster started here, a worker killed mid-search.

These start Ray runtimes and export real artifacts (about a minute per search on 2 cores), so they run after the
6-minute suite, as .ci/run's second step (``-m ray``); the search's decisions are tested without Ray in
test_search_logic.py.  The model is the built-in one (trained, shipped); the data is ../shared's Fashion-MNIST.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from edgeclip.search import SearchConfig, run_search

pytestmark = pytest.mark.ray
ray = pytest.importorskip("ray", reason="edgeclip search needs Ray: pip install 'edgeclip[search]'")

# One route and combinations ranked by FLOPs (no level timing): what this search measures does not depend on
# timing noise, so two runs measure the same candidates; the killed-worker test times the levels as a user's would.
SMALL = dict(knobs=("token_merge", "mlp_keep"), formats=("onnx",), heal_steps=0, estimate_size=200, eval_size=500,
             width=3, finalists=2, rounds=3, level_timing=False)


@pytest.fixture(scope="module")
def data_spec(fmnist_spec):
    return fmnist_spec


def _measured(report: dict) -> dict:
    """Everything a SMALL search measured but latencies: references, estimates, which candidates it exported and
    their scores on the test split."""
    return {"reference": (report["reference"]["top1"], report["reference"]["estimate_top1"]),
            "sensitivity": [(s["knob"], s["value"], s.get("drop"), s.get("flops")) for s in report["sensitivity"]],
            "combinations": sorted((c["combination"], c["drop"], c["flops"]) for c in report["combinations"]),
            "candidates": sorted((c["artifact"], c["top1"], c["top5"], c["agreement"], c["file_mb"], c["within_budget"])
                                 for c in report["candidates"])}


def _free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


@pytest.fixture(scope="module")
def local_search(tmp_path_factory, data_spec):
    out = tmp_path_factory.mktemp("search-local")
    return run_search(SearchConfig(data=data_spec, workers=2, out=str(out), **SMALL)), out


def test_local_search_writes_a_rebuildable_winner(local_search, data_spec, tmp_path):
    report, out = local_search
    assert (out / "search.json").is_file() and (out / "search.md").is_file() and (out / "search_pareto.png").is_file()
    best = report["best"]
    assert best is not None and best["drop"] <= 0.5 and best["within_budget"]
    # every compressed candidate was exported, scored on the test split and timed in the same run as the plain file
    assert any(c["plain"] for c in report["candidates"]) and any(not c["plain"] for c in report["candidates"])
    assert all(c["top1"] is not None and c["latency_ms_median"] for c in report["candidates"])
    # best.toml rebuilds the same file
    r = subprocess.run([sys.executable, "-m", "edgeclip.cli", "export", "--recipe", str(out / "best.toml"),
                        "--out", str(tmp_path), "--json"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    rebuilt = json.loads(next(tmp_path.glob("*/manifest.json")).read_text())
    shipped = json.loads((out / "best" / best["artifact"] / "manifest.json").read_text())
    assert rebuilt["file"]["sha256"] == shipped["file"]["sha256"]


def test_resume_redoes_nothing(local_search, data_spec):
    report, out = local_search
    t0 = time.monotonic()
    again = run_search(SearchConfig(data=data_spec, workers=2, out=str(out), resume=True, **SMALL))
    assert _measured(again) == _measured(report)
    assert again["candidates"] == report["candidates"] and again["best"] == report["best"]   # nothing re-timed
    assert all(t.get("reused") for t in again["tasks"])
    assert time.monotonic() - t0 < 60      # Ray start-up and the report, no task


def _ray_start(args: list[str], env: dict) -> subprocess.Popen:
    """``ray start --block``: the node lives as long as this process, so the test stops exactly its own nodes."""
    exe = str(Path(sys.executable).with_name("ray"))
    return subprocess.Popen([exe, "start", "--block", "--disable-usage-stats", *args], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)


def _stop(p: subprocess.Popen) -> None:
    if p.poll() is None:
        os.killpg(p.pid, signal.SIGTERM)
        try:
            p.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)


def test_two_node_cluster_gives_the_single_node_result(local_search, data_spec, tmp_path, monkeypatch):
    report, _ = local_search
    port = _free_port()
    env = {**os.environ, "RAY_AUTH_MODE": "token"}     # `ray start --head` enables token auth; every party says so
    monkeypatch.setenv("RAY_AUTH_MODE", "token")
    head = _ray_start(["--head", f"--port={port}", "--node-ip-address=127.0.0.1", "--num-cpus=1",
                       "--include-dashboard=false"], env)
    nodes = [head]
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.5)
        nodes.append(_ray_start([f"--address=127.0.0.1:{port}", "--node-ip-address=127.0.0.1", "--num-cpus=1"], env))
        ray.init(address=f"127.0.0.1:{port}", log_to_driver=False)
        try:
            deadline = time.monotonic() + 90
            while len([n for n in ray.nodes() if n["Alive"]]) < 2 and time.monotonic() < deadline:
                time.sleep(1)
            assert len([n for n in ray.nodes() if n["Alive"]]) == 2, "the second node did not join"
        finally:
            ray.shutdown()
        cluster = run_search(SearchConfig(data=data_spec, ray_address=f"127.0.0.1:{port}", out=str(tmp_path / "s"), **SMALL))
    finally:
        for p in reversed(nodes):
            _stop(p)
        marker = Path(tempfile.gettempdir(), "ray", "ray_current_cluster")   # what `ray start` leaves for ray.init()
        if marker.is_file() and marker.read_text().strip().endswith(f":{port}"):
            marker.unlink()
    assert len(cluster["environment"]["nodes"]) == 2
    assert len(cluster["environment"]["task_nodes"]) == 2, "every task ran on one node"
    assert _measured(cluster) == _measured(report) and len(report["candidates"]) >= 2
    # the answer: the fastest of the same in-budget files (which one is fastest is a latency, so may differ)
    assert cluster["best"]["within_budget"] and cluster["best"]["artifact"] in {c["artifact"] for c in report["candidates"]}


def test_a_killed_worker_costs_only_its_task(data_spec, tmp_path):
    killed: list[int] = []

    def kill_first_export():
        deadline = time.monotonic() + 240
        while not killed and time.monotonic() < deadline:
            ps = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True).stdout
            for line in ps.splitlines():
                pid, _, args = line.strip().partition(" ")
                if args.strip() == "ray::export":
                    time.sleep(1.0)           # mid-export, not at its first instruction
                    os.kill(int(pid), signal.SIGKILL)
                    killed.append(int(pid))
                    return
            time.sleep(0.2)

    t = threading.Thread(target=kill_first_export, daemon=True)
    t.start()
    report = run_search(SearchConfig(data=data_spec, workers=2, out=str(tmp_path), **{**SMALL, "level_timing": True}))
    t.join(5)
    assert killed, "no export task was seen running"
    exports = [x for x in report["tasks"] if x["task"].startswith("export")]
    assert exports and all(x["pid"] not in killed for x in exports)     # the killed one was retried elsewhere
    state = (tmp_path / ".search" / "state.jsonl").read_text().splitlines()
    assert len(state) == 1 + len([t for t in report["tasks"] if not t.get("reused")])   # each task finished once
    assert report["best"] is not None and any(c["plain"] for c in report["candidates"])
    assert all(c["top1"] is not None and c["latency_ms_median"] for c in report["candidates"])


def test_sweep_on_ray_measures_what_the_in_process_sweep_does(data_spec, tmp_path):
    from edgeclip.pipeline import sweep

    kw = dict(data=data_spec, series=["merge-vision", "blocks-text-last"], eval_size=300)
    here = sweep(out=tmp_path / "here", **kw)
    on_ray = sweep(out=tmp_path / "ray", workers=2, **kw)
    assert on_ray["environment"]["executor"] == "ray" and here["environment"]["executor"] == "in-process"

    def scores(rep):
        return [(p["series"], p["x"], p.get("top1"), p.get("agreement"), p.get("flops"), p.get("error")) for p in rep["points"]]

    assert scores(on_ray) == scores(here) and len(scores(here)) >= 4
    assert all(p.get("latency_ms_median") for p in on_ray["points"] if p["series"] == "merge-vision")
