"""AOTInductor writer: ``torch.export`` -> torchao PT2E int8 (X86InductorQuantizer) -> ``aoti_compile_and_package``
-> ``.pt2``, a zip holding the generated C++ and a shared library compiled for this CPU.

What the recipe needs (torch 2.14, torchao 0.18; checked by hand 2026-12-07, see benchmarks/README.md ".pt2"):

* The int8 fusion passes (q/dq + linear -> oneDNN ``qlinear_pointwise`` with prepacked weights) are registered by
  importing ``torchao.quantization.pt2e.quantizer.x86_inductor_quantizer``, so the compiling process imports it
  (it also sets ``torch._inductor.config.pre_grad_custom_pass`` process-wide).  They only fire under Inductor
  freezing with grad off: without ``freezing`` or outside ``torch.no_grad()`` the package silently runs fp32 matmuls
  between quantize/dequantize pairs, with the same numbers (pytorch/ao#4566).  So the generated wrapper is read
  back and a package that calls no ``qlinear_pointwise`` kernel is refused.
* ``nn.MultiheadAttention`` keeps its q/k/v projection as a bare Parameter, which the quantizer leaves fp32 (a
  ViT-B-32 package was 179 MB and 29.7 ms; with separate q/k/v Linears 95.8 MB and 17.7 ms, 2-core EPYC): it is
  split first (``quantize.attention.split_attention``, a copy; checked to give the same outputs in fp32).
* The batch stays free up to ``MAX_BATCH`` (the runtime splits larger batches; ``max_batch`` in the facts).
* Dynamic activations are per-tensor (the x86 quantizer has no per-token spec); a conv (the patch embedding) stays
  fp32 in the dynamic scheme.  LayerNorm, GELU, softmax and attention's matmuls stay fp32 in both.
* The shared library is compiled for the exporting CPU's vector ISA (``AOTI_CPU_ISA`` in the package, copied to
  the facts as ``cpu_isa``): it may not load on a CPU without it.
"""

from __future__ import annotations

import contextlib
import io
import platform
import re
import shutil
import time
import warnings
import zipfile
from pathlib import Path

import numpy as np
import torch

from edgeclip.errors import EdgeclipError, first_line

from . import FREE_BATCH_FIX, batch_of_two

MAX_BATCH = 32            # the package's batch range is 1..MAX_BATCH
CAPTURE_MAX_BATCH = 4096  # the range calibration runs under (few large batches: HistogramObserver costs per call)
EXACT = 1e-5              # the attention split must match the module to this, relative to the output scale
X86 = ("x86_64", "amd64")
_QLINEAR = re.compile(r"aoti_torch_cpu__qlinear_pointwise\w*\(")
_QCONV = re.compile(r"aoti_torch_cpu__qconv\w*pointwise\w*\(")


def compilers() -> tuple[str, ...]:
    """The C++ compilers Inductor tries, in its order (``$CXX``, else g++; ``torch._inductor.config.cpp.cxx``)."""
    from torch._inductor import config

    cxx = config.cpp.cxx if isinstance(config.cpp.cxx, (list, tuple)) else (config.cpp.cxx,)
    return tuple(c for c in cxx if c)


def toolchain_refusal() -> str | None:
    """Why this machine cannot build a ``.pt2`` x86 int8 package, with the fix; None when it can."""
    machine = platform.machine()
    if machine.lower() not in X86:
        return (f"a .pt2 package is compiled for the CPU that exports it and its int8 kernels are x86 (oneDNN), but this "
                f"machine is {machine or 'unknown'}: export on the x86 machine that will run it")
    if not any(shutil.which(c) for c in compilers()):
        return (f"AOTInductor compiles the model to C++ at export time and no C++ compiler was found "
                f"({' or '.join(compilers())} on PATH): install g++ (apt-get install g++) or set CXX, or export on the "
                "x86 machine that will run it")
    return None


