"""Bit-label cross entropy with the reference's per-scale token weights (official `trainer.py`, `reweight_loss_by_scale`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from bsq_tokenizer.schedules import scale_token_weights

__all__ = ["BitLoss", "bit_cross_entropy"]


@dataclass(frozen=True)
class BitLoss:
    """Loss of one batch plus per-scale metrics (plain floats, for logging)."""

    loss: torch.Tensor  # scalar, differentiable
    per_scale_loss: list[float]
    bit_acc: float
    token_acc: float
    per_scale_bit_acc: list[float]


def bit_cross_entropy(
    logits: torch.Tensor,
    labels: torch.Tensor,
    scales: Sequence[tuple[int, int]],
    *,
    reweight: bool = True,
    label_smoothing: float = 0.0,
    reduction: str = "mean",
) -> BitLoss:
    """Per-bit CE over the 2 logits, mean (or sum) over the d bits, weighted over tokens, mean over batch.

    logits: (B, L, d, 2) fp32; labels: (B, L, d) ints in {0, 1}; ``scales`` the token grids of the L tokens.
    """
    b, seq_len, d, two = logits.shape
    if two != 2 or labels.shape != (b, seq_len, d):
        raise ValueError(
            f"logits {tuple(logits.shape)} and labels {tuple(labels.shape)} do not match (B, L, d, 2)"
        )
    if sum(h * w for h, w in scales) != seq_len:
        raise ValueError(
            f"scales {list(scales)} hold {sum(h * w for h, w in scales)} tokens, logits have {seq_len}"
        )
    logits = logits.float()
    labels = labels.long()
    ce = F.cross_entropy(
        logits.reshape(-1, 2), labels.reshape(-1), reduction="none", label_smoothing=label_smoothing
    ).view(b, seq_len, d)
    per_token = ce.mean(-1) if reduction == "mean" else ce.sum(-1)  # (B, L)
    weights = scale_token_weights(scales, reweight, device=logits.device)
    loss = (per_token * weights).sum(-1).mean()
    with torch.no_grad():
        correct = logits.argmax(-1) == labels  # (B, L, d)
        per_scale_loss, per_scale_acc = [], []
        start = 0
        for h, w in scales:
            end = start + h * w
            per_scale_loss.append(per_token[:, start:end].mean().item())
            per_scale_acc.append(correct[:, start:end].float().mean().item())
            start = end
        bit_acc = correct.float().mean().item()
        token_acc = correct.all(-1).float().mean().item()
    return BitLoss(loss, per_scale_loss, bit_acc, token_acc, per_scale_acc)
