"""An exact detector for the synthetic "shapes" world (plain background, flat-coloured shapes).

Connected blobs of one palette colour become detections: the class comes from how much of its box a blob
fills (square ≈ 1, circle ≈ π/4, triangle ≈ 1/2), the colour from the palette, the box and mask from the
blob itself. With the colour classifier below, the GenEval rules then score images of that world exactly,
without Mask2Former or CLIP.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from PIL import Image
from scipy import ndimage

from .colors import ColorContext
from .rules import Detection

__all__ = ["SHAPES_PALETTE", "PaletteColorClassifier", "ShapesDetector"]

# The colours of the shapes world (infinity_data.shapes.COLORS); names are GenEval colour names.
SHAPES_PALETTE: Mapping[str, tuple[int, int, int]] = {
    "red": (215, 38, 38),
    "green": (34, 160, 64),
    "blue": (36, 84, 224),
    "yellow": (240, 200, 30),
    "purple": (128, 52, 172),
}


def _nearest_palette(
    pixels: np.ndarray, palette: Mapping[str, tuple[int, int, int]]
) -> tuple[np.ndarray, np.ndarray]:
    """Index of the nearest palette colour and its Euclidean RGB distance, per pixel of (..., 3)."""
    colors = np.asarray(list(palette.values()), dtype=np.float32)
    dist = np.linalg.norm(pixels[..., None, :].astype(np.float32) - colors, axis=-1)
    return dist.argmin(-1), dist.min(-1)


def classify_fill(fill: float, aspect: float) -> str | None:
    """Shape class from the fraction of its box a blob fills and the box's aspect ratio (None: not a shape)."""
    if not 0.5 <= aspect <= 2.0:
        return None
    if fill >= 0.9:
        return "square"
    if fill >= 0.66:
        return "circle"
    if fill >= 0.35:
        return "triangle"
    return None


@dataclass(frozen=True)
class ShapesDetector:
    """Detections per class name ("circle", "square", "triangle") from the colour blobs of an image.

    `tolerance` is the largest RGB distance to a palette colour that still counts as that colour;
    blobs smaller than `min_area` (a fraction of the image) are ignored as noise.
    """

    palette: Mapping[str, tuple[int, int, int]] = field(default_factory=lambda: dict(SHAPES_PALETTE))
    tolerance: float = 90.0
    min_area: float = 0.002

    def detect(self, image: Image.Image, record: object = None) -> dict[str, list[Detection]]:
        rgb = np.asarray(image.convert("RGB"))
        height, width = rgb.shape[:2]
        index, dist = _nearest_palette(rgb, self.palette)
        detections: dict[str, list[Detection]] = {}
        min_pixels = max(4, int(self.min_area * height * width))
        for color_index in range(len(self.palette)):
            labels, count = ndimage.label((index == color_index) & (dist <= self.tolerance))
            for blob in range(1, count + 1):
                mask = labels == blob
                area = int(mask.sum())
                if area < min_pixels:
                    continue
                rows, cols = np.nonzero(mask)
                x1, y1, x2, y2 = int(cols.min()), int(rows.min()), int(cols.max()) + 1, int(rows.max()) + 1
                shape = classify_fill(area / ((x2 - x1) * (y2 - y1)), (y2 - y1) / (x2 - x1))
                if shape is None:
                    continue
                detections.setdefault(shape, []).append(Detection(box=(x1, y1, x2, y2), score=1.0, mask=mask))
        return detections


@dataclass(frozen=True)
class PaletteColorClassifier:
    """GenEval colour step for the shapes world: the palette colour most pixels of a crop are nearest to.

    Crops arrive composited over GenEval's grey (#999) canvas; pixels far from every palette colour
    (the canvas, anti-aliased edges) do not vote.
    """

    palette: Mapping[str, tuple[int, int, int]] = field(default_factory=lambda: dict(SHAPES_PALETTE))
    tolerance: float = 90.0

    def __call__(
        self, crops: Sequence[Image.Image], object_name: str, *, context: ColorContext | None = None
    ) -> list[str]:
        """The palette colour most of each crop's pixels are near (the detection context is not needed)."""
        names = list(self.palette)
        predictions = []
        for crop in crops:
            index, dist = _nearest_palette(np.asarray(crop.convert("RGB")), self.palette)
            votes = np.bincount(index[dist <= self.tolerance], minlength=len(names))
            # No palette pixel at all: predict a colour outside the palette so no colour clause passes.
            predictions.append(names[int(votes.argmax())] if votes.sum() else "black")
        return predictions
