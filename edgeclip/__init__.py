"""edgeclip: compress, export, verify and benchmark CLIP / ViT image models for edge devices.

    import edgeclip
    arts = edgeclip.export("edgeclip-fmnist", quant="int8")          # or your own nn.Module
    edgeclip.bench(arts, data="fashion-mnist")
"""

from __future__ import annotations

__version__ = "0.1.0"

from edgeclip.errors import EdgeclipError, FidelityError


def __getattr__(name):  # keep `import edgeclip` (and `edgeclip --help`) fast: torch loads on first use
    if name in ("export", "evaluate", "bench", "prepare", "verify"):
        from edgeclip import pipeline

        return getattr(pipeline, name)
    if name == "ExportRecipe":
        from edgeclip.exporter.recipe import ExportRecipe

        return ExportRecipe
    if name == "Preprocess":
        from edgeclip.models.preprocess import Preprocess

        return Preprocess
    if name == "TimingConfig":
        from edgeclip.benchmarks.timing import TimingConfig

        return TimingConfig
    if name == "load_model":
        from edgeclip.models.factory import load_model

        return load_model
    raise AttributeError(f"module 'edgeclip' has no attribute {name!r}")


__all__ = ["EdgeclipError", "ExportRecipe", "FidelityError", "Preprocess", "TimingConfig", "bench", "evaluate", "export", "load_model", "prepare", "verify"]
