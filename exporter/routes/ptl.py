"""TorchScript-lite routes (the lite interpreter): fp32, torch.ao int8 per CPU engine, fp16/bf16 for CUDA, bf16 for
CPUs with bf16 matrix units (oneDNN)."""

from __future__ import annotations

from pathlib import Path

from .base import Route, model_path, refuse, register

ENGINES = ("qnnpack", "fbgemm", "x86")
HALF = ("fp16", "bf16")


def fp32(subject, recipe, stage: Path) -> dict:
    from edgeclip.exporter.formats.torchscript_lite import export_ptl

    return {"dtype": "fp32", "method": "none", **export_ptl(subject.module, subject.example, model_path(stage, "ptl"))}


def half(subject, recipe, stage: Path) -> dict:
    import torch

    from edgeclip.exporter.formats.torchscript_lite import export_ptl
    from edgeclip.exporter.quantize.attention import split_attention
    from edgeclip.exporter.quantize.half import to_half
    from edgeclip.exporter.quantize.patch_embed import patch_embed_as_linear

    # CUDA routes are traced where they will run when a GPU is here (CUDA kernels, CUDA constants); else on the CPU,
    # which records the same graph -- the lite interpreter maps the weights to the GPU at load time.  The onednn
    # route is for the CPU: bf16 GEMMs on AMX-BF16 / AVX512-BF16 units through oneDNN.
    device = "cuda" if torch.cuda.is_available() and recipe.target == "cuda" else "cpu"
    # SDPA attention and a GEMM patch embedding: the same function, the kernels a GPU runs fast
    model = to_half(patch_embed_as_linear(split_attention(subject.module)), recipe.quant, device)
    facts = export_ptl(model, subject.example.to(device), model_path(stage, "ptl"), mobile_optimize=False)
    return {"dtype": recipe.quant, "backend": recipe.backend_for("ptl"), "traced_on": device, "io_dtype": "float32",
            "rewrites": ["nn.MultiheadAttention -> q/k/v Linears + scaled_dot_product_attention",
                         "patchify Conv2d -> reshape + Linear (GEMM)"],
            "int8_ops": [], "float_ops": f"every op in {recipe.quant} except the fp32 input/output casts", **facts}


def int8(subject, recipe, stage: Path) -> dict:
    from edgeclip.exporter.formats.torchscript_lite import export_ptl
    from edgeclip.exporter.quantize.torch_ao import quantize_torch_ao, quantized_engine

    engine = recipe.backend_for("ptl")
    qmodel, info = quantize_torch_ao(subject.module, engine, recipe.scheme, subject.calib_inputs, example=subject.example,
                                     float_layers=tuple(recipe.float_layers))
    with quantized_engine(engine):
        facts = export_ptl(qmodel, subject.example, model_path(stage, "ptl"))
    return {"dtype": "int8", "scheme": recipe.scheme, "backend": engine, **info, **facts}


# qnnpack is the engine phones run (the lite interpreter's ARM int8 kernels); fbgemm / x86 are server CPUs
for e in ENGINES:
    register(Route("ptl", "none", None, e, "torch.jit.trace -> lite interpreter (engine only matters for int8)", fp32,
                   mobile=e == "qnnpack"))
for s in ("dynamic", "static"):
    for e in ENGINES:
        register(Route("ptl", "int8", s, e, f"torch.ao eager {s} int8 Linears (MHA split), {e} kernels", int8,
                       mobile=e == "qnnpack"))
for q in HALF:
    register(Route("ptl", q, None, "cuda", f"torch.jit.trace of the {q} model (fp32 inputs/outputs kept) -> TorchScript-lite; "
                   "runs on CUDA through the lite interpreter", half))

register(Route("ptl", "bf16", None, "onednn", "torch.jit.trace of the bf16 model (fp32 inputs/outputs kept) -> TorchScript-lite; "
               "bf16 GEMMs on the CPU's AMX-BF16 / AVX512-BF16 units (oneDNN); refused on CPUs without them", half))

refuse("the lite interpreter has no int4 kernels; int4 weights are in .onnx (MatMulNBits) and .pte (torchao 8da4w, XNNPACK)",
       format="ptl", quant="int4")
refuse("{quant} .ptl runs on CUDA (backend cuda), or for bf16 on CPUs with bf16 units (backend onednn, --target cpu); "
       "qnnpack / fbgemm / x86 are int8 CPU engines", format="ptl", quant=HALF)
refuse("the cuda backend builds fp16/bf16 TorchScript-lite only", backend="cuda")
refuse("the onednn backend builds bf16 TorchScript-lite for CPUs with bf16 units only", backend="onednn")
