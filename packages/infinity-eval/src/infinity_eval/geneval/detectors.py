"""Detectors for GenEval: a protocol, a loader for `module:factory` import paths, precomputed detections
(JSONL), and the official Mask2Former (mmdetection 2.x, extra `geneval-mmdet`, user-provided weights).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
from PIL import Image

from .._imports import import_object
from ..io import ImageRecord, _json_lines
from ..remote import is_url, redact
from ..weights import WeightFile, resolve_weight_file
from .rules import Detection

__all__ = [
    "MASK2FORMER_WEIGHTS",
    "Detections",
    "Detector",
    "Mask2FormerDetector",
    "PrecomputedDetector",
    "detections_from_mmdet",
    "load_detector",
]

Detections = Mapping[str, Sequence[Detection]]

MASK2FORMER_WEIGHTS = WeightFile(
    filename="mask2former_swin-s-p4-w7-224_lsj_8x2_50e_coco.pth",
    source=(
        "download.openmmlab.com/mmdetection/v2.0/mask2former/mask2former_swin-s-p4-w7-224_lsj_8x2_50e_coco/"
        "mask2former_swin-s-p4-w7-224_lsj_8x2_50e_coco_20220504_001756-743b7d99.pth (save it under this name)"
    ),
    subdirs=("geneval",),
)
MASK2FORMER_CONFIG = "mask2former/mask2former_swin-s-p4-w7-224_lsj_8x2_50e_coco.py"


@runtime_checkable
class Detector(Protocol):
    """Maps one image to detections per class name (names as in `object_names.txt`)."""

    def detect(self, image: Image.Image, record: ImageRecord) -> Detections: ...


class _CallableDetector:
    def __init__(self, fn) -> None:
        self._fn = fn

    def detect(self, image: Image.Image, record: ImageRecord) -> Detections:
        return self._fn(image, record)


def _as_detector(obj: Any, origin: str) -> Detector:
    if isinstance(obj, Detector):
        return obj
    if callable(obj):
        return _CallableDetector(obj)
    raise TypeError(
        f"{origin} returned {type(obj).__name__}, which is neither a Detector nor callable(image, record)"
    )


def load_detector(spec: str, kwargs: Mapping[str, Any] | None = None) -> Detector:
    """`module:factory` -> factory(**kwargs), which must return a Detector (or a callable(image, record))."""
    factory = import_object(spec, "detector factory")
    if not callable(factory):
        raise TypeError(f"detector factory {spec!r} is not callable")
    return _as_detector(factory(**dict(kwargs or {})), spec)


def _rows_to_detections(
    rows: Sequence[Sequence[float]], masks: Sequence[Any] | None, base: Path
) -> list[Detection]:
    out = []
    for i, row in enumerate(rows):
        if len(row) != 5:
            raise ValueError(f"detection row {row!r} must be [x1, y1, x2, y2, score]")
        mask = None
        if masks is not None and i < len(masks) and masks[i] is not None:
            mask_path = Path(masks[i]) if Path(masks[i]).is_absolute() else base / masks[i]
            with Image.open(mask_path) as m:
                mask = np.asarray(m.convert("L")) > 127
        box = (float(row[0]), float(row[1]), float(row[2]), float(row[3]))
        out.append(Detection(box, float(np.float32(row[4])), mask))
    return out


class PrecomputedDetector:
    """Detections read from a JSONL file: `{"image": path, "detections": {class: [[x1,y1,x2,y2,score], ...]},
    "masks": {class: [mask.png | null, ...]}}` (paths relative to the JSONL). Scores are taken as float32.

    Without masks, colour crops use the whole box (a documented deviation from the official detector).
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._by_image: dict[str, tuple[dict, dict]] = {}
        for lineno, obj in _json_lines(self.path):
            if "image" not in obj or "detections" not in obj:
                raise KeyError(f"{self.path}:{lineno}: needs keys 'image' and 'detections'")
            self._by_image[self._key(str(obj["image"]))] = (obj["detections"], obj.get("masks") or {})

    def _key(self, image: str) -> str:
        """A URL (images in a store) as the results name it, else the resolved path (relative: to the file)."""
        if is_url(image):
            return redact(image)
        path = Path(image)
        return str((path if path.is_absolute() else self.path.parent / path).resolve())

    def detect(self, image: Image.Image, record: ImageRecord) -> Detections:
        key = record.url if record.url is not None else str(Path(record.image).resolve())
        if key not in self._by_image:
            raise KeyError(f"{self.path} has no detections for image {record.location}")
        dets, masks = self._by_image[key]
        return {
            name: _rows_to_detections(rows, masks.get(name), self.path.parent) for name, rows in dets.items()
        }


def detections_from_mmdet(result: Any, class_names: Sequence[str]) -> dict[str, list[Detection]]:
    """mmdet 2.x `(bbox_results, segm_results)`: per class index an (n, 5) array and n masks."""
    if isinstance(result, tuple):
        bbox_results, segm_results = result
    else:
        bbox_results, segm_results = result, None
    if len(bbox_results) != len(class_names):
        raise ValueError(f"detector returned {len(bbox_results)} classes, expected {len(class_names)}")
    out: dict[str, list[Detection]] = {}
    for idx, rows in enumerate(bbox_results):
        rows = np.asarray(rows)
        if rows.size == 0:
            continue
        masks = segm_results[idx] if segm_results is not None else [None] * len(rows)
        out[class_names[idx]] = [
            Detection(
                (float(row[0]), float(row[1]), float(row[2]), float(row[3])),
                float(np.float32(row[4])),
                None if m is None else np.asarray(m, bool),
            )
            for row, m in zip(rows, masks, strict=True)
        ]
    return out


class Mask2FormerDetector:
    """The official GenEval detector through mmdetection 2.x (needs mmdet 2.x + mmcv-full 1.7; CUDA as in the
    original, CPU may work). Weights resolve offline: explicit path -> $INFINITY_EVAL_WEIGHTS_DIR -> error.
    """

    def __init__(
        self,
        weights: str | os.PathLike[str] | None = None,
        config: str | os.PathLike[str] | None = None,
        device: str = "cuda",
        class_names: Sequence[str] | None = None,
    ) -> None:
        try:
            import mmdet
            from mmdet.apis import inference_detector, init_detector
        except ImportError as err:
            raise ImportError(
                "the Mask2Former detector needs mmdetection 2.x and mmcv-full 1.7.x: "
                "`pip install 'infinity-eval[geneval-mmdet]'` then install mmcv-full 1.7.x for your torch/CUDA "
                "(see the infinity-eval README)"
            ) from err
        from ..prompts import geneval_object_names

        checkpoint = resolve_weight_file(MASK2FORMER_WEIGHTS, weights)
        if config is None:
            config = Path(mmdet.__file__).parent / ".mim" / "configs" / MASK2FORMER_CONFIG
            if not Path(config).is_file():
                raise FileNotFoundError(
                    f"mmdet config {MASK2FORMER_CONFIG} not found in the installed mmdet ({config}); pass config="
                )
        self._inference = inference_detector
        self.model = init_detector(str(config), str(checkpoint), device=device)
        self.class_names = list(class_names or geneval_object_names())
        self.weights_path = checkpoint

    def detect(self, image: Image.Image, record: ImageRecord) -> Detections:
        # The original feeds the file path: mmdet decodes it with OpenCV (BGR).
        return detections_from_mmdet(self._inference(self.model, str(record.image)), self.class_names)
