"""Small generated images and datasets shared by the infinity-data tests (all deterministic)."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

# (width, height) pairs covering many templates: 1.0, 0.75, 1.333, 0.5, 2.0, 1.25, 0.8, 3.0, 0.333
SIZES = [(48, 48), (64, 48), (48, 64), (64, 32), (32, 64), (40, 50), (50, 40), (30, 90), (90, 30)]


def _image_bytes(width: int, height: int, seed: int, fmt: str = "JPEG", mode: str = "RGB") -> bytes:
    """A random-noise image of the given size, encoded as ``fmt``."""
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    img = Image.fromarray(arr, "RGB")
    if mode != "RGB":
        img = img.convert(mode)
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return buf.getvalue()


@pytest.fixture(scope="session")
def image_bytes() -> Callable[..., bytes]:
    """``image_bytes(width, height, seed, fmt="JPEG", mode="RGB")`` -> encoded random-noise image."""
    return _image_bytes


@pytest.fixture
def make_folder() -> Callable[..., Path]:
    """Write ``count`` images with ``.txt`` captions (sizes cycling through SIZES) into ``root``."""

    def make(root: Path, count: int, sizes: list[tuple[int, int]] = SIZES, prefix: str = "img") -> Path:
        root.mkdir(parents=True, exist_ok=True)
        for i in range(count):
            w, h = sizes[i % len(sizes)]
            (root / f"{prefix}{i:04d}.jpg").write_bytes(_image_bytes(w, h, seed=i))
            (root / f"{prefix}{i:04d}.txt").write_text(f"a photo number {i}. It has noise.", encoding="utf-8")
        return root

    return make


@pytest.fixture
def converted(tmp_path: Path, make_folder: Callable[..., Path]) -> Path:
    """A converted dataset of 45 samples over 9 buckets (5 per bucket), 2 samples per shard."""
    from infinity_data import ConvertConfig, convert_folder

    src = make_folder(tmp_path / "src", 45)
    out = tmp_path / "shards"
    convert_folder(src, out, ConvertConfig(max_samples_per_shard=2))
    return out
