"""Checkpoint I/O: official ``.pth`` files (strict, ``weights_only=True``) and our folder format.

``save_vae(model, folder)`` writes ``config.json`` + ``model.safetensors``, the same layout as
``infinity_model.save_infinity``; ``load_vae`` reads that folder and the older single ``.safetensors`` file (config in
its metadata or a ``.json`` beside it).
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import re
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from torch import Tensor

from .config import VAE_PRESETS, VAEConfig
from .errors import BSQTokenizerError
from .quantizer import BSQ
from .safetensors_io import load_safetensors, load_safetensors_metadata, save_safetensors
from .vae import BSQVAE

__all__ = [
    "CONFIG_FILE",
    "WEIGHTS_FILE",
    "CheckpointError",
    "check_state_dict",
    "detect_preset",
    "expected_state_dict_shapes",
    "infer_config",
    "infer_vae_config",
    "load_official_vae",
    "load_vae",
    "read_state_dict",
    "savable_state_dict",
    "save_vae",
    "saved_vae_config",
]

logger = logging.getLogger(__name__)

CONFIG_METADATA_KEY = "bsq_tokenizer.config"
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
_MAX_LISTED = 12


class CheckpointError(BSQTokenizerError, ValueError):
    """A checkpoint file cannot be read or does not match the requested architecture.

    The one checkpoint error of the stack: ``infinity_model`` raises (and re-exports) this same class.
    """


def expected_state_dict_shapes(config: VAEConfig) -> dict[str, tuple[int, ...]]:
    """Key -> shape of ``BSQVAE(config).state_dict()``, computed on the meta device (no memory)."""
    with torch.device("meta"):
        model = BSQVAE(config)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def detect_preset(state_dict: Mapping[str, Tensor]) -> list[str]:
    """Names of the presets whose keys and shapes equal ``state_dict`` exactly (d32 and d32reg both match)."""
    shapes = {k: tuple(v.shape) for k, v in state_dict.items()}
    return [name for name, cfg in VAE_PRESETS.items() if expected_state_dict_shapes(cfg) == shapes]


def _dim(state_dict: Mapping[str, Tensor], candidates: Sequence[tuple[str, int]]) -> int | None:
    """Size of axis ``axis`` of the first present ``(key, axis)`` candidate, or None when none is present."""
    for key, axis in candidates:
        tensor = state_dict.get(key)
        if isinstance(tensor, Tensor) and tensor.ndim > axis:
            return int(tensor.shape[axis])
    return None


def infer_vae_config(state_dict: Mapping[str, Tensor]) -> VAEConfig:
    """Reconstruct a ``VAEConfig`` from the keys and shapes of a state dict (exact preset when one matches).

    Every size is read from the first of several keys that carry it, so one renamed or missing key still yields
    the architecture and the strict check can name that key. Raises CheckpointError when the keys are not those
    of a BSQ-VAE.
    """
    presets = detect_preset(state_dict)
    if presets:
        return VAE_PRESETS[presets[0]]
    levels = sorted({int(k.split(".")[2]) for k in state_dict if re.match(r"encoder\.down\.\d+\.block\.", k)})
    ch = _dim(state_dict, [("encoder.conv_in.conv.weight", 0), *_level_convs(state_dict, 0, axis=1)])
    codebook_dim = _dim(state_dict, [("encoder.conv_out.conv.weight", 0), ("decoder.conv_in.conv.weight", 1)])
    if ch is None or codebook_dim is None or not levels:
        raise CheckpointError(
            "state dict has neither the encoder's input convolution and first level nor its output convolution "
            "(encoder.conv_in.conv.weight, encoder.down.0.block.*, encoder.conv_out.conv.weight); it is not a "
            f"BSQ-VAE state dict.{_flux_naming_hint(state_dict)}"
        )
    widths = [_dim(state_dict, _level_convs(state_dict, lvl, axis=0)) for lvl in levels]
    blocks = {k.split(".")[4] for k in state_dict if k.startswith("encoder.down.0.block.")}
    downsamples = sum(
        1 for lvl in levels if any(k.startswith(f"encoder.down.{lvl}.downsample.") for k in state_dict)
    )
    try:
        return VAEConfig(
            codebook_dim=codebook_dim,
            ch=ch,
            ch_mult=tuple((w or ch) // ch for w in widths),
            num_res_blocks=len(blocks),
            in_channels=_dim(state_dict, [("encoder.conv_in.conv.weight", 1)]) or VAEConfig.in_channels,
            out_channels=_dim(state_dict, [("decoder.conv_out.conv.weight", 0)]) or VAEConfig.out_channels,
            patch_size=2**downsamples,
        )
    except ValueError as exc:
        raise CheckpointError(f"cannot infer a VAEConfig from the state dict: {exc}") from exc


def _level_convs(state_dict: Mapping[str, Tensor], level: int, axis: int) -> list[tuple[str, int]]:
    """``(key, axis)`` of the convolutions of encoder level ``level`` (all output ``ch * ch_mult[level]``)."""
    prefix = f"encoder.down.{level}.block."
    keys = sorted(k for k in state_dict if k.startswith(prefix) and k.endswith("conv.weight"))
    if axis == 1:  # input width: only the level's first convolution reads the previous level's width
        keys = [k for k in keys if k == f"{prefix}0.conv1.conv.weight"]
    return [(k, axis) for k in keys]


def _flux_naming_hint(keys: Mapping[str, object]) -> str:
    wrapped = sum(1 for k in keys if k.endswith((".conv.weight", ".norm.weight")))
    plain = sum(1 for k in keys if re.search(r"\.(conv_in|conv_out|conv\d|norm\d|norm_out)\.weight$", k))
    if plain > wrapped:
        return (
            " Its keys lack the '.conv'/'.norm' wrapper level (plain Flux naming); this loader is strict and "
            "does not rename keys: convert the file to the released layout first."
        )
    return ""


def _preset_hint(state_dict: Mapping[str, Tensor], config: VAEConfig | None = None) -> str:
    presets = detect_preset(state_dict)
    if presets:
        return (
            f" The file looks like preset {' / '.join(repr(p) for p in presets)}: load it with that preset."
        )
    try:
        cfg = infer_vae_config(state_dict)
    except CheckpointError:
        return _flux_naming_hint(state_dict)
    if cfg == config:
        return " The file's shapes fit this config: the keys listed above are renamed or missing in the file."
    return f" The file looks like a custom config: {cfg}."


def _listing(title: str, items: list[str]) -> str:
    if not items:
        return ""
    shown = ", ".join(items[:_MAX_LISTED])
    more = f" ... (+{len(items) - _MAX_LISTED} more)" if len(items) > _MAX_LISTED else ""
    return f"\n  {title} ({len(items)}): {shown}{more}"


def check_state_dict(state_dict: Mapping[str, Tensor], config: VAEConfig, source: str) -> None:
    """Raise CheckpointError naming missing/unexpected keys and shape mismatches, with a preset suggestion."""
    expected = expected_state_dict_shapes(config)
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    mismatched = [
        f"{k} {tuple(state_dict[k].shape)} vs expected {expected[k]}"
        for k in expected
        if k in state_dict and tuple(state_dict[k].shape) != expected[k]
    ]
    if missing or unexpected or mismatched:
        raise CheckpointError(
            f"{source} does not match the VAE config {config}:"
            + _listing("missing keys", missing)
            + _listing("unexpected keys", unexpected)
            + _listing("shape mismatches (file vs expected)", mismatched)
            + "\n "
            + _preset_hint(state_dict, config)
        )
    want: Tensor = BSQ(config.codebook_dim).state_dict()["mask"]
    for key in ("quantizer.lfq.mask", "quantize.lfq.mask"):
        if state_dict[key].dtype != torch.int64 or not torch.equal(state_dict[key].cpu(), want):
            raise CheckpointError(
                f"{source}: buffer {key!r} must be the int64 BSQ mask 2^(d-1), ..., 2, 1 for d = {config.codebook_dim}"
            )


def _torch_load(path: Path) -> object:
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(
            f"refusing to load {path}: it contains objects other than tensors and plain containers "
            f"(torch.load(weights_only=True) rejected it: {str(exc).splitlines()[0]}). Only load files you trust; "
            "re-save them as a plain state dict or safetensors."
        ) from exc
    except RuntimeError as exc:
        if "mmap" not in str(exc):
            raise CheckpointError(f"cannot read {path} as a PyTorch checkpoint: {exc}") from exc
    # Legacy (non-zip) serialisation cannot be memory-mapped; read it normally, still weights-only.
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(f"refusing to load {path}: weights_only=True rejected it ({exc})") from exc


def read_state_dict(path: str | os.PathLike[str], use_ema: bool = False) -> dict[str, Tensor]:
    """Flat state dict of an official ``.pth`` ({"vae": sd[, "ema": sd]} or flat), a safetensors file or a
    :func:`save_vae` folder (memory-mapped). The config stored beside the weights is :func:`saved_vae_config`."""
    path = Path(path)
    if path.is_dir():
        path = _weights_file(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    if path.suffix == ".safetensors":
        if use_ema:
            raise CheckpointError(f"{path}: safetensors files hold one set of weights; drop use_ema")
        return load_safetensors(path)
    obj = _torch_load(path)
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{path} holds a {type(obj).__name__}, expected a dict with a 'vae' state dict")
    key = "ema" if use_ema else "vae"
    if key in obj:
        sd = obj[key]
    elif use_ema:
        raise CheckpointError(f"{path} has no 'ema' weights (top-level keys: {sorted(map(str, obj))[:10]})")
    elif all(isinstance(v, Tensor) for v in obj.values()) and "encoder.conv_in.conv.weight" in obj:
        sd = obj
    else:
        raise CheckpointError(
            f"{path} has no 'vae' entry and is not a flat VAE state dict (top-level keys: {sorted(map(str, obj))[:10]})"
        )
    if not isinstance(sd, Mapping) or not all(isinstance(v, Tensor) for v in sd.values()):
        raise CheckpointError(f"{path}: entry {key!r} is not a state dict of tensors")
    return dict(sd)


def _weights_file(folder: Path) -> Path:
    """``model.safetensors`` of a :func:`save_vae` folder; CheckpointError naming the folder when it is absent."""
    weights = folder / WEIGHTS_FILE
    if not weights.is_file():
        raise CheckpointError(
            f"{folder} is not a saved VAE folder: {WEIGHTS_FILE} is missing (see bsq_tokenizer.save_vae)"
        )
    return weights


def _resolve_config(
    config: VAEConfig | str | None, state_dict: Mapping[str, Tensor], source: str
) -> VAEConfig:
    if isinstance(config, VAEConfig):
        return config
    if isinstance(config, str):
        return VAEConfig.preset(config)
    if config is None:
        try:
            cfg = infer_vae_config(state_dict)
        except CheckpointError as exc:
            raise CheckpointError(f"{source}: {exc}") from None
        logger.info("%s: inferred VAE config %s", source, cfg)
        return cfg
    raise TypeError(f"config must be a VAEConfig, a preset name or None, got {type(config).__name__}")


def _build(
    state_dict: Mapping[str, Tensor],
    config: VAEConfig,
    source: str,
    device: str | torch.device,
    dtype: torch.dtype,
) -> BSQVAE:
    check_state_dict(state_dict, config, source)
    with torch.device("meta"):
        model = BSQVAE(config)
    model.load_state_dict(state_dict, strict=True, assign=True)
    model = model.to(device=device, dtype=dtype)
    model.eval().requires_grad_(False)
    return model


def load_official_vae(
    path: str | os.PathLike[str],
    config: VAEConfig | str | None = None,
    *,
    use_ema: bool = False,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
) -> BSQVAE:
    """Load a released ``infinity_vae_*.pth`` (or our safetensors) strictly into ``BSQVAE`` in eval mode, frozen.

    ``config`` is a VAEConfig, a preset name ("d32", ...) or None to infer it from the tensor shapes. On a
    mismatch the CheckpointError names the missing/unexpected keys and the preset the file looks like.
    """
    path = Path(path)
    sd = read_state_dict(path, use_ema=use_ema)
    if config is None:
        config = saved_vae_config(path)
    cfg = _resolve_config(config, sd, str(path))
    return _build(sd, cfg, str(path), device, dtype)


def save_vae(model: BSQVAE, folder: str | os.PathLike[str]) -> Path:
    """Write ``config.json`` + ``model.safetensors`` (config also in its metadata) into ``folder``; returns it.

    The same layout as ``infinity_model.save_infinity``; read it back with :func:`load_vae`. A path ending in
    ``.safetensors`` writes the older single file with a ``.json`` beside it (deprecated, removed in the next minor
    version).
    """
    path = Path(folder)
    if path.suffix in (".pt", ".pth", ".bin", ".json") or path.is_file():
        raise ValueError(f"save_vae writes a folder (config.json + model.safetensors); {path} is a file name")
    if path.suffix == ".safetensors":
        warnings.warn(
            f"save_vae(model, {str(path)!r}) writing a single .safetensors file is deprecated; give a folder: "
            "save_vae writes config.json + model.safetensors there, like infinity_model.save_infinity",
            DeprecationWarning,
            stacklevel=2,
        )
        _write_weights(model, path)
        model.config.to_json(path.with_suffix(".json"))
        return path
    path.mkdir(parents=True, exist_ok=True)
    _write_weights(model, path / WEIGHTS_FILE)
    model.config.to_json(path / CONFIG_FILE)
    return path


def config_metadata(config: VAEConfig) -> dict[str, str]:
    """``config`` as a safetensors metadata entry (under ``CONFIG_METADATA_KEY``, JSON with sorted keys), as
    written with saved weights and with ``bsq-tokenizer encode``'s bits."""
    return {CONFIG_METADATA_KEY: json.dumps(config.to_dict(), sort_keys=True)}


