"""Shared FX provenance records while a format is produced: the same chains, without copying them at every pass.

Every FX pass that rewrites a node records where the new node came from (``torch.fx.traceback.NodeSource`` in
``node.meta["from_node"]``), and each new record deep-copies the whole chain of records before it.  A lowering
runs the graph through dozens of passes (torch.export's decompositions, PT2E prepare/convert, ExecuTorch's edge
passes, XNNPACK's 17 passes per partition), so the chains grow with every pass and the copies with their square.
Measured on the 6-block fixture ViT, int8 static ``.pte`` on one thread of a Zen 4 EPYC: deep copies of these
records were 14 % of the profile, and the export took 73.1 s with them, 53.6 s without (same program, outputs
identical).

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
    """Within the block, ``copy.deepcopy`` of a provenance record returns the record itself.

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
