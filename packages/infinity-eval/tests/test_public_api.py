"""The front door holds the documented API, the public modules hold the rest, and names moved off the front
door still resolve with a DeprecationWarning for one minor version."""

from __future__ import annotations

import importlib

import infinity_eval
import pytest

FRONT_DOOR = [
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

# Names the recipe, benchmarks and examples import from the public modules (README, "Python API").
PUBLIC_MODULE_NAMES = {
    "io": ["read_geneval_folder", "CLIP_MEAN"],
    "prompts": ["PromptItem"],
    "geneval.rules": ["aggregate", "evaluate_detections"],
    "geneval.shapes": ["ShapesDetector", "PaletteColorClassifier"],
    "fid": ["FIDInceptionV3", "extract_features", "load_fid_inception"],
    "weights": ["WeightsNotFoundError"],
    "val_loss": ["infinity_val_loss", "bsc_inputs_and_labels"],
}  # fmt: skip


def test_the_front_door_is_the_documented_api():
    assert sorted(infinity_eval.__all__) == sorted(FRONT_DOOR)
    for name in infinity_eval.__all__:
        assert hasattr(infinity_eval, name), name


def test_public_modules_hold_the_names_other_packages_use():
    for module, names in PUBLIC_MODULE_NAMES.items():
        loaded = importlib.import_module(f"infinity_eval.{module}")
        for name in names:
            assert hasattr(loaded, name), f"infinity_eval.{module}.{name}"


def test_names_moved_off_the_front_door_still_resolve_with_a_deprecation_warning():
    moved = infinity_eval._MOVED
    assert moved and set(moved).isdisjoint(infinity_eval.__all__)
    for name, module in moved.items():
        with pytest.warns(DeprecationWarning, match=rf"infinity_eval\.{module}"):
            value = getattr(infinity_eval, name)
        assert value is getattr(importlib.import_module(f"infinity_eval.{module}"), name)
    with pytest.raises(AttributeError, match="no_such_name"):
        infinity_eval.no_such_name  # noqa: B018