def config_from_metadata(meta: Mapping[str, str]) -> VAEConfig | None:
    """The config :func:`config_metadata` wrote into ``meta``, or None when ``meta`` holds none."""
    if CONFIG_METADATA_KEY not in meta:
        return None
    return VAEConfig.from_dict(json.loads(meta[CONFIG_METADATA_KEY]))


def _write_weights(model: BSQVAE, path: Path) -> None:
    metadata = {"format": "pt", **config_metadata(model.config)}
    save_safetensors(savable_state_dict(model), path, metadata=metadata)  # atomic: temp file, fsync, rename


def savable_state_dict(model: torch.nn.Module, dtype: torch.dtype | None = None) -> dict[str, Tensor]:
    """``model``'s state dict as CPU tensors to write (cast to ``dtype`` if given); CheckpointError naming the
    first tensor still on the meta device (a model built but never loaded). Shared by :func:`save_vae` and
    ``infinity_model.save_infinity``."""
    tensors = {}
    for key, value in model.state_dict().items():
        if value.is_meta:
            raise CheckpointError(f"cannot save {key}: the model is still on the meta device (not loaded)")
        tensors[key] = (
            value.detach().to("cpu", dtype=dtype if dtype is not None else value.dtype).contiguous()
        )
    return tensors


def load_vae(
    path: str | os.PathLike[str], *, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32
) -> BSQVAE:
    """Load a model written by :func:`save_vae` strictly, in eval mode and frozen.

    ``path`` is a ``save_vae`` folder (``config.json`` + ``model.safetensors``) or an older single ``.safetensors``
    file (config in its metadata, else ``<name>.json`` beside it).
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"VAE {path} does not exist; pass a folder written by save_vae")
    weights = _weights_file(path) if path.is_dir() else path
    config = saved_vae_config(path)
    if config is None:
        raise CheckpointError(
            f"{path} has no {CONFIG_FILE}, no '{CONFIG_METADATA_KEY}' metadata and no "
            f"{path.with_suffix('.json').name} beside it; use load_official_vae(path, preset) to give the "
            "architecture explicitly"
        )
    return _build(load_safetensors(weights), config, str(path), device, dtype)


def saved_vae_config(path: str | os.PathLike[str]) -> VAEConfig | None:
    """The config :func:`save_vae` stored with the weights, or None when there is none.

    A folder's ``config.json``; for a single ``.safetensors`` file its metadata, else ``<name>.json`` beside it.
    Prefer it to inferring from tensor shapes: some fields (``norm_groups``) leave no trace in the shapes.
    """
    path = Path(path)
    if path.is_dir():
        return VAEConfig.from_json(path / CONFIG_FILE) if (path / CONFIG_FILE).is_file() else None
    if path.suffix != ".safetensors":
        return None
    written = config_from_metadata(load_safetensors_metadata(path))
    if written is not None:
        return written
    if path.with_suffix(".json").is_file():
        return VAEConfig.from_json(path.with_suffix(".json"))
    return None


def infer_config(state_dict: Mapping[str, Tensor]) -> VAEConfig:
    """Deprecated name of :func:`infer_vae_config` (removed in the next minor version)."""
    warnings.warn(
        "bsq_tokenizer.io.infer_config is deprecated; use infer_vae_config (infinity_model's is "
        "infer_infinity_config)",
        DeprecationWarning,
        stacklevel=2,
    )
    return infer_vae_config(state_dict)
