"""Export routes: every (format, precision, scheme, backend) that edgeclip can build, one registered producer each.

A format module here (``onnx``, ``ptl``, ``pte``) registers its routes and the reasons it refuses what it
cannot build; everything else is derived from this registry: ``ExportRecipe.validated()`` (refusals naming
routes that do exist), ``edgeclip formats``, the CLI's ``--quant`` / ``--backend`` / ``--format`` choices and
the producer ``write_artifact`` calls.  Adding a route is one ``register(Route(...))`` next to its producer.
"""

from .base import Route, choices, find, refusal_reason, refuse, register, route_of, routes
from . import onnx, ptl, pte  # noqa: E402,F401  # registration, in the order `edgeclip formats` lists them

__all__ = ["Route", "choices", "find", "refusal_reason", "refuse", "register", "route_of", "routes"]
