"""Reading official checkpoint files, and loading translated state dicts into models built on the meta device.

Every official `.pt`/`.pth` file of the harness is read here: plain pickled state dicts with
`torch.load(weights_only=True, mmap=True)`, TorchScript archives (OpenAI's `ViT-L-14.pt`, the FID `default_1.pt`)
with `torch.jit.load` (callers check their SHA-256 first).
"""

from __future__ import annotations

import os
import warnings
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import TypeVar

import torch
from torch import Tensor, nn

__all__ = [
    "is_torchscript",
    "load_official_state_dict",
    "load_state_dict_into_meta_model",
    "load_torchscript_state_dict",
]

ModuleT = TypeVar("ModuleT", bound=nn.Module)


def is_torchscript(path: str | os.PathLike[str]) -> bool:
    """True for a TorchScript archive (a zip holding a `code/` folder), which `torch.load` cannot read safely."""
    p = Path(path)
    if not zipfile.is_zipfile(p):
        return False
    with zipfile.ZipFile(p) as archive:
        return any(name.startswith("code/") or "/code/" in name for name in archive.namelist())


def load_torchscript_state_dict(path: str | os.PathLike[str]) -> dict[str, Tensor]:
    """The parameters and buffers of a TorchScript archive (detached CPU tensors)."""
    with (
        warnings.catch_warnings()
    ):  # torch deprecates producing TorchScript, not reading these official files
        warnings.simplefilter("ignore", FutureWarning)
        scripted = torch.jit.load(str(path), map_location="cpu")
    return {k: v.detach().clone() for k, v in scripted.state_dict().items()}


def load_official_state_dict(
    path: str | os.PathLike[str], *, wrapper_key: str | None = None
) -> dict[str, Tensor]:
    """A state dict of tensors from an official file; unwraps `{wrapper_key: state_dict}` when present.

    Pickled files are read with `torch.load(weights_only=True)`, memory-mapped when they are in the zip format
    (legacy files are read whole); TorchScript archives through `load_torchscript_state_dict`.
    """
    p = Path(path)
    if is_torchscript(p):
        state: object = load_torchscript_state_dict(p)
    else:
        try:
            state = torch.load(p, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as exc:
            if "mmap" not in str(exc):
                raise
            state = torch.load(p, map_location="cpu", weights_only=True)  # legacy format: no mmap
    if wrapper_key is not None and isinstance(state, Mapping) and isinstance(state.get(wrapper_key), Mapping):
        state = state[wrapper_key]
    if not isinstance(state, Mapping) or not all(isinstance(v, Tensor) for v in state.values()):
        raise ValueError(
            f"{p}: expected a state dict of tensors{f' (possibly under {wrapper_key!r})' if wrapper_key else ''}, "
            f"found {type(state).__name__}"
        )
    return dict(state)


def load_state_dict_into_meta_model(model: ModuleT, state: Mapping[str, Tensor], source: str) -> ModuleT:
    """Materialise a model built on the meta device on the CPU and load `state` strictly, in float32.

    Keys must match exactly (missing and unexpected keys are listed, with `source` naming the file); shapes too.
    Non-persistent `position_ids` buffers (transformers' embeddings), which no state dict carries, are refilled
    with 0..n-1; any other non-persistent buffer is refused rather than left uninitialised.
    """
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise KeyError(
            f"{source}: the state dict does not match the model: missing keys {missing[:20]}"
            f"{' ...' if len(missing) > 20 else ''} ({len(missing)}), unexpected keys {unexpected[:20]}"
            f"{' ...' if len(unexpected) > 20 else ''} ({len(unexpected)})"
        )
    bad = [
        f"{k}: file {tuple(v.shape)} vs model {tuple(expected[k].shape)}"
        for k, v in state.items()
        if tuple(v.shape) != tuple(expected[k].shape)
    ]
    if bad:
        raise ValueError(f"{source}: shapes differ from the configuration: " + "; ".join(bad[:20]))
    persistent = set(expected)
    transient = [name for name, _ in model.named_buffers() if name not in persistent]
    unknown = [name for name in transient if not name.endswith("position_ids")]
    if unknown:
        raise ValueError(f"cannot materialise non-persistent buffers {unknown} of {type(model).__name__}")
    model = model.to_empty(device="cpu")
    with torch.no_grad():
        for name, buffer in model.named_buffers():
            if name in transient:
                buffer.copy_(torch.arange(buffer.shape[-1]).expand_as(buffer))
    model.load_state_dict({k: v.float() for k, v in state.items()}, strict=True)
    return model
