"""The package exposes the agreed cross-package API and imports nothing beyond torch, numpy and pillow."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import bsq_tokenizer

CONTRACT = [
    "H_DIV_W_TEMPLATES",
    "PIXEL_BUDGETS",
    "VAE_STRIDE",
    "nearest_template",
    "ScaleSchedule",
    "get_schedule",
    "custom_schedule",
    "target_pixel_size",
    "resize_crop_for_template",
    "bits_to_codes",
    "trilinear_resize",
    "area_resize",
    "MultiScaleBSQ",
    "QuantizeOutput",
    "space_to_depth_bits",
    "depth_to_space",
    "VAEConfig",
    "BSQVAE",
    "load_official_vae",
    "save_vae",
    "load_vae",
    "save_safetensors",
    "load_safetensors",
]


def test_contract_names_are_exported():
    for name in CONTRACT:
        assert name in bsq_tokenizer.__all__, name
    for name in bsq_tokenizer.__all__:
        assert hasattr(bsq_tokenizer, name), name


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
