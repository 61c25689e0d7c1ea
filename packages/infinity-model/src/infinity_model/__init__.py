"""infinity_model: the Infinity bitwise next-scale text-to-image transformer, its text path, sampler and CLI."""

from .checkpoint import (
    CheckpointError,
    infer_config,
    load_infinity,
    load_official_infinity,
    read_state_dict,
    save_infinity,
)
from .condition import TextCondition
from .config import PRESETS, InfinityConfig
from .transformer import Conditioning, Infinity, KVCache

__all__ = [
    "PRESETS",
    "CheckpointError",
    "Conditioning",
    "Infinity",
    "InfinityConfig",
    "KVCache",
    "TextCondition",
    "infer_config",
    "load_infinity",
    "load_official_infinity",
    "read_state_dict",
    "save_infinity",
]