def _exactly_split(module: torch.nn.Module, example: torch.Tensor) -> tuple[torch.nn.Module, int]:
    """``module`` with every ``nn.MultiheadAttention`` as separate q/k/v Linears (a copy), checked to compute the
    same outputs in fp32; the number of attentions split."""
    from edgeclip.exporter.quantize.attention import split_attention

    n = sum(isinstance(m, torch.nn.MultiheadAttention) for m in module.modules())
    if not n:
        return module.eval(), 0
    split = split_attention(module)
    with torch.no_grad():
        ref, got = module.eval()(example), split(example)
    err = float((ref - got).abs().max())
    if not err <= EXACT * max(1.0, float(ref.abs().max())):
        raise EdgeclipError(f"splitting {type(module).__name__}'s attention into q/k/v Linears changed its outputs by {err:.3g} "
                            "in fp32, so its int8 .pt2 would not be the same model; export --format pte or onnx")
    return split, n


def _export(module: torch.nn.Module, example: torch.Tensor, max_batch: int) -> torch.export.ExportedProgram:
    dyn = ({0: torch.export.Dim("batch", min=1, max=max_batch)},)
    try:
        return torch.export.export(module, (example,), dynamic_shapes=dyn)
    except Exception as e:   # torch.export raises many types; the first line is what the user needs
        msg = first_line(e)
        if "Constraints violated (batch)" in msg:
            raise EdgeclipError(f"{type(module).__name__}'s forward fixes the batch size, so torch.export cannot keep it "
                                f"free for AOTInductor: {FREE_BATCH_FIX}") from None
        raise EdgeclipError(f"torch.export could not export {type(module).__name__} for AOTInductor ({msg}); "
                            "the model's forward must be traceable by torch.export") from None


def quantize_x86(module: torch.nn.Module, example: torch.Tensor, scheme: str, calib: np.ndarray | None,
                 float_layers: tuple[str, ...] = (), calib_method: str = "histogram") -> tuple[torch.fx.GraphModule, dict]:
    """PT2E int8 for Inductor's x86 kernels: the converted (Q/DQ) GraphModule and its facts.  ``static``:
    activation ranges observed on ``calib`` (``calib_method`` "histogram": the stock HistogramObserver's search;
    "auto": a range per tensor by output-weighted error, as the .pte / .ptl routes); ``dynamic``: per-tensor ranges
    per call."""
    import torchao.quantization.pt2e.quantizer.x86_inductor_quantizer as xiq

    from edgeclip.exporter.quantize.mixed import RESIDUAL
    from edgeclip.exporter.quantize.observer_ranges import with_chosen_ranges
    from edgeclip.exporter.quantize.pt2e_xnnpack import calibrate, check_calibration
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    if scheme == "static":
        check_calibration(calib, example)
    chosen_ranges = scheme == "static" and calib_method == "auto"
    config = xiq.get_default_x86_inductor_quantization_config(is_dynamic=scheme == "dynamic")
    quantizer = xiq.X86InductorQuantizer().set_global(with_chosen_ranges(config) if chosen_ranges else config)
    for name in float_layers:   # accuracy control / --float-layer: these modules get no annotation
        if not name.endswith(RESIDUAL):   # a block's residual adds: already float in this quantizer's graph
            quantizer.set_module_name_qconfig(name, None)
    n, range_facts = 0, {}
    with torch.no_grad():
        prepared = prepare_pt2e(_export(module, example, CAPTURE_MAX_BATCH).module(), quantizer)
        if scheme == "dynamic":   # one forward so the per-channel weight observers see the weights
            prepared(example)
        else:
            n, range_facts = calibrate(prepared, calib, chosen_ranges=chosen_ranges)
        converted = convert_pt2e(prepared)
    return converted, {
        "weights": "int8 per-channel symmetric",
        "activations": ("uint8 per-tensor affine, quantized at run time per call (per-tensor, not per-token)"
                        if scheme == "dynamic" else
                        "uint8 per-tensor affine, ranges chosen per tensor by output-weighted error (--calib-method auto)"
                        if chosen_ranges else "uint8 per-tensor affine, ranges calibrated (HistogramObserver)"),
        "calibration_images": n,
        "float_layers": list(float_layers),
        **({"activation_ranges": range_facts} if chosen_ranges else {}),
    }


