"""Decoding stored image bytes into upright 8-bit RGB, and re-encoding when a converter resizes.

Converter and loader share :func:`decode_rgb`, so an image accepted at conversion time decodes the same way
at training time: EXIF orientation applied, CMYK / 16-bit / palette / alpha images turned into plain RGB.
"""

from __future__ import annotations

import io
import multiprocessing
import multiprocessing.context
import warnings

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import InfinityDataError

# Image file extensions the converters pick up and WebDataset decoders understand.
IMAGE_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")
# Formats stored as they are (WebDataset extension per PIL format); anything else is re-encoded as PNG.
_STORED_AS_IS: dict[str, str] = {"JPEG": "jpg", "MPO": "jpg", "PNG": "png", "WEBP": "webp"}
_LOSSY_FORMATS = frozenset({"JPEG", "MPO", "WEBP"})
# WebDataset member extensions that hold an image, in the order a reader looks for them.
SHARD_IMAGE_EXTS: tuple[str, ...] = ("jpg", "png", "webp", "jpeg")


class ImageDecodeError(InfinityDataError, ValueError):
    """Bytes that are not a complete, decodable image; ``code`` names the kind of failure for reports."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code

    def __reduce__(self) -> tuple[type, tuple[str, str]]:  # picklable across worker processes
        return type(self), (self.code, str(self))


def to_rgb(img: Image.Image) -> Image.Image:
    """Any PIL mode -> 8-bit RGB; transparency is composited on white, 16-bit data keeps its top 8 bits."""
    mode = img.mode
    if mode == "RGB":
        return img
    if mode.startswith("I;16") or mode == "I":
        arr = np.asarray(img).astype(np.int64)
        if mode == "I" and arr.max(initial=0) <= 255:
            arr8 = np.clip(arr, 0, 255).astype(np.uint8)
        else:
            arr8 = (np.clip(arr, 0, 65535) >> 8).astype(np.uint8)
        return Image.fromarray(arr8, mode="L").convert("RGB")
    if mode == "F":
        arr = np.asarray(img, dtype=np.float64)
        scale = 255.0 if np.nanmax(arr, initial=0.0) <= 1.0 else 1.0
        arr8 = np.clip(np.nan_to_num(arr * scale), 0, 255).round().astype(np.uint8)
        return Image.fromarray(arr8, mode="L").convert("RGB")
    if mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    elif mode in ("PA", "La", "RGBa", "LA"):
        img = img.convert("RGBA")
    if img.mode == "RGBA":
        background = Image.new("RGBA", img.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, img).convert("RGB")
    try:
        return img.convert("RGB")
    except (ValueError, OSError) as exc:
        raise ImageDecodeError(
            "unsupported_mode", f"cannot convert image mode {mode!r} to RGB: {exc}"
        ) from exc


def open_image(data: bytes) -> tuple[Image.Image, str]:
    """Fully decode ``data``; returns the upright image in its own mode and its PIL format name.

    Raises ImageDecodeError for empty, truncated or non-image bytes.
    """
    if not data:
        raise ImageDecodeError("empty_file", "zero-byte file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img: Image.Image = Image.open(io.BytesIO(data))
            fmt = img.format or ""
            img.load()
            img = ImageOps.exif_transpose(img)
    except UnidentifiedImageError as exc:
        raise ImageDecodeError("not_an_image", "not an image (PIL cannot identify the format)") from exc
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as exc:
        raise ImageDecodeError("too_large", f"image too large to decode safely: {exc}") from exc
    except (OSError, SyntaxError, ValueError) as exc:
        # PIL reports truncated / corrupt data as OSError (and a few plugins as SyntaxError / ValueError).
        raise ImageDecodeError(
            "corrupt_image", f"corrupt or truncated image ({type(exc).__name__}: {exc})"
        ) from exc
    if img.width < 1 or img.height < 1:
        raise ImageDecodeError("corrupt_image", f"empty image of size {img.size}")
    return img, fmt


def decode_rgb(data: bytes) -> Image.Image:
    """Bytes -> upright 8-bit RGB PIL image (EXIF orientation applied, alpha on white)."""
    img, _ = open_image(data)
    return to_rgb(img)


def stored_extension(fmt: str) -> str | None:
    """WebDataset extension for storing bytes of PIL format ``fmt`` unchanged, or None to re-encode."""
    return _STORED_AS_IS.get(fmt)


def encode_rgb(img: Image.Image, source_format: str, jpeg_quality: int) -> tuple[bytes, str]:
    """Encode an RGB image for a shard: JPEG for lossy sources, PNG for lossless ones; returns (bytes, ext)."""
    buf = io.BytesIO()
    if source_format in _LOSSY_FORMATS:
        img.save(buf, format="JPEG", quality=jpeg_quality, subsampling=0 if jpeg_quality >= 90 else 2)
        return buf.getvalue(), "jpg"
    img.save(buf, format="PNG", compress_level=6)
    return buf.getvalue(), "png"


def batch_to_tensor_pm1(images: list[Image.Image], shared: bool = False) -> torch.Tensor:
    """Same-size RGB images -> float32 [B, 3, H, W] in [-1, 1]: x / 255 in [0, 1], then 2x - 1, as the reference's data pipeline.

    The uint8 pixels are stacked first and converted once; ``shared`` allocates the result in shared memory
    so a DataLoader worker hands it to the trainer process without another copy.
    """
    arrays = [np.asarray(img, dtype=np.uint8) for img in images]
    for arr in arrays:
        if arr.shape != arrays[0].shape or arr.ndim != 3 or arr.shape[2] != 3:
            raise ValueError(
                f"expected RGB images of one size, got shapes {sorted({a.shape for a in arrays})}"
            )
    pixels = torch.from_numpy(
        np.ascontiguousarray(np.stack(arrays).transpose(0, 3, 1, 2))
    )  # [B, 3, H, W] uint8
    out = torch.empty(pixels.shape, dtype=torch.float32)
    if shared:
        out.share_memory_()
    out.copy_(pixels)
    return out.div_(255.0).mul_(2.0).sub_(1.0)


def worker_context() -> multiprocessing.context.BaseContext:
    """Process start method for converter / verifier pools: forkserver where available, spawn elsewhere.

    Never fork: the callers run a progress bar, whose thread may hold a lock at the moment of a fork and
    leave it held forever in the child. The fork server imports the converter and verifier once, so each
    worker it forks starts without re-importing torch."""
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["infinity_data.convert", "infinity_data.verify"])
    return context
