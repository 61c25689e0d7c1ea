"""Image <-> tensor conversion with explicit rules for every PIL mode, stride checks and PSNR."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor

__all__ = [
    "center_crop_to_multiple",
    "check_multiple",
    "image_to_tensor",
    "load_image",
    "psnr",
    "tensor_to_images",
    "to_rgb",
]

_BACKGROUND = (255, 255, 255)


def to_rgb(img: Image.Image) -> Image.Image:
    """Convert any common PIL mode to 8-bit RGB.

    * transparency (RGBA, LA, PA, P/L with a transparency key) is composited on a white background;
    * L, 1, P, CMYK, YCbCr, LAB, HSV use PIL's own conversion;
    * 16-bit greyscale ("I;16", "I;16B", "I;16L", "I;16N") is scaled to 8 bits by value / 257;
    * 32-bit "I" and float "F" images have no defined range and are rejected.
    """
    mode = img.mode
    if mode == "RGB":
        return img
    if mode.startswith("I;16"):
        arr = np.asarray(img, dtype=np.uint16).astype(np.float64)
        grey = np.clip(np.rint(arr / 257.0), 0, 255).astype(np.uint8)
        return Image.fromarray(grey).convert("RGB")
    if mode in ("I", "F"):
        raise ValueError(
            f"image mode {mode!r} (32-bit integer/float) has no defined value range; convert it to 8-bit RGB "
            "(or 16-bit 'I;16') before tokenizing"
        )
    has_alpha = mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in img.info
    if has_alpha:
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (*_BACKGROUND, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    try:
        return img.convert("RGB")
    except (ValueError, OSError) as exc:
        raise ValueError(f"cannot convert image mode {mode!r} to RGB: {exc}") from exc


def load_image(path: str | os.PathLike[str]) -> Image.Image:
    """Open an image file and convert it to RGB with ``to_rgb`` (errors name the file)."""
    path = Path(path)
    try:
        with Image.open(path) as img:
            img.load()
            return to_rgb(img)
    except FileNotFoundError:
        raise
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from exc
    except OSError as exc:
        raise ValueError(f"{path} is not a readable image: {exc}") from exc


def check_multiple(width: int, height: int, stride: int) -> None:
    """Raise ValueError naming the size and the nearest valid size unless both sides are multiples of ``stride``."""
    if width % stride or height % stride or width < stride or height < stride:
        nh, nw = max(stride, round(height / stride) * stride), max(stride, round(width / stride) * stride)
        raise ValueError(
            f"image size {height}x{width} (HxW) is not a multiple of the tokenizer stride {stride}; "
            f"the nearest valid size is {nh}x{nw} (resize it, centre-crop it, or pick a pixel budget)"
        )


def center_crop_to_multiple(img: Image.Image, stride: int) -> Image.Image:
    """Centre-crop to the largest size whose sides are multiples of ``stride``."""
    w, h = img.size
    nw, nh = (w // stride) * stride, (h // stride) * stride
    if nw == 0 or nh == 0:
        raise ValueError(
            f"image {h}x{w} (HxW) is smaller than the stride {stride}; it cannot be cropped to a multiple"
        )
    left, top = (w - nw) // 2, (h - nh) // 2
    return img.crop((left, top, left + nw, top + nh))


def image_to_tensor(img: Image.Image) -> Tensor:
    """RGB PIL image -> ``(1, 3, H, W)`` float32 in [-1, 1] (x / 255, then 2x - 1 as x + x - 1)."""
    if img.mode != "RGB":
        raise ValueError(f"image_to_tensor expects an RGB image, got mode {img.mode!r}; use to_rgb() first")
    x = torch.from_numpy(np.array(img, dtype=np.uint8)).permute(2, 0, 1).float().div(255)
    return (x + x - 1).unsqueeze(0)


def tensor_to_images(x: Tensor) -> list[Image.Image]:
    """``(B, 3, H, W)`` in [-1, 1] -> RGB images via uint8((x + 1) / 2 * 255) (truncation, as the reference)."""
    if x.dim() != 4 or x.shape[1] != 3:
        raise ValueError(f"expected images of shape (B, 3, H, W), got {tuple(x.shape)}")
    arr = ((x.detach().float().clamp(-1, 1) + 1) / 2 * 255).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    return [Image.fromarray(a) for a in arr]


def psnr(a: Tensor, b: Tensor, data_range: float = 2.0) -> float:
    """Peak signal-to-noise ratio in dB between two tensors with values spanning ``data_range``."""
    mse = torch.mean((a.double() - b.double()) ** 2).item()
    if mse == 0:
        return float("inf")
    return float(10 * np.log10(data_range**2 / mse))
