"""A small, dependency-free reader/writer of the safetensors format (torch tensors).

Layout: 8-byte little-endian header length N, N bytes of JSON header
``{name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {str: str}}`` (padded with spaces
to a multiple of 8), then the raw little-endian tensor bytes; offsets are relative to the end of the header.
"""

from __future__ import annotations

import itertools
import json
import os
import sys
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor

__all__ = ["load_safetensors", "load_safetensors_metadata", "save_safetensors"]

_DTYPES: dict[str, torch.dtype] = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
    "F8_E4M3": torch.float8_e4m3fn,
    "F8_E5M2": torch.float8_e5m2,
    "U16": torch.uint16,
    "U32": torch.uint32,
    "U64": torch.uint64,
}
_NAMES: dict[torch.dtype, str] = {v: k for k, v in _DTYPES.items()}
_MAX_HEADER = 100 * 1024 * 1024


def _to_little_endian_bytes(t: Tensor) -> bytes:
    raw = t.detach().to("cpu").contiguous().reshape(-1).view(torch.uint8)
    if sys.byteorder == "big" and t.element_size() > 1:
        raw = raw.reshape(-1, t.element_size()).flip(-1).reshape(-1)
    return raw.numpy().tobytes()


def save_safetensors(
    tensors: Mapping[str, Tensor], path: str | os.PathLike[str], metadata: Mapping[str, str] | None = None
) -> None:
    """Write ``tensors`` (name -> tensor, any device, copied to CPU) and optional string ``metadata`` to ``path``.

    Tensors are laid out by decreasing element size, then name, so every tensor is aligned to its element size.
    The file is written to a temporary name and renamed, so a crash never leaves a truncated file behind.
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
    header: dict[str, object] = {}
    if metadata:
        header["__metadata__"] = dict(metadata)
    for name, t in tensors.items():
        if not isinstance(name, str) or name == "__metadata__":
            raise ValueError(f"invalid tensor name {name!r} for {path}")
        if not isinstance(t, Tensor):
            raise TypeError(f"value of {name!r} is a {type(t).__name__}, expected a torch.Tensor")
        if t.dtype not in _NAMES:
            raise TypeError(f"tensor {name!r} has dtype {t.dtype}, which safetensors cannot store")
        if t.device.type == "meta":
            raise ValueError(f"tensor {name!r} is on the meta device and has no data to write")
    order = sorted(tensors, key=lambda n: (-tensors[n].element_size(), n))
    offset = 0
    for name in order:
        t = tensors[name]
        nbytes = t.numel() * t.element_size()
        header[name] = {
            "dtype": _NAMES[t.dtype],
            "shape": list(t.shape),
            "data_offsets": [offset, offset + nbytes],
        }
        offset += nbytes
    header_bytes = json.dumps(header, separators=(",", ":")).encode("utf-8")
    header_bytes += b" " * (-len(header_bytes) % 8)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(len(header_bytes).to_bytes(8, "little"))
        f.write(header_bytes)
        for name in order:
            f.write(_to_little_endian_bytes(tensors[name]))
    os.replace(tmp, path)


def _read_header(f, path: Path, file_size: int) -> tuple[dict, int]:
    prefix = f.read(8)
    if len(prefix) != 8:
        raise ValueError(f"{path} is not a safetensors file: shorter than the 8-byte header length")
    n = int.from_bytes(prefix, "little")
    if n > _MAX_HEADER or 8 + n > file_size:
        raise ValueError(
            f"{path} is not a valid safetensors file: header length {n} exceeds the file size {file_size}"
        )
    try:
        header = json.loads(f.read(n).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path} is not a valid safetensors file: header is not JSON ({exc})") from exc
    if not isinstance(header, dict):
        raise ValueError(f"{path}: safetensors header must be a JSON object")
    return header, 8 + n


def load_safetensors_metadata(path: str | os.PathLike[str]) -> dict[str, str]:
    """The ``__metadata__`` dictionary of a safetensors file (empty if none), without reading tensor data."""
    path = Path(path)
    with open(path, "rb") as f:
        header, _ = _read_header(f, path, path.stat().st_size)
    return dict(header.get("__metadata__") or {})


def load_safetensors(path: str | os.PathLike[str], device: str | torch.device = "cpu") -> dict[str, Tensor]:
    """Read every tensor of a safetensors file (offsets and sizes validated) into a dict of tensors on ``device``."""
    path = Path(path)
    size = path.stat().st_size
    with open(path, "rb") as f:
        header, start = _read_header(f, path, size)
        data_size = size - start
        entries = []
        for name, info in header.items():
            if name == "__metadata__":
                continue
            try:
                dtype = _DTYPES[info["dtype"]]
                shape = [int(s) for s in info["shape"]]
                begin, end = (int(v) for v in info["data_offsets"])
            except (KeyError, TypeError, ValueError) as exc:
                raise ValueError(f"{path}: malformed header entry for tensor {name!r}: {info!r}") from exc
            if any(s < 0 for s in shape):
                raise ValueError(f"{path}: tensor {name!r} has a negative dimension in shape {shape}")
            numel = 1
            for s in shape:
                numel *= s
            nbytes = numel * torch.empty((), dtype=dtype).element_size()
            if not 0 <= begin <= end <= data_size or end - begin != nbytes:
                raise ValueError(
                    f"{path}: tensor {name!r} ({info['dtype']} {shape}) has data_offsets [{begin}, {end}] that do not "
                    f"match its size ({nbytes} bytes) or the data section ({data_size} bytes)"
                )
            entries.append((begin, end, name, dtype, shape))
        entries.sort(key=lambda e: (e[0], e[1]))
        for prev, cur in itertools.pairwise([e for e in entries if e[1] > e[0]]):
            if cur[0] < prev[1]:
                raise ValueError(f"{path}: tensors {prev[2]!r} and {cur[2]!r} overlap in the data section")
        out: dict[str, Tensor] = {}
        for begin, end, name, dtype, shape in entries:
            t = torch.empty(shape, dtype=dtype)
            if end > begin:
                raw = t.view(-1).view(torch.uint8)
                f.seek(start + begin)
                if f.readinto(memoryview(raw.numpy())) != end - begin:
                    raise ValueError(f"{path}: unexpected end of file while reading tensor {name!r}")
                if sys.byteorder == "big" and t.element_size() > 1:
                    raw.copy_(raw.reshape(-1, t.element_size()).flip(-1).reshape(-1))
            out[name] = t.to(device)
    return {name: out[name] for name in header if name != "__metadata__"}
