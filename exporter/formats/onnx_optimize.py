"""Transformer graph fusions with ``onnxruntime.transformers.optimizer`` (the maintained successor of the
dead onnxruntime-tools package), checked numerically against the unoptimized model.

What fuses on a torch-dynamo export of an open_clip / timm ViT (opset 18), measured on the shared
fixture: the erf-GELU + its bias Add -> ``BiasGelu`` and residual Add + LayerNormalization ->
``SkipLayerNormalization``.  Multi-head attention does *not* fuse: ``nn.MultiheadAttention``'s packed
in-projection exports as MatMul -> Reshape/Unsqueeze/Transpose/Squeeze/Gather and a Gemm out-projection,
which no onnxruntime attention pattern matches.  The result says so instead of claiming a fusion.

One rewrite is made so the fusions can run at all: onnxruntime's symbolic shape inference (which the
SkipLayerNormalization fusion needs) loses the rank of an opset-18 ``ReduceL2`` whose axes are an input
(the ``F.normalize`` before a CLIP head), and then fuses nothing.  ``ReduceL2(x)`` is rewritten as
``Sqrt(ReduceSum(x * x))`` -- the same function -- before fusing.

Fused ops are ``com.microsoft`` contrib ops: the optimized file needs onnxruntime (CPU or CUDA EP), not
just any ONNX runtime.  onnxruntime applies most of these fusions itself when a session is created
(ORT_ENABLE_ALL), so an fp32 model rarely gets faster; the point is to fuse *before* int8 QDQ
quantization, whose Q/DQ nodes would otherwise sit inside the patterns the runtime looks for.
"""

from __future__ import annotations

import contextlib
import io
import logging
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np

from edgeclip.errors import EdgeclipError, first_line

# ops the fusions create (or keep, for LayerNormalization), counted before and after
FUSED_OP_TYPES = ("Attention", "MultiHeadAttention", "SkipLayerNormalization", "LayerNormalization", "Gelu",
                  "BiasGelu", "FastGelu", "QuickGelu", "GemmFastGelu", "EmbedLayerNormalization",
                  "SimplifiedLayerNormalization", "SkipSimplifiedLayerNormalization")


def op_counts(model) -> dict[str, int]:
    """``{op_type: count}`` of a ModelProto's main graph, most frequent first."""
    return dict(Counter(n.op_type for n in model.graph.node).most_common())


@contextlib.contextmanager
def quiet():
    """The transformers optimizer and the quantization calibrators log warnings and print progress; hide both."""
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        logging.disable(previous)


def _constant(model, name: str) -> bool:
    return name == "" or any(i.name == name for i in model.graph.initializer) or any(
        n.op_type == "Constant" and name in n.output for n in model.graph.node)


def rewrite_reduce_l2(model) -> int:
    """``ReduceL2(x, axes)`` -> ``Sqrt(ReduceSum(x * x, axes))`` in place (same function); returns how many.

    onnxruntime's symbolic shape inference handles ReduceSum with axes as an input, but drops the shape of
    ReduceL2's output, and everything downstream of it."""
    from onnx import helper

    nodes, count = [], 0
    for node in model.graph.node:
        if node.op_type != "ReduceL2" or node.domain not in ("", "ai.onnx") or (len(node.input) > 1 and not _constant(model, node.input[1])):
            nodes.append(node)
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        square, total = f"{node.output[0]}__square", f"{node.output[0]}__sum"
        name = node.name or f"ReduceL2_{count}"
        nodes += [helper.make_node("Mul", [node.input[0], node.input[0]], [square], name=f"{name}__square"),
                  helper.make_node("ReduceSum", [square, *node.input[1:]], [total], name=f"{name}__sum", **attrs),
                  helper.make_node("Sqrt", [total], list(node.output), name=f"{name}__sqrt")]
        count += 1
    if count:
        del model.graph.node[:]
        model.graph.node.extend(nodes)
    return count


