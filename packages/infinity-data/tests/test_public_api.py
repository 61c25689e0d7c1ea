"""The front door holds the documented API, the public modules hold the rest, and names moved off the front
door still resolve with a DeprecationWarning for one minor version."""

from __future__ import annotations

import importlib

import infinity_data
import pytest

FRONT_DOOR = [
    "BucketLoader",
    "ConvertConfig",
    "ConvertResult",
    "DatasetStats",
    "InfinityDataError",
    "LoaderConfig",
    "ShardIndex",
    "ShardWriter",
    "VerifyReport",
    "convert_folder",
    "convert_img2dataset",
    "convert_jsonl",
    "read_shard",
    "stats",
    "verify",
]

# Names the recipe, benchmarks and infinity-train import from the public modules (README, "Python API").
PUBLIC_MODULE_NAMES = {
    "shards": ["ShardSample", "ShardInfo"],
    "storage": ["Store", "is_url", "redact"],
    "shapes": ["write_folder", "render", "heldout_specs"],
    "images": ["decode_rgb", "ImageDecodeError"],
}  # fmt: skip


def test_the_front_door_is_the_documented_api():
    assert sorted(infinity_data.__all__) == sorted(FRONT_DOOR)
    for name in infinity_data.__all__:
        assert hasattr(infinity_data, name), name


def test_public_modules_hold_the_names_other_packages_use():
    for module, names in PUBLIC_MODULE_NAMES.items():
        loaded = importlib.import_module(f"infinity_data.{module}")
        for name in names:
            assert hasattr(loaded, name), f"infinity_data.{module}.{name}"


def test_names_moved_off_the_front_door_still_resolve_with_a_deprecation_warning():
    moved = infinity_data._MOVED
    assert moved and set(moved).isdisjoint(infinity_data.__all__)
    for name, module in moved.items():
        with pytest.warns(DeprecationWarning, match=rf"infinity_data\.{module}"):
            value = getattr(infinity_data, name)
        assert value is getattr(importlib.import_module(f"infinity_data.{module}"), name)
    with pytest.raises(AttributeError, match="no_such_name"):
        infinity_data.no_such_name  # noqa: B018
