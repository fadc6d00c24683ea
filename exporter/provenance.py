"""Shared FX provenance records while a program is lowered: the same chains, without copying them at every pass.

Every FX pass that rewrites a node records where the new node came from (``torch.fx.traceback.NodeSource`` in
``node.meta["from_node"]``), and each new record deep-copies the whole chain of records before it.  A lowering
runs the graph through dozens of passes (torch.export's decompositions, PT2E prepare/convert, ExecuTorch's edge
passes, XNNPACK's 17 passes per partition), so the chains grow with every pass and the copies with their square.
Measured on the 6-block fixture ViT, int8 static ``.pte`` on one thread of a Zen 4 EPYC: deep copies of these
records were 14 % of the profile, and three interleaved pairs of the whole export took 67-84 s with them,
55-68 s without (same program, outputs identical); the tiny 2-block CLIP's four test programs 78 -> 49 s.  (The ONNX writer's one torch.export pass
gains nothing measurable from it: 7.1 vs 7.3 s, so only ``export_pte`` uses it.)

Sharing is safe because a record is never changed after it is built: torch, torchao and ExecuTorch only read
the chains (ExecuTorch's debug handles and Inspector, torchao's numeric debugger, serialisation), so a chain
that shares its ancestors with another is the same chain.  ``tests/exporter/test_provenance.py`` checks that the
lowered graph's provenance (each node's greatest ancestor, which ExecuTorch's debug handles are built from) is
the same with and without this.
"""

from __future__ import annotations

import contextlib
from typing import Iterator


@contextlib.contextmanager
def shared_provenance() -> Iterator[bool]:
    """Within the block (or the decorated function), ``copy.deepcopy`` of a provenance record returns the record itself.

    Yields whether sharing is in effect (False on a torch without ``NodeSource``, or one that already defines
    how such records are copied: then torch's own behaviour is kept).  Nested blocks leave it to the outer one.
    """
    try:
        from torch.fx.traceback import NodeSource
    except ImportError:
        yield False
        return
    if "__deepcopy__" in vars(NodeSource):
        yield getattr(NodeSource.__deepcopy__, "_edgeclip_shared", False)
        return

    def share(self, memo):
        return self

    share._edgeclip_shared = True
    NodeSource.__deepcopy__ = share
    try:
        yield True
    finally:
        del NodeSource.__deepcopy__
