"""infinity_model: the Infinity bitwise next-scale text-to-image transformer, its text path, sampler and CLI.

The names below are the front door. The public modules hold the rest: ``infinity_model.checkpoint``
(reading, inspecting and checking checkpoints), ``infinity_model.transformer`` (``Conditioning``, ``KVCache``),
``infinity_model.condition``, ``infinity_model.sampler`` (``codes_to_uint8``, ``filter_bit_logits``),
``infinity_model.text``, ``infinity_model.config``, ``infinity_model.generation``, ``infinity_model.model_folder``,
``infinity_model.default_model``, ``infinity_model.local_t5``, ``infinity_model.edit``, ``infinity_model.serve``
and ``infinity_model.tiny`` (a random tiny T5 for tests and examples). Other modules (``attention``, ``blocks``,
``rope``, ``pipeline``, ``cli``) are internal.
"""

from __future__ import annotations

import importlib
import warnings
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as _dist_version

from .checkpoint import CheckpointError, load_infinity, load_official_infinity, save_infinity
from .condition import TextCondition
from .config import PRESETS, InfinityConfig
from .errors import InfinityModelError
from .generation import GenerationConfig
from .pipeline import InfinityPipeline
from .sampler import SamplerConfig, SampleResult, ScaleStep, sample
from .text import TextEncoder
from .transformer import Infinity

try:
    __version__ = _dist_version("infinity-model")  # one source of truth: the version in pyproject.toml
except PackageNotFoundError:  # imported from a source tree that is not installed
    __version__ = "0+unknown"

__all__ = [
    "PRESETS",
    "CheckpointError",
    "GenerationConfig",
    "Infinity",
    "InfinityConfig",
    "InfinityModelError",
    "InfinityPipeline",
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

# Names exported here before 0.2, now imported from their module (deprecated here for one minor version).
_MOVED = {
    **dict.fromkeys(
        ("CheckpointInfo", "describe_checkpoint", "infer_config", "inspect_checkpoint", "read_state_dict"),
        "checkpoint",
    ),
    **dict.fromkeys(("codes_to_uint8", "filter_bit_logits"), "sampler"),
    **dict.fromkeys(("Conditioning", "KVCache"), "transformer"),
}


def __getattr__(name: str) -> object:
    """Forward a name moved off the front door to its module, with a DeprecationWarning naming the new import."""
    module = _MOVED.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    warnings.warn(
        f"infinity_model.{name} is deprecated; import it from infinity_model.{module} "
        "(the package's front door keeps only its main API)",
        DeprecationWarning,
        stacklevel=2,
    )
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
