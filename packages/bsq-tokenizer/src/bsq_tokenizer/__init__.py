"""bsq_tokenizer: Infinity's BSQ-VAE visual tokenizer, multi-scale bitwise quantizer and scale schedules.

The names below are the front door. The public modules hold the rest: ``bsq_tokenizer.quantizer`` (bits, codes
and the one residual loop), ``bsq_tokenizer.schedules`` (templates, pixel budgets, resizing),
``bsq_tokenizer.image`` (image conversion, PSNR), ``bsq_tokenizer.io`` (checkpoint helpers) and
``bsq_tokenizer.safetensors_io`` (atomic safetensors files). Other modules are internal.
"""

from __future__ import annotations

import importlib
import warnings
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as _dist_version

from .config import VAE_PRESETS, VAEConfig
from .errors import BSQTokenizerError
from .image import image_to_tensor, load_image, tensor_to_images
from .io import CheckpointError, load_official_vae, load_vae, read_state_dict, save_vae
from .quantizer import MultiScaleBSQ
from .schedules import ScaleSchedule, get_schedule, resize_crop_for_template
from .vae import BSQVAE

try:
    __version__ = _dist_version("bsq-tokenizer")  # one source of truth: the version in pyproject.toml
except PackageNotFoundError:  # imported from a source tree that is not installed
    __version__ = "0+unknown"

__all__ = [
    "BSQVAE",
    "VAE_PRESETS",
    "BSQTokenizerError",
    "CheckpointError",
    "MultiScaleBSQ",
    "ScaleSchedule",
    "VAEConfig",
    "get_schedule",
    "image_to_tensor",
    "load_image",
    "load_official_vae",
    "load_vae",
    "read_state_dict",
    "resize_crop_for_template",
    "save_vae",
    "tensor_to_images",
]

# Names exported here before 0.2, now imported from their module (deprecated here for one minor version).
_MOVED = {
    **dict.fromkeys(
        (
            "BSQ",
            "FlipSource",
            "QuantizeOutput",
            "RandomBitFlips",
            "ResidualMode",
            "ResidualOutput",
            "ResidualSteps",
            "area_resize",
            "bits_to_codes",
            "codebook_scale",
            "codes_from_bits",
            "depth_to_space",
            "depth_to_space_bits",
            "residual_quantize",
            "space_to_depth",
            "space_to_depth_bits",
            "trilinear_resize",
        ),
        "quantizer",
    ),
    **dict.fromkeys(
        (
            "EXTRA_PIXEL_BUDGETS",
            "H_DIV_W_TEMPLATES",
            "PIXEL_BUDGETS",
            "VAE_STRIDE",
            "cover_crop_geometry",
            "cover_resize_crop",
            "custom_schedule",
            "default_latent_schedule",
            "nearest_template",
            "scale_token_weights",
            "target_pixel_size",
        ),
        "schedules",
    ),
    **dict.fromkeys(("center_crop_to_multiple", "check_multiple", "psnr", "to_rgb"), "image"),
    **dict.fromkeys(
        ("detect_preset", "expected_state_dict_shapes", "infer_config", "saved_vae_config"), "io"
    ),
    **dict.fromkeys(("load_safetensors", "load_safetensors_metadata", "save_safetensors"), "safetensors_io"),
}


def __getattr__(name: str) -> object:
    """Forward a name moved off the front door to its module, with a DeprecationWarning naming the new import."""
    module = _MOVED.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    warnings.warn(
        f"bsq_tokenizer.{name} is deprecated; import it from bsq_tokenizer.{module} "
        "(the package's front door keeps only its main API)",
        DeprecationWarning,
        stacklevel=2,
    )
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
