"""The front door holds the documented API, the public modules hold the rest, and names moved off the front
door still resolve with a DeprecationWarning for one minor version."""

from __future__ import annotations

import importlib

import infinity_train
import pytest

FRONT_DOOR = [
    "ConfigError",
    "EMA",
    "InfinityTrainError",
    "RunConfig",
    "TokenizerTrainer",
    "TrainLoop",
    "TransformerTrainer",
    "bitwise_self_correction",
    "config_from_dict",
    "config_to_dict",
    "consolidated_state_dict",
    "export_checkpoint",
    "load_run_config",
    "save_run_config",
    "train",
]

# Names benchmarks, examples and tests import from the public modules (README, "Python API").
PUBLIC_MODULE_NAMES = {
    "config": ["TransformerModelConfig", "DataConfig", "OptimConfig"],
    "losses": ["bit_cross_entropy", "BitLoss"],
    "distributed": ["init_distributed", "shutdown_distributed"],
    "transformer_trainer": ["build_infinity_config", "param_groups"],
    "tokenizer_trainer": ["build_vae_config"],
    "lr_schedule": ["lr_factor"],
}  # fmt: skip


def test_the_front_door_is_the_documented_api():
    assert sorted(infinity_train.__all__) == sorted(FRONT_DOOR)
    for name in infinity_train.__all__:
        assert hasattr(infinity_train, name), name


def test_public_modules_hold_the_names_other_packages_use():
    for module, names in PUBLIC_MODULE_NAMES.items():
        loaded = importlib.import_module(f"infinity_train.{module}")
        for name in names:
            assert hasattr(loaded, name), f"infinity_train.{module}.{name}"


def test_names_moved_off_the_front_door_still_resolve_with_a_deprecation_warning():
    moved = infinity_train._MOVED
    assert moved and set(moved).isdisjoint(infinity_train.__all__)
    for name, module in moved.items():
        with pytest.warns(DeprecationWarning, match=rf"infinity_train\.{module}"):
            value = getattr(infinity_train, name)
        assert value is getattr(importlib.import_module(f"infinity_train.{module}"), name)
    with pytest.raises(AttributeError, match="no_such_name"):
        infinity_train.no_such_name  # noqa: B018
