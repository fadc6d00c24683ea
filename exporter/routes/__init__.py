"""Export routes: every (format, precision, scheme, backend) that edgeclip can build, one registered producer each.

A format module here (``onnx``, ``ptl``, ``pte``, ``pt2``) registers its routes and the reasons it refuses what it
cannot build; everything else is derived from this registry: ``ExportRecipe.validated()`` (refusals naming
routes that do exist), ``edgeclip formats``, the CLI's ``--quant`` / ``--backend`` / ``--format`` choices and
the producer ``write_artifact`` calls.  Adding a route is one registration next to its producer.

Two typed kinds of precision pass: a ``ModelRewrite`` changes the torch module before the format's writer
traces it (torch.ao int8, half casts: ``model_route``), a ``FileRewrite`` rewrites the fp32 file the writer
made (onnxruntime's quantizers, fp16 conversion: ``file_route``).  ExecuTorch's PT2E int8 is model-level
too, but lives inside its writer, which must capture the graph it quantizes with the same batch range.
"""

from .base import (FileRewrite, ModelRewrite, ModelWriter, Route, choices, file_route, find, model_route, refusal_reason, refuse,
                   register, route_of, routes)
from . import onnx, ptl, pte, pt2  # noqa: E402,F401  # registration, in the order `edgeclip formats` lists them

__all__ = ["FileRewrite", "ModelRewrite", "ModelWriter", "Route", "choices", "file_route", "find", "model_route", "refusal_reason",
           "refuse", "register", "route_of", "routes"]
