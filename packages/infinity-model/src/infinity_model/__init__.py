"""infinity_model: the Infinity bitwise next-scale text-to-image transformer, its text path, sampler and CLI."""

from .condition import TextCondition
from .config import PRESETS, InfinityConfig
from .transformer import Conditioning, Infinity, KVCache

__all__ = [
    "PRESETS",
    "Conditioning",
    "Infinity",
    "InfinityConfig",
    "KVCache",
    "TextCondition",
]
