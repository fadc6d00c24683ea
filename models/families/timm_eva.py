"""timm ``Eva``: EVA-02 (rotary position embeddings, SwiGLU MLP, sub-LayerNorm).

What compression may touch differs from a plain ViT, and each refusal says why:

* ``attn.qkv`` is not a slot: EvaAttention calls ``F.linear`` on ``qkv.weight`` with a bias assembled
  from ``q_bias`` / ``v_bias``, so a low-rank or sliced replacement module would never be called.
  Only ``attn.proj`` and the MLP Linears are factorised.
* MLP neurons: the gated MLP's fc1 rows come in (gate, value) pairs -- slicing one half breaks the pair.
* Heads: rotary embeddings are laid out per head dimension; removing heads is not implemented.
* Tokens: each token carries its own rotary position, which token dropping would have to gather too.
Block pruning and SVD of the remaining Linears apply.

Export patch: with ``qkv_bias_separate`` EvaAttention calls ``qkv(x)`` and adds the q/v bias after it (timm's
own switch, the same function).  Quantizers then see a Linear call: PT2E's quantized ``F.linear`` with the
assembled bias was left outside the XNNPACK delegate and ExecuTorch could not build the int8 program, and
torch.ao's swapped module broke the ``F.linear`` call.
"""

from __future__ import annotations

from torch import nn

from .base import BlockLayout, TimmFamily, Tower, register

REFUSALS = {
    "attn_in": "EVA attention uses qkv.weight directly (F.linear with a separate q/v bias), so it cannot be replaced",
    "heads": "EVA's rotary embeddings are laid out per head; head removal is not implemented for EVA",
    "mlp": "EVA's gated (SwiGLU) MLP pairs its fc1 rows; neuron pruning is not implemented for gated MLPs",
    "tokens": "EVA gives every token its own rotary position; token reduction is not implemented for EVA",
}


def _layout(model: nn.Module) -> BlockLayout:
    mlp = model.blocks[0].mlp if len(model.blocks) else None
    fc1 = ("mlp.fc1_g", "mlp.fc1_x") if hasattr(mlp, "fc1_g") else ("mlp.fc1",)
    return BlockLayout(linears={"attn_out": ("attn.proj",), "fc1": fc1, "fc2": ("mlp.fc2",)},
                       parts=("norm1", "attn", "gamma_1", "norm2", "mlp", "gamma_2"), refusals=dict(REFUSALS))


@register
class TimmEva(TimmFamily):
    name = "timm-eva"
    summary = "timm EVA-02"

    def matches(self, model: nn.Module) -> bool:
        try:
            from timm.models.eva import Eva
        except ImportError:
            return False
        return isinstance(model, Eva)

    def vision_tower(self, model: nn.Module) -> Tower:
        return Tower("vision", model, "blocks", _layout(model))

    def image_tokens(self, model: nn.Module) -> tuple[int, int]:
        return int(model.patch_embed.num_patches), int(getattr(model, "num_prefix_tokens", 1))

    def patch_for_export(self, model: nn.Module) -> list[str]:
        n = 0
        for m in model.modules():
            if (getattr(m, "qkv", None) is not None and getattr(m, "q_bias", None) is not None
                    and getattr(m, "qkv_bias_separate", True) is False):
                m.qkv_bias_separate = True
                n += 1
        return [f"EVA attention: q/v bias added after the qkv Linear call in {n} blocks (timm qkv_bias_separate), "
                "so quantizers see the projection"] if n else []
