"""Binary spherical quantization (BSQ) and its multi-scale residual form, with the exact fp32 numerics.

Shapes: latents and codes are channel-first ``(B, d, H, W)`` (or ``(B, d, 1, h, w)`` for the 5-D resize
helpers, t = 1); bit labels are channel-last ``(B, h, w, d)`` integers in {0, 1}.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "BSQ",
    "FlipSource",
    "MultiScaleBSQ",
    "QuantizeOutput",
    "RandomBitFlips",
    "ResidualMode",
    "ResidualOutput",
    "ResidualSteps",
    "area_resize",
    "bits_to_codes",
    "codebook_scale",
    "codes_from_bits",
    "depth_to_space",
    "depth_to_space_bits",
    "residual_quantize",
    "space_to_depth",
    "space_to_depth_bits",
    "trilinear_resize",
]

_NORM_EPS = 1e-12


def codebook_scale(d: int) -> float:
    """s = float32(1/sqrt(d)): the magnitude of every entry of an (unnormalised) code vector."""
    if d < 1:
        raise ValueError(f"number of bits d must be >= 1, got {d}")
    return struct.unpack("<f", struct.pack("<f", 1 / math.sqrt(d)))[0]


def _check_5d(x: Tensor, name: str) -> None:
    if x.dim() != 5 or x.shape[2] != 1:
        raise ValueError(f"{name} must have shape (B, d, 1, h, w), got {tuple(x.shape)}")


def _as_hw(size: Sequence[int]) -> tuple[int, int]:
    size = tuple(int(v) for v in size)
    if len(size) == 3:
        if size[0] != 1:
            raise ValueError(f"target size {size}: only t = 1 is supported")
        size = size[1:]
    if len(size) != 2 or min(size) < 1:
        raise ValueError(f"target size must be (h, w) with positive entries, got {size}")
    return size[0], size[1]


def trilinear_resize(x: Tensor, size: Sequence[int]) -> Tensor:
    """Trilinear resize of ``(B, d, 1, h, w)`` to ``(B, d, 1, H, W)`` (align_corners=False, no antialias).

    Identity (the same tensor) when the size already matches, like the reference's skip.
    """
    _check_5d(x, "x")
    h, w = _as_hw(size)
    if tuple(x.shape[-2:]) == (h, w):
        return x
    return F.interpolate(x, size=(1, h, w), mode="trilinear", align_corners=False)


def area_resize(x: Tensor, size: Sequence[int]) -> Tensor:
    """Area resize (adaptive average pooling) of ``(B, d, 1, h, w)`` to ``(B, d, 1, H, W)``; identity if same size."""
    _check_5d(x, "x")
    h, w = _as_hw(size)
    if tuple(x.shape[-2:]) == (h, w):
        return x
    return F.adaptive_avg_pool3d(x, (1, h, w))


def bits_to_codes(bits: Tensor) -> Tensor:
    """Bit labels ``(B, h, w, d)`` (0/1 ints or bools) -> L2-normalised codes ``(B, d, 1, h, w)`` in fp32.

    v = b*s*2 - s (exactly +-s), then divided by max(||v||, 1e-12). The division is not a no-op in fp32:
    for d = 32 the values become +-0.1767767071723938 (one ulp above s), for d = 14 +-0.267261266708374.
    """
    if bits.dim() != 4:
        raise ValueError(f"bits must have shape (B, h, w, d), got {tuple(bits.shape)}")
    if bits.is_floating_point() or bits.is_complex():
        raise TypeError(f"bits must be an integer or bool tensor of 0/1 labels, got dtype {bits.dtype}")
    d = bits.shape[-1]
    s = codebook_scale(d)
    v = bits.to(torch.float32) * s * 2 - s
    codes = F.normalize(v, p=2.0, dim=-1, eps=_NORM_EPS)
    return codes.permute(0, 3, 1, 2).unsqueeze(2)


def codes_from_bits(bits: Sequence[Tensor], size: Sequence[int] | None = None) -> Tensor:
    """Sum of the trilinearly up-sampled per-scale codes: bits list -> ``(B, d, H, W)`` latent code.

    ``size`` defaults to the last scale's grid (where the resize is an identity).
    """
    if len(bits) == 0:
        raise ValueError("need at least one scale of bits")
    hw = _as_hw(size) if size is not None else (int(bits[-1].shape[1]), int(bits[-1].shape[2]))
    total: Tensor | None = None
    for b in bits:
        up = trilinear_resize(bits_to_codes(b), hw)
        total = up if total is None else total + up
    assert total is not None
    return total.squeeze(2)


def space_to_depth(x: Tensor) -> Tensor:
    """``(B, C, 2h, 2w)`` -> ``(B, 4C, h, w)``; new channel index c*4 + dy*2 + dx (pixel_unshuffle, factor 2)."""
    b, c, hh, ww = x.shape
    if hh % 2 or ww % 2:
        raise ValueError(f"space_to_depth needs even height and width, got {tuple(x.shape)}")
    x = x.reshape(b, c, hh // 2, 2, ww // 2, 2).permute(0, 1, 3, 5, 2, 4)
    return x.reshape(b, c * 4, hh // 2, ww // 2)


def depth_to_space(x: Tensor) -> Tensor:
    """Inverse of ``space_to_depth``: ``(B, 4C, h, w)`` -> ``(B, C, 2h, 2w)``."""
    b, c4, h, w = x.shape
    if c4 % 4:
        raise ValueError(f"depth_to_space needs a channel count divisible by 4, got {tuple(x.shape)}")
    x = x.reshape(b, c4 // 4, 2, 2, h, w).permute(0, 1, 4, 2, 5, 3)
    return x.reshape(b, c4 // 4, 2 * h, 2 * w)


def space_to_depth_bits(bits: Tensor) -> Tensor:
    """Channel-last bits ``(B, 2h, 2w, c)`` -> ``(B, h, w, 4c)`` (channel index c*4 + dy*2 + dx)."""
    return space_to_depth(bits.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)


def depth_to_space_bits(bits: Tensor) -> Tensor:
    """Channel-last bits ``(B, h, w, 4c)`` -> ``(B, 2h, 2w, c)``."""
    return depth_to_space(bits.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)


class BSQ(nn.Module):
    """Single-scale lookup-free binary spherical quantizer over d channels.

    Holds the reference's persistent int64 ``mask`` buffer (2^(d-1), ..., 2, 1; wraps to -2^63 for d = 64);
    it is part of the state dict but Infinity uses bit labels, not integer indices.
    """

    def __init__(self, d: int) -> None:
        super().__init__()
        self.d = d
        self.scale = codebook_scale(d)
        powers = [1 << (d - 1 - i) for i in range(d)]
        powers = [p - (1 << 64) if p >= (1 << 63) else p for p in powers]  # int64 wrap-around, as in torch
        self.register_buffer("mask", torch.tensor(powers, dtype=torch.int64), persistent=True)

    def forward(self, r: Tensor) -> tuple[Tensor, Tensor]:
        """``r (B, d, 1, h, w)`` -> (straight-through code ``q`` of the same shape, bits ``(B, h, w, d)`` int64).

        Computed in fp32: u = r / max(||r||, 1e-12); z = where(u > 0, +s, -s); q = u + (z - u) with (z - u) detached.
        """
        _check_5d(r, "residual")
        if r.shape[1] != self.d:
            raise ValueError(f"residual has {r.shape[1]} channels, the quantizer expects d = {self.d}")
        with torch.autocast(device_type=r.device.type, enabled=False):
            # Work channel-last (B, 1, h, w, d) like the reference, so the norm reduces over the last axis.
            r = r.float().permute(0, 2, 3, 4, 1)
            u = F.normalize(r, p=2.0, dim=-1, eps=_NORM_EPS)
            z = torch.where(u > 0, torch.ones_like(u), -torch.ones_like(u)) * self.scale
            q = u + (z - u).detach()  # straight-through: forward value z (up to rounding), gradient of u
            bits = (q > 0).squeeze(1).to(torch.int64)
        return q.permute(0, 4, 1, 2, 3), bits


FlipSource = Callable[[int, Tensor], Tensor | None]
"""``flip(k, bits)``: given scale k's clean bits ``(B, h, w, d)``, a bool tensor of the same shape marking the
bits to flip before they are fed forward, or None to flip nothing (bitwise self-correction's noise)."""

ResidualMode = Literal["subtract", "recompute"]
"""How the residual of the next scale is formed: ``"subtract"`` keeps it by subtracting each added code, as the
reference tokenizer (``multiscale_bsq.py``); ``"recompute"`` forms ``latent - summed`` afresh, as the reference's
bitwise self-correction (``bitwise_self_correction.py``, ``flip_requant``). The two round differently in fp32."""


class RandomBitFlips:
    """Bitwise self-correction's flip source (official ``bitwise_self_correction.py``, ``flip_requant``).

    For every scale k < ``layers`` (and ``strength >= 0``): draw a level uniformly from 0..floor(100 *
    ``strength``) with ``levels(n)`` (an integer in [0, n); default ``torch.randint`` on ``generator``), set
    p = level * 0.01, then flip each bit iff its ``torch.rand`` value (fp32, CPU ``generator``) is < p. One
    level draw then one mask draw per scale, in scale order. ``probs`` records p per call (0.0 when not drawn).
    """

    def __init__(
        self,
        layers: int,
        strength: float,
        generator: torch.Generator,
        levels: Callable[[int], int] | None = None,
    ) -> None:
        self.layers = layers
        self.strength = strength
        self.generator = generator
        self.levels = levels
        self.probs: list[float] = []

    def _level(self, n: int) -> int:
        if self.levels is not None:
            return int(self.levels(n))
        return int(torch.randint(0, n, (1,), generator=self.generator).item())

    def __call__(self, k: int, bits: Tensor) -> Tensor | None:
        if k >= self.layers or self.strength < 0:
            self.probs.append(0.0)
            return None
        p = self._level(math.floor(100 * self.strength) + 1) * 0.01
        self.probs.append(p)
        return torch.rand(tuple(bits.shape), generator=self.generator, dtype=torch.float32) < p


class ResidualSteps:
    """The multi-scale residual step, one scale at a time, on the full latent grid ``scales[-1]``.

    State: the summed codes (every scale's code trilinearly up-sampled to the full grid and added) and, when
    a continuous ``latent`` is given, the residual ``latent - summed`` (``residual="subtract"``: kept by
    subtraction, in the order of the reference tokenizer; ``"recompute"``: formed afresh, as the reference's
    bitwise self-correction). One home for the step that the tokenizer (``MultiScaleBSQ.forward`` in the
    official ``bsq_vae/multiscale_bsq.py``), bitwise self-correction of the trainer and of the validation
    loss (``infinity/models/bitwise_self_correction.py``) and the sampler (``Infinity.autoregressive_infer_cfg``)
    share: ``quantize()`` gives the BSQ code and bits of the residual area-resized to the current scale,
    ``add(code)`` accumulates whatever code was chosen for it (the quantizer's, a flipped one, or sampled
    bits'), and ``next_input()`` is the trilinear resize of the summed codes to the next scale's grid.
    All arithmetic is fp32 with autocast disabled.
    """

    def __init__(
        self,
        scales: Sequence[Sequence[int]],
        latent: Tensor | None = None,
        *,
        zero_start: bool = False,
        residual: ResidualMode = "subtract",
    ) -> None:
        if residual not in ("subtract", "recompute"):
            raise ValueError(f"residual must be 'subtract' or 'recompute', got {residual!r}")
        grid = [_as_hw(s) for s in scales]
        if not grid:
            raise ValueError("scales must contain at least one (h, w)")
        self.scales: tuple[tuple[int, int], ...] = tuple(grid)
        self.full = grid[-1]
        for k, (h, w) in enumerate(grid):
            if h > self.full[0] or w > self.full[1]:
                raise ValueError(f"scale {k} = {(h, w)} is larger than the last scale {self.full}")
        self.residual: Tensor | None = None
        if latent is not None:
            if latent.dim() != 4 or (int(latent.shape[2]), int(latent.shape[3])) != self.full:
                raise ValueError(
                    f"latent must have shape (B, d, {self.full[0]}, {self.full[1]}) (the last scale), "
                    f"got {tuple(latent.shape)}"
                )
            self.residual = latent.float().unsqueeze(2)
        self.mode: ResidualMode = residual
        self.latent = self.residual  # (B, d, 1, H, W), kept for ``residual="recompute"``
        # (B, d, 1, H, W). ``zero_start``: a zero tensor plus the first code, as the reference tokenizer sums
        # (the same autograd graph, so bit-identical gradients); otherwise the first code itself, as the
        # reference sampler (its memory layout decides how the next-scale trilinear resize rounds).
        self.summed: Tensor | None = None
        if zero_start:
            if self.residual is None:
                raise ValueError("zero_start needs the latent (it gives the shape of the sum)")
            self.summed = torch.zeros_like(self.residual)
        self.k = 0  # index of the scale the next add() fills

    @property
    def num_scales(self) -> int:
        return len(self.scales)

    @property
    def codes(self) -> Tensor:
        """The summed codes ``(B, d, H, W)`` of the scales added so far."""
        if self.summed is None or self.k == 0:
            raise RuntimeError("no scale has been added yet")
        return self.summed.squeeze(2)

    def quantize(self, lfq: BSQ, where: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """BSQ of the residual area-resized to scale k: (straight-through code ``(B, d, 1, h, w)``, bits).

        ``where`` (``(B, 1, 1, H, W)`` 0/1 on the full grid): only the residual there counts, the rest is
        zeroed before the resize (BSQ's bits do not depend on the positive factor a partial cell gets).
        """
        if self.residual is None:
            raise RuntimeError("ResidualSteps.quantize needs the continuous latent; pass latent=")
        if self.k >= self.num_scales:
            raise RuntimeError(f"all {self.num_scales} scales have been added")
        with torch.autocast(device_type=self.residual.device.type, enabled=False):
            residual = self.residual if where is None else self.residual * where
            return lfq(area_resize(residual, self.scales[self.k]))

    def add(self, code: Tensor, *, other: Tensor | None = None, weight: Tensor | None = None) -> None:
        """Accumulate scale k's code ``(B, d, 1, h_k, w_k)`` (its gradient flows into the summed codes).

        With ``other`` (a second code of scale k) and ``weight`` (``(B, 1, 1, H, W)`` in [0, 1] on the full
        grid) the up-sampled codes are composed on the full grid, ``weight * up(code) + (1 - weight) *
        up(other)``, so neither spills into the other's region (an edit's regenerated and held tokens).
        """
        if self.k >= self.num_scales:
            raise RuntimeError(f"all {self.num_scales} scales have been added")
        _check_5d(code, "code")
        if (int(code.shape[3]), int(code.shape[4])) != self.scales[self.k]:
            raise ValueError(f"scale {self.k} needs a code on {self.scales[self.k]}, got {tuple(code.shape)}")
        if (other is None) != (weight is None):
            raise ValueError("add() composes two codes: pass both other= and weight=, or neither")
        with torch.autocast(device_type=code.device.type, enabled=False):
            up = trilinear_resize(code, self.full)
            if other is not None and weight is not None:
                up = weight * up + (1.0 - weight) * trilinear_resize(other, self.full)
            self.summed = up if self.summed is None else self.summed + up
            if self.residual is not None and self.latent is not None:
                if self.mode == "recompute":
                    self.residual = self.latent - self.summed.detach()
                else:
                    self.residual = self.residual - up.detach()
        self.k += 1

    def next_input(self) -> Tensor:
        """The summed codes trilinearly resized to scale k's grid, ``(B, d, h_k, w_k)``: that scale's input."""
        if self.summed is None or self.k == 0 or self.k >= self.num_scales:
            raise RuntimeError("next_input() needs at least one added scale and one scale left")
        with torch.autocast(device_type=self.summed.device.type, enabled=False):
            return trilinear_resize(self.summed, self.scales[self.k]).squeeze(2)


@dataclass
class ResidualOutput:
    """What :func:`residual_quantize` returns.

    ``bits``: per scale the quantizer's clean bits ``(B, h_k, w_k, d)`` (the training labels); ``fed_bits``:
    the bits that were accumulated after flipping (the same tensors when nothing was flipped); ``codes``: the
    summed codes ``(B, d, H, W)``; ``next_inputs``: per scale k >= 1 its input ``(B, d, h_k, w_k)``, the
    trilinear resize of the codes summed over scales < k (empty unless asked for).
    """

    bits: list[Tensor]
    fed_bits: list[Tensor]
    codes: Tensor
    next_inputs: list[Tensor]


def residual_quantize(
    z: Tensor,
    scales: Sequence[Sequence[int]],
    lfq: BSQ,
    *,
    flip: FlipSource | None = None,
    requant: bool = True,
    next_inputs: bool = False,
    residual: ResidualMode = "subtract",
) -> ResidualOutput:
    """Multi-scale residual quantization of ``z (B, d, H, W)`` over ``scales`` (last = (H, W)), fp32.

    Per scale: BSQ of the area-resized residual, optionally flip bits (``flip``, e.g. bitwise self-correction),
    accumulate the code (the straight-through code, or with flips and ``requant`` the code of the flipped
    bits), update the residual (``residual``: by subtraction as the tokenizer, or recomputed as bitwise
    self-correction). ``next_inputs`` also returns every later scale's transformer input.
    """
    steps = ResidualSteps(scales, z, zero_start=True, residual=residual)
    bits_all: list[Tensor] = []
    fed_all: list[Tensor] = []
    inputs: list[Tensor] = []
    with torch.autocast(device_type=z.device.type, enabled=False):
        for k in range(steps.num_scales):
            code, bits = steps.quantize(lfq)
            fed = bits
            mask = flip(k, bits) if flip is not None else None
            if mask is not None:
                fed = bits ^ mask.to(device=bits.device, dtype=bits.dtype)
                if requant:
                    code = bits_to_codes(fed)
            steps.add(code)
            bits_all.append(bits)
            fed_all.append(fed)
            if next_inputs and k + 1 < steps.num_scales:
                inputs.append(steps.next_input())
    return ResidualOutput(bits=bits_all, fed_bits=fed_all, codes=steps.codes, next_inputs=inputs)


@dataclass
class QuantizeOutput:
    """Result of multi-scale quantization: the summed code ``(B, d, H, W)`` and per-scale bits ``(B, h_k, w_k, d)``."""

    codes: Tensor
    bits: list[Tensor]

    @property
    def scales(self) -> tuple[tuple[int, int], ...]:
        return tuple((int(b.shape[1]), int(b.shape[2])) for b in self.bits)


class MultiScaleBSQ(nn.Module):
    """Multi-scale residual BSQ: area-downsample the residual, quantize, trilinear-upsample, subtract."""

    def __init__(self, d: int) -> None:
        super().__init__()
        self.d = d
        self.lfq = BSQ(d)

    def quantize(self, z: Tensor, scales: Sequence[Sequence[int]] | None = None) -> QuantizeOutput:
        """Quantize latent ``z (B, d, H, W)`` over ``scales`` [(h_k, w_k)] (last = (H, W)); fp32 throughout.

        ``scales=None`` picks the tokenizer's default schedule for the latent size. The forward value of the
        summed code carries the straight-through gradient of every scale.
        """
        from .schedules import default_latent_schedule

        if z.dim() != 4:
            raise ValueError(f"latent z must have shape (B, d, H, W), got {tuple(z.shape)}")
        if z.shape[1] != self.d:
            raise ValueError(f"latent has {z.shape[1]} channels, the quantizer expects d = {self.d}")
        full = (int(z.shape[2]), int(z.shape[3]))
        grid = [_as_hw(s) for s in scales] if scales is not None else list(default_latent_schedule(full))
        if not grid:
            raise ValueError("scales must contain at least one (h, w)")
        if grid[-1] != full:
            raise ValueError(f"the last scale {grid[-1]} must equal the latent size {full}")
        for k, (h, w) in enumerate(grid):
            if h > full[0] or w > full[1]:
                raise ValueError(f"scale {k} = {(h, w)} is larger than the latent size {full}")
        out = residual_quantize(z, grid, self.lfq)
        return QuantizeOutput(codes=out.codes, bits=out.bits)

    def forward(self, z: Tensor, scales: Sequence[Sequence[int]] | None = None) -> QuantizeOutput:
        return self.quantize(z, scales)
