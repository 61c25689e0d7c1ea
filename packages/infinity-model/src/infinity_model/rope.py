"""2D rotary position embedding with the "star" positions of the released models (official `infinity/models/basic.py`, `precompute_rope2d_freqs_grid`)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = ["apply_rope", "rope_angles", "rope_cos_sin", "rope_inv_freq", "star_positions", "token_positions"]


def star_positions(n: int, n_final: int) -> Tensor:
    """Positions round(i * n_final / n) for i < n: float32 product, round-half-to-even, as int64."""
    factor = torch.tensor(n_final / n, dtype=torch.float32)
    return torch.round(torch.arange(n, dtype=torch.float32) * factor).to(torch.int64)


def token_positions(scales: Sequence[tuple[int, int]], rope_grid: tuple[int, int]) -> tuple[Tensor, Tensor]:
    """(row, col) star position of every token of the given scales, row-major inside each scale."""
    grid_h, grid_w = rope_grid
    rows, cols = [], []
    for h, w in scales:
        r = star_positions(h, grid_h)
        c = star_positions(w, grid_w)
        rows.append(r.repeat_interleave(w))
        cols.append(c.repeat(h))
    return torch.cat(rows), torch.cat(cols)


def rope_inv_freq(head_dim: int, base: float = 10000.0) -> Tensor:
    """float32 inverse frequencies 1 / base^(2j/half), j < half/2, with half = head_dim / 2."""
    half = head_dim // 2
    exponent = torch.arange(0, half, 2, dtype=torch.int64)[: half // 2].float() / half
    return 1.0 / (base**exponent)


def rope_angles(rows: Tensor, cols: Tensor, head_dim: int, base: float = 10000.0) -> Tensor:
    """(L, head_dim/2) rotation angles: the row angles of every token, then its column angles."""
    inv_freq = rope_inv_freq(head_dim, base)
    row_angles = torch.outer(rows.to(torch.float32), inv_freq)
    col_angles = torch.outer(cols.to(torch.float32), inv_freq)
    return torch.cat([row_angles, col_angles], dim=-1)


def rope_cos_sin(
    scales: Sequence[tuple[int, int]],
    rope_grid: tuple[int, int],
    head_dim: int,
    base: float = 10000.0,
    device: torch.device | str | None = None,
) -> tuple[Tensor, Tensor]:
    """float32 cos and sin tables (L, head_dim/2) for the concatenation of `scales`."""
    rows, cols = token_positions(scales, rope_grid)
    angles = rope_angles(rows, cols, head_dim, base)
    return angles.cos().to(device), angles.sin().to(device)


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate adjacent pairs (2p, 2p+1) of x (..., L, head_dim) by the angles of (L, head_dim/2); fp32 out."""
    pairs = x.float().unflatten(-1, (-1, 2))
    x0, x1 = pairs[..., 0], pairs[..., 1]
    return torch.stack((cos * x0 - sin * x1, sin * x0 + cos * x1), dim=-1).flatten(-2)
