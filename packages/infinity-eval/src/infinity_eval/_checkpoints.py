"""Reading official `.pt` checkpoints safely (weights_only, memory-mapped when the file format allows it)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor

__all__ = ["load_official_state_dict"]


def load_official_state_dict(
    path: str | os.PathLike[str], *, wrapper_key: str | None = None
) -> dict[str, Tensor]:
    """`torch.load(weights_only=True)` (mmap for zip-format files); unwraps `{wrapper_key: state_dict}` when present."""
    p = Path(path)
    try:
        state = torch.load(p, map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError as exc:
        if "mmap" not in str(exc):
            raise
        state = torch.load(
            p, map_location="cpu", weights_only=True
        )  # legacy (non-zip) format cannot be mmapped
    if wrapper_key is not None and isinstance(state, Mapping) and isinstance(state.get(wrapper_key), Mapping):
        state = state[wrapper_key]
    if not isinstance(state, Mapping) or not all(isinstance(v, Tensor) for v in state.values()):
        raise ValueError(
            f"{p}: expected a state dict of tensors{f' (possibly under {wrapper_key!r})' if wrapper_key else ''}, "
            f"found {type(state).__name__}"
        )
    return dict(state)