def example_inputs(model_path: Path, batch: int = 2, seed: int = 0) -> dict[str, np.ndarray]:
    """Random-normal float inputs for every graph input (free dims become ``batch``): plumbing checks only."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(seed)
    feeds = {}
    for i in sess.get_inputs():
        if i.type != "tensor(float)":
            raise EdgeclipError(f"input {i.name} is {i.type}; pass check_inputs= with real values for non-float inputs")
        shape = [d if isinstance(d, int) else batch for d in i.shape]
        feeds[i.name] = rng.standard_normal(shape).astype(np.float32)
    return feeds


def helper_session(path: Path):
    """An onnxruntime CPU session for the exporter's own checks (sensitivity ranking, fusion checks).

    Threads: the process's torch setting, like the rest of the export, instead of a hard-coded 2 (too few on a
    16-core box, too many in a process given one core; fixture static int8 ONNX export on an idle 2-core EPYC:
    2 threads 18.5-20.0 s wall / 27-29 CPU-s, 1 thread 24-25 s / 25 CPU-s).  No spinning: these runs are large
    batches, where waiting threads that spin only take cores from other work (2026-12-06, 2-core AMD EPYC,
    fixture ViT, 2,000 images at batch 64, the other core busy: 2 spinning threads 15.0 s wall / 20.0 CPU-s,
    2 sleeping 12.4 / 15.2, 1 thread 11.7 / 11.6)."""
    import onnxruntime as ort
    import torch

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = torch.get_num_threads()
    opts.inter_op_num_threads = 1
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def _run(path: Path, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    return helper_session(path).run(None, feeds)


def optimize_onnx(src: Path, dst: Path, *, model_type: str = "vit", num_heads: int = 0, hidden_size: int = 0,
                  check_inputs: np.ndarray | dict[str, np.ndarray] | None = None, atol: float = 1e-4,
                  rtol: float = 1e-4, opt_level: int | None = None) -> dict:
    """Fuse transformer subgraphs of ``src`` into ``dst``; returns fusion counts and the numerical check.

    ``num_heads``/``hidden_size`` = 0 lets onnxruntime detect them (only used by attention fusion).
    ``check_inputs``: real preprocessed inputs (an array for a single-input model, or a feed dict) on
    which the optimized model must match the original within ``atol + rtol * max|original|``; without
    them random-normal inputs are used (enough to prove the graph is the same function).
    ``opt_level`` goes to ``optimize_model`` (None: its default for ``model_type``; 0: python fusions only).
    Raises EdgeclipError if the optimized model does not run on the CPU EP or does not match.
    """
    import onnx
    from onnxruntime.transformers.optimizer import MODEL_TYPES, optimize_model

    src, dst = Path(src), Path(dst)
    if model_type not in MODEL_TYPES:
        raise EdgeclipError(f"unknown model_type {model_type!r} for the onnxruntime transformer optimizer; "
                            f"use one of {', '.join(sorted(MODEL_TYPES))} (vit for ViT / CLIP image towers)")
    if not src.is_file():
        raise EdgeclipError(f"ONNX file {src} does not exist")
    model = onnx.load(str(src))
    before = op_counts(model)
    rewritten = rewrite_reduce_l2(model)
    with tempfile.TemporaryDirectory() as tmp, quiet():
        staged = Path(tmp) / "rewritten.onnx"          # optimize_model's onnxruntime pass wants a file
        onnx.save(model, str(staged))
        optimizer = optimize_model(str(staged), model_type=model_type, num_heads=num_heads, hidden_size=hidden_size,
                                   opt_level=opt_level, use_gpu=False)
        stats = {k: v for k, v in optimizer.get_fused_operator_statistics().items() if v}
    dst.parent.mkdir(parents=True, exist_ok=True)
    optimizer.save_model_to_file(str(dst), use_external_data_format=False)
    after = op_counts(optimizer.model)

    fused_before = {k: before.get(k, 0) for k in FUSED_OP_TYPES if before.get(k, 0)}
    fused_after = {k: after.get(k, 0) for k in FUSED_OP_TYPES if after.get(k, 0)}
    new = {k: v - before.get(k, 0) for k, v in fused_after.items() if v > before.get(k, 0)}
    notes = []
    if not new:
        notes.append("nothing fused: the graph has no pattern onnxruntime.transformers recognises for "
                     f"model_type={model_type}; the output is the input after basic graph clean-up")
    if not (after.get("Attention", 0) or after.get("MultiHeadAttention", 0)):
        notes.append("attention not fused (pattern not recognised for this export); attention runs as MatMul/Softmax")

    if check_inputs is None:
        feeds, desc = example_inputs(src), "random normal inputs (plumbing check, batch 2)"
    elif isinstance(check_inputs, dict):
        feeds, desc = {k: np.ascontiguousarray(v) for k, v in check_inputs.items()}, f"{len(next(iter(check_inputs.values())))} given inputs"
    else:
        name = model.graph.input[0].name
        feeds, desc = {name: np.ascontiguousarray(check_inputs, dtype=np.float32)}, f"{len(check_inputs)} given inputs"
    try:
        reference = _run(src, feeds)
        candidate = _run(dst, feeds)
    except Exception as e:  # onnxruntime raises its own Fail/InvalidGraph types
        raise EdgeclipError(f"optimized model {dst.name} does not run on onnxruntime's CPU EP "
                            f"({first_line(e, 200)}); use the unoptimized model") from None
    max_err = max(float(np.abs(r - c).max()) for r, c in zip(reference, candidate))
    scale = max(float(np.abs(r).max()) for r in reference)
    if not max_err <= atol + rtol * scale:
        raise EdgeclipError(f"optimized model differs from {src.name} by max abs {max_err:.3g} "
                            f"(> {atol:g} + {rtol:g} x {scale:.3g}) on {desc}; use the unoptimized model")
    return {"tool": "onnxruntime.transformers.optimizer.optimize_model", "model_type": model_type,
            "num_heads": num_heads, "hidden_size": hidden_size, "opt_level": opt_level,
            "fused_operator_statistics": stats, "fused_ops_before": fused_before, "fused_ops_after": fused_after,
            "fused": new, "attention_fused": bool(after.get("Attention", 0) or after.get("MultiHeadAttention", 0)),
            "rewrites": {"ReduceL2->Sqrt(ReduceSum(x*x))": rewritten} if rewritten else {},
            "nodes_before": sum(before.values()), "nodes_after": sum(after.values()),
            "op_counts_before": before, "op_counts_after": after,
            "check": {"provider": "CPUExecutionProvider", "inputs": desc, "max_abs_err": max_err,
                      "max_abs_output": scale},
            "notes": notes}
