"""Aspect-ratio buckets: which of the 15 schedule templates an image belongs to, and its folder name.

The template list, the nearest-template rule and the resize-to-cover + centre-crop rule all come from
``bsq_tokenizer`` (official `infinity/utils/dynamic_resolution.py`); this module only names buckets and decides when a converter
should shrink an image.
"""

from __future__ import annotations

from bsq_tokenizer.schedules import (
    EXTRA_PIXEL_BUDGETS,
    H_DIV_W_TEMPLATES,
    PIXEL_BUDGETS,
    nearest_template,
    target_pixel_size,
)

__all__ = ["bucket_name", "check_pn", "needs_downscale", "parse_bucket_name", "template_of_size"]


def bucket_name(template: float) -> str:
    """Folder name of a template's bucket, three decimals: 1.0 -> "1.000", 0.666 -> "0.666"."""
    return f"{template:.3f}"


_BY_NAME: dict[str, float] = {bucket_name(t): t for t in H_DIV_W_TEMPLATES}


def parse_bucket_name(name: str) -> float:
    """Inverse of :func:`bucket_name`; raises ValueError for a folder that is not a template bucket."""
    if name not in _BY_NAME:
        raise ValueError(f"{name!r} is not a bucket name; expected one of {', '.join(_BY_NAME)}")
    return _BY_NAME[name]


def template_of_size(width: int, height: int) -> float:
    """Template of an (upright) image of ``width`` x ``height`` pixels: nearest to height / width."""
    if width < 1 or height < 1:
        raise ValueError(f"image size must be positive, got width={width}, height={height}")
    return nearest_template(height / width)


def check_pn(pn: str) -> str:
    """Return ``pn`` if it is a known pixel budget, else raise naming the choices."""
    if pn not in PIXEL_BUDGETS + EXTRA_PIXEL_BUDGETS:
        known = ", ".join(PIXEL_BUDGETS + EXTRA_PIXEL_BUDGETS)
        raise ValueError(f"unknown pixel budget {pn!r}; choose one of {known}")
    return pn


def needs_downscale(width: int, height: int, template: float, pn: str) -> bool:
    """True when the cover-resize for ``(template, pn)`` would shrink the image (it is larger than needed).

    Smaller images are kept as they are: enlarging them at conversion time would only cost bytes, the loader
    resizes to the training size anyway.
    """
    tgt_h, tgt_w = target_pixel_size(template, pn)
    return max(tgt_w / width, tgt_h / height) < 1.0
