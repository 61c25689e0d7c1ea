"""Edit requests of ``infinity serve`` (``POST /v1/images/edits``): the JSON fields beside a generate request's,
their checks, and the source and mask fitted to the template as ``infinity edit`` fits them.

Fields: ``image`` (the source, base64 PNG/JPEG/WebP, a ``data:`` URL prefix is allowed), and one of ``mask``
(base64 image, white = regenerate), ``outpaint`` (the canvas ratio, height / width) or ``keep_scales`` (hold the
source's first k scales; with no mask a variation); ``dilate`` (tokens, default 0). Every generate field except
``ratio`` for outpainting is accepted too; ``ratio`` defaults to the source's own height / width.
"""

from __future__ import annotations

import base64
import binascii
import io
import random
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from PIL import Image

from ..edit import fit_mask, fit_source, outpaint_canvas
from ..generation import GenerationConfig
from .schema import EditSpec, ImageRequest, RequestError, ServeLimits, _is_number, parse_request

__all__ = ["EDIT_FIELDS", "decode_image", "parse_edit_request"]

EDIT_FIELDS = ("image", "mask", "outpaint", "keep_scales", "dilate")
MAX_DILATE = 64  # tokens of the finest grid


def decode_image(value: Any, name: str, limits: ServeLimits) -> Image.Image:
    """A base64 image field decoded and loaded (errors name ``name``); at most ``max_source_pixels`` pixels."""
    if not isinstance(value, str) or not value:
        raise RequestError(name, f"{name} must be a base64-encoded image (PNG, JPEG or WebP) string")
    if value.startswith("data:"):
        head, _, value = value.partition(",")
        if not head.endswith(";base64"):
            raise RequestError(name, f"{name} is a data URL without ';base64'; send base64 image data")
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as err:
        raise RequestError(name, f"{name} is not valid base64: {err}") from err
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(raw))
            width, height = image.size
            if width * height > limits.max_source_pixels:
                raise RequestError(
                    name,
                    f"{name} is {width}x{height} pixels; at most {limits.max_source_pixels} pixels are accepted",
                    status=413,
                )
            image.load()
    except RequestError:
        raise
    except (OSError, ValueError, Image.DecompressionBombWarning, Image.DecompressionBombError) as err:
        raise RequestError(name, f"{name} is not a readable image: {err}") from err
    return image


def _optional_int(body: Mapping[str, Any], name: str, low: int, high: int) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise RequestError(name, f"{name} must be an integer in [{low}, {high}], got {value!r}")
    return value


def parse_edit_request(
    body: Any,
    defaults: GenerationConfig,
    limits: ServeLimits,
    pixel_budgets: Sequence[str],
    rng: random.Random | None = None,
) -> ImageRequest:
    """Check an edit request's decoded JSON body: an :class:`ImageRequest` whose ``edit`` holds the fitted
    source and mask. Raises :class:`RequestError` naming the field at fault."""
    if not isinstance(body, dict):
        raise RequestError(None, f"the body must be a JSON object, got {type(body).__name__}", status=400)
    if "image" not in body:
        raise RequestError("image", "image is missing; send the source image as base64")
    source = decode_image(body["image"], "image", limits)
    mask_image = None if body.get("mask") is None else decode_image(body["mask"], "mask", limits)
    outpaint = body.get("outpaint")
    if outpaint is not None and (not _is_number(outpaint) or not 0 < outpaint < 1e3):
        raise RequestError("outpaint", f"outpaint is the canvas ratio (height / width) > 0, got {outpaint!r}")
    dilate = _optional_int(body, "dilate", 0, MAX_DILATE) or 0
    rest = {k: v for k, v in body.items() if k not in EDIT_FIELDS}

    if outpaint is not None:
        if mask_image is not None:
            raise RequestError("outpaint", "send either mask (inpainting) or outpaint, not both")
        if body.get("keep_scales") is not None:
            raise RequestError(
                "keep_scales", "keep_scales applies to inpainting and variations, not to outpaint"
            )
        if rest.get("ratio") is not None:
            raise RequestError(
                "ratio", "outpaint is the canvas ratio; leave ratio out of an outpaint request"
            )
        rest["ratio"] = float(outpaint)
    elif rest.get("ratio") is None:
        rest["ratio"] = source.height / source.width
    request = parse_request(rest, defaults, limits, pixel_budgets, rng)
    schedule = request.schedule
    keep_scales = _optional_int(body, "keep_scales", 0, schedule.num_scales)
    if outpaint is None and mask_image is None and keep_scales is None:
        raise RequestError("mask", "send mask (inpainting), outpaint (a ratio) or keep_scales (a variation)")

    notices: list[str] = []
    if outpaint is not None:
        fitted, pixel_mask = outpaint_canvas(source, schedule)
        mode = "outpaint"
    else:
        fitted = fit_source(source, schedule)
        pixel_mask = None
        mode = "variation" if mask_image is None else "inpaint"
        if mask_image is not None:
            if mask_image.size != source.size:
                notices.append(
                    f"the mask is {mask_image.width}x{mask_image.height} but the image is "
                    f"{source.width}x{source.height}; the mask was resized to the image"
                )
            pixel_mask = fit_mask(mask_image, source.size, schedule)
            if not bool(pixel_mask.any()) and keep_scales is None:
                notices.append("the mask is empty: the result is the tokenizer's reconstruction of the image")
    spec = EditSpec(mode, fitted, pixel_mask, keep_scales, dilate, tuple(notices))
    return replace(request, edit=spec)
