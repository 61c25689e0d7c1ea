"""GenEval: the official scoring rules on top of a pluggable detector and colour classifier."""

from .colors import (
    CLIP_VIT_L14_WEIGHTS,
    COLOR_TEMPLATES,
    ColorClassifier,
    ZeroShotColorClassifier,
    clip_preprocess,
    load_openclip_color_classifier,
)
from .detectors import (
    MASK2FORMER_WEIGHTS,
    Detector,
    Mask2FormerDetector,
    PrecomputedDetector,
    detections_from_mmdet,
    load_detector,
)
from .rules import (
    COLORS,
    RELATIONS,
    TAGS,
    Detection,
    GenEvalOptions,
    ImageVerdict,
    aggregate,
    color_crops,
    evaluate_detections,
    filter_detections,
    format_summary,
    iou,
    relative_position,
)
from .run import run_geneval

__all__ = [
    "CLIP_VIT_L14_WEIGHTS",
    "COLORS",
    "COLOR_TEMPLATES",
    "MASK2FORMER_WEIGHTS",
    "RELATIONS",
    "TAGS",
    "ColorClassifier",
    "Detection",
    "Detector",
    "GenEvalOptions",
    "ImageVerdict",
    "Mask2FormerDetector",
    "PrecomputedDetector",
    "ZeroShotColorClassifier",
    "aggregate",
    "clip_preprocess",
    "color_crops",
    "detections_from_mmdet",
    "evaluate_detections",
    "filter_detections",
    "format_summary",
    "iou",
    "load_detector",
    "load_openclip_color_classifier",
    "relative_position",
    "run_geneval",
]
