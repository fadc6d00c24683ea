"""Shared provenance records keep every chain ExecuTorch builds debug handles from, and are really shared."""

import copy

import torch

from edgeclip.exporter.provenance import shared_provenance


class _Block(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.norm, self.fc1, self.fc2 = torch.nn.LayerNorm(16), torch.nn.Linear(16, 32), torch.nn.Linear(32, 16)

    def forward(self, x):
        return x + self.fc2(torch.nn.functional.gelu(self.fc1(self.norm(x)))).softmax(-1)


def _chain(source) -> list:
    """A record and its ancestors as names, passes and actions (graph ids differ between two runs)."""
    return [source.name, source.pass_name, source._get_action_string(), [_chain(s) for s in source.from_node]]


def _lowered_provenance() -> list:
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    torch.manual_seed(0)
    ep = torch.export.export(_Block().eval(), (torch.randn(2, 4, 16),))
    edge = to_edge_transform_and_lower(ep, partitioner=[XnnpackPartitioner()])
    graph = edge.exported_program().graph_module.graph
    return [(n.name, n.meta.get("debug_handle"), [_chain(s) for s in n.meta.get("from_node", [])])
            for n in graph.nodes if n.op == "call_function"]


def test_records_are_shared_inside_the_block_only():
    from torch.fx.traceback import NodeSource

    record = NodeSource(None, pass_name="p")
    with shared_provenance() as shared:
        assert shared and copy.deepcopy([record])[0] is record
        with shared_provenance() as inner:      # nested: the outer block keeps its patch
            assert inner
        assert copy.deepcopy(record) is record
    assert copy.deepcopy(record) is not record and "__deepcopy__" not in vars(NodeSource)


def test_lowered_graph_has_the_same_provenance_and_debug_handles():
    plain = _lowered_provenance()
    with shared_provenance():
        shared = _lowered_provenance()
    assert any(chain for _, _, chain in plain)          # the lowering recorded provenance at all
    assert any(handle is not None for _, handle, _ in plain)
    assert shared == plain
