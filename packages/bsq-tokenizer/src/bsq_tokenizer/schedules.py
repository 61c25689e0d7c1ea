"""Dynamic-resolution scale schedules: aspect-ratio templates, pixel budgets and token grids.

This module is the single source of truth for the (template, pixel budget) -> token-grid tables used by the
tokenizer, the transformer, the data pipeline and the trainer. The tables are *built* from the construction
rule (eight base lists, their transposes, prefixes per pixel budget), not read from a data file.

Vocabulary of the aspect, the same in every package:

* ``ratio``: the height / width a caller asks for or an image has (any positive number; the ``infinity`` CLI
  also takes ``HEIGHT:WIDTH``, e.g. ``3:4``).
* ``template``: one of the 15 height / width values that have a schedule (:data:`H_DIV_W_TEMPLATES`, the
  reference's ``h_div_w_templates`` in ``infinity/utils/dynamic_resolution.py``); a ratio is snapped to the
  nearest one (:func:`nearest_template`), and :attr:`ScaleSchedule.template` names the one a schedule is for.
* ``h_div_w`` is kept only where the reference's files spell it: the data JSONL field and that constant's name.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from PIL import Image

from ._deprecation import renamed_keywords

__all__ = [
    "EXTRA_PIXEL_BUDGETS",
    "H_DIV_W_TEMPLATES",
    "PIXEL_BUDGETS",
    "VAE_STRIDE",
    "ScaleSchedule",
    "cover_crop_geometry",
    "cover_resize_crop",
    "custom_schedule",
    "default_latent_schedule",
    "get_schedule",
    "nearest_template",
    "resize_crop_for_template",
    "scale_token_weights",
    "target_pixel_size",
]

VAE_STRIDE = 16
"""Pixels per transformer token along each axis (also for the patchified stride-8 tokenizer)."""

PIXEL_BUDGETS: tuple[str, ...] = ("0.06M", "0.25M", "0.60M", "1M")
"""The released pixel budgets (prefixes of 7, 10, 12 and 13 scales of every template)."""
EXTRA_PIXEL_BUDGETS: tuple[str, ...] = ("0.016M",)
"""Project extension, not in the released tables: the first 5 scales (128x128 for 1:1) for tiny CPU models."""
_NUM_SCALES: dict[str, int] = {"0.016M": 5, "0.06M": 7, "0.25M": 10, "0.60M": 12, "1M": 13}

# The eight base aspect ratios (h / w >= 1) and their 13 token grids (h, w), coarse to fine.
_BASE_GRIDS: dict[float, tuple[tuple[int, int], ...]] = {
    1.0: (
        (1, 1),
        (2, 2),
        (4, 4),
        (6, 6),
        (8, 8),
        (12, 12),
        (16, 16),
        (20, 20),
        (24, 24),
        (32, 32),
        (40, 40),
        (48, 48),
        (64, 64),
    ),
    1.25: (
        (1, 1),
        (2, 2),
        (3, 3),
        (5, 4),
        (10, 8),
        (15, 12),
        (20, 16),
        (25, 20),
        (30, 24),
        (35, 28),
        (45, 36),
        (55, 44),
        (70, 56),
    ),
    1.333: (
        (1, 1),
        (2, 2),
        (4, 3),
        (8, 6),
        (12, 9),
        (16, 12),
        (20, 15),
        (24, 18),
        (28, 21),
        (36, 27),
        (48, 36),
        (60, 45),
        (72, 54),
    ),
    1.5: (
        (1, 1),
        (2, 2),
        (3, 2),
        (6, 4),
        (9, 6),
        (15, 10),
        (21, 14),
        (27, 18),
        (33, 22),
        (39, 26),
        (48, 32),
        (63, 42),
        (78, 52),
    ),
    1.75: (
        (1, 1),
        (2, 2),
        (3, 3),
        (7, 4),
        (11, 6),
        (14, 8),
        (21, 12),
        (28, 16),
        (35, 20),
        (42, 24),
        (56, 32),
        (70, 40),
        (84, 48),
    ),
    2.0: (
        (1, 1),
        (2, 2),
        (4, 2),
        (6, 3),
        (10, 5),
        (16, 8),
        (22, 11),
        (30, 15),
        (38, 19),
        (46, 23),
        (60, 30),
        (74, 37),
        (90, 45),
    ),
    2.5: (
        (1, 1),
        (2, 2),
        (5, 2),
        (10, 4),
        (15, 6),
        (20, 8),
        (25, 10),
        (30, 12),
        (40, 16),
        (50, 20),
        (65, 26),
        (80, 32),
        (100, 40),
    ),
    3.0: (
        (1, 1),
        (2, 2),
        (6, 2),
        (9, 3),
        (15, 5),
        (21, 7),
        (27, 9),
        (36, 12),
        (45, 15),
        (54, 18),
        (72, 24),
        (90, 30),
        (111, 37),
    ),
}


def _build_template_grids() -> dict[float, tuple[tuple[int, int], ...]]:
    """Base lists plus, for every ratio r != 1, a transposed twin keyed int(1/r*1000)/1000, in dictionary order."""
    grids: dict[float, tuple[tuple[int, int], ...]] = {}
    for ratio, scales in _BASE_GRIDS.items():
        grids[ratio] = scales
        if ratio != 1.0:
            grids[int(1 / ratio * 1000) / 1000] = tuple((w, h) for h, w in scales)
    return grids


_TEMPLATE_GRIDS = _build_template_grids()

H_DIV_W_TEMPLATES: tuple[float, ...] = tuple(_TEMPLATE_GRIDS)
"""The 15 aspect-ratio templates (height / width) in dictionary order; the order decides ties."""


@renamed_keywords(h_div_w="ratio")
def nearest_template(ratio: float) -> float:
    """Template closest to ``ratio`` (height / width); on exact ties the first template in order wins."""
    if not math.isfinite(ratio) or ratio <= 0:
        raise ValueError(f"ratio must be a positive finite number (height / width), got {ratio!r}")
    best = H_DIV_W_TEMPLATES[0]
    best_dist = abs(ratio - best)
    for template in H_DIV_W_TEMPLATES[1:]:
        dist = abs(ratio - template)
        if dist < best_dist:  # strict: the first minimum wins, like numpy.argmin
            best, best_dist = template, dist
    return best


def _check_pn(pn: str) -> int:
    if pn not in _NUM_SCALES:
        known = ", ".join(PIXEL_BUDGETS + EXTRA_PIXEL_BUDGETS)
        raise ValueError(f"unknown pixel budget pn={pn!r}; choose one of {known}")
    return _NUM_SCALES[pn]


def _normalise_scales(scales: Sequence[Sequence[int]]) -> tuple[tuple[int, int], ...]:
    """Accept (h, w) or (t, h, w) entries (t must be 1 for images) and return validated (h, w) tuples."""
    out: list[tuple[int, int]] = []
    for i, entry in enumerate(scales):
        entry = tuple(int(v) for v in entry)
        if len(entry) == 3:
            if entry[0] != 1:
                raise ValueError(f"scale {i} = {entry}: only t = 1 (images) is supported; give (h, w) pairs")
            entry = entry[1:]
        if len(entry) != 2 or entry[0] < 1 or entry[1] < 1:
            raise ValueError(f"scale {i} = {entry}: expected a pair of positive ints (h, w)")
        out.append((entry[0], entry[1]))
    if not out:
        raise ValueError("a scale schedule needs at least one scale")
    return tuple(out)


@dataclass(frozen=True)
class ScaleSchedule:
    """Token grids of one (aspect template, pixel budget) pair; t = 1 for every scale (images).

    ``rope_grid`` is the template's final 1M grid (H1, W1): the "star" RoPE position of token (i, j) at a
    scale (h, w) is (round(i * H1 / h), round(j * W1 / w)), identical for every pixel budget.
    """

    template: float
    pn: str
    scales: tuple[tuple[int, int], ...]
    rope_grid: tuple[int, int]

    def __post_init__(self) -> None:
        object.__setattr__(self, "scales", _normalise_scales(self.scales))
        rope = tuple(int(v) for v in self.rope_grid)
        if len(rope) != 2 or min(rope) < 1:
            raise ValueError(f"rope_grid must be a pair of positive ints, got {self.rope_grid!r}")
        object.__setattr__(self, "rope_grid", rope)

    @property
    def pixel_hw(self) -> tuple[int, int]:
        """Image size (height, width) in pixels: 16 x the last token grid."""
        h, w = self.scales[-1]
        return VAE_STRIDE * h, VAE_STRIDE * w

    @property
    def seq_len(self) -> int:
        """Total number of tokens over all scales (including the 1x1 start scale)."""
        return sum(h * w for h, w in self.scales)

    @property
    def num_scales(self) -> int:
        return len(self.scales)

    def vae_scales(self, patchify: bool = False) -> tuple[tuple[int, int], ...]:
        """Grids on the VAE latent: the token grids, doubled for the stride-8 2x2-patchified tokenizer."""
        if patchify:
            return tuple((2 * h, 2 * w) for h, w in self.scales)
        return self.scales

    def to_dict(self) -> dict[str, Any]:
        return {
            "template": self.template,
            "pn": self.pn,
            "scales": [list(s) for s in self.scales],
            "rope_grid": list(self.rope_grid),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ScaleSchedule:
        missing = {"template", "pn", "scales", "rope_grid"} - set(data)
        if missing:
            raise ValueError(f"scale schedule dict lacks keys {sorted(missing)}; got keys {sorted(data)}")
        return cls(
            template=float(data["template"]),
            pn=str(data["pn"]),
            scales=tuple(tuple(s) for s in data["scales"]),
            rope_grid=tuple(data["rope_grid"]),
        )


@renamed_keywords(h_div_w="ratio")
def get_schedule(ratio: float, pn: str) -> ScaleSchedule:
    """Schedule of the template nearest to ``ratio`` (height / width) at pixel budget ``pn`` (e.g. "1M")."""
    num = _check_pn(pn)
    template = nearest_template(ratio)
    grids = _TEMPLATE_GRIDS[template]
    return ScaleSchedule(template=template, pn=pn, scales=grids[:num], rope_grid=grids[-1])


def custom_schedule(
    scales: Sequence[Sequence[int]],
    template: float = 1.0,
    name: str = "custom",
    rope_grid: tuple[int, int] | None = None,
) -> ScaleSchedule:
    """A user-defined schedule (e.g. for a 128x128 model). ``rope_grid`` defaults to the 1M grid of the
    nearest template, which keeps RoPE positions comparable with the released models."""
    if rope_grid is None:
        rope_grid = _TEMPLATE_GRIDS[nearest_template(template)][-1]
    return ScaleSchedule(
        template=float(template), pn=name, scales=_normalise_scales(scales), rope_grid=rope_grid
    )


@renamed_keywords(h_div_w="ratio")
def target_pixel_size(ratio: float, pn: str) -> tuple[int, int]:
    """(height, width) in pixels of the template nearest to ``ratio`` (height / width) at budget ``pn``."""
    return get_schedule(ratio, pn).pixel_hw


def cover_crop_geometry(size: tuple[int, int], target_hw: tuple[int, int]) -> tuple[int, int, int, int]:
    """Where an image of ``size`` = (width, height) goes when cover-resized and centre-cropped to ``target_hw``.

    Returns (resized width, resized height, crop left, crop top). Same rule as the reference data pipeline:
    if w/h <= tgt_w/tgt_h the width becomes tgt_w and the height int(tgt_w / (w/h)); otherwise the height
    becomes tgt_h and the width int((w/h) * tgt_h); the crop is centred (floor of half the excess).
    """
    tgt_h, tgt_w = target_hw
    width, height = size
    if width < 1 or height < 1:
        raise ValueError(f"cannot resize an empty image of size {size}")
    aspect = width / height
    if aspect <= tgt_w / tgt_h:
        new_w, new_h = tgt_w, int(tgt_w / aspect)
    else:
        new_w, new_h = int(aspect * tgt_h), tgt_h
    return new_w, new_h, (new_w - tgt_w) // 2, (new_h - tgt_h) // 2


def cover_resize_crop(img: Image.Image, target_hw: tuple[int, int]) -> Image.Image:
    """Cover-resize ``img`` with LANCZOS (aspect kept) and centre-crop it to ``target_hw`` = (height, width)
    pixels (:func:`cover_crop_geometry`). The image mode is kept; convert to RGB first if needed."""
    new_w, new_h, left, top = cover_crop_geometry(img.size, target_hw)
    resized = img.resize((new_w, new_h), resample=Image.Resampling.LANCZOS)
    return resized.crop((left, top, left + target_hw[1], top + target_hw[0]))


@renamed_keywords(h_div_w_or_template="ratio")
def resize_crop_for_template(img: Image.Image, ratio: float, pn: str) -> Image.Image:
    """Cover-resize and centre-crop ``img`` to the pixel size of the template nearest to ``ratio`` (height /
    width; a template is its own nearest) at ``pn`` (:func:`cover_resize_crop`), as the reference data pipeline
    does. The image mode is kept; convert to RGB first if needed."""
    return cover_resize_crop(img, target_pixel_size(ratio, pn))


# ---------------------------------------------------------------------------------------------------------
# Tokenizer default schedules: used only when the quantizer is called without an explicit schedule.

# Legacy entries of the reference table; (32, 32) is overridden by the dynamic 10-scale 1.0 list (as are the
# reference's (16, 16) and (64, 64) entries by the 7- and 13-scale lists), (36, 64) is kept.
_LEGACY_DEFAULTS: dict[tuple[int, int], tuple[tuple[int, int], ...]] = {
    (32, 32): tuple((n, n) for n in (1, 2, 3, 4, 6, 9, 13, 18, 24, 32)),
    (36, 64): (
        (1, 1),
        (2, 2),
        (3, 3),
        (4, 4),
        (6, 6),
        (9, 12),
        (13, 16),
        (18, 24),
        (24, 32),
        (32, 48),
        (36, 64),
    ),
}


def _build_default_latent_schedules() -> dict[tuple[int, int], tuple[tuple[int, int], ...]]:
    table = dict(_LEGACY_DEFAULTS)
    for grids in _TEMPLATE_GRIDS.values():
        for num in (7, 10, 13):
            table[grids[num - 1]] = grids[:num]
    return table


_DEFAULT_LATENT_SCHEDULES = _build_default_latent_schedules()


def default_latent_schedule(latent_hw: tuple[int, int]) -> tuple[tuple[int, int], ...]:
    """The tokenizer's default grids for a latent of size (h, w) (7-, 10- or 13-scale dynamic tables).

    Raises ValueError when the size has no default; pass an explicit schedule (``get_schedule``) then.
    """
    key = (int(latent_hw[0]), int(latent_hw[1]))
    if key not in _DEFAULT_LATENT_SCHEDULES:
        known = ", ".join(f"{h}x{w}" for h, w in sorted(_DEFAULT_LATENT_SCHEDULES))
        raise ValueError(
            f"no default scale schedule for a {key[0]}x{key[1]} latent; pass scales explicitly "
            f"(e.g. get_schedule(ratio, pn).scales or custom_schedule([...])). Latent sizes with a default: {known}"
        )
    return _DEFAULT_LATENT_SCHEDULES[key]


def scale_token_weights(
    scales: Sequence[Sequence[int]],
    reweight: bool,
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Per-token loss weights ``(L,)`` of a schedule's token grids, summing to 1 (official ``trainer.py``,
    ``reweight_loss_by_scale``).

    ``reweight``: every token of scale k weighs ``sqrt(h_last*w_last) / sqrt(h_k*w_k)`` before normalisation
    (coarse scales count more per token); otherwise uniform ``1/L``. The trainer's loss uses fp32, the
    validation-loss metric fp64 (``dtype``).
    """
    grids = _normalise_scales(scales)
    h_last, w_last = grids[-1]
    parts = []
    for h, w in grids:
        value = (h_last * w_last) ** 0.5 / (h * w) ** 0.5 if reweight else 1.0
        parts.append(torch.full((h * w,), value, dtype=dtype, device=device))
    weights = torch.cat(parts)
    return weights / weights.sum()
