"""Transformer block (AdaLN-modulated self-attention, cross-attention, FFN) and the AdaLN head norm."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from infinity_model.attention import CrossAttention, LayerKV, SelfAttention, StepConstants, TextMemory

__all__ = [
    "FFN",
    "AdaLNBeforeHead",
    "BlockChunk",
    "CrossAttnBlock",
    "DropPath",
    "modulate",
    "modulate_plus_one",
]


def modulate(x: Tensor, scale: Tensor, shift: Tensor, eps: float) -> Tensor:
    """LayerNorm without affine, then x * (1 + scale) + shift (computed in the precision of x/scale)."""
    return modulate_plus_one(x, scale.add(1), shift, eps)


def modulate_plus_one(x: Tensor, scale1: Tensor, shift: Tensor, eps: float) -> Tensor:
    """:func:`modulate` with ``scale1 = 1 + scale`` already added (the fast step adds it once per sampler call)."""
    return F.layer_norm(x, (x.shape[-1],), eps=eps).mul(scale1).add_(shift)


class DropPath(nn.Module):
    """Stochastic depth per sample (scaled by 1/keep); identity at inference or when rate is 0."""

    def __init__(self, rate: float) -> None:
        super().__init__()
        self.rate = rate

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.rate == 0.0:
            return x
        keep = 1.0 - self.rate
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask.div_(keep)

    def extra_repr(self) -> str:
        return f"rate={self.rate}"


class FFN(nn.Module):
    """fc1 -> GELU(tanh) -> fc2, both with bias."""

    def __init__(self, embed_dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(embed_dim, hidden_dim)
        self.fc2 = nn.Linear(hidden_dim, embed_dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(F.gelu(self.fc1(x), approximate="tanh"))


class CrossAttnBlock(nn.Module):
    """Pre-norm block: x += SA(mod(x))*g1; x += CA(ca_norm(x)); x += FFN(mod(x))*g2 (official `infinity/models/basic.py`, `CrossAttnBlock`)."""

    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        ffn_dim: int,
        cond_dim: int,
        drop_path: float = 0.0,
        norm_eps: float = 1e-6,
    ) -> None:
        super().__init__()
        self.norm_eps = norm_eps
        self.ada_gss = nn.Parameter(torch.empty(1, 1, 6, embed_dim))
        self.sa = SelfAttention(embed_dim, num_heads)
        self.ca = CrossAttention(embed_dim, cond_dim, num_heads)
        self.ffn = FFN(embed_dim, ffn_dim)
        self.ca_norm = nn.LayerNorm(embed_dim, eps=norm_eps)
        self.drop_path = DropPath(drop_path)
        if not self.ada_gss.is_meta:
            with torch.no_grad():
                self.ada_gss.copy_(torch.randn(1, 1, 6, embed_dim) / math.sqrt(embed_dim))

    def forward(
        self,
        x: Tensor,
        ada: Tensor,
        memory: TextMemory,
        cos: Tensor,
        sin: Tensor,
        attn_mask: Tensor | None = None,
        cache: LayerKV | None = None,
    ) -> Tensor:
        """x: (B, L, C) residual stream; ada: (B, 1, 6, C) shared AdaLN output; returns (B, L, C)."""
        gamma1, gamma2, scale1, scale2, shift1, shift2 = self._modulations(ada)
        eps = self.norm_eps
        x = x + self.drop_path(self.sa(modulate(x, scale1, shift1, eps), cos, sin, attn_mask, cache) * gamma1)
        x = x + self.ca(self.ca_norm(x), memory, cache)
        x = x + self.drop_path(self.ffn(modulate(x, scale2, shift2, eps)) * gamma2)
        return x

    def step_constants(self, ada: Tensor) -> StepConstants:
        """The tensors of :meth:`step` that depend only on the sampler call's ``ada`` (B, 1, 6, C)."""
        gamma1, gamma2, scale1, scale2, shift1, shift2 = self._modulations(ada)
        return StepConstants(
            gamma1,
            gamma2,
            scale1.add(1),
            scale2.add(1),
            shift1,
            shift2,
            self.sa.qkv_bias(),
            self.sa.log_scale(),
        )

    def _modulations(self, ada: Tensor) -> tuple[Tensor, ...]:
        """(gamma1, gamma2, scale1, scale2, shift1, shift2), each (B, 1, C), of ``ada + ada_gss``."""
        return (ada + self.ada_gss.to(ada.dtype)).unbind(2)

    def step(self, x: Tensor, memory: TextMemory, cos: Tensor, sin: Tensor, layer: LayerKV) -> Tensor:
        """``forward`` at inference over ``layer`` (a KV cache whose ``constants`` are set): the same
        operations in the same order without recomputing the per-call constants, so the same bits."""
        c = layer.constants
        if c is None:
            raise ValueError("CrossAttnBlock.step needs layer.constants = block.step_constants(ada)")
        h = modulate_plus_one(x, c.scale1, c.shift1, self.norm_eps)
        x = x + self.drop_path(self.sa.step(h, cos, sin, layer, c) * c.gamma1)
        x = x + self.ca.step(self.ca_norm(x), memory, layer)
        h = modulate_plus_one(x, c.scale2, c.shift2, self.norm_eps)
        return x + self.drop_path(self.ffn(h) * c.gamma2)


class BlockChunk(nn.Module):
    """A group of consecutive blocks; only exists so that state-dict keys read block_chunks.{i}.module.{j}."""

    def __init__(self, blocks: list[CrossAttnBlock]) -> None:
        super().__init__()
        self.module = nn.ModuleList(blocks)


class AdaLNBeforeHead(nn.Module):
    """y = LN(x) * (1 + scale) + shift with (scale, shift) = ada_lin(cond_BD) (scale first)."""

    def __init__(self, embed_dim: int, cond_dim: int, norm_eps: float = 1e-6) -> None:
        super().__init__()
        self.embed_dim = embed_dim
        self.norm_eps = norm_eps
        self.ada_lin = nn.Sequential(nn.SiLU(), nn.Linear(cond_dim, 2 * embed_dim))

    def forward(self, x: Tensor, cond_BD: Tensor) -> Tensor:
        return self.step(x, self.step_constants(cond_BD))

    def step_constants(self, cond_BD: Tensor) -> tuple[Tensor, Tensor]:
        """``(1 + scale, shift)`` of :meth:`forward`, (B, 1, C): the same at every scale of a sampler call."""
        scale, shift = self.ada_lin(cond_BD).view(-1, 1, 2, self.embed_dim).unbind(2)
        return scale.add(1), shift

    def step(self, x: Tensor, constants: tuple[Tensor, Tensor]) -> Tensor:
        """:meth:`forward` with :meth:`step_constants` computed beforehand (same operations, same bits)."""
        return modulate_plus_one(x, *constants, self.norm_eps)
