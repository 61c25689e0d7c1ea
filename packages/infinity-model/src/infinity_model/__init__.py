"""infinity_model: the Infinity bitwise next-scale text-to-image transformer, its text path, sampler and CLI."""

from .checkpoint import (
    CheckpointError,
    CheckpointInfo,
    describe_checkpoint,
    infer_config,
    inspect_checkpoint,
    load_infinity,
    load_official_infinity,
    read_state_dict,
    save_infinity,
)
from .condition import TextCondition
from .config import PRESETS, InfinityConfig
from .errors import InfinityModelError
from .generation import GenerationConfig
from .pipeline import InfinityPipeline
from .sampler import SamplerConfig, SampleResult, ScaleStep, codes_to_uint8, filter_bit_logits, sample
from .text import TextEncoder
from .transformer import Conditioning, Infinity, KVCache

__all__ = [
    "PRESETS",
    "CheckpointError",
    "CheckpointInfo",
    "Conditioning",
    "GenerationConfig",
    "Infinity",
    "InfinityConfig",
    "InfinityModelError",
    "InfinityPipeline",
    "KVCache",
    "SampleResult",
    "SamplerConfig",
    "ScaleStep",
    "TextCondition",
    "TextEncoder",
    "codes_to_uint8",
    "describe_checkpoint",
    "filter_bit_logits",
    "infer_config",
    "inspect_checkpoint",
    "load_infinity",
    "load_official_infinity",
    "read_state_dict",
    "sample",
    "save_infinity",
]

from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as _dist_version

try:
    __version__ = _dist_version("infinity-model")  # one source of truth: the version in pyproject.toml
except PackageNotFoundError:  # imported from a source tree that is not installed
    __version__ = "0+unknown"
