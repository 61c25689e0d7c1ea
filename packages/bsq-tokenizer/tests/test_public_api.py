"""The front door holds the documented API, moved names still resolve with a warning, and the package imports
nothing beyond torch, numpy, pillow and safetensors."""

from __future__ import annotations

import ast
import importlib
import json
import sys
from pathlib import Path

import bsq_tokenizer
import pytest
import torch
from bsq_tokenizer import BSQVAE, VAEConfig

FRONT_DOOR = [
    "BSQVAE",
    "VAEConfig",
    "VAE_PRESETS",
    "MultiScaleBSQ",
    "ScaleSchedule",
    "get_schedule",
    "resize_crop_for_template",
    "load_official_vae",
    "load_vae",
    "save_vae",
    "read_state_dict",
    "CheckpointError",
    "BSQTokenizerError",
    "load_image",
    "image_to_tensor",
    "tensor_to_images",
]
# Names other packages, benchmarks and recipes import from the public modules (README, "Python API").
PUBLIC_MODULE_NAMES = {
    "quantizer": ["BSQ", "RandomBitFlips", "ResidualSteps", "residual_quantize", "bits_to_codes", "codes_from_bits",
                  "space_to_depth", "space_to_depth_bits", "depth_to_space_bits", "trilinear_resize", "area_resize"],
    "schedules": ["H_DIV_W_TEMPLATES", "PIXEL_BUDGETS", "EXTRA_PIXEL_BUDGETS", "custom_schedule", "nearest_template",
                  "target_pixel_size", "cover_crop_geometry", "cover_resize_crop", "scale_token_weights"],
    "image": ["to_rgb", "psnr"],
    "io": ["infer_vae_config", "saved_vae_config", "detect_preset", "check_state_dict"],
    "safetensors_io": ["load_safetensors", "save_safetensors", "load_safetensors_metadata"],
}  # fmt: skip


def test_the_front_door_is_the_documented_api():
    assert sorted(bsq_tokenizer.__all__) == sorted(FRONT_DOOR)
    for name in bsq_tokenizer.__all__:
        assert hasattr(bsq_tokenizer, name), name


def test_public_modules_hold_the_names_other_packages_use():
    for module, names in PUBLIC_MODULE_NAMES.items():
        loaded = importlib.import_module(f"bsq_tokenizer.{module}")
        for name in names:
            assert hasattr(loaded, name), f"bsq_tokenizer.{module}.{name}"


def test_names_moved_off_the_front_door_still_resolve_with_a_deprecation_warning():
    moved = bsq_tokenizer._MOVED
    assert set(moved).isdisjoint(bsq_tokenizer.__all__)
    for name, module in moved.items():
        with pytest.warns(DeprecationWarning, match=rf"bsq_tokenizer\.{module}"):
            value = getattr(bsq_tokenizer, name)
        assert value is getattr(importlib.import_module(f"bsq_tokenizer.{module}"), name)
    with pytest.raises(AttributeError, match="no_such_name"):
        bsq_tokenizer.no_such_name  # noqa: B018


def test_old_names_are_deprecated_aliases_of_the_new_ones(tmp_path):
    from bsq_tokenizer.io import infer_config, infer_vae_config

    torch.manual_seed(0)
    config = VAEConfig(codebook_dim=8, ch=32, ch_mult=(1, 1, 2), patch_size=4)
    state = BSQVAE(config).state_dict()
    with pytest.warns(DeprecationWarning, match="infer_vae_config"):
        assert infer_config(state) == infer_vae_config(state) == config
    # VAEConfig.to_json / from_json take a path, as InfinityConfig's; the text forms warn for one minor version.
    assert VAEConfig.from_json(config.to_json(tmp_path / "config.json")) == config
    with pytest.warns(DeprecationWarning, match="to_dict"):
        text = config.to_json()
    assert json.loads(text) == config.to_dict()
    with pytest.warns(DeprecationWarning, match="from_dict"):
        assert VAEConfig.from_json(text) == config
    with pytest.raises(ValueError, match="cannot read VAE config"):
        VAEConfig.from_json(tmp_path / "missing.json")


def test_sources_import_only_torch_numpy_pillow_safetensors_and_the_standard_library():
    allowed = {"torch", "numpy", "PIL", "safetensors", "bsq_tokenizer"} | set(sys.stdlib_module_names)
    src = Path(bsq_tokenizer.__file__).parent
    for path in sorted(src.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                roots = [alias.name.split(".")[0] for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                roots = [(node.module or "").split(".")[0]]
            else:
                continue
            for root in roots:
                assert root in allowed, f"{path.name} imports {root}"
