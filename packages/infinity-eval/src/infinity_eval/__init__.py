"""infinity_eval: a standalone, offline, resumable evaluation harness for any text-to-image model.

GenEval (official rules on a pluggable detector), FID (TF-graph InceptionV3, pytorch-fid / clean protocols),
ImageReward-v1.0, HPSv2.1, and the bitwise validation loss of Infinity models (extra `val-loss`).

The names below are the front door, one or two per command. The public modules hold the rest:
``infinity_eval.fid``, ``infinity_eval.geneval`` (``.rules``, ``.shapes``), ``infinity_eval.imagereward``,
``infinity_eval.hps``, ``infinity_eval.scoring``, ``infinity_eval.val_loss``, ``infinity_eval.generate``,
``infinity_eval.prompts``, ``infinity_eval.io``, ``infinity_eval.runs`` and ``infinity_eval.weights``.
Modules whose names start with ``_``, ``cli`` and ``errors`` are internal.
"""

from __future__ import annotations

import importlib
import warnings
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as _dist_version

from .errors import InfinityEvalError
from .fid import FIDOptions, FIDResult, compute_fid
from .generate import generate_benchmark
from .geneval import GenEvalOptions, load_detector, run_geneval
from .hps import HPSv21Scorer
from .imagereward import ImageRewardScorer
from .prompts import benchmark_prompts
from .scoring import run_image_scorer
from .val_loss import ValLossOptions, run_infinity_val_loss

try:
    __version__ = _dist_version("infinity-eval")  # one source of truth: the version in pyproject.toml
except PackageNotFoundError:  # imported from a source tree that is not installed
    __version__ = "0+unknown"

__all__ = [
    "FIDOptions",
    "FIDResult",
    "GenEvalOptions",
    "HPSv21Scorer",
    "ImageRewardScorer",
    "InfinityEvalError",
    "ValLossOptions",
    "benchmark_prompts",
    "compute_fid",
    "generate_benchmark",
    "load_detector",
    "run_geneval",
    "run_image_scorer",
    "run_infinity_val_loss",
]

# Names exported here before 0.2, now imported from their module (deprecated here for one minor version).
_MOVED = {
    **dict.fromkeys(
        (
            "FIDInceptionV3",
            "FeatureStatistics",
            "compute_statistics",
            "frechet_distance",
            "load_fid_inception",
        ),
        "fid",
    ),
    **dict.fromkeys(("infinity_generator", "load_generator"), "generate"),
    **dict.fromkeys(
        (
            "Detection",
            "Detector",
            "PrecomputedDetector",
            "ZeroShotColorClassifier",
            "aggregate",
            "evaluate_detections",
        ),
        "geneval",
    ),
    **dict.fromkeys(("OpenCLIPConfig", "hps_benchmark_summary"), "hps"),
    **dict.fromkeys(("ImageRewardConfig", "imagereward_benchmark_summary"), "imagereward"),
    **dict.fromkeys(
        (
            "ImageRecord",
            "list_image_files",
            "read_geneval_folder",
            "read_hps_folder",
            "read_image_inputs",
            "read_imagereward_folder",
            "read_manifest",
            "write_manifest",
        ),
        "io",
    ),
    **dict.fromkeys(
        (
            "PromptItem",
            "geneval_metadata",
            "geneval_object_names",
            "imagereward_prompts",
            "validate_geneval_metadata",
            "write_prompts",
        ),
        "prompts",
    ),
    **dict.fromkeys(("HARNESS_VERSION", "ResultStore", "Shard"), "runs"),
    **dict.fromkeys(("bitwise_metrics", "bsc_inputs_and_labels", "infinity_val_loss"), "val_loss"),
    **dict.fromkeys(
        ("WEIGHTS_ENV_VAR", "WeightFile", "WeightsNotFoundError", "resolve_weight_file"), "weights"
    ),
}


def __getattr__(name: str) -> object:
    """Forward a name moved off the front door to its module, with a DeprecationWarning naming the new import."""
    module = _MOVED.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    warnings.warn(
        f"infinity_eval.{name} is deprecated; import it from infinity_eval.{module} "
        "(the package's front door keeps only its main API)",
        DeprecationWarning,
        stacklevel=2,
    )
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
