"""infinity_eval: a standalone, offline, resumable evaluation harness for any text-to-image model.

GenEval (official rules on a pluggable detector), FID (TF-graph InceptionV3, pytorch-fid / clean protocols),
ImageReward-v1.0, HPSv2.1, and the bitwise validation loss of Infinity models (extra `val-loss`).
"""

from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as _dist_version

from .errors import InfinityEvalError
from .fid import (
    FeatureStatistics,
    FIDInceptionV3,
    FIDOptions,
    FIDResult,
    compute_fid,
    compute_statistics,
    frechet_distance,
    load_fid_inception,
)
from .generate import generate_benchmark, infinity_generator, load_generator
from .geneval import (
    Detection,
    Detector,
    GenEvalOptions,
    PrecomputedDetector,
    ZeroShotColorClassifier,
    aggregate,
    evaluate_detections,
    load_detector,
    run_geneval,
)
from .hps import HPSv21Scorer, OpenCLIPConfig, hps_benchmark_summary
from .imagereward import ImageRewardConfig, ImageRewardScorer, imagereward_benchmark_summary
from .io import (
    ImageRecord,
    list_image_files,
    read_geneval_folder,
    read_hps_folder,
    read_image_inputs,
    read_imagereward_folder,
    read_manifest,
    write_manifest,
)
from .prompts import (
    PromptItem,
    benchmark_prompts,
    geneval_metadata,
    geneval_object_names,
    imagereward_prompts,
    validate_geneval_metadata,
    write_prompts,
)
from .runs import HARNESS_VERSION, ResultStore, Shard
from .scoring import run_image_scorer
from .val_loss import (
    ValLossOptions,
    bitwise_metrics,
    bsc_inputs_and_labels,
    infinity_val_loss,
    run_infinity_val_loss,
)
from .weights import WEIGHTS_ENV_VAR, WeightFile, WeightsNotFoundError, resolve_weight_file

try:
    __version__ = _dist_version("infinity-eval")  # one source of truth: the version in pyproject.toml
except PackageNotFoundError:  # imported from a source tree that is not installed
    __version__ = "0+unknown"

__all__ = [
    "HARNESS_VERSION",
    "WEIGHTS_ENV_VAR",
    "Detection",
    "Detector",
    "FIDInceptionV3",
    "FIDOptions",
    "FIDResult",
    "FeatureStatistics",
    "GenEvalOptions",
    "HPSv21Scorer",
    "ImageRecord",
    "ImageRewardConfig",
    "ImageRewardScorer",
    "InfinityEvalError",
    "OpenCLIPConfig",
    "PrecomputedDetector",
    "PromptItem",
    "ResultStore",
    "Shard",
    "ValLossOptions",
    "WeightFile",
    "WeightsNotFoundError",
    "ZeroShotColorClassifier",
    "aggregate",
    "benchmark_prompts",
    "bitwise_metrics",
    "bsc_inputs_and_labels",
    "compute_fid",
    "compute_statistics",
    "evaluate_detections",
    "frechet_distance",
    "generate_benchmark",
    "geneval_metadata",
    "geneval_object_names",
    "hps_benchmark_summary",
    "imagereward_benchmark_summary",
    "imagereward_prompts",
    "infinity_generator",
    "infinity_val_loss",
    "list_image_files",
    "load_detector",
    "load_fid_inception",
    "load_generator",
    "read_geneval_folder",
    "read_hps_folder",
    "read_image_inputs",
    "read_imagereward_folder",
    "read_manifest",
    "resolve_weight_file",
    "run_geneval",
    "run_image_scorer",
    "run_infinity_val_loss",
    "validate_geneval_metadata",
    "write_manifest",
    "write_prompts",
]
