"""ExecuTorch writer: ``torch.export`` -> (PT2E int8) -> ``to_edge_transform_and_lower`` (XNNPACK) -> ``.pte``.

Choices, each measured on the 6-block width-192 fixture ViT (2 shared CPU cores):

* Attention: ``scaled_dot_product_attention`` is decomposed here into reshape + bmm + softmax
  + bmm (``_sdpa_decomposition``) before ExecuTorch sees it.  ExecuTorch's default decomposition
  goes through ``_safe_softmax`` (eq / logical_not / any / where / full_like, none of which
  XNNPACK takes), a scalar ``mul`` XNNPACK refuses and 4-D ``matmul`` (expand_copy + bmm): 72
  more ops on the portable kernels.  With the plain softmax batch-1 latency went 9.7 -> 7.0 ms.
  It is exact for every row with at least one unmasked key, which is always the case for
  CLIP/ViT (no mask, or a causal mask whose diagonal is open).
* Batch: the batch dimension stays free (``Dim("batch", max=MAX_BATCH)``).  XNNPACK refuses
  symbolic reshapes and has no select/squeeze, so ``_xnnpack_shape_ops_pass`` rewrites those
  into ``view_copy`` with one inferred (-1) size: 65 -> 23 XNNPACK partitions, 51 % -> 86 % of
  the compute ops delegated.  Batch-1 latency is the same as a static batch-1 program; batches
  run in one call.  Memory is planned for the upper bound, so MAX_BATCH is kept moderate and the
  runtime splits larger batches.  Cost: lowering with a symbolic batch takes ~1.5x longer than
  a static batch 1 (``dynamic_batch=False``).
* ``nn.MultiheadAttention`` is replaced by separate q/k/v Linears (``quantize.attention``, the
  same function, bit-identical outputs on the fixture): the packed in-projection otherwise needs
  a ``slice`` per q/k/v, which XNNPACK refuses on dynamic tensors.  23 -> 17 partitions, 86 % ->
  90 % delegated (int8 static 92 % -> 96 %), batch-1 latency -4 % fp32 / -9 % int8 static.
* Left on the portable kernels: LayerNorm (no XNNPACK partitioner config in executorch 1.5, so
  two partitions per transformer block) and the final L2-norm's pow/sum.  Tried and dropped
  (2026-12-04, 2-core AMD EPYC, interleaved medians): decomposing LayerNorm into ops XNNPACK takes
  (mean over the inner dims of a ``(-1, 1, D, 1)`` view, rsqrt, mul, add; exact in fp32) delegates
  every norm (ViT-B-32 image tower 29 -> 5 partitions fp32, 41 -> 17 int8 dynamic) but saves nothing:
  batch 1, 1 thread 93.2 -> 95.3 ms fp32 and 25.8 -> 28.8 ms int8; 2 threads 57.5 -> 56.4 ms and
  19.8 -> 21.3 ms; lowering took 24 % longer.  XNNPACK's mean is a global average pool, which
  costs more than the portable LayerNorm plus the partition switch it replaces.
* Where lowering time goes (fixture int8 static, ~33-40 s): ExecuTorch's ``run_decompositions``
  retraces of the whole graph (~50 %, twice that of a static batch; three before partitioning with
  the stock XNNPACK partitioner, one or two with ``xnnpack_partitioner``) and XNNPACK's 17 preprocess passes per
  partition (~35-40 %, ~1.5 s of it a one-time build of its bilinear/SDPA pattern graphs per process), most of
  which change nothing: ``idle_xnnpack_passes_skipped`` runs only the passes whose ops a partition has, for the
  same bytes (fixture, same process, 1 thread, 2026-12-06: int8 dynamic 20.4 -> 17.3 s, int8 static 34.4 ->
  30.4 s per export).  Deep copies of
  FX provenance records at every pass were another ~20 % (73 -> 54 s for the whole int8 static export, 3
  interleaved pairs 67-84 s vs 55-68 s); ``exporter.provenance`` shares them while ``export_pte`` runs.
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from edgeclip.errors import EdgeclipError, first_line
from edgeclip.exporter.provenance import shared_provenance

from . import FREE_BATCH_FIX, batch_of_two, sdpa_replaced_by

DELEGATES = ("xnnpack", "portable")
MAX_BATCH = 64          # upper bound of the free batch dim; memory is planned for it, the runtime chunks above it


def _sdpa_decomposition(q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False):
    """``softmax(q k^T * scale + mask) v`` with 3-D bmm: ops XNNPACK takes whole (no _safe_softmax, no expand)."""
    if dropout_p != 0.0:
        raise EdgeclipError("scaled_dot_product_attention with dropout cannot be exported; call model.eval() first")
    if enable_gqa and q.size(-3) != k.size(-3):
        rep = q.size(-3) // k.size(-3)
        k, v = k.repeat_interleave(rep, dim=-3), v.repeat_interleave(rep, dim=-3)
    L, S, E, Ev = q.size(-2), k.size(-2), q.size(-1), v.size(-1)
    lead = q.shape[:-2]
    s = scale if scale is not None else 1.0 / math.sqrt(E)
    q3 = (q * s).reshape(-1, L, E)
    k3 = k.reshape(-1, S, E)
    v3 = v.reshape(-1, S, Ev)
    scores = torch.bmm(q3, k3.transpose(1, 2))
    if is_causal:
        causal = torch.ones(L, S, dtype=torch.bool, device=q.device).tril()
        scores = scores.masked_fill(causal.logical_not(), float("-inf"))
    if attn_mask is not None:
        mask = attn_mask
        if mask.dim() > 2:
            mask = mask.expand(*lead, L, S).reshape(-1, L, S)
        if mask.dtype == torch.bool:
            scores = scores.masked_fill(mask.logical_not(), float("-inf"))
        else:
            scores = scores + mask
    out = torch.bmm(torch.softmax(scores, dim=-1), v3)
    return out.reshape(*lead, L, Ev)


def _batch_bound(ep) -> int:
    """The largest batch the lowered program accepts.  ``to_edge`` can narrow the range ``torch.export`` was
    given (a FastViT MobileCLIP tower: 1..64 became 2..15, from the attention decomposition's views), and
    ExecuTorch plans memory for -- and rejects inputs above -- the narrowed bound, so that is what counts."""
    x = next(n for n in ep.graph.nodes if n.op == "placeholder" and n.name in ep.graph_signature.user_inputs)
    size = x.meta["val"].shape[0]
    if isinstance(size, int):
        return size
    vr = ep.range_constraints.get(size.node.expr)
    return int(min(MAX_BATCH, vr.upper)) if vr is not None else MAX_BATCH


@contextlib.contextmanager
def _restore_level(logger: logging.Logger, level: int):
    try:
        yield
    finally:
        logger.setLevel(level)


@contextlib.contextmanager
def sdpa_as_bmm():
    """While tracing, ``F.scaled_dot_product_attention`` is ``_sdpa_decomposition``: the captured graph holds the
    bmm/softmax form directly.  Decomposing it afterwards (``run_decompositions``) retraces the whole program:
    the capture stage of a fixture ``.pte`` took 2.1-2.4 s instead of 0.65 (fp32) and 3.0-3.9 s instead of 1.0
    (int8 dynamic), interleaved on a 2-core EPYC, 2026-12-06; the programs' outputs are bit-identical.  Every
    attention edgeclip exports (its own ``ProjectedAttention``, ``nn.MultiheadAttention``'s functional path,
    timm, open_clip) calls it through ``torch.nn.functional``; anything that reaches the aten op another way
    is still decomposed by ``_capture``.  The swap is process-wide for the capture's duration: another thread
    calling attention with dropout then would be refused, so export from one thread."""
    with sdpa_replaced_by(_sdpa_decomposition):
        yield


def _has_sdpa(ep: torch.export.ExportedProgram) -> bool:
    return any(n.op == "call_function" and n.target == torch.ops.aten.scaled_dot_product_attention.default
               for n in ep.graph.nodes)


def _capture(module: torch.nn.Module, example: torch.Tensor, dynamic_batch: bool) -> torch.export.ExportedProgram:
    dyn = ({0: torch.export.Dim("batch", min=1, max=MAX_BATCH)},) if dynamic_batch else None
    try:
        with torch.no_grad(), sdpa_as_bmm():
            ep = torch.export.export(module, (example,), dynamic_shapes=dyn)
            if _has_sdpa(ep):
                ep = ep.run_decompositions({torch.ops.aten.scaled_dot_product_attention.default: _sdpa_decomposition})
            return ep
    except EdgeclipError:
        raise
    except Exception as e:  # torch.export raises many types; the first line is what the user needs
        msg = first_line(e)
        if dynamic_batch and "Constraints violated (batch)" in msg:
            raise EdgeclipError(f"{type(module).__name__}'s forward fixes the batch size, so torch.export cannot keep it "
                                f"free for ExecuTorch: {FREE_BATCH_FIX}") from None
        raise EdgeclipError(f"torch.export could not export {type(module).__name__} for ExecuTorch ({msg}); "
                            "the model's forward must be traceable by torch.export") from None


def _xnnpack_shape_ops_pass():
    """An edge-dialect pass that rewrites shape-only ops so XNNPACK takes them under a free batch dim.

    XNNPACK's partitioner refuses ``view_copy`` whose target shape holds a symbolic size, and has
    no config for ``select_copy`` / ``squeeze_copy`` (and refuses most ``unsqueeze_copy``).  Each
    refusal puts a portable op between two XNNPACK partitions.  With at most one unknown size, the
    same result is a ``view_copy`` whose unknown size is ``-1`` (inferred), and ``select`` is a
    ``slice`` of width 1 followed by that view.  Numerically an identity.

    It is also ExecuTorch's ``RemoveNoopExpandCopyPass`` (bypass ``expand_copy`` nodes that change nothing), whose
    retrace then applies the rewrites above: one retrace of the whole program instead of two, for the same
    program (fixture fp32 / int8 dynamic / int8 static files byte-identical to running the two passes in turn;
    fp32 lowering 15.2 -> 14.2 s, two pairs, 2026-12-06, with the other core busy, so within noise).
    """
    from executorch.backends.xnnpack._passes.remove_noop_expand_copy_pass import RemoveNoopExpandCopyPass
    from executorch.exir.dialects._ops import ops as exir_ops

    ops = exir_ops.edge.aten
    reshapes = {ops.squeeze_copy.dims, ops.squeeze_copy.dim, ops.squeeze_copy.default, ops.unsqueeze_copy.default}

    def target_shape(meta) -> list[int] | None:
        val = meta.data.get("val") if hasattr(meta, "data") else None
        if val is None:
            return None
        shape = [d if isinstance(d, int) else -1 for d in val.shape]
        return shape if shape.count(-1) <= 1 else None

    class XnnpackShapeOps(RemoveNoopExpandCopyPass):
        def call_operator(self, op, args, kwargs, meta):
            if op == ops.view_copy.default:
                shape = list(args[1])
                sym = [i for i, d in enumerate(shape) if not isinstance(d, int)]
                if len(sym) == 1 and -1 not in shape:
                    shape[sym[0]] = -1
                    return super().call_operator(op, (args[0], shape), kwargs, meta)
            elif op in reshapes:
                shape = target_shape(meta)
                if shape is not None:
                    return super().call_operator(ops.view_copy.default, (args[0], shape), {}, meta)
            elif op == ops.select_copy.int:
                x, dim, index = args
                shape, size = target_shape(meta), x.to_tensor().shape[dim]
                if shape is not None and isinstance(size, int) and isinstance(index, int):
                    index = index % size
                    sliced = super().call_operator(ops.slice_copy.Tensor, (x, dim, index, index + 1, 1), {}, meta)
                    return super().call_operator(ops.view_copy.default, (sliced, shape), {}, meta)
            return super().call_operator(op, args, kwargs, meta)

    return XnnpackShapeOps()


def xnnpack_partitioner():
    """XNNPACK's partitioner, asking ExecuTorch to keep its ops whole by op type rather than node by node.

    The stock partitioner returns a per-node check with its list of ops to keep whole (``aten.linear`` here), and
    any such check sends ``to_edge_transform_and_lower`` down its EDGE_DO_NOT_DECOMP path: two more whole-program
    ``run_decompositions`` retraces.  Here the check runs once, up front, on every node of those ops: an op type
    whose nodes all pass is kept whole, one with any failing node is decomposed everywhere (the stock path would
    decompose only the failing nodes), and no check is handed on, so after functionalizing ExecuTorch decomposes at
    most once more (not at all when nothing decomposable is left), instead of twice.  Measured on the
    fixture (2026-12-06, 2-core AMD EPYC, 1 thread): the ``.pte`` files are byte-identical to the stock lowering's
    for fp32, int8 dynamic and int8 static, and lowering took 16.7 -> 13.7 s, 24.7 -> 23.0 s and 32.7 -> 26.6 s.
    """
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner

    try:   # ExecuTorch's own filter of what may be kept whole; private, so an ExecuTorch without it lowers the stock way
        from executorch.exir.program._program import _remove_invalid_ops_for_not_decompose
    except ImportError:
        return XnnpackPartitioner()

    class _WholeOpsXnnpackPartitioner(XnnpackPartitioner):
        def ops_to_not_decompose(self, ep):
            ops, check = super().ops_to_not_decompose(ep)
            if check is None:
                return ops, None
            wanted = set(_remove_invalid_ops_for_not_decompose(list(ops)))   # what the stock path would keep
            nodes: dict = {}
            for n in ep.graph.nodes:
                if n.op == "call_function" and n.target in wanted:
                    nodes.setdefault(n.target, []).append(n)
            return [op for op, group in nodes.items() if all(check(n) for n in group)], None

    return _WholeOpsXnnpackPartitioner()


# XNNPACK preprocess passes that can only change a partition holding these ops (all of one set, for some set);
# each pass retraces the partition whether it changes anything or not.  Read from the passes' own sources
# (executorch 1.5.1): the ops each one looks for, and for the two pattern passes every op of every pattern graph
# they match (tests/exporter/test_executorch.py checks the patterns still need them).
_BATCH_NORMS = (frozenset({"aten.native_batch_norm.default"}), frozenset({"aten._native_batch_norm_legit_no_training.default"}))
XNNPACK_PASS_NEEDS: dict[str, tuple[frozenset[str], ...]] = {
    "FuseBatchNormPass": _BATCH_NORMS,
    "DecomposeBatchNorm": _BATCH_NORMS,
    "Conv1dUnsqueezePass": (frozenset({"aten.convolution.default"}),),
    "PReLUReshapePass": (frozenset({"aten._prelu_kernel.default"}),),
    "DecomposeConcatenate": (frozenset({"aten.cat.default"}),),
    "RemoveGetItemPass": (frozenset({"aten.max_pool2d_with_indices.default"}), frozenset({"aten.max.dim"})),
    "FuseActivationPass": (frozenset({"aten.relu.default"}), frozenset({"aten.hardtanh.default"})),
    "ConvertToUpsampleBilinear2d": (frozenset({"aten.upsample_bilinear2d.vec"}),),
    "ConvertToSDPAPass": (frozenset({"aten._softmax.default", "aten.bmm.default", "aten.any.dim", "aten.where.self",
                                     "aten.logical_not.default"}),),
}


def graph_ops(graph: torch.fx.Graph) -> set[str]:
    """Names of the operators a graph calls (``aten.cat.default``), as the XNNPACK passes compare them."""
    return {getattr(n.target, "__name__", str(n.target)) for n in graph.nodes if n.op == "call_function"}


@contextlib.contextmanager
def idle_xnnpack_passes_skipped():
    """While lowering, XNNPACK's preprocess runs only the passes that can change each partition.

    Its pass manager runs all 17 passes on every partition (17 partitions for the fixture ViT), and each pass
    retraces the partition through fake tensors even when it finds nothing to do: batch-norm fusion on a ViT,
    concat splitting with no concat.  A pass is skipped when the partition, as the passes before it left it, lacks
    the ops it rewrites (``XNNPACK_PASS_NEEDS``), so the program is the same (checked byte for byte on the fixture's fp32, int8
    dynamic and int8 static files).  Measured 2026-12-06 (2-core AMD EPYC, 1 thread): XNNPACK's passes were
    11.6 s of a 33.9 s fixture int8 static export, of which the 9 passes listed here 7.7 s, none changing a
    partition; with the skip that export took 30.4 s against 34.4 s, int8 dynamic 17.3 against 20.4 s.  Skipping
    also spares a process the ~1.5 s build of the bilinear/SDPA pattern graphs when no partition could match them.  The pass
    list is not configurable through ExecuTorch's public API, so this swaps the pass manager its preprocess
    uses; an ExecuTorch without it lowers the stock way."""
    try:
        from executorch.backends.xnnpack import xnnpack_preprocess
        from executorch.backends.xnnpack._passes import XNNPACKPassManager
    except ImportError:
        yield
        return
    if getattr(xnnpack_preprocess, "XNNPACKPassManager", None) is not XNNPACKPassManager:
        yield
        return

    class _NeededPasses(XNNPACKPassManager):
        def transform(self):
            # the ops are read again before each pass: an earlier pass may add ops a later one rewrites
            # (DecomposeBatchNorm writes a convolution, which Conv1dUnsqueezePass may then reshape)
            passes = self.passes
            try:
                for p in passes:
                    needs = XNNPACK_PASS_NEEDS.get(p.__name__)
                    if needs is None or any(need <= graph_ops(self._exported_program.graph) for need in needs):
                        self.passes = [p]
                        self._exported_program = super().transform()
            finally:
                self.passes = passes
            return self._exported_program

    xnnpack_preprocess.XNNPACKPassManager = _NeededPasses
    try:
        yield
    finally:
        xnnpack_preprocess.XNNPACKPassManager = XNNPACKPassManager


def delegation_facts(edge_graph: torch.fx.GraphModule) -> dict:
    """Delegated vs non-delegated call nodes of a lowered edge graph (executorch's get_delegation_info).

    Bookkeeping nodes outside the delegates -- ``getitem`` (unpacking a delegate's or LayerNorm's
    tuple output) and symbolic-size arithmetic (``sym_size``, ``mul`` on SymInts for the free batch
    dim) -- compute nothing and are left out of the non-delegated count.
    """
    import operator
    import re

    from executorch.devtools.backend_debug import get_delegation_info

    info = get_delegation_info(edge_graph)
    bookkeeping: dict[str, int] = {}
    for node in edge_graph.graph.nodes:
        if node.op != "call_function" or node.name.startswith("executorch_call_delegate"):
            continue
        val = node.meta.get("val")
        if node.target is operator.getitem or isinstance(val, (int, float, bool, torch.SymInt, torch.SymFloat, torch.SymBool)):
            op = re.sub(r"_[\d]+$", "", node.name)
            bookkeeping[op] = bookkeeping.get(op, 0) + 1
    portable = {}
    for op, b in sorted(info.delegation_by_operator.items()):
        n = b.non_delegated - bookkeeping.get(op, 0)
        if n > 0:
            portable[op.removeprefix("aten_")] = n
    delegated, non_delegated = info.num_delegated_nodes, sum(portable.values())
    return {
        "delegated_subgraphs": info.num_delegated_subgraphs,
        "delegated_ops": delegated,
        "non_delegated_ops": non_delegated,
        "delegated_fraction": round(delegated / max(1, delegated + non_delegated), 4),
        "non_delegated_by_op": portable,
    }


@shared_provenance()
def export_pte(module: torch.nn.Module, example: torch.Tensor, path: Path, *, quant: str = "none",
               scheme: str | None = None, calib: np.ndarray | None = None, delegate: str = "xnnpack",
               dynamic_batch: bool = True, float_layers: tuple[str, ...] = (), group_size: int = 32,
               calib_method: str = "histogram") -> dict:
    """Write ``module`` as an ExecuTorch program at ``path``; returns facts for the manifest.

    ``quant``: "none" (fp32) or "int8" (PT2E XNNPACKQuantizer, ``scheme`` "dynamic" or "static";
    static needs ``calib``, an array of preprocessed inputs).  ``delegate``: "xnnpack" lowers
    every supported op to the XNNPACK backend, "portable" keeps the whole graph on ExecuTorch's
    portable CPU kernels (a reference, fp32 only).  The returned dict has the delegation counts
    and the seconds each stage took.  ``float_layers``: module paths (of the split-attention model) int8
    leaves in float.  ``calib_method`` (static int8): "histogram" (the quantizer's HistogramObserver) or "auto"
    (a range per tensor by output-weighted error, ``quantize.observer_ranges``).
    """
    from executorch.exir import EdgeCompileConfig, ExecutorchBackendConfig, to_edge, to_edge_transform_and_lower

    if delegate not in DELEGATES:
        raise EdgeclipError(f"unknown ExecuTorch delegate {delegate!r}; use one of {', '.join(DELEGATES)}")
    if quant not in ("none", "int8", "int4"):
        raise EdgeclipError(f"--quant {quant} is not available for .pte; use none, int8 or int4")
    if quant in ("int8", "int4") and delegate != "xnnpack":
        raise EdgeclipError(f"{quant} .pte needs the XNNPACK delegate (the portable kernels have no {quant} linear); "
                            "use delegate xnnpack or --quant none")
    from edgeclip.exporter.quantize.attention import split_attention

    path = Path(path)
    seconds: dict[str, float] = {}
    facts: dict = {"dtype": "fp32" if quant == "none" else quant, "delegate": delegate}
    n_mha = sum(isinstance(m, torch.nn.MultiheadAttention) for m in module.modules())
    if n_mha:   # separate q/k/v Linears: no q/k/v slices of the packed projection between XNNPACK partitions
        module = split_attention(module)
        facts["attention"] = f"{n_mha} nn.MultiheadAttention split into q/k/v Linears (same function)"
    module = module.eval()
    if dynamic_batch:
        example = batch_of_two(example)
    else:
        example = example[:1]

    noise = io.StringIO()
    et_log = logging.getLogger("executorch")
    level = et_log.level
    with warnings.catch_warnings(), contextlib.redirect_stdout(noise), _restore_level(et_log, level):
        warnings.simplefilter("ignore")
        et_log.setLevel(logging.ERROR)
        if quant == "int8":
            from edgeclip.exporter.quantize.pt2e_xnnpack import quantize_pt2e_xnnpack

            t = time.perf_counter()
            module, qinfo = quantize_pt2e_xnnpack(module, example, scheme or "dynamic", calib, dynamic_batch=dynamic_batch,
                                                  float_layers=float_layers, calib_method=calib_method)
            seconds["quantize"] = round(time.perf_counter() - t, 2)
            seconds["quantize_stages"] = qinfo.pop("seconds")
            facts.update(qinfo)
        elif quant == "int4":
            from edgeclip.exporter.quantize.torchao_8da4w import quantize_8da4w

            t = time.perf_counter()
            module, qinfo = quantize_8da4w(module, group_size, float_layers)
            seconds["quantize"] = round(time.perf_counter() - t, 2)
            facts.update(qinfo)

        t = time.perf_counter()
        ep = _capture(module, example, dynamic_batch)
        seconds["export"] = round(time.perf_counter() - t, 2)

        t = time.perf_counter()
        config = EdgeCompileConfig(_check_ir_validity=False)
        try:
            if delegate == "xnnpack":
                passes = [_xnnpack_shape_ops_pass()]
                with idle_xnnpack_passes_skipped():
                    edge = to_edge_transform_and_lower(ep, transform_passes=passes, partitioner=[xnnpack_partitioner()],
                                                       compile_config=config)
            else:
                edge = to_edge(ep, compile_config=config)
        except EdgeclipError:
            raise
        except Exception as e:
            msg = first_line(e)
            raise EdgeclipError(f"ExecuTorch could not lower {type(module).__name__} ({msg})") from None
        seconds["lower"] = round(time.perf_counter() - t, 2)
        facts.update(delegation_facts(edge.exported_program().graph_module))

        t = time.perf_counter()
        try:
            program = edge.to_executorch(ExecutorchBackendConfig(extract_delegate_segments=True))
        except Exception as e:
            msg = first_line(e)
            raise EdgeclipError(f"ExecuTorch could not build a program for {type(module).__name__} ({msg}); "
                                "export it with --format onnx or ptl, or --quant none for .pte") from None
        seconds["to_executorch"] = round(time.perf_counter() - t, 2)

    path.write_bytes(program.buffer)
    bound = _batch_bound(edge.exported_program()) if dynamic_batch else 1
    facts["batch"] = f"dynamic 1..{bound}" if dynamic_batch else 1
    facts["max_batch"] = bound
    if dynamic_batch and bound < MAX_BATCH:
        facts["batch_note"] = (f"ExecuTorch's lowering narrowed the batch bound from {MAX_BATCH} to {bound}; memory is "
                               "planned for that, and the runtime splits larger batches")
    facts["export_seconds"] = seconds.get("export")
    facts["lowering_seconds"] = seconds.get("lower")
    facts["seconds"] = seconds
    return facts
