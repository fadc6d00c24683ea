"""onnxruntime static int8 (QDQ): weights int8 per output channel, activations uint8 with scales fixed
from calibration images, so no run-time min/max pass over every activation.

Only the projection ops (MatMul with a weight, Gemm, Conv) are quantized by default; LayerNorm,
SkipLayerNorm, Softmax, GELU and the residual Adds stay float, as do the attention-score MatMuls
(activation x activation; QDQ ignores ORT's ``MatMulConstBOnly``, so they are excluded by name).
MatMul/Gemm outputs stay float, so onnxruntime's CPU EP runs them as ``MatMulIntegerToFloat`` / ``QGemm``;
Conv outputs are quantized because only then does it become ``QLinearConv`` (a float-output QDQ Conv
runs as a float Conv on dequantized weights: all the error, none of the speed).
``runtime_kernels`` reports what the CPU EP really runs, and the result dict carries it.

Activations are ``QUInt8`` and weights ``QInt8`` with ``reduce_range=False``: onnxruntime's advice for
x86 CPUs with VNNI (u8s8 is the fast path of its int8 GEMM; pass ``reduce_range=True`` on pre-VNNI x86).
On ARM ``activation_type="QInt8"`` is an option.

Calibration runs here (``calibrate``), not inside ``quantize_static``, which in onnxruntime 1.32 cannot
size the histograms (its Entropy then equals MinMax exactly) and whose ``CalibMaxIntermediateOutputs``
drops batches.  ``calibration="auto"`` gives each tensor the range (minmax, percentile, entropy or an MSE-optimal
clip) with the lowest quantization error on the calibration images, measured at the outputs of the layers it feeds
where those have constant weights (``range_choice``).
``sensitive_nodes`` measures, on calibration images, how much each quantized node alone
moves the model's output, so the worst few can be kept float by name (``exclude_nodes``).
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgeclip.errors import EdgeclipError

CALIBRATIONS = ("minmax", "entropy", "percentile", "auto")   # auto: per tensor, by measured error (range_choice)
QUANT_TYPES = ("QUInt8", "QInt8")
INT8_COMPUTE_OPS = ("MatMul", "Gemm", "Conv")        # ops whose quantized form runs on int8 kernels on CPU
ALWAYS_FLOAT_DEFAULT = ("LayerNormalization", "SkipLayerNormalization", "SimplifiedLayerNormalization",
                        "Softmax", "Gelu", "BiasGelu", "FastGelu", "QuickGelu", "Erf")


@dataclass(frozen=True)
class OrtStaticConfig:
    calibration: str = "minmax"                     # "minmax" | "entropy" | "percentile" | "auto"
    per_channel: bool = True                        # one weight scale per output channel
    exclude_nodes: tuple[str, ...] = ()             # node names kept float (e.g. from sensitive_nodes)
    op_types: tuple[str, ...] = INT8_COMPUTE_OPS    # op types to quantize; () = every op ORT can quantize
    exclude_op_types: tuple[str, ...] = ALWAYS_FLOAT_DEFAULT   # never quantized, whatever op_types says
    activation_type: str = "QUInt8"                 # x86: QUInt8 activations + QInt8 weights
    weight_type: str = "QInt8"
    reduce_range: bool = False                      # True: 7-bit weights, for pre-VNNI x86 CPUs
    weights_only_matmul: bool = True                # keep activation x activation MatMuls (attention) float
    quantized_outputs: tuple[str, ...] = ("Conv",)  # op types whose outputs are also Q/DQ'd: Conv needs it to
                                                    # run as QLinearConv; MatMul/Gemm run int8 with float output
    activation_symmetric: bool = False              # symmetric activation ranges (asymmetric suits uint8)
    percentile: float = 99.999                      # for calibration="percentile" (two-sided unless symmetric)
    histogram_bins: int = 512                       # entropy / percentile histogram resolution
    batch_size: int = 32                            # calibration batch
    preprocess: bool = True                         # ORT's quant_pre_process (shape inference + basic opt)
    bias_correction: bool = False                   # give quantized Linears their fp32 mean output back (bias_correction)

    def __post_init__(self):
        if self.calibration not in CALIBRATIONS:
            raise EdgeclipError(f"unknown calibration {self.calibration!r}; use one of {', '.join(CALIBRATIONS)}")
        for field_name in ("activation_type", "weight_type"):
            if getattr(self, field_name) not in QUANT_TYPES:
                raise EdgeclipError(f"{field_name} {getattr(self, field_name)!r} is not one of {', '.join(QUANT_TYPES)}")
        if not 50.0 < self.percentile <= 100.0:
            raise EdgeclipError(f"percentile must be in (50, 100] (got {self.percentile}); 99.999 is the usual choice")
        if self.histogram_bins < 256:
            raise EdgeclipError(f"histogram_bins must be >= 256 (got {self.histogram_bins}); entropy searches 128-bin windows")
        if self.batch_size < 1:
            raise EdgeclipError(f"calibration batch_size must be positive (got {self.batch_size})")
        for field_name in ("exclude_nodes", "op_types", "exclude_op_types", "quantized_outputs"):
            if isinstance(getattr(self, field_name), str):
                raise EdgeclipError(f"{field_name} must be a tuple of names, not the string {getattr(self, field_name)!r}")

    def quantized_op_types(self) -> list[str]:
        from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

        wanted = self.op_types or tuple(sorted(set(QDQRegistry) | set(QLinearOpsRegistry)))
        return [t for t in wanted if t not in self.exclude_op_types]


class ArrayCalibrationReader:
    """A ``CalibrationDataReader`` (duck-typed: onnxruntime checks for ``get_next``) over a float32
    ``[N, ...]`` array, in batches; ``set_range`` counts batches."""

    def __init__(self, data: np.ndarray, input_name: str, batch_size: int = 32):
        self.data, self.input_name, self.batch_size = data, input_name, batch_size
        self.start, self.end, self.pos = 0, self._batches(), 0

    def _batches(self) -> int:
        return -(-len(self.data) // self.batch_size)

    def get_next(self) -> dict | None:
        if self.start + self.pos >= self.end:
            return None
        i = (self.start + self.pos) * self.batch_size
        self.pos += 1
        return {self.input_name: self.data[i:i + self.batch_size]}

    def __iter__(self):
        return self

    def __next__(self):
        batch = self.get_next()
        if batch is None:
            raise StopIteration
        return batch

    def __len__(self) -> int:
        return self._batches()

    def rewind(self) -> None:
        self.pos = 0

    def set_range(self, start_index: int, end_index: int) -> None:
        self.start, self.end, self.pos = start_index, min(end_index, self._batches()), 0


def _model_input(model, input_name: str):
    names = [i.name for i in model.graph.input]
    if input_name not in names:
        raise EdgeclipError(f"model has no input {input_name!r} (inputs: {', '.join(names)})")
    return next(i for i in model.graph.input if i.name == input_name)


def check_calibration(calib, model, input_name: str) -> np.ndarray:
    """``calib`` as a contiguous float32 array shaped like ``input_name`` (any batch); EdgeclipError otherwise."""
    inp = _model_input(model, input_name)
    dims = [d.dim_value if d.HasField("dim_value") else None for d in inp.type.tensor_type.shape.dim]
    want = "[N, " + ", ".join(str(d) if d else "?" for d in dims[1:]) + "]"
    arr = np.asarray(calib) if calib is not None else None
    if arr is None or arr.dtype.kind != "f":
        got = "None" if arr is None else f"{arr.dtype} array"
        raise EdgeclipError(f"calibration data is {got}; {input_name} expects preprocessed float32 images {want}")
    if arr.ndim != len(dims) or len(arr) == 0 or any(d and d != s for d, s in zip(dims[1:], arr.shape[1:])):
        raise EdgeclipError(f"calibration images have shape {tuple(arr.shape)}; {input_name} expects {want} "
                            "(preprocessed with the model's Preprocess)")
    if not np.isfinite(arr).all():
        raise EdgeclipError("calibration images contain NaN or inf; check the preprocessing")
    return np.ascontiguousarray(arr, dtype=np.float32)


def _prepare(fp32_path: Path, tmp: Path, config: OrtStaticConfig) -> tuple[Path, str]:
    """ORT's pre-processing: symbolic shape inference (knows the contrib ops the transformer optimizer
    emits) when it succeeds, else ONNX shape inference only.  Deterministic, so node names from
    ``sensitive_nodes`` match the graph ``quantize_onnx_static`` quantizes."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from ..formats.onnx_optimize import quiet

    if not config.preprocess:
        return Path(fp32_path), "none"
    pre = tmp / "pre.onnx"
    with quiet():
        try:
            quant_pre_process(str(fp32_path), str(pre), auto_merge=True)
            return pre, "onnxruntime quant_pre_process (symbolic + onnx shape inference, basic optimization)"
        except Exception:   # symbolic shape inference gives up on some exports (e.g. opset-18 ReduceL2)
            quant_pre_process(str(fp32_path), str(pre), skip_symbolic_shape=True)
            return pre, "onnxruntime quant_pre_process (onnx shape inference, basic optimization)"


