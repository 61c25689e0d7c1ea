"""The package exposes the agreed cross-package API and imports nothing beyond torch, numpy and pillow."""

from __future__ import annotations

import subprocess
import sys

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


def test_import_pulls_in_no_optional_dependency():
    code = (
        "import sys, bsq_tokenizer, bsq_tokenizer.cli\n"
        "bad = [m for m in ('safetensors', 'transformers', 'torchvision', 'cv2', 'einops', 'flash_attn') if m in sys.modules]\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
