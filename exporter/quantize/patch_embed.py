"""ViT patch embedding as a reshape + ``nn.Linear`` instead of a strided ``Conv2d``.

A patchify convolution (kernel == stride, no padding) is a matmul over non-overlapping patches, but
GPUs do not run it as one: on an H100, cuDNN spent 1.5 ms per batch of 256 in the conv plus 0.6 ms
transposing NCHW <-> NHWC -- a quarter of ViT-B/32's fp16 forward -- while the same arithmetic as a
[B*49, 3072] x [3072, 768] GEMM takes ~0.1 ms (benchmarks/README.md, CUDA table).  Same weights,
same function (checked in tests), so every route can use it; the CUDA routes do.
"""

from __future__ import annotations

import copy

import torch
from torch import nn


class PatchEmbedLinear(nn.Module):
    """Drop-in for a patchify ``nn.Conv2d``: ``[B,C,H,W] -> [B,D,H/p,W/p]``."""

    def __init__(self, conv: nn.Conv2d):
        super().__init__()
        self.p = conv.kernel_size[0]
        self.out_channels = conv.out_channels
        self.proj = nn.Linear(conv.in_channels * self.p * self.p, conv.out_channels, bias=conv.bias is not None)
        with torch.no_grad():
            self.proj.weight.copy_(conv.weight.reshape(conv.out_channels, -1))
            if conv.bias is not None:
                self.proj.bias.copy_(conv.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        p = self.p
        gh, gw = h // p, w // p
        patches = x.reshape(b, c, gh, p, gw, p).permute(0, 2, 4, 1, 3, 5).reshape(b, gh * gw, c * p * p)
        return self.proj(patches).transpose(1, 2).reshape(b, self.out_channels, gh, gw)


def is_patchify(m: nn.Module) -> bool:
    return (isinstance(m, nn.Conv2d) and m.kernel_size == m.stride and m.kernel_size[0] == m.kernel_size[1]
            and m.padding in ((0, 0), "valid") and m.groups == 1 and m.dilation == (1, 1))


def patch_embed_as_linear(module: nn.Module) -> nn.Module:
    """A copy of ``module`` with every patchify convolution replaced by ``PatchEmbedLinear``."""
    module = copy.deepcopy(module).eval()
    for parent in list(module.modules()):
        for attr, child in list(parent.named_children()):
            if is_patchify(child):
                setattr(parent, attr, PatchEmbedLinear(child))
    return module
