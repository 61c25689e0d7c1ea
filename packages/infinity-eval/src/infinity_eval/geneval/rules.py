"""GenEval's scoring rules on detections (spec evaluation.md §1.4, §1.4b, §1.5).

Detections per class are rows `[x1, y1, x2, y2, score]` (float32 scores) with optional boolean masks in
original-image pixels. The rules: per-class filtering (strict float32 `>` threshold, 0.9 for counting prompts;
descending stable order; cap 16; optional NMS), ANDed include clauses (count, colour, position), ORed exclude
clauses, and the mean-of-tag-means aggregation.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from PIL import Image

from ..io import ImageRecord

__all__ = [
    "COLORS",
    "RELATIONS",
    "TAGS",
    "Detection",
    "GenEvalOptions",
    "ImageVerdict",
    "aggregate",
    "color_crops",
    "evaluate_detections",
    "filter_detections",
    "iou",
    "relative_position",
]

COLORS = ("red", "orange", "yellow", "green", "blue", "purple", "pink", "brown", "black", "white")
RELATIONS = ("left of", "right of", "above", "below")
TAGS = ("single_object", "two_object", "counting", "colors", "position", "color_attr")


@dataclass(frozen=True)
class Detection:
    """One detected instance: box (x1, y1, x2, y2) and score in original pixels; mask (H, W) bool or None."""

    box: tuple[float, float, float, float]
    score: float
    mask: np.ndarray | None = None

    @property
    def row(self) -> list[float]:
        return [*map(float, self.box), float(self.score)]


@dataclass(frozen=True)
class GenEvalOptions:
    """The evaluator's options with the official defaults (the original's key=value overrides)."""

    threshold: float = 0.3
    counting_threshold: float = 0.9
    max_objects: int = 16
    max_overlap: float = 1.0  # 1.0 = NMS off
    position_threshold: float = 0.1
    bgcolor: str = "#999"
    crop: bool = True
    clip_model: str = "ViT-L-14"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ImageVerdict:
    correct: bool
    reason: str
    details: dict[str, list[list[float]]]


def iou(a: Sequence[float], b: Sequence[float]) -> float:
    """IoU with "+1 pixel" areas, 0 for an empty union (the original's convention)."""

    def area(box: Sequence[float]) -> float:
        return max(box[2] - box[0] + 1, 0) * max(box[3] - box[1] + 1, 0)

    inter = area([max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])])
    union = area(a) + area(b) - inter
    return inter / union if union else 0.0


def filter_detections(
    detections: Sequence[Detection], threshold: float, max_objects: int, max_overlap: float
) -> list[Detection]:
    """Keep score > threshold (compared in float32), best first, at most `max_objects`, then greedy NMS.

    Ties keep numpy 1.23's descending-argsort order: a stable ascending sort, reversed (later row first).
    """
    if not detections:
        return []
    scores = np.asarray([d.score for d in detections], dtype=np.float32)
    order = np.argsort(scores, kind="stable")[::-1]
    kept = [detections[i] for i in order if scores[i] > np.float32(threshold)][:max_objects]
    if max_overlap >= 1.0:
        return kept
    survivors: list[Detection] = []
    remaining = kept
    while remaining:
        best, *rest = remaining
        survivors.append(best)
        remaining = [d for d in rest if iou(best.box, d.box) < max_overlap]
    return survivors


def relative_position(
    a: Detection, b: Detection, position_threshold: float = 0.1, dead_zone: float = 1e-3
) -> set[str]:
    """Relations of A to B from box centres; offsets shrink by threshold·(size_A + size_B) per axis."""
    box_a, box_b = np.asarray(a.box, np.float64), np.asarray(b.box, np.float64)
    center_a, center_b = (box_a[:2] + box_a[2:]) / 2, (box_b[:2] + box_b[2:]) / 2
    size_a, size_b = (
        np.abs(box_a[2:] - box_a[:2]),
        np.abs(box_b[2:] - box_b[:2]),
    )  # sizes as |x2 − x1|, |y2 − y1|
    offset = center_a - center_b
    revised = np.maximum(np.abs(offset) - position_threshold * (size_a + size_b), 0) * np.sign(offset)
    if np.all(np.abs(revised) < dead_zone):
        return set()
    dx, dy = revised / np.linalg.norm(offset)
    relations: set[str] = set()
    if dx < -0.5:
        relations.add("left of")
    if dx > 0.5:
        relations.add("right of")
    if dy < -0.5:
        relations.add("above")
    if dy > 0.5:
        relations.add("below")
    return relations


def _bgcolor(spec: str) -> tuple[int, int, int]:
    from PIL import ImageColor

    return ImageColor.getrgb(spec)[:3]


def color_crops(
    image: Image.Image, objects: Sequence[Detection], options: GenEvalOptions
) -> list[Image.Image]:
    """Per object: the image composited over a flat `bgcolor` canvas through its mask, cropped to its box."""
    rgb = image.convert("RGB")
    blank = Image.new("RGB", rgb.size, _bgcolor(options.bgcolor))
    crops = []
    for obj in objects:
        if obj.mask is not None:
            mask = np.asarray(obj.mask, dtype=bool)
            if mask.shape != (rgb.height, rgb.width):
                raise ValueError(
                    f"mask shape {mask.shape} does not match the image ({rgb.height}, {rgb.width})"
                )
            composed = Image.composite(rgb, blank, Image.fromarray(mask))
        else:
            composed = rgb
        crops.append(composed.crop(tuple(obj.box)) if options.crop else composed)
    return crops


