"""The reference LR / weight-decay schedule (official `infinity/utils/lr_control.py`, ``lr_wd_annealing``)."""

from __future__ import annotations

import math

import torch

from .config import OptimConfig

__all__ = ["apply_lr_wd", "lr_factor", "peak_lr", "weight_decay_at"]


def peak_lr(optim: OptimConfig, global_batch: int) -> float:
    """``lr`` if set, else ``grad_accum · base_lr · global_batch / 256`` (spec: ``tlr = ac·tblr·bs/256``)."""
    if optim.lr > 0:
        return optim.lr
    return optim.grad_accum * optim.base_lr * global_batch / 256


def lr_factor(optim: OptimConfig, it: int) -> float:
    """Multiplier of the peak LR at optimizer step ``it`` (0-based) of ``optim.max_iters``."""
    wp_it = optim.warmup_iters
    if it < wp_it:
        return optim.warmup_start + (1 - optim.warmup_start) * it / wp_it
    denom = max(optim.max_iters - 1 - wp_it, 1)
    pasd = min(max((it - wp_it) / denom, 0.0), 1.0)
    wpe = optim.end_factor
    name = optim.schedule
    if name == "const":
        return 1.0
    if name == "lin00":
        return 1 + (wpe - 1) * pasd
    if name == "cos":
        return wpe + (1 - wpe) * (0.5 + 0.5 * math.cos(math.pi * pasd))
    t = 0.05 if name == "lin0" else 0.15  # "lin"
    if pasd < t:
        return 1.0
    return wpe + (1 - wpe) * (1 - pasd) / (1 - t)


def weight_decay_at(optim: OptimConfig, it: int) -> float:
    """``wd_end + (wd − wd_end)·(0.5 + 0.5·cos(π·it/(max_it−1)))``; constant when the end value is unset."""
    wd = optim.weight_decay
    wd_end = wd if optim.weight_decay_end < 0 else optim.weight_decay_end
    frac = it / max(optim.max_iters - 1, 1)
    return wd_end + (wd - wd_end) * (0.5 + 0.5 * math.cos(math.pi * min(frac, 1.0)))


def apply_lr_wd(optimizer: torch.optim.Optimizer, optim: OptimConfig, it: int, lr_peak: float) -> float:
    """Write the step's LR and WD into every param group (group ``wd_scale`` 0 = no decay); returns the LR."""
    lr = lr_peak * lr_factor(optim, it)
    wd = weight_decay_at(optim, it)
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)
        group["weight_decay"] = wd * group.get("wd_scale", 1.0)
    return lr
