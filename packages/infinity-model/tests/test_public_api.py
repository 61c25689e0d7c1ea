"""The front door holds the documented API, the public modules hold the rest, and names moved off the front
door still resolve with a DeprecationWarning for one minor version."""

from __future__ import annotations

import importlib

import infinity_model
import pytest
import torch

FRONT_DOOR = [
    "CheckpointError",
    "InfinityModelError",
    "GenerationConfig",
    "Infinity",
    "InfinityConfig",
    "InfinityPipeline",
    "PRESETS",
    "SampleResult",
    "SamplerConfig",
    "ScaleStep",
    "TextCondition",
    "TextEncoder",
    "load_infinity",
    "load_official_infinity",
    "sample",
    "save_infinity",
]

# Names benchmarks, recipes and other packages import from the public modules (README, "Python API").
PUBLIC_MODULE_NAMES = {
    "checkpoint": ["read_state_dict", "infer_infinity_config", "check_state_dict", "inspect_checkpoint",
                   "describe_checkpoint", "CheckpointInfo", "match_preset"],
    "transformer": ["Conditioning", "KVCache"],
    "sampler": ["codes_to_uint8", "filter_bit_logits"],
    "condition": ["TextCondition"],
    "model_folder": ["read_model_folder", "write_model_folder"],
    "default_model": ["default_model_dir", "load_default_model"],
    "local_t5": ["write_neighbour_t5"],
    "edit": ["paste_back"],
}  # fmt: skip


def test_the_front_door_is_the_documented_api():
    assert sorted(infinity_model.__all__) == sorted(FRONT_DOOR)
    for name in infinity_model.__all__:
        assert hasattr(infinity_model, name), name


def test_public_modules_hold_the_names_other_packages_use():
    for module, names in PUBLIC_MODULE_NAMES.items():
        loaded = importlib.import_module(f"infinity_model.{module}")
        for name in names:
            assert hasattr(loaded, name), f"infinity_model.{module}.{name}"


def test_names_moved_off_the_front_door_still_resolve_with_a_deprecation_warning():
    moved = infinity_model._MOVED
    assert moved and set(moved).isdisjoint(infinity_model.__all__)
    for name, module in moved.items():
        with pytest.warns(DeprecationWarning, match=rf"infinity_model\.{module}"):
            value = getattr(infinity_model, name)
        assert value is getattr(importlib.import_module(f"infinity_model.{module}"), name)
    with pytest.raises(AttributeError, match="no_such_name"):
        infinity_model.no_such_name  # noqa: B018


def test_one_checkpoint_error_for_the_stack_and_infer_config_is_a_deprecated_alias():
    import bsq_tokenizer
    from infinity_model.checkpoint import infer_config, infer_infinity_config

    assert infinity_model.CheckpointError is bsq_tokenizer.CheckpointError
    config = infinity_model.InfinityConfig(
        depth=2, embed_dim=64, num_heads=4, d_vae=8, text_channels=32, text_maxlen=64, pool_heads=2
    )
    with torch.device("meta"):
        state = infinity_model.Infinity(config).state_dict()
    with pytest.warns(DeprecationWarning, match="infer_infinity_config"):
        assert infer_config(state, config.drop_path_rate) == infer_infinity_config(
            state, config.drop_path_rate
        )
    assert infer_infinity_config(state, config.drop_path_rate) == config