ColorFn = Callable[..., Sequence[str]]  # (crops, object_name, *, context) -> colours


def evaluate_detections(
    detections: Mapping[str, Sequence[Detection]],
    metadata: Mapping[str, Any],
    options: GenEvalOptions = GenEvalOptions(),
    image: Image.Image | None = None,
    classify_colors: ColorFn | None = None,
    record: ImageRecord | None = None,
) -> ImageVerdict:
    """Apply the GenEval rules for one image. `classify_colors(crops, class_name, context=...)` returns one colour
    per crop (see `infinity_eval.geneval.colors.ColorContext`; `record` is passed on in the context)."""
    threshold = options.counting_threshold if metadata.get("tag") == "counting" else options.threshold
    kept: dict[str, list[Detection]] = {}
    for name, dets in detections.items():
        filtered = filter_detections(list(dets), threshold, options.max_objects, options.max_overlap)
        if filtered:
            kept[name] = filtered
    correct = True
    reasons: list[str] = []
    matched_groups: list[list[Detection] | None] = []
    for clause in metadata.get("include", []):
        name, count = clause["class"], int(clause["count"])
        found = kept.get(name, [])[:count]
        matched = True
        if len(found) < count:
            correct = matched = False
            reasons.append(f"expected {name}>={count}, found {len(found)}")
        else:
            if "color" in clause:
                if image is None or classify_colors is None:
                    raise ValueError(
                        f"prompt {metadata.get('prompt')!r} has a colour clause: a colour classifier and the image "
                        "are required (install infinity-eval[geneval-clip] or pass --color-classifier)"
                    )
                from .colors import classify_object_colors  # here: colors.py imports this module

                colors = classify_object_colors(classify_colors, image, found, name, options, record)
                hits = colors.count(clause["color"])
                if hits < count:
                    correct = matched = False
                    others = ", ".join(f"{colors.count(c)} {c}" for c in COLORS if c in colors)
                    reasons.append(
                        f"expected {clause['color']} {name}>={count}, found {hits} {clause['color']}; and {others}"
                    )
            if "position" in clause and matched:
                relation, target = clause["position"][0], int(clause["position"][1])
                if target >= len(matched_groups) or matched_groups[target] is None:
                    correct = matched = False
                    reasons.append(f"no target for {name} to be {relation}")
                else:
                    for obj in found:
                        for other in matched_groups[target]:
                            rels = relative_position(obj, other, options.position_threshold)
                            if relation not in rels:
                                correct = matched = False
                                reasons.append(
                                    f"expected {name} {relation} target, found {' and '.join(sorted(rels))} target"
                                )
                                break
                        if not matched:
                            break
        matched_groups.append(found if matched else None)
    for clause in metadata.get("exclude", []):
        name, count = clause["class"], int(clause["count"])
        n = len(kept.get(name, []))
        if n >= count:
            correct = False
            reasons.append(f"expected {name}<{count}, found {n}")
    details = {name: [d.row for d in dets] for name, dets in kept.items()}
    return ImageVerdict(correct=correct, reason="\n".join(reasons), details=details)


def aggregate(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Official aggregation: overall = unweighted mean of the per-tag means of `correct`.

    Rows need `tag`, `correct` and `metadata` (the JSON string used to group prompts).
    """
    if not rows:
        raise ValueError("no GenEval rows to aggregate")
    by_tag: dict[str, list[bool]] = {}
    by_prompt: dict[str, list[bool]] = {}
    for row in rows:
        by_tag.setdefault(str(row["tag"]), []).append(bool(row["correct"]))
        key = row["metadata"] if isinstance(row["metadata"], str) else json.dumps(row["metadata"])
        by_prompt.setdefault(key, []).append(bool(row["correct"]))
    tag_scores = {tag: float(np.mean(v)) for tag, v in sorted(by_tag.items())}
    return {
        "overall": float(np.mean(list(tag_scores.values()))),
        "tags": tag_scores,
        "tag_counts": {tag: len(v) for tag, v in sorted(by_tag.items())},
        "images": len(rows),
        "prompts": len(by_prompt),
        "correct_images_pct": 100.0 * float(np.mean([bool(r["correct"]) for r in rows])),
        "correct_prompts_pct": 100.0 * float(np.mean([any(v) for v in by_prompt.values()])),
        "missing_tags": [t for t in TAGS if t not in tag_scores],
    }


def format_summary(summary: Mapping[str, Any]) -> str:
    """The original's printout: tag percentages with 2 decimals, overall with 5."""
    lines = [
        f"Total images: {summary['images']}",
        f"Total prompts: {summary['prompts']}",
        f"% correct images: {summary['correct_images_pct']:.2f}%",
        f"% correct prompts: {summary['correct_prompts_pct']:.2f}%",
    ]
    for tag, score in summary["tags"].items():
        lines.append(f"{tag:<16} = {100 * score:.2f}% ({summary['tag_counts'][tag]} images)")
    lines.append(f"Overall score (avg. over tags): {summary['overall']:.5f}")
    return "\n".join(lines)
