"""Training-free token merging (ToMe: Bolya et al., "Token Merging: Your ViT but Faster", ICLR 2023) for the
vision tower, with static shapes, so the merged model exports to ONNX, TorchScript-lite and ExecuTorch.

Why merging next to dropping (``tokens.py``): dropping discards the patch tokens the class token ignores;
merging averages the most similar tokens instead, so every patch still counts.  ToMe reports ViT-B 1.65x at
-1.97 pt without training.  Why the shapes stay static: ``r`` (tokens merged per block) is fixed when the model
is built.  In each merging block, after attention, the patch tokens are split alternately into sets A and B;
each A token's best match is the B token with the most similar attention key (cosine, keys averaged over
heads); ``topk`` ranks the A tokens by that similarity and the best ``r`` are averaged into their matches
(size-weighted).  The merge itself is a one-hot matmul rather than a scatter, which every runtime here takes
(XNNPACK delegates the matmul).  Sizes -- how many patches a token stands for -- travel between blocks as one
extra channel of the hidden state; later blocks add ``log(size)`` to their attention logits (ToMe's proportional
attention) and the tower's last block drops the channel, so the tower's output is what it was.

Token dropping composes: a dropping block at or after the first merging block is rebuilt here as a block that
drops (carrying the sizes of the kept tokens) and then merges.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from edgeclip.errors import EdgeclipError

from . import select
from .calibration import Calibration
from .config import MergeConfig, select_blocks
from .report import PassReport, n_params
from .structure import image_tokens
from .tokens import PARTS, TokenDropBlock, attend, gather_tokens, keep_patches, take_parts, vision_tower_to_reduce


def bipartite_merge(x: torch.Tensor, size: torch.Tensor, metric: torch.Tensor, prefix: int, r: int
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """Merge the ``r`` best-matched patch tokens of set A into set B; prefix tokens (class, registers) stay.

    ``x`` [B, N, C], ``size`` [B, N, 1], ``metric`` [B, N, D] (attention keys).  Returns ([B, N-r, C], [B, N-r, 1]):
    prefix tokens, then A's unmerged tokens, then B (each B token the size-weighted mean of itself and what
    merged into it).  Token order does not matter after the positional embedding: attention and the MLP are
    permutation-equivariant and the prefix stays first."""
    m = metric[:, prefix:]
    m = m / m.norm(dim=-1, keepdim=True).clamp_min(1e-6)
    xp, sp = x[:, prefix:], size[:, prefix:]
    a, b = m[:, 0::2], m[:, 1::2]
    na, nb = a.shape[1], b.shape[1]
    best, match = (a @ b.transpose(-2, -1)).max(dim=-1)              # [B, Na]: each A token's most similar B token
    order = select.keep_top(best, na)                                # A tokens, most similar first (static k)
    src, unmerged = order[:, :r], order[:, r:]
    dst = match.gather(1, src)                                       # [B, r]
    xa, xb, sa, sb = xp[:, 0::2], xp[:, 1::2], sp[:, 0::2], sp[:, 1::2]
    into = (dst.unsqueeze(-1) == torch.arange(nb, device=x.device)).to(x.dtype).transpose(1, 2)   # [B, Nb, r]
    size_b = sb + into @ gather_tokens(sa, src)
    xb = (xb * sb + into @ gather_tokens(xa * sa, src)) / size_b
    x = torch.cat([x[:, :prefix], gather_tokens(xa, unmerged), xb], dim=1)
    size = torch.cat([size[:, :prefix], gather_tokens(sa, unmerged), size_b], dim=1)
    return x, size


class TokenMergeBlock(nn.Module):
    """A transformer block that attends with token sizes (proportional attention), then optionally drops the
    least class-attended patch tokens (``keep``) and merges ``r`` tokens.

    ``size_in``: the input carries token sizes as its last channel (every merging block but the first);
    ``size_out``: the output does (every block but the tower's last)."""

    def __init__(self, block: nn.Module, parts: tuple[str, ...], prefix: int, r: int, *, keep: int | None = None,
                 size_in: bool, size_out: bool):
        super().__init__()
        take_parts(self, block, PARTS if isinstance(block, TokenDropBlock) else parts)   # a dropping block holds them as PARTS
        self.prefix, self.r, self.keep = prefix, r, keep
        self.size_in, self.size_out = size_in, size_out

    def forward(self, x: torch.Tensor, attn_mask=None, **_):
        if self.size_in:
            x, size = x[..., :-1], x[..., -1:]
        else:
            size = torch.ones_like(x[..., :1])
        x, attn, keys = attend(self, x, size.log().transpose(1, 2).unsqueeze(1) if self.size_in else None)
        if self.keep is not None:
            idx = select.keep_top(attn[:, :, 0, self.prefix:].mean(1), self.keep)
            x, size, keys = (keep_patches(t, idx, self.prefix) for t in (x, size, keys))
        if self.r:
            x, size = bipartite_merge(x, size, keys, self.prefix, self.r)
        x = x + self.scale2(self.mlp(self.norm2(x)))
        return torch.cat([x, size], dim=-1) if self.size_out else x


def apply(model: nn.Module, cfg: MergeConfig, calib: Calibration | None = None) -> tuple[nn.Module, PassReport]:
    model, t = vision_tower_to_reduce(model, "--token-merge")
    if any(isinstance(b, TokenMergeBlock) for b in t.blocks):
        raise EdgeclipError("token merging was already applied to this model")
    blocks = list(t.blocks)
    n = len(blocks)
    where = set(select_blocks(cfg.blocks, n, "--token-merge-blocks"))
    patches, prefix = image_tokens(model)
    before = n_params(model)
    report = PassReport("token-merge", before, before, extra={
        "r": cfg.r, "blocks": sorted(where),
        "method": "ToMe bipartite soft matching on attention keys, size-weighted merge, proportional attention"})
    first = None
    for i, b in enumerate(blocks):
        keep = None                                        # a dropping block's count, from the tokens that reach it
        if isinstance(b, TokenDropBlock):
            keep = max(1, math.ceil(b.rate * patches))
            keep = keep if keep < patches else None
        left = keep if keep is not None else patches
        r = 0
        if i in where:
            r = max(0, min(cfg.r, (left - 1) // 2))         # set A keeps one unmerged token, set B is never empty
            if r < cfg.r:
                report.skipped.append({"block": i, "why": f"{left} patch tokens reach the merge: merged {r}, not {cfg.r}"})
        if first is None and r == 0:                       # before the first merge: blocks stay as they are
            patches = left
            continue
        first = i if first is None else first
        blocks[i] = TokenMergeBlock(b, t.layout.parts, prefix, r, keep=keep, size_in=i > first, size_out=i < n - 1)
        if r:
            report.layers.append({"block": i, "tokens_before": left + prefix, "tokens_after": left - r + prefix, "merged": r})
        patches = left - r
    if first is None:
        report.skipped.append({"block": None, "why": f"r={cfg.r} merges no token on this tower"})
        return model, report
    t.set_blocks(blocks)
    report.extra["tokens_at_output"] = patches + prefix
    report.params_after = n_params(model)
    return model, report
