"""``stats``: per-bucket counts, caption lengths and a histogram of the images' original aspect ratios."""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from bsq_tokenizer.schedules import H_DIV_W_TEMPLATES
from PIL import Image, ImageDraw, ImageFont

from .shards import ShardIndex, read_shard
from .storage import Store, local_copy

__all__ = ["DatasetStats", "draw_aspect_histogram", "stats"]

_LOG2_RANGE = 2.0  # the histogram spans h/w from 1/4 to 4 (log2 -2 .. 2)


@dataclass(frozen=True)
class DatasetStats:
    """Counts per bucket, caption-length summaries (characters and words) and the original h/w ratios."""

    num_samples: int
    bucket_sizes: dict[str, int]
    caption_chars: dict[str, float]
    caption_words: dict[str, float]
    num_short_captions: int
    ratios: np.ndarray  # original height / width of every sample

    @property
    def aspect_ratios(self) -> np.ndarray:
        """Deprecated name of :attr:`ratios` (warns)."""
        warnings.warn(
            "DatasetStats.aspect_ratios is deprecated and will be removed; use DatasetStats.ratios",
            DeprecationWarning,
            stacklevel=2,
        )
        return self.ratios

    def to_dict(self) -> dict[str, Any]:
        return {
            "num_samples": self.num_samples,
            "bucket_sizes": self.bucket_sizes,
            "caption_chars": self.caption_chars,
            "caption_words": self.caption_words,
            "num_short_captions": self.num_short_captions,
        }


def _summary(values: list[int]) -> dict[str, float]:
    if not values:
        return {}
    arr = np.asarray(values, dtype=np.float64)
    return {
        "min": float(arr.min()),
        "p5": float(np.percentile(arr, 5)),
        "median": float(np.median(arr)),
        "mean": float(arr.mean()),
        "p95": float(np.percentile(arr, 95)),
        "max": float(arr.max()),
    }


def stats(
    root: str | Path,
    histogram_path: str | Path | None = None,
    progress: Callable[[int], object] | None = None,
) -> DatasetStats:
    """Read every sample's JSON (images are not decoded); optionally draw the aspect histogram as a PNG.
    ``root`` may be a folder or a URL (each remote shard is downloaded once, whole)."""
    index = ShardIndex.load(root)
    store = Store(index.root)
    chars: list[int] = []
    words: list[int] = []
    ratios: list[float] = []
    num_short = 0
    for info in index.shards:
        with local_copy(store, info.path) as path:  # a remote shard: one download, then read locally
            for key, files in read_shard(path, exts=("json",)):
                if "json" not in files:
                    raise ValueError(f"{info.path}: sample {key} has no .json; run `infinity-data verify`")
                meta = json.loads(files["json"])
                caption = str(meta.get("caption", ""))
                chars.append(len(caption))
                words.append(len(caption.split()))
                num_short += bool(meta.get("short_caption"))
                ratios.append(float(meta["height"]) / float(meta["width"]))
        if progress is not None:
            progress(1)
    result = DatasetStats(
        num_samples=len(ratios),
        bucket_sizes=index.bucket_sizes(),
        caption_chars=_summary(chars),
        caption_words=_summary(words),
        num_short_captions=num_short,
        ratios=np.asarray(ratios, dtype=np.float64),
    )
    if histogram_path is not None:
        draw_aspect_histogram(result.ratios).save(histogram_path)
    return result


def draw_aspect_histogram(
    ratios: np.ndarray, bins: int = 64, size: tuple[int, int] = (900, 420)
) -> Image.Image:
    """Histogram of h/w on a log2 axis (1/4 .. 4, outliers clamped to the ends) with the 15 templates marked."""
    width, height = size
    left, right, top, bottom = 60, 20, 40, 60
    plot_w, plot_h = width - left - right, height - top - bottom
    logs = np.clip(np.log2(np.asarray(ratios, dtype=np.float64)), -_LOG2_RANGE, _LOG2_RANGE - 1e-9)
    counts, edges = np.histogram(logs, bins=bins, range=(-_LOG2_RANGE, _LOG2_RANGE))
    peak = max(int(counts.max(initial=0)), 1)
    img = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(img)
    font = ImageFont.load_default()

    def x_of(log_value: float) -> float:
        return left + (log_value + _LOG2_RANGE) / (2 * _LOG2_RANGE) * plot_w

    for template in H_DIV_W_TEMPLATES:  # template markers behind the bars
        x = x_of(math.log2(template))
        draw.line([(x, top), (x, top + plot_h)], fill=(200, 200, 230), width=1)
    for count, lo, hi in zip(counts, edges[:-1], edges[1:], strict=True):
        if count:
            bar_h = count / peak * plot_h
            draw.rectangle(
                [x_of(lo) + 1, top + plot_h - bar_h, x_of(hi) - 1, top + plot_h], fill=(60, 110, 190)
            )
    draw.rectangle([left, top, left + plot_w, top + plot_h], outline="black")
    for tick in (0.25, 1 / 3, 0.5, 0.75, 1.0, 1.333, 2.0, 3.0, 4.0):
        x = x_of(math.log2(tick))
        draw.line([(x, top + plot_h), (x, top + plot_h + 5)], fill="black")
        label = f"{tick:.2f}".rstrip("0").rstrip(".")
        draw.text((x, top + plot_h + 8), label, fill="black", font=font, anchor="ma")
    for frac in (0.0, 0.5, 1.0):
        y = top + plot_h - frac * plot_h
        draw.text((left - 6, y), str(round(frac * peak)), fill="black", font=font, anchor="rm")
    draw.text(
        (left + plot_w / 2, height - 18),
        "height / width (log scale; lines: the 15 templates)",
        fill="black",
        font=font,
        anchor="ma",
    )
    draw.text(
        (left + plot_w / 2, 12),
        f"aspect ratios of {len(ratios)} images",
        fill="black",
        font=font,
        anchor="ma",
    )
    return img
