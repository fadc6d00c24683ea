"""TorchScript-lite routes (the lite interpreter): fp32, torch.ao int8 per CPU engine, fp16/bf16 for CUDA, bf16 for
CPUs with bf16 matrix units (oneDNN)."""

from __future__ import annotations

from pathlib import Path

from .base import model_route, refuse, register

ENGINES = ("qnnpack", "fbgemm", "x86")
HALF = ("fp16", "bf16")


def write(module, subject, recipe, path: Path) -> dict:
    """The lite-interpreter file of ``module``, traced on the device its weights are on; an int8 module under its
    CPU engine (the packed weights are the engine's); half files skip the mobile optimizer (its passes prepack
    fp32 CPU conv/linear kernels, which do not apply)."""
    from edgeclip.exporter.formats.torchscript_lite import export_ptl
    from edgeclip.exporter.quantize.torch_ao import quantized_engine

    if recipe.quant in HALF:
        device = next(module.parameters()).device
        return export_ptl(module, subject.example.to(device), path, mobile_optimize=False)
    if recipe.quant == "int8":
        with quantized_engine(recipe.backend_for("ptl")):
            return export_ptl(module, subject.example, path)
    return export_ptl(module, subject.example, path)


def half(module, subject, recipe) -> tuple:
    import torch

    from edgeclip.exporter.quantize.attention import split_attention
    from edgeclip.exporter.quantize.half import to_half
    from edgeclip.exporter.quantize.patch_embed import patch_embed_as_linear

    # CUDA routes are traced where they will run when a GPU is here (CUDA kernels, CUDA constants); else on the CPU,
    # which records the same graph -- the lite interpreter maps the weights to the GPU at load time.  The onednn
    # route is for the CPU: bf16 GEMMs on AMX-BF16 / AVX512-BF16 units through oneDNN.
    device = "cuda" if torch.cuda.is_available() and recipe.target == "cuda" else "cpu"
    # SDPA attention and a GEMM patch embedding: the same function, the kernels a GPU runs fast
    model = to_half(patch_embed_as_linear(split_attention(module)), recipe.quant, device)
    return model, {"dtype": recipe.quant, "backend": recipe.backend_for("ptl"), "traced_on": device, "io_dtype": "float32",
                   "rewrites": ["nn.MultiheadAttention -> q/k/v Linears + scaled_dot_product_attention",
                                "patchify Conv2d -> reshape + Linear (GEMM)"],
                   "int8_ops": [], "float_ops": f"every op in {recipe.quant} except the fp32 input/output casts"}


def int8(module, subject, recipe) -> tuple:
    from edgeclip.exporter.quantize.torch_ao import quantize_torch_ao

    engine = recipe.backend_for("ptl")
    qmodel, info = quantize_torch_ao(module, engine, recipe.scheme, subject.calib_inputs, example=subject.example,
                                     float_layers=tuple(recipe.float_layers), calib_method=recipe.torch_calib_method)
    return qmodel, {"dtype": "int8", "scheme": recipe.scheme, "backend": engine, **info}


# qnnpack is the engine phones run (the lite interpreter's ARM int8 kernels); fbgemm / x86 are server CPUs
for e in ENGINES:
    register(model_route("ptl", "none", None, e, "torch.jit.trace -> lite interpreter (engine only matters for int8)", write,
                         mobile=e == "qnnpack"))
for s in ("dynamic", "static"):
    for e in ENGINES:
        register(model_route("ptl", "int8", s, e, f"torch.ao eager {s} int8 Linears (MHA split), {e} kernels", write, int8,
                             mobile=e == "qnnpack"))
for q in HALF:
    register(model_route("ptl", q, None, "cuda", f"torch.jit.trace of the {q} model (fp32 inputs/outputs kept) -> "
                         "TorchScript-lite; runs on CUDA through the lite interpreter", write, half))

register(model_route("ptl", "bf16", None, "onednn", "torch.jit.trace of the bf16 model (fp32 inputs/outputs kept) -> "
                     "TorchScript-lite; bf16 GEMMs on the CPU's AMX-BF16 / AVX512-BF16 units (oneDNN); refused on CPUs "
                     "without them", write, half))

refuse("the lite interpreter has no int4 kernels; int4 weights are in .onnx (MatMulNBits) and .pte (torchao 8da4w, XNNPACK)",
       format="ptl", quant="int4")
refuse("{quant} .ptl runs on CUDA (backend cuda), or for bf16 on CPUs with bf16 units (backend onednn, --target cpu); "
       "qnnpack / fbgemm / x86 are int8 CPU engines", format="ptl", quant=HALF)
refuse("the cuda backend builds fp16/bf16 TorchScript-lite only", backend="cuda")
refuse("the onednn backend builds bf16 TorchScript-lite for CPUs with bf16 units only", backend="onednn")
