"""Editing a real image: fitting the source and its mask to a template, masks on every scale's grid, canvases.

A mask is a pixel image, white (>= 128 after conversion to greyscale) where the image must change. On a
scale whose token grid is h x w over an H x W pixel image, token (i, j) covers the pixel rectangle
[i*H/h, (i+1)*H/h) x [j*W/w, (j+1)*W/w); it is **regenerated iff any pixel it touches, even partly, is
masked**, and held otherwise. ``dilate = N`` first grows the pixel mask by N tokens of the finest grid
(N*H/h_last pixels up and down, N*W/w_last left and right), so the regenerated region has a margin.
The sampler side (how held tokens are computed) is :class:`infinity_model.sampler.EditSource`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from bsq_tokenizer import ScaleSchedule, load_image
from bsq_tokenizer.image import to_rgb
from bsq_tokenizer.schedules import cover_crop_geometry, cover_resize_crop
from PIL import Image
from torch import Tensor

__all__ = [
    "MASK_THRESHOLD",
    "fit_mask",
    "fit_source",
    "keep_masks",
    "open_image",
    "outpaint_canvas",
    "paste_back",
    "regenerate_masks",
]

logger = logging.getLogger(__name__)

MASK_THRESHOLD = 128
"""A mask pixel (greyscale 0-255) at or above this value marks the image for regeneration there."""


def fit_source(image: Image.Image, schedule: ScaleSchedule) -> Image.Image:
    """The source in RGB, cover-resized and centre-cropped to the schedule's pixel size like training data."""
    return cover_resize_crop(to_rgb(image), schedule.pixel_hw)


def fit_mask(mask: Image.Image, source_size: tuple[int, int], schedule: ScaleSchedule) -> Tensor:
    """Pixel mask ``(H, W)`` bool (True = regenerate) on the schedule's pixels, with the source's geometry.

    A mask whose size differs from the source's ``(width, height)`` is first resized to it (nearest
    neighbour) with a logged notice; then it is cover-resized and cropped exactly like the source.
    """
    grey = mask.convert("L")
    if grey.size != tuple(source_size):
        logger.warning(
            "the mask is %dx%d but the source image is %dx%d; resizing the mask to the source",
            *grey.size,
            *source_size,
        )
        grey = grey.resize((int(source_size[0]), int(source_size[1])), resample=Image.Resampling.NEAREST)
    fitted = cover_resize_crop(grey, schedule.pixel_hw)
    return torch.from_numpy(np.asarray(fitted) >= MASK_THRESHOLD)


def regenerate_masks(mask: Tensor, grids: Sequence[tuple[int, int]], dilate: int = 0) -> list[Tensor]:
    """Per grid (h, w) a bool ``(h, w)`` mask, True where a token touches a masked pixel (module docstring)."""
    if mask.dim() != 2 or mask.dtype != torch.bool:
        raise ValueError(f"mask must be a bool (H, W) pixel mask, got {mask.dtype} {tuple(mask.shape)}")
    if dilate < 0:
        raise ValueError(f"dilate must be >= 0 tokens, got {dilate}")
    height, width = int(mask.shape[0]), int(mask.shape[1])
    m = mask.float()[None, None]
    if dilate:
        last_h, last_w = grids[-1]
        dy, dx = dilate * -(-height // last_h), dilate * -(-width // last_w)
        m = F.max_pool2d(m, (2 * dy + 1, 1), stride=1, padding=(dy, 0))
        m = F.max_pool2d(m, (1, 2 * dx + 1), stride=1, padding=(0, dx))
    # adaptive max pooling reads rows floor(i*H/h) .. ceil((i+1)*H/h) - 1: exactly the pixels a token touches
    return [F.adaptive_max_pool2d(m, (h, w))[0, 0] > 0 for h, w in grids]


def keep_masks(
    mask: Tensor | None,
    grids: Sequence[tuple[int, int]],
    *,
    dilate: int = 0,
    keep_scales: int | None = None,
) -> tuple[Tensor, ...]:
    """Keep-masks (True = hold the source) for every grid of a schedule.

    ``mask``: pixel mask (True = regenerate) or None (nothing masked). ``keep_scales = k``: the first k scales
    are held entirely (the source's coarse layout and colours) and the later ones are regenerated where the
    mask says, everywhere when there is no mask (variations). An empty mask holds everything: the result is
    the tokenizer's reconstruction of the source.
    """
    if keep_scales is not None and not 0 <= keep_scales <= len(grids):
        raise ValueError(f"keep_scales must be in [0, {len(grids)}] for this schedule, got {keep_scales}")
    if mask is None:
        regen = [torch.full((h, w), keep_scales is not None) for h, w in grids]
    else:
        regen = regenerate_masks(mask, grids, dilate)
    if keep_scales is not None:
        regen = [torch.zeros_like(r) if k < keep_scales else r for k, r in enumerate(regen)]
    return tuple(~r for r in regen)


def outpaint_canvas(
    image: Image.Image, schedule: ScaleSchedule, fill: tuple[int, int, int] = (255, 255, 255)
) -> tuple[Image.Image, Tensor]:
    """The source fitted inside the schedule's canvas (aspect kept, centred) and the pixel mask of the rest."""
    height, width = schedule.pixel_hw
    src = to_rgb(image)
    scale = min(width / src.width, height / src.height)
    new_w, new_h = (
        max(1, min(width, round(src.width * scale))),
        max(1, min(height, round(src.height * scale))),
    )
    left, top = (width - new_w) // 2, (height - new_h) // 2
    canvas = Image.new("RGB", (width, height), fill)
    canvas.paste(src.resize((new_w, new_h), resample=Image.Resampling.LANCZOS), (left, top))
    mask = torch.ones(height, width, dtype=torch.bool)
    mask[top : top + new_h, left : left + new_w] = False
    return canvas, mask


def paste_back(original: Image.Image, edited: Image.Image) -> Image.Image:
    """Put an edit (the template's size) back into the full-size original it was cut from by ``pipe.edit``.

    The edit covers the centre crop that :func:`fit_source` took; it is resized to that region of the
    original (LANCZOS) and pasted there, the rest of the original is unchanged.
    """
    original = to_rgb(original)
    tgt_w, tgt_h = edited.size
    new_w, new_h, left, top = cover_crop_geometry(original.size, (tgt_h, tgt_w))
    sx, sy = original.width / new_w, original.height / new_h
    box = (round(left * sx), round(top * sy), round((left + tgt_w) * sx), round((top + tgt_h) * sy))
    patch = to_rgb(edited).resize((box[2] - box[0], box[3] - box[1]), resample=Image.Resampling.LANCZOS)
    out = original.copy()
    out.paste(patch, box[:2])
    return out


def open_image(image: Image.Image | str | Path, what: str, *, rgb: bool = True) -> Image.Image:
    """A PIL image as given, or read from a path; RGB unless ``rgb=False`` (errors name the file and its role)."""
    if isinstance(image, Image.Image):
        return to_rgb(image) if rgb else image
    path = Path(image).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"{what} {path} does not exist")
    if rgb:
        return load_image(path)
    try:
        with Image.open(path) as img:
            img.load()
            return img.copy()
    except OSError as err:
        raise ValueError(f"{what} {path} is not a readable image: {err}") from err
