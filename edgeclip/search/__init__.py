"""``edgeclip search``: the fastest recipe within an accuracy budget, measured from exported files (driver.py),
over compression knobs x routes (space.py), run as Ray tasks (tasks.py on benchmarks/executor.py), reported as a ranked table,
a Pareto plot and ``best.toml`` (report.py)."""

from .driver import SearchConfig, run_search

__all__ = ["SearchConfig", "run_search"]