CALIBRATION_CHUNK_IMAGES = 128   # images whose activations are held at once while calibrating (histograms merge)


def calibrate(pre: Path, data: np.ndarray, input_name: str, config: OrtStaticConfig, cache: Path) -> None:
    """Activation ranges of the tensors around the quantized op types, written to ``cache`` (ORT's JSON).

    Run here rather than inside ``quantize_static`` because quantize_static cannot pass histogram sizes:
    with its fixed 128 bins and 128 quantized bins, ``Entropy`` has a single candidate threshold and gives
    exactly the MinMax ranges (onnxruntime 1.32).  Entropy here searches 128-bin windows of a
    ``histogram_bins`` histogram (TensorRT's KL method); batches are fed in chunks so memory stays bounded.
    """
    from onnxruntime.quantization.calibrate import CalibrationMethod, create_calibrator, save_tensors_data

    from ..formats.onnx_optimize import quiet

    auto = config.calibration == "auto"
    # auto collects value histograms once (the percentile collector, two-sided) and derives every candidate from them
    method = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
              "percentile": CalibrationMethod.Percentile, "auto": CalibrationMethod.Percentile}[config.calibration]
    options = {"symmetric": config.activation_symmetric and not auto}
    if config.calibration == "entropy":
        options.update(num_bins=config.histogram_bins, num_quantized_bins=128)
    elif config.calibration == "percentile":
        options.update(num_bins=config.histogram_bins, percentile=config.percentile)
    elif auto:
        from .range_choice import FINE_BINS

        options.update(num_bins=config.histogram_bins * FINE_BINS, percentile=config.percentile)
    reader = ArrayCalibrationReader(data, input_name, config.batch_size)
    per_chunk = max(1, CALIBRATION_CHUNK_IMAGES // config.batch_size)
    with tempfile.TemporaryDirectory() as tmp, quiet():
        calibrator = create_calibrator(Path(pre), config.quantized_op_types(), augmented_model_path=str(Path(tmp) / "augmented.onnx"),
                                       calibrate_method=method, extra_options=options)
        # onnxruntime stacks the batches of one collect_data call (np.asarray), so a short last batch goes alone
        full = len(data) // config.batch_size
        chunks = [(i, min(i + per_chunk, full)) for i in range(0, full, per_chunk)]
        if len(data) % config.batch_size:
            chunks.append((full, full + 1))

        def one_pass() -> None:
            for start, end in chunks:
                reader.set_range(start, end)
                calibrator.collect_data(reader)

        one_pass()
        if auto:   # a second pass: the same activations, each value weighted by what reaches the output
            import onnx

            from .range_choice import WeightedHistograms, consumer_weights

            values = calibrator.collector
            weighted = WeightedHistograms(consumer_weights(onnx.load(str(pre), load_external_data=False)),
                                          {k: float(h[4]) for k, h in values.histogram_dict.items()}, options["num_bins"])
            calibrator.collector = weighted
            one_pass()
            ranges, choices = _chosen_ranges(values, weighted, config)
            _choices_file(cache).write_text(json.dumps(choices))
        else:
            ranges = calibrator.compute_data()
            _choices_file(cache).unlink(missing_ok=True)
        del calibrator
    save_tensors_data(ranges, cache)


def _choices_file(cache: Path) -> Path:
    """Beside an ``auto`` range cache: which method each tensor's range came from (the cache itself says MinMax)."""
    return Path(cache).with_name(Path(cache).name + ".choices.json")


def _chosen_ranges(collector, weighted, config: OrtStaticConfig):
    """Per tensor, the range with the lowest quantization error on its calibration activations (``range_choice``):
    output-weighted where the tensor feeds constant weights, the activation's own error elsewhere."""
    from collections import Counter

    from onnxruntime.quantization.calibrate import CalibrationMethod, HistogramCollector, TensorData, TensorsData

    from .range_choice import FINE_BINS, choose_range, coarser

    percentile = collector.compute_percentile()
    # entropy's search is quadratic in the bins: it runs on the same histograms at the configured resolution
    coarse = HistogramCollector("entropy", False, config.histogram_bins, 128, config.percentile, "same")
    coarse.histogram_dict = {name: coarser(h, FINE_BINS) for name, h in collector.histogram_dict.items()}
    entropy = coarse.compute_entropy()
    data, per_tensor = {}, {}
    for name, (hist, edges, lowest, highest, _) in collector.histogram_dict.items():
        by_output = name in weighted.hist
        if by_output:
            hist, edges = weighted.hist[name], weighted.edges(name)
        c = choose_range(hist, edges, (lowest, highest), {"percentile": percentile[name][:2], "entropy": entropy[name][:2]},
                         config.activation_symmetric)
        data[name] = TensorData(lowest=np.array(c.lowest, dtype=np.float32), highest=np.array(c.highest, dtype=np.float32))
        per_tensor[name] = {"method": c.method, "range": [round(c.lowest, 6), round(c.highest, 6)],
                            "error": "output-weighted" if by_output else "activation",
                            "mse": {k: float(f"{v:.4g}") for k, v in c.errors.items()}}
    counts = dict(Counter(v["method"] for v in per_tensor.values()))
    return TensorsData(CalibrationMethod.MinMax, data), {"method": "auto", "chosen": counts, "per_tensor": per_tensor}


def range_choices(cache: Path) -> dict | None:
    """What ``auto`` chose per tensor for this range cache (None for a single-method cache)."""
    f = _choices_file(cache)
    return json.loads(f.read_text()) if f.is_file() else None


def _ranges(pre: Path, data: np.ndarray, input_name: str, config: OrtStaticConfig, tmp: Path,
            calibration_cache: Path | None) -> Path:
    """The activation-range file to quantize with: ``calibration_cache`` if it exists (checked to be of the
    configured method), else a fresh calibration written there (or into ``tmp``)."""
    from onnxruntime.quantization.calibrate import load_tensors_data

    cache = Path(calibration_cache) if calibration_cache is not None else tmp / "calibration.json"
    if cache.is_file():
        made_with = "auto" if range_choices(cache) else load_tensors_data(cache).calibration_method.name.lower()
        if made_with != config.calibration:
            raise EdgeclipError(f"calibration cache {cache} holds {made_with} ranges but the config asks for "
                                f"{config.calibration}; delete it or pass a cache per method")
        return cache
    calibrate(pre, data, input_name, config, cache)
    return cache


def activation_matmuls(model) -> list[str]:
    """MatMul nodes whose B input is computed (attention scores and context), not a constant weight."""
    consts = {i.name for i in model.graph.initializer}
    consts |= {o for n in model.graph.node if n.op_type == "Constant" for o in n.output}
    return [n.name for n in model.graph.node if n.op_type == "MatMul" and n.input[1] not in consts]


def _quantize(pre: Path, out: Path, config: OrtStaticConfig, cache: Path,
              nodes_to_quantize: list[str] | None = None, exclude: list[str] | None = None) -> None:
    """quantize_static from the activation ranges in ``cache`` (see ``calibrate``)."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    from ..formats.onnx_optimize import quiet

    method = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
              "percentile": CalibrationMethod.Percentile, "auto": CalibrationMethod.MinMax}[config.calibration]
    # QDQ ignores MatMulConstBOnly (only the QOperator MatMul reads it): attention MatMuls are excluded by name
    exclude = list(exclude if exclude is not None else config.exclude_nodes)
    if config.weights_only_matmul:
        exclude += [n for n in activation_matmuls(onnx.load(str(pre), load_external_data=False)) if n not in exclude]
    extra = {"MatMulConstBOnly": config.weights_only_matmul, "ActivationSymmetric": config.activation_symmetric}
    float_outputs = [t for t in INT8_COMPUTE_OPS if t not in config.quantized_outputs]
    if float_outputs:
        extra["OpTypesToExcludeOutputQuantization"] = float_outputs
    with quiet():
        quantize_static(str(pre), str(out), None, quant_format=QuantFormat.QDQ,
                        op_types_to_quantize=config.quantized_op_types(), per_channel=config.per_channel,
                        reduce_range=config.reduce_range, activation_type=QuantType[config.activation_type],
                        weight_type=QuantType[config.weight_type], nodes_to_quantize=nodes_to_quantize or None,
                        nodes_to_exclude=exclude or None, calibrate_method=method, extra_options=extra,
                        calibration_cache_path=str(cache))


def qdq_summary(model, op_types=INT8_COMPUTE_OPS) -> dict:
    """Which compute nodes of a QDQ model read quantized tensors (all float inputs from DequantizeLinear)."""
    producer = {o: n for n in model.graph.node for o in n.output}
    int8: dict[str, int] = {}
    floats: dict[str, list[str]] = {}
    for node in model.graph.node:
        if node.op_type not in op_types:
            continue
        quantized = all(producer.get(x) is not None and producer[x].op_type == "DequantizeLinear"
                        for x in node.input[:2] if x)
        if quantized:
            int8[node.op_type] = int8.get(node.op_type, 0) + 1
        else:
            floats.setdefault(node.op_type, []).append(node.name)
    q = sum(n.op_type == "QuantizeLinear" for n in model.graph.node)
    dq = sum(n.op_type == "DequantizeLinear" for n in model.graph.node)
    return {"int8_nodes": int8, "float_nodes": {k: len(v) for k, v in floats.items()},
            "float_node_names": floats, "qdq_nodes": {"QuantizeLinear": q, "DequantizeLinear": dq}}


RUNTIME_KERNELS = ("MatMulIntegerToFloat", "QLinearMatMul", "QGemm", "QLinearConv", "DynamicQuantizeMatMul",
                   "MatMulInteger", "ConvInteger", "MatMul", "FusedMatMul", "Gemm", "FusedGemm", "Conv", "FusedConv",
                   "QuantizeLinear", "DequantizeLinear")


def runtime_kernels(path: Path) -> dict[str, int]:
    """The compute kernels onnxruntime's CPU EP actually runs for ``path`` after its graph transformations
    (Q/DQ pairs folded into int8 kernels or left as float ops with dequantized inputs)."""
    import onnx
    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as tmp:
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED   # QDQ fusions, no NCHWc layout
        opts.optimized_model_filepath = str(Path(tmp) / "runtime.onnx")
        opts.log_severity_level = 3
        ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        graph = onnx.load(opts.optimized_model_filepath, load_external_data=False).graph
    counts: dict[str, int] = {}
    for node in graph.node:
        if node.op_type in RUNTIME_KERNELS:
            counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return counts


def _check_names(model, names) -> None:
    known = {n.name for n in model.graph.node}
    missing = [n for n in names if n not in known]
    if missing:
        sample = ", ".join(n.name for n in model.graph.node if n.op_type in INT8_COMPUTE_OPS)[:200]
        raise EdgeclipError(f"exclude_nodes not in the graph: {', '.join(missing[:5])}; "
                            f"use names from sensitive_nodes() or the model (e.g. {sample})")


def quantize_onnx_static(fp32_path: Path, out_path: Path, calib: np.ndarray, input_name: str,
                         config: OrtStaticConfig = OrtStaticConfig(), *, calibration_cache: Path | None = None) -> dict:
    """Static QDQ int8 of ``fp32_path`` into ``out_path``, calibrated on ``calib`` (preprocessed float32
    images ``[N,3,H,W]``, never the evaluation split).  Returns the facts for the manifest.

    ``calibration_cache``: a JSON file of activation ranges; reused if it exists (it must come from the same
    fp32 file and calibration method), written otherwise.
    """
    import onnx

    fp32_path, out_path = Path(fp32_path), Path(out_path)
    if not fp32_path.is_file():
        raise EdgeclipError(f"ONNX file {fp32_path} does not exist")
    source = onnx.load(str(fp32_path), load_external_data=False)
    data = check_calibration(calib, source, input_name)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out_path.parent) as tmp:
        pre, pre_desc = _prepare(fp32_path, Path(tmp), config)
        _check_names(onnx.load(str(pre), load_external_data=False), config.exclude_nodes)
        cache = _ranges(pre, data, input_name, config, Path(tmp), calibration_cache)
        chosen = range_choices(cache) if config.calibration == "auto" else None
        _quantize(pre, out_path, config, cache)
        if config.bias_correction:
            from .bias_correction import correct_bias

            corrected = correct_bias(pre, out_path, data, input_name)
    summary = qdq_summary(onnx.load(str(out_path), load_external_data=False))
    kernels = runtime_kernels(out_path)
    calibration = {"method": config.calibration, "images": int(len(data)), "batch_size": config.batch_size,
                   "activation_symmetric": config.activation_symmetric}
    if config.calibration in ("percentile", "auto"):
        calibration["percentile"] = config.percentile
    if config.bias_correction:
        calibration["bias_correction"] = corrected
    if chosen:
        calibration["chosen"] = chosen["chosen"]             # tensors per winning method
        calibration["per_tensor"] = chosen["per_tensor"]     # each tensor's method, range and every candidate's error
    return {"method": "onnxruntime.quantization.quantize_static", "format": "QDQ",
            "activation_type": {"QUInt8": "uint8", "QInt8": "int8"}[config.activation_type],
            "weight_type": {"QUInt8": "uint8", "QInt8": "int8"}[config.weight_type],
            "per_channel": config.per_channel, "reduce_range": config.reduce_range,
            "calibration": calibration,
            "op_types_quantized": config.quantized_op_types(),
            "op_types_kept_float": list(config.exclude_op_types),
            "attention_matmuls": "float" if config.weights_only_matmul else "int8",
            "outputs_quantized_of": list(config.quantized_outputs),
            "excluded_nodes": list(config.exclude_nodes),
            "preprocess": pre_desc,
            **{k: v for k, v in summary.items() if k != "float_node_names"},
            "runtime_kernels_cpu": kernels}


def _run_all(path: Path, feeds: np.ndarray, input_name: str, batch: int = 64) -> np.ndarray:
    from edgeclip.exporter.formats.onnx_optimize import helper_session

    sess = helper_session(path)
    return np.concatenate([sess.run(None, {input_name: feeds[i:i + batch]})[0] for i in range(0, len(feeds), batch)])


def _rel_mse(reference: np.ndarray, candidate: np.ndarray) -> float:
    ref = reference.astype(np.float64)
    return float(((candidate - ref) ** 2).sum() / max((ref ** 2).sum(), 1e-30))


def sensitive_nodes(fp32_path: Path, calib: np.ndarray, input_name: str, config: OrtStaticConfig = OrtStaticConfig(),
                    top_k: int | None = 4, *, eval_images: int = 32, method: str = "alone",
                    calibration_cache: Path | None = None) -> list[tuple[str, float]]:
    """Rank the quantizable nodes by the output error their quantization causes, worst first.

    ``method="alone"``: quantize each node on its own (everything else float) and measure the relative
    squared error of the model output vs fp32 (||y_q - y||^2 / ||y||^2) on the first ``eval_images``
    calibration images.  ``method="leave_one_out"``: quantize everything except that node; the score is
    how much the error drops.  One calibration pass (activation ranges cached), then one quantization and
    one short run per candidate: ~1 s per node on a small ViT.  Why 32 images: the probe runs once per node, so
    its size is most of a static export's time, and the ranking it feeds (the top few) did not move with it --
    fixture ViT (36 nodes), 2026-12-07, 2-core AMD EPYC, one thread: the same three worst nodes in the same order
    at 16, 32, 64 and 128 images, 9.4 s at 32 against 16.2 s at 64 (nodes below the top three have scores ~0 and
    trade places at any size).  Returns ``[(node_name, score)]``, the
    ``top_k`` worst (all if None); pass the names as ``OrtStaticConfig(exclude_nodes=...)``.
    """
    import onnx

    if method not in ("alone", "leave_one_out"):
        raise EdgeclipError(f"unknown sensitivity method {method!r}; use 'alone' or 'leave_one_out'")
    fp32_path = Path(fp32_path)
    if not fp32_path.is_file():
        raise EdgeclipError(f"ONNX file {fp32_path} does not exist")
    data = check_calibration(calib, onnx.load(str(fp32_path), load_external_data=False), input_name)
    probe = data[:max(1, eval_images)]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        pre, _ = _prepare(fp32_path, tmp, config)
        _check_names(onnx.load(str(pre), load_external_data=False), config.exclude_nodes)
        cache = _ranges(pre, data, input_name, config, tmp, calibration_cache)
        full = tmp / "full.onnx"
        _quantize(pre, full, config, cache)
        reference = _run_all(pre, probe, input_name)
        compute_ops = tuple(t for t in INT8_COMPUTE_OPS if t in config.quantized_op_types())
        summary = qdq_summary(onnx.load(str(full), load_external_data=False), compute_ops)
        float_names = {n for names in summary["float_node_names"].values() for n in names}
        graph = onnx.load(str(full), load_external_data=False).graph
        candidates = [n.name for n in graph.node if n.op_type in compute_ops and n.name not in float_names]
        full_err = _rel_mse(reference, _run_all(full, probe, input_name)) if method == "leave_one_out" else 0.0
        scores = []
        for name in candidates:
            out = tmp / "one.onnx"
            if method == "alone":
                _quantize(pre, out, config, cache, nodes_to_quantize=[name])
                score = _rel_mse(reference, _run_all(out, probe, input_name))
            else:
                _quantize(pre, out, config, cache, exclude=[*config.exclude_nodes, name])
                score = full_err - _rel_mse(reference, _run_all(out, probe, input_name))
            scores.append((name, score))
    scores.sort(key=lambda t: -t[1])
    return scores if top_k is None else scores[:top_k]
