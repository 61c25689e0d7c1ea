"""Exponential moving average of the trained weights (official `trainer.py`: ``ema = β·ema + (1−β)·param``).

The EMA is an fp32 copy of the full parameters on each rank. Under ZeRO-3 each parameter is gathered one at a
time to update it (documented cost: one extra all-gather of the model per update).
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn

__all__ = ["EMA"]


def _gathered(param: nn.Parameter):
    """Context in which a ZeRO-3 partitioned parameter holds its full value (no-op otherwise)."""
    if hasattr(param, "ds_id"):
        import deepspeed

        return deepspeed.zero.GatheredParameters([param], modifier_rank=None)
    return contextlib.nullcontext()


class EMA:
    """fp32 EMA of ``model``'s trainable parameters, keyed by parameter name."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"ema_decay must be in (0, 1), got {decay}")
        self.decay = decay
        self.shadow: dict[str, torch.Tensor] = {}
        for name, param in model.named_parameters():
            if param.requires_grad:
                with _gathered(param):
                    self.shadow[name] = param.detach().float().clone()

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        for name, param in model.named_parameters():
            if name in self.shadow:
                with _gathered(param):
                    self.shadow[name].lerp_(param.detach().float(), 1.0 - self.decay)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return dict(self.shadow)

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        missing = sorted(set(self.shadow) - set(state))
        unexpected = sorted(set(state) - set(self.shadow))
        if missing or unexpected:
            raise KeyError(
                f"EMA state does not match the model: missing {missing[:5]}, unexpected {unexpected[:5]}"
            )
        for name, value in state.items():
            if value.shape != self.shadow[name].shape:
                raise ValueError(
                    f"EMA '{name}': stored shape {tuple(value.shape)} != {tuple(self.shadow[name].shape)}"
                )
            self.shadow[name].copy_(value)
