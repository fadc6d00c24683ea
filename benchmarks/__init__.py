"""Benchmarks: interleaved timing harness, accuracy / fidelity metrics, reports."""
