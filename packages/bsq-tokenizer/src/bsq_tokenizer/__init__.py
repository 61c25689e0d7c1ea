"""bsq_tokenizer: Infinity's BSQ-VAE visual tokenizer, multi-scale bitwise quantizer and scale schedules."""

from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as _dist_version

from .config import VAE_PRESETS, VAEConfig
from .errors import BSQTokenizerError
from .image import (
    center_crop_to_multiple,
    check_multiple,
    image_to_tensor,
    load_image,
    psnr,
    tensor_to_images,
    to_rgb,
)
from .io import (
    CheckpointError,
    detect_preset,
    expected_state_dict_shapes,
    infer_config,
    load_official_vae,
    load_vae,
    read_state_dict,
    save_vae,
    saved_vae_config,
)
from .quantizer import (
    BSQ,
    FlipSource,
    MultiScaleBSQ,
    QuantizeOutput,
    RandomBitFlips,
    ResidualMode,
    ResidualOutput,
    ResidualSteps,
    area_resize,
    bits_to_codes,
    codebook_scale,
    codes_from_bits,
    depth_to_space,
    depth_to_space_bits,
    residual_quantize,
    space_to_depth,
    space_to_depth_bits,
    trilinear_resize,
)
from .safetensors_io import load_safetensors, load_safetensors_metadata, save_safetensors
from .schedules import (
    EXTRA_PIXEL_BUDGETS,
    H_DIV_W_TEMPLATES,
    PIXEL_BUDGETS,
    VAE_STRIDE,
    ScaleSchedule,
    cover_crop_geometry,
    cover_resize_crop,
    custom_schedule,
    default_latent_schedule,
    get_schedule,
    nearest_template,
    resize_crop_for_template,
    scale_token_weights,
    target_pixel_size,
)
from .vae import BSQVAE

try:
    __version__ = _dist_version("bsq-tokenizer")  # one source of truth: the version in pyproject.toml
except PackageNotFoundError:  # imported from a source tree that is not installed
    __version__ = "0+unknown"

__all__ = [
    "BSQ",
    "BSQVAE",
    "EXTRA_PIXEL_BUDGETS",
    "H_DIV_W_TEMPLATES",
    "PIXEL_BUDGETS",
    "VAE_PRESETS",
    "VAE_STRIDE",
    "BSQTokenizerError",
    "CheckpointError",
    "FlipSource",
    "MultiScaleBSQ",
    "QuantizeOutput",
    "RandomBitFlips",
    "ResidualMode",
    "ResidualOutput",
    "ResidualSteps",
    "ScaleSchedule",
    "VAEConfig",
    "area_resize",
    "bits_to_codes",
    "center_crop_to_multiple",
    "check_multiple",
    "codebook_scale",
    "codes_from_bits",
    "cover_crop_geometry",
    "cover_resize_crop",
    "custom_schedule",
    "default_latent_schedule",
    "depth_to_space",
    "depth_to_space_bits",
    "detect_preset",
    "expected_state_dict_shapes",
    "get_schedule",
    "image_to_tensor",
    "infer_config",
    "load_image",
    "load_official_vae",
    "load_safetensors",
    "load_safetensors_metadata",
    "load_vae",
    "nearest_template",
    "psnr",
    "read_state_dict",
    "residual_quantize",
    "resize_crop_for_template",
    "save_safetensors",
    "save_vae",
    "saved_vae_config",
    "scale_token_weights",
    "space_to_depth",
    "space_to_depth_bits",
    "target_pixel_size",
    "tensor_to_images",
    "to_rgb",
    "trilinear_resize",
]
