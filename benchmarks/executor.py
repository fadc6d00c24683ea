"""Ray as the executor of many candidates (search, sweep): an embedded local runtime by default, a cluster by address.

Why Ray and not a process pool of our own: a cluster, retries of a task whose worker died, and placement by
resources come with it.  Two kinds of task:

* **parallel** (estimates, exports, accuracy): one CPU each, as many at once as the cluster has CPUs
  (``--workers`` bounds the local runtime);
* **timing**: pinned to one node (the same node for every timing task of a search, so its latencies compare) and
  holding *all* of that node's CPUs, so nothing else runs on the node while it times -- stronger than a count-one
  timing resource, which would still let accuracy tasks share the cores being timed.

A task whose worker process dies is retried by Ray (``max_retries``); a task that raises is not (a user mistake or a
bug does not get better on a second try).
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from typing import Any, Callable

from edgeclip.errors import EdgeclipError

RETRIES = 3
RAY_INSTALL = "pip install 'edgeclip[search]' (or pip install ray)"


def check_address(address: str, timeout_s: float = 5.0) -> tuple[str, int]:
    """``host:port`` of a Ray head this machine can reach, or a one-line refusal (before Ray is asked: its own
    connect retries for a minute or more)."""
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise EdgeclipError(f"--ray-address {address!r}: use HOST:PORT of a Ray head (e.g. 127.0.0.1:6379, what `ray start "
                            f"--head` printed)")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout_s):
            pass
    except OSError as e:
        raise EdgeclipError(f"--ray-address {address}: nothing answers there ({e.strerror or e}); start a head with "
                            f"`ray start --head --port {port}` or drop --ray-address for a local runtime") from None
    return host, int(port)


@dataclass
class NodeInfo:
    node_id: str
    cpus: int
    address: str


class RayExecutor:
    """``with RayExecutor(address, workers) as ex: ex.run(fn, args_list)``."""

    def __init__(self, address: str | None = None, workers: int | None = None):
        if workers is not None and workers < 1:
            raise EdgeclipError(f"--workers must be at least 1 (got {workers})")
        if address is not None and workers is not None:
            raise EdgeclipError("--workers bounds the local Ray runtime; a cluster's size is its own (drop --workers or "
                                "--ray-address)")
        self.address, self.workers = address, workers
        self._ray = None
        self._started = False
        self.timing_node: NodeInfo | None = None

    def __enter__(self) -> "RayExecutor":
        try:
            import ray
        except ImportError:
            raise EdgeclipError(f"edgeclip search runs its candidates on Ray, which is not installed: {RAY_INSTALL}") from None
        if self.address:
            check_address(self.address)
        self._ray = ray
        env = {"env_vars": {"PYTHONWARNINGS": "ignore"}}
        try:
            if self.address:
                ray.init(address=self.address, log_to_driver=False, runtime_env=env)
            else:
                cpus = self.workers or os.cpu_count() or 1
                # address="local": a new runtime of our own, never a cluster `ray start` left running here
                ray.init(address="local", num_cpus=cpus, include_dashboard=False, log_to_driver=False, runtime_env=env)
        except ConnectionError as e:
            raise EdgeclipError(f"cannot join the Ray cluster at {self.address}: {str(e).splitlines()[0][:160]} (a cluster "
                                "started with token authentication needs RAY_AUTH_MODE=token here too)") from None
        self._started = True
        self.timing_node = self._pick_timing_node()
        return self

    def __exit__(self, *exc) -> None:
        if self._started:
            self._ray.shutdown()
            self._started = False

    def nodes(self) -> list[NodeInfo]:
        return [NodeInfo(n["NodeID"], int(n["Resources"].get("CPU", 0)), n.get("NodeManagerAddress", ""))
                for n in self._ray.nodes() if n.get("Alive")]

    def _pick_timing_node(self) -> NodeInfo:
        """The node with the most CPUs (the head's among equals): every timing task of the search runs there."""
        nodes = [n for n in self.nodes() if n.cpus >= 1]
        if not nodes:
            raise EdgeclipError("the Ray cluster has no node with a CPU to run on")
        here = self._ray.get_runtime_context().get_node_id()
        return max(nodes, key=lambda n: (n.cpus, n.node_id == here))

    def submit(self, fn: Callable, *args: Any, timing: bool = False):
        ray = self._ray
        if timing:
            from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

            opts = {"num_cpus": self.timing_node.cpus,
                    "scheduling_strategy": NodeAffinitySchedulingStrategy(self.timing_node.node_id, soft=False)}
        else:
            opts = {"num_cpus": 1}
        remote = ray.remote(fn).options(max_retries=RETRIES, retry_exceptions=False, **opts)
        return remote.remote(*args)   # Ray moves large arguments (artifact bytes) through its object store itself

    def wait_any(self, pending: list) -> tuple[list, list]:
        return self._ray.wait(pending, num_returns=1)

    def lost(self, e: BaseException) -> bool:
        """Whether ``e`` says the task's worker or node died (past Ray's retries), not that the task raised."""
        x = self._ray.exceptions
        return isinstance(e, (x.WorkerCrashedError, x.NodeDiedError, x.ObjectLostError, x.OwnerDiedError,
                              x.LocalRayletDiedError, x.OutOfMemoryError))

    def result(self, ref) -> Any:
        """The task's return value; a task that raised re-raises its own exception (an EdgeclipError stays one)."""
        try:
            return self._ray.get(ref)
        except self._ray.exceptions.RayTaskError as e:
            cause = e.as_instanceof_cause()
            if isinstance(cause, EdgeclipError) or isinstance(getattr(e, "cause", None), EdgeclipError):
                raise EdgeclipError(str(getattr(e, "cause", cause))) from None
            raise