def package_facts(path: Path) -> dict:
    """What the package's generated wrapper calls (int8 oneDNN kernels) and the CPU it was built for."""
    from edgeclip.runtimes.aoti_runtime import package_target

    with zipfile.ZipFile(path) as z:
        wrapper = "".join(z.read(n).decode("utf-8", "replace") for n in z.namelist() if n.endswith(".wrapper.cpp"))
    isa, machine = package_target(path)
    return {"qlinear_kernels": len(_QLINEAR.findall(wrapper)), "qconv_kernels": len(_QCONV.findall(wrapper)),
            "cpu_isa": isa or "unknown", "machine": machine}


def export_pt2(module: torch.nn.Module, example: torch.Tensor, path: Path, *, scheme: str, calib: np.ndarray | None = None,
               float_layers: tuple[str, ...] = (), calib_method: str = "histogram") -> dict:
    """Write ``module`` as an x86 int8 AOTInductor package at ``path``; returns facts for the manifest.  Refuses
    (nothing written) on a machine that cannot compile it, and a package whose Linears did not become int8 kernels."""
    import torchao

    why = toolchain_refusal()
    if why:
        raise EdgeclipError(why)
    path = Path(path)
    example = batch_of_two(example)
    seconds: dict[str, float] = {}
    facts: dict = {}
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        t = time.perf_counter()
        module, n_mha = _exactly_split(module.eval(), example)
        if n_mha:
            facts["attention"] = f"{n_mha} nn.MultiheadAttention split into q/k/v Linears (same outputs in fp32)"
        n_linear = sum(isinstance(m, torch.nn.Linear) for m in module.modules())
        qmodule, qfacts = quantize_x86(module, example, scheme, calib, float_layers, calib_method)
        facts.update(qfacts)
        seconds["quantize"] = round(time.perf_counter() - t, 2)
        t = time.perf_counter()
        with torch.no_grad():   # freezing + no grad: what makes the int8 patterns fire (see the module docstring)
            ep = _export(qmodule, example, MAX_BATCH)
            try:
                torch._inductor.aoti_compile_and_package(ep, package_path=str(path),
                                                         inductor_configs={"freezing": True, "cpp_wrapper": True})
            except Exception as e:   # noqa: BLE001 -- Inductor raises many types; the first line is what counts
                path.unlink(missing_ok=True)
                raise EdgeclipError(f"AOTInductor could not compile {type(module).__name__} ({first_line(e)}); "
                                    "export --format pte or onnx instead") from None
        seconds["compile"] = round(time.perf_counter() - t, 2)
    pkg = package_facts(path)
    if pkg["qlinear_kernels"] == 0:
        path.unlink(missing_ok=True)
        raise EdgeclipError("AOTInductor compiled the model without int8 kernels (no qlinear_pointwise call: Inductor's "
                            "int8 fusion did not run, pytorch/ao#4566), so the package would be fp32 with extra "
                            "quantize steps; not written")
    return {**facts, "int8_linears": f"{pkg['qlinear_kernels']} qlinear_pointwise calls for {n_linear} nn.Linear",
            "qlinear_kernels": pkg["qlinear_kernels"], "qconv_kernels": pkg["qconv_kernels"],
            "cpu_isa": pkg["cpu_isa"], "cpu_machine": pkg["machine"],
            "cpu_note": f"compiled for this CPU's {pkg['cpu_isa']}; edgeclip's runtime refuses it on a CPU without it",
            "max_batch": MAX_BATCH, "batch": f"dynamic 1..{MAX_BATCH}", "torchao": torchao.__version__,
            "compiler": next((shutil.which(c) for c in compilers() if shutil.which(c)), None), "seconds": seconds}
