"""Bench targets, registered by name: ``get_target("cpu")``; the CLI's ``--target`` choices come from here."""

from .base import BenchOptions, BenchTarget, attach_speedups, check_options, get_target, register, run_target, target_names
from . import cpu, mobile, cuda, arm64  # noqa: E402,F401  (registration)

__all__ = ["BenchOptions", "BenchTarget", "attach_speedups", "check_options", "get_target", "register", "run_target", "target_names"]
