"""Safetensors files through the ``safetensors`` library: memory-mapped loads and an atomic, fsynced save.

The library owns the format; this module adds what checkpoints need on top of ``safetensors.torch``: errors
that name the file, tensors taken from any device or layout (shared storage, strides), and a write that never
leaves a truncated file at the final path (temporary file in the same folder, fsync, rename, fsync the folder).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import Tensor

__all__ = ["load_safetensors", "load_safetensors_metadata", "save_safetensors"]


def _invalid(path: Path, err: Exception) -> ValueError:
    return ValueError(f"{path} is not a valid safetensors file ({err}); re-export or re-download it")


def _cpu_tensors(tensors: Mapping[str, Tensor], path: Path) -> dict[str, Tensor]:
    """Contiguous CPU tensors, each with storage of its own (the library refuses shared or strided ones)."""
    out: dict[str, Tensor] = {}
    seen: set[int] = set()
    for name, t in tensors.items():
        if not isinstance(name, str) or name == "__metadata__":
            raise ValueError(f"invalid tensor name {name!r} for {path}")
        if not isinstance(t, Tensor):
            raise TypeError(f"value of {name!r} is a {type(t).__name__}, expected a torch.Tensor")
        if t.device.type == "meta":
            raise ValueError(f"tensor {name!r} is on the meta device and has no data to write to {path}")
        cpu = t.detach().to("cpu").contiguous()
        if cpu.numel() > 0:
            pointer = cpu.untyped_storage().data_ptr()
            if pointer in seen:  # tied weights or views of one tensor: each name gets its own bytes
                cpu = cpu.clone()
                pointer = cpu.untyped_storage().data_ptr()
            seen.add(pointer)
        out[name] = cpu
    return out


def save_safetensors(
    tensors: Mapping[str, Tensor], path: str | os.PathLike[str], metadata: Mapping[str, str] | None = None
) -> None:
    """Write ``tensors`` (any device, layout or sharing) and optional string ``metadata`` to ``path`` atomically.

    The file is written under a temporary name in the same folder, flushed to disk, then renamed over ``path``,
    so a crash leaves either the old file or the complete new one, never a truncated file.
    """
    path = Path(path)
    if metadata is not None:
        bad = {
            k: type(v).__name__
            for k, v in metadata.items()
            if not isinstance(k, str) or not isinstance(v, str)
        }
        if bad:
            raise TypeError(f"safetensors metadata must map str to str; offending entries: {bad}")
    prepared = _cpu_tensors(tensors, path)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        save_file(prepared, tmp, metadata=dict(metadata) if metadata else None)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    with contextlib.suppress(OSError):  # make the rename durable; some filesystems cannot open folders
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def load_safetensors(path: str | os.PathLike[str], device: str | torch.device = "cpu") -> dict[str, Tensor]:
    """Every tensor of a safetensors file (memory-mapped by the library) on ``device``, by name."""
    path = Path(path)
    try:
        return load_file(path, device=str(device))
    except SafetensorError as err:
        raise _invalid(path, err) from err


def load_safetensors_metadata(path: str | os.PathLike[str]) -> dict[str, str]:
    """The ``__metadata__`` dictionary of a safetensors file (empty if none), without reading tensor data."""
    path = Path(path)
    try:
        with safe_open(path, framework="pt") as f:
            return dict(f.metadata() or {})
    except SafetensorError as err:
        raise _invalid(path, err) from err
