"""int8 token-embedding tables, one scale per row, in every format.

Why: a CLIP text encoder is mostly its token table (49,408 x width).  The int8 routes quantize Linears
only, so the built-in model's int8 text encoder stayed at 12.80 MB of its 13.28 MB fp32 file.  No
quantizer edgeclip uses covers the table in all three formats (onnxruntime's ``GatherQuant`` is per-tensor;
torch.ao's quantized ``Embedding`` packs weights into a torchbind object ExecuTorch cannot lower), so the
table is stored as int8 with a float scale per row and looked up with plain ops that every exporter writes
and every runtime runs: ``Gather(int8 table) -> Cast -> Mul(Gather(scales))`` in ONNX, ``embedding`` +
``to`` + ``mul`` in TorchScript-lite and ExecuTorch.  Per-row symmetric scales keep each token's vector
within 1/254 of its largest entry; the file's fidelity check measures what that costs on real captions.
"""

from __future__ import annotations

import copy

import torch
from torch import nn


class RowwiseInt8Embedding(nn.Module):
    """``nn.Embedding`` whose table is int8 with one fp32 scale per row (symmetric, zero point 0)."""

    def __init__(self, weight: torch.Tensor):
        super().__init__()
        w = weight.detach().float()
        scale = w.abs().amax(dim=1).clamp(min=1e-12) / 127.0
        self.register_buffer("weight_int8", torch.round(w / scale[:, None]).clamp(-127, 127).to(torch.int8))
        self.register_buffer("scale", scale[:, None].contiguous())   # [V, 1]: one gather gives [..., 1]

    @property
    def num_embeddings(self) -> int:
        return self.weight_int8.shape[0]

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        rows = nn.functional.embedding(ids, self.weight_int8).to(torch.float32)
        return rows * nn.functional.embedding(ids, self.scale)


def int8_embeddings(module: nn.Module, min_rows: int = 256) -> tuple[nn.Module, dict]:
    """A copy of ``module`` with every ``nn.Embedding`` of at least ``min_rows`` rows stored as per-row int8
    (smaller tables are not worth a second gather).  Returns the copy and the manifest facts."""
    targets = [(n, m) for n, m in module.named_modules() if isinstance(m, nn.Embedding) and m.num_embeddings >= min_rows]
    if not targets:
        return module, {}
    model = copy.deepcopy(module)
    before = after = 0
    names = []
    for name, _ in targets:
        parent_name, _, attr = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        emb = getattr(parent, attr)
        before += emb.weight.numel() * emb.weight.element_size()
        q = RowwiseInt8Embedding(emb.weight)
        after += q.weight_int8.numel() + q.scale.numel() * 4
        setattr(parent, attr, q)
        names.append(name)
    return model, {"embeddings": {"int8_tables": names, "scheme": "int8 per row, symmetric, fp32 scale per row",
                                  "bytes_before": before, "bytes_after": after}}
