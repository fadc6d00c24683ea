"""Training-free token reduction for the vision tower, with static shapes.

At chosen blocks, after attention, only the patch tokens the class token attends to most are kept
(averaged over heads, as in EViT's inattentive-token dropping, without its fine-tuning); the class /
register tokens always stay.  The keep count is fixed when the model is built (``ceil(keep * tokens)``),
so ``topk`` + ``gather`` have static shapes and the model exports to ONNX, TorchScript-lite and
ExecuTorch like any other; every later block, attention and MLP alike, runs on fewer tokens.
"""

from __future__ import annotations

import copy
import math

import torch
from torch import nn

from edgeclip.errors import EdgeclipError

from . import select
from .calibration import Calibration
from .config import TokenConfig
from .report import PassReport, n_params
from .structure import Tower, convert_attention, image_tokens, refusal, tower

def attend(blk: nn.Module, x: torch.Tensor, bias: torch.Tensor | None = None
           ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The attention half of a pre-norm block, written out (the class token's row of the probabilities is the
    drop score; the keys are the merge metric): returns (x + attention output, probabilities [B, H, N, N], keys
    averaged over heads [B, N, D]).  ``bias`` is added to the logits (token merging's log token sizes)."""
    b, n, _d = x.shape
    h, hd = blk.attn.num_heads, blk.attn.head_dim
    q, k, v = blk.in_proj(blk.norm1(x)).reshape(b, n, 3, h, hd).permute(2, 0, 3, 1, 4).unbind(0)
    logits = (q * hd ** -0.5) @ k.transpose(-2, -1)
    attn = (logits if bias is None else logits + bias).softmax(-1)
    o = (attn @ v).transpose(1, 2).reshape(b, n, h * hd)
    return x + blk.scale1(blk.out_proj(o)), attn, k.mean(1)


PARTS = ("norm1", "attn", "scale1", "norm2", "mlp", "scale2")   # the names a rebuilt block holds its parts under


def take_parts(dst: nn.Module, block: nn.Module, parts: tuple[str, ...]) -> None:
    """Hold ``block``'s parts (its layout's norm1, attn, scale1, norm2, mlp, scale2 attribute names) on ``dst``
    under the fixed names ``PARTS``, plus the attention's input / output projections, whatever the family calls
    them (open_clip ``in_proj`` / ``out_proj``, timm ``qkv`` / ``proj``); a missing LayerScale is the identity."""
    n1, at, s1, n2, mlp, s2 = parts
    dst.norm1, dst.attn, dst.norm2, dst.mlp = getattr(block, n1), getattr(block, at), getattr(block, n2), getattr(block, mlp)
    dst.scale1, dst.scale2 = getattr(block, s1, nn.Identity()), getattr(block, s2, nn.Identity())
    dst.in_proj = dst.attn.in_proj if hasattr(dst.attn, "in_proj") else dst.attn.qkv
    dst.out_proj = dst.attn.out_proj if hasattr(dst.attn, "out_proj") else dst.attn.proj


def gather_tokens(t: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """Rows ``idx`` [B, K] of ``t`` [B, N, C] along the token axis (static K: exports as Gather)."""
    return torch.gather(t, 1, idx.unsqueeze(-1).expand(-1, -1, t.shape[-1]))


def keep_patches(t: torch.Tensor, idx: torch.Tensor, prefix: int) -> torch.Tensor:
    """The prefix tokens, then the patch tokens ``idx`` (indices among the patches) -- what a dropping block keeps."""
    return torch.cat([t[:, :prefix], gather_tokens(t[:, prefix:], idx)], dim=1)


def vision_tower_to_reduce(model: nn.Module, flag: str) -> tuple[nn.Module, Tower]:
    """A copy of ``model`` with editable attention and its vision tower, or the family's reason (named after
    ``flag``) why its tokens cannot be reduced."""
    model = convert_attention(copy.deepcopy(model))
    t = tower(model, "vision")
    why = refusal(t, "tokens")
    if why:
        raise EdgeclipError(f"{flag}: {why}; use SVD or block pruning on this model")
    return model, t


class TokenDropBlock(nn.Module):
    """A transformer block that keeps the ``keep`` most-attended patch tokens after its attention (``rate``: the
    fraction asked for, from which token merging recounts ``keep`` when tokens were merged before this block)."""

    def __init__(self, block: nn.Module, parts: tuple[str, ...], keep: int, prefix: int, rate: float):
        super().__init__()
        take_parts(self, block, parts)
        self.keep, self.prefix, self.rate = keep, prefix, rate

    def forward(self, x: torch.Tensor, attn_mask=None, **_):
        x, attn, _keys = attend(self, x)
        score = attn[:, :, 0, self.prefix:].mean(1)                           # [B, patches]
        idx = select.keep_top(score, self.keep)    # order is irrelevant: attention is permutation-equivariant and positions are already added
        x = keep_patches(x, idx, self.prefix)
        return x + self.scale2(self.mlp(self.norm2(x)))


def default_blocks(n: int) -> tuple[int, ...]:
    return tuple(sorted({max(1, n // 3), max(1, 2 * n // 3)}))


def apply(model: nn.Module, cfg: TokenConfig, calib: Calibration | None = None) -> tuple[nn.Module, PassReport]:
    model, t = vision_tower_to_reduce(model, "--token-keep")
    blocks = list(t.blocks)
    n = len(blocks)
    where = cfg.blocks if cfg.blocks is not None else default_blocks(n)
    for i in where:
        if not 0 <= i < n:
            raise EdgeclipError(f"--token-blocks: block {i} does not exist; the vision tower has {n} blocks (0-{n - 1})")
    if any(isinstance(b, TokenDropBlock) for b in blocks):
        raise EdgeclipError("token reduction was already applied to this model")
    patches, prefix = image_tokens(model)
    before = n_params(model)
    report = PassReport("tokens", before, before, extra={"keep_rate": cfg.keep, "blocks": list(where),
                                                         "method": "drop the least class-attended patch tokens"})
    for i in sorted(set(where)):
        keep = max(1, math.ceil(cfg.keep * patches))
        if keep >= patches:
            report.skipped.append({"block": i, "why": f"keep rate {cfg.keep} keeps all {patches} tokens"})
            continue
        blocks[i] = TokenDropBlock(blocks[i], t.layout.parts, keep, prefix, cfg.keep)
        report.layers.append({"block": i, "tokens_before": patches + prefix, "tokens_after": keep + prefix})
        patches = keep
    t.set_blocks(blocks)
    report.extra["tokens_at_output"] = patches + prefix
    report.params_after = n_params(model)
    return model, report
