"""Checkpoint I/O: the official `.pth` / sharded folders (strict, meta-device + mmap + assign) and our own format;
inspection (`inspect_checkpoint`, `infinity info`) and the transformer/VAE compatibility check.

Loading never holds two copies of the weights: the model is built on the meta device, the file is memory-mapped
(`torch.load(weights_only=True, mmap=True)` or safetensors' mmap), tensors are cast one by one when a different
dtype/device is asked for, and `load_state_dict(strict=True, assign=True)` adopts them as the parameters.
"""

from __future__ import annotations

import json
import logging
import math
import os
import pickle
import re
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TypeVar

import torch
from bsq_tokenizer import CheckpointError, VAEConfig
from bsq_tokenizer.io import CONFIG_FILE, WEIGHTS_FILE, savable_state_dict  # save_vae's folder layout
from bsq_tokenizer.safetensors_io import load_safetensors, save_safetensors
from safetensors import SafetensorError, safe_open
from torch import Tensor

from infinity_model.config import PRESETS, InfinityConfig
from infinity_model.transformer import AttnBackend, Infinity, default_cfg_uncond

__all__ = [
    "CheckpointError",
    "CheckpointInfo",
    "check_compatible",
    "check_state_dict",
    "describe_checkpoint",
    "infer_config",
    "infer_infinity_config",
    "inspect_checkpoint",
    "load_infinity",
    "load_official_infinity",
    "load_state_dict_into_meta_model",
    "match_preset",
    "read_state_dict",
    "save_infinity",
]

logger = logging.getLogger(__name__)

_INDEX_NAMES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")
_SINGLE_NAMES = (WEIGHTS_FILE, "pytorch_model.bin")
_WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin")
_WRAPPER_PARTS = ("_fsdp_wrapped_module.", "_checkpoint_wrapped_module.", "_orig_mod.")
_BLOCK_KEY = re.compile(r"^(?:block_chunks\.(\d+)\.module\.(\d+)|blocks\.(\d+))\.")
_MAX_LISTED = 8
ModuleT = TypeVar("ModuleT", bound=torch.nn.Module)


# --------------------------------------------------------------------------------------------- reading


def _torch_load(path: Path) -> object:
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(
            f"{path}: refusing to unpickle arbitrary Python objects (weights_only=True): {exc}. If this is an "
            "official training checkpoint (ar-ckpt-*.pth with 'args'), extract trainer['gpt_fsdp'] into a flat "
            "state dict in a trusted environment first"
        ) from exc
    except RuntimeError as exc:
        if "mmap" not in str(exc) and "zip" not in str(exc):
            raise CheckpointError(f"{path}: cannot read with torch.load: {exc}") from exc
        # legacy (non-zip) serialization cannot be memory-mapped; read it normally
        logger.info("%s: legacy torch serialization, loading without mmap", path)
        return torch.load(path, map_location="cpu", weights_only=True)


def _safetensors_load(path: Path) -> dict[str, Tensor]:
    """Official/HF `.safetensors` files through the safetensors package: its tensors are mmap-backed."""
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            return {key: f.get_tensor(key) for key in f.keys()}  # noqa: SIM118 (safe_open is not a dict)
    except Exception as exc:  # safetensors raises its own error types
        raise CheckpointError(f"{path}: not a readable safetensors file: {exc}") from exc


def _unwrap(obj: object, path: Path) -> dict[str, Tensor]:
    """A flat state dict out of what a file holds (flat dict, or an official training checkpoint)."""
    if isinstance(obj, Mapping) and "trainer" in obj and isinstance(obj["trainer"], Mapping):
        trainer = obj["trainer"]
        for name in ("gpt_fsdp", "gpt_wo_ddp"):
            if name in trainer:
                logger.info("%s: using the model weights trainer[%r] of a training checkpoint", path, name)
                obj = trainer[name]
                break
        else:
            raise CheckpointError(
                f"{path}: training checkpoint without trainer['gpt_fsdp'] or ['gpt_wo_ddp']"
            )
    if not isinstance(obj, Mapping):
        raise CheckpointError(
            f"{path}: expected a state dict (a mapping of names to tensors), got {type(obj)}"
        )
    bad = [k for k, v in obj.items() if not isinstance(k, str) or not isinstance(v, Tensor)]
    if bad:
        raise CheckpointError(
            f"{path}: entries {bad[:_MAX_LISTED]} are not tensors; expected a flat state dict"
        )
    return _strip_wrappers(dict(obj), path)


def _strip_wrappers(state: dict[str, Tensor], path: Path) -> dict[str, Tensor]:
    out = {}
    for key, value in state.items():
        new = key
        for part in _WRAPPER_PARTS:
            new = new.replace(part, "")
        out[new] = value
    if out and all(k.startswith("module.") for k in out):
        out = {k.removeprefix("module."): v for k, v in out.items()}
    if list(out) != list(state):
        logger.info("%s: stripped DDP/FSDP/compile wrapper prefixes from the key names", path)
    if len(out) != len(state):
        raise CheckpointError(f"{path}: two keys collide after stripping wrapper prefixes")
    return out


def _read_file(path: Path) -> dict[str, Tensor]:
    if path.suffix == ".safetensors":
        return _safetensors_load(path)
    return _unwrap(_torch_load(path), path)


def _read_sharded(folder: Path, index_path: Path) -> dict[str, Tensor]:
    try:
        weight_map = json.loads(index_path.read_text())["weight_map"]
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as exc:
        raise CheckpointError(
            f"{index_path}: not a sharded-checkpoint index (needs a 'weight_map'): {exc}"
        ) from exc
    state: dict[str, Tensor] = {}
    for shard in sorted(set(weight_map.values())):
        shard_path = folder / shard
        if not shard_path.is_file():
            raise CheckpointError(f"{index_path} names shard {shard!r}, which is missing from {folder}")
        part = _read_file(shard_path)
        twice = sorted(set(part) & set(state))
        if twice:
            raise CheckpointError(f"{folder}: keys {twice[:_MAX_LISTED]} appear in more than one shard")
        state.update(part)
    absent = [k for k, shard in weight_map.items() if k not in state]
    if absent:
        raise CheckpointError(
            f"{index_path} maps keys {absent[:_MAX_LISTED]} to shards that do not contain them"
        )
    return state


def read_state_dict(path: str | os.PathLike[str]) -> dict[str, Tensor]:
    """Flat state dict of an official file (.pth/.pt/.bin/.safetensors) or sharded/HF-style folder (mmap'd)."""
    path = Path(path)
    if path.is_file():
        return _read_file(path)
    if not path.is_dir():
        raise CheckpointError(f"checkpoint {path} does not exist")
    for name in _INDEX_NAMES:
        if (path / name).is_file():
            return _read_sharded(path, path / name)
    indexes = sorted(path.glob("*.index.json"))
    if len(indexes) == 1:
        return _read_sharded(path, indexes[0])
    for name in _SINGLE_NAMES:
        if (path / name).is_file():
            return _read_file(path / name)
    files = sorted(p for p in path.iterdir() if p.suffix in _WEIGHT_SUFFIXES and p.is_file())
    if len(files) == 1:
        return _read_file(files[0])
    raise CheckpointError(
        f"{path}: cannot tell which files hold the weights (found {[p.name for p in files] or 'no weight files'}); "
        f"expected an index ({' or '.join(_INDEX_NAMES)}) or a single weight file"
    )


# -------------------------------------------------------------------------------------- diagnostics


def infer_infinity_config(
    shapes: Mapping[str, Sequence[int] | Tensor], drop_path_rate: float = 0.1
) -> InfinityConfig:
    """The architecture a state dict was made for, from its key names and shapes.

    d_vae = 56 is taken as the patchified 8B tokenizer (the only released 56-bit setting); drop_path_rate is
    not recorded in weights and takes the given value.
    """
    dims = {k: tuple(v.shape) if isinstance(v, Tensor) else tuple(v) for k, v in shapes.items()}
    try:
        embed_dim = dims["pos_start"][-1]
        text_maxlen, text_channels = dims["cfg_uncond"]
        d_vae = dims["word_embed.weight"][1]
        num_levels = dims["lvl_embed.weight"][0]
        pool_heads = dims["text_proj_for_sos.ca.mat_q"][1]
    except (KeyError, ValueError, IndexError) as exc:
        raise CheckpointError(f"not an Infinity state dict: missing or malformed key {exc}") from exc
    head = dims.get("head.weight")
    if head is not None and len(head) == 2 and head[0] != 2 * d_vae:
        raise CheckpointError(
            f"the state dict contradicts itself: word_embed.weight {list(dims['word_embed.weight'])} says "
            f"d_vae = {d_vae}, but head.weight {list(head)} (two logits per bit) says d_vae = {head[0] / 2:g}; "
            "one of them is truncated or edited: re-export or re-download the file"
        )
    chunked, flat = set(), set()
    for key in dims:
        m = _BLOCK_KEY.match(key)
        if m and m.group(3) is not None:
            flat.add(int(m.group(3)))
        elif m:
            chunked.add((int(m.group(1)), int(m.group(2))))
    if chunked:
        chunks = 1 + max(i for i, _ in chunked)
        per = 1 + max(j for _, j in chunked)
        first = "block_chunks.0.module.0."
    elif flat:
        chunks, per, first = 1, 1 + max(flat), "blocks.0."
    else:
        raise CheckpointError("not an Infinity state dict: no block_chunks.* or blocks.* keys")
    try:
        num_heads = dims[first + "sa.scale_mul_1H11"][1]
        ffn_dim = dims[first + "ffn.fc1.weight"][0]
    except KeyError as exc:
        raise CheckpointError(f"not an Infinity state dict: missing {exc}") from exc
    mlp_ratio = 4.0 if round(embed_dim * 4.0 / 256) * 256 == ffn_dim else ffn_dim / embed_dim
    rule_heads = text_channels // (64 if embed_dim > 4096 else 128)
    config = InfinityConfig(
        depth=chunks * per,
        embed_dim=embed_dim,
        num_heads=num_heads,
        mlp_ratio=mlp_ratio,
        d_vae=d_vae,
        block_chunks=chunks,
        text_channels=text_channels,
        text_maxlen=text_maxlen,
        drop_path_rate=drop_path_rate,
        patchify=d_vae == 56,
        num_levels=num_levels,
        pool_heads=None if pool_heads == rule_heads else pool_heads,
    )
    if config.ffn_dim != ffn_dim:
        raise CheckpointError(
            f"FFN width {ffn_dim} of this state dict is not representable by the mlp_ratio rule"
        )
    return config


def match_preset(config: InfinityConfig) -> str | None:
    """Name of the preset with this architecture (drop_path_rate ignored), or None."""
    for name, preset in PRESETS.items():
        if replace(preset, drop_path_rate=config.drop_path_rate) == config:
            return name
    return None


def _describe(config: InfinityConfig) -> str:
    name = match_preset(config)
    what = f"preset {name!r}" if name else "a custom configuration"
    return (
        f"{what} (depth {config.depth}, embed_dim {config.embed_dim}, {config.num_heads} heads, "
        f"d_vae {config.d_vae} -> VAE {config.vae_name}, block_chunks {config.block_chunks})"
    )


def _listed(keys: Sequence[str]) -> str:
    head = ", ".join(keys[:_MAX_LISTED])
    return head + (f", ... ({len(keys)} in all)" if len(keys) > _MAX_LISTED else "")


def check_state_dict(model: torch.nn.Module, state: Mapping[str, Tensor], source: str = "state dict") -> None:
    """Raise CheckpointError naming missing/unexpected keys and shape mismatches, with a diagnosis of the file."""
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    got = {k: tuple(v.shape) for k, v in state.items()}
    missing = [k for k in expected if k not in got]
    unexpected = [k for k in got if k not in expected]
    mismatched = [
        f"{k}: file {list(got[k])} vs model {list(expected[k])}"
        for k in expected
        if k in got and got[k] != expected[k]
    ]
    if not (missing or unexpected or mismatched):
        return
    problems = []
    if mismatched:
        problems.append(f"{len(mismatched)} shape mismatches ({_listed(mismatched)})")
    if missing:
        problems.append(f"{len(missing)} missing keys ({_listed(missing)})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected keys ({_listed(unexpected)})")
    message = f"{source} does not fit the model: " + "; ".join(problems) + "."
    config = getattr(model, "config", None)
    if not isinstance(config, InfinityConfig):  # another module (the T5 encoder): no Infinity diagnosis
        raise CheckpointError(message)
    try:
        found = infer_infinity_config(got)
    except CheckpointError as exc:
        message += f" The file cannot be read as one architecture: {exc}."
        found = None
    except ValueError:
        found = None
    if found is not None and config is not None:
        if replace(found, drop_path_rate=config.drop_path_rate) == config:
            # The config is what the file's shapes say (it may have been inferred from them): the listed
            # tensors disagree with the rest of the file, so no other config would load it.
            message += (
                f" The rest of the file fits the model's architecture ({_describe(config)}): the tensors listed "
                "are damaged, truncated or renamed; re-export or re-download the file."
            )
        else:
            message += f" The model was built as {_describe(config)}, but the file holds {_describe(found)}"
            name = match_preset(found)
            hint = (
                f"InfinityConfig.preset({name!r})" if name else "infer_infinity_config(read_state_dict(path))"
            )
            message += f"; load it with {hint} (or config=None to infer it)."
    raise CheckpointError(message)


# ------------------------------------------------------------------------------------------ loading


def _fit_cfg_uncond(state: dict[str, Tensor], config: InfinityConfig, source: str) -> None:
    """Length tolerance of the reference: a shorter stored cfg_uncond is extended with the model's constructor
    rows, a longer one truncated (logged as a warning; the width must match)."""
    stored = state.get("cfg_uncond")
    if stored is None or stored.ndim != 2 or stored.shape[1] != config.text_channels:
        return
    rows = stored.shape[0]
    if rows == config.text_maxlen:
        return
    if rows > config.text_maxlen:
        state["cfg_uncond"] = stored[: config.text_maxlen]
    else:
        fill = default_cfg_uncond(config.text_maxlen, config.text_channels)[rows:].to(stored.dtype)
        state["cfg_uncond"] = torch.cat([stored, fill], 0)
    logger.warning(
        "%s: cfg_uncond has %d rows, the model text_maxlen=%d; %s (reference behaviour)",
        source,
        rows,
        config.text_maxlen,
        "truncated" if rows > config.text_maxlen else "extended with the constructor rows",
    )


def load_state_dict_into_meta_model(
    config: InfinityConfig,
    state: dict[str, Tensor],
    *,
    dtype: torch.dtype | None = torch.float32,
    device: torch.device | str = "cpu",
    source: str = "state dict",
    attn_backend: AttnBackend = "auto",
) -> Infinity:
    """Build `Infinity(config)` on the meta device and adopt `state` strictly (no second copy of the weights).

    dtype None keeps the stored dtypes; otherwise every floating tensor is cast (one at a time).
    """
    model = _checked_meta_model(config, state, source, attn_backend)
    return _adopt_state_dict(model, state, dtype=dtype, device=device, source=source)


def _checked_meta_model(
    config: InfinityConfig, state: dict[str, Tensor], source: str, attn_backend: AttnBackend = "auto"
) -> Infinity:
    """`Infinity(config)` on the meta device, `state`'s keys and shapes checked against it (no data is read)."""
    with torch.device("meta"):
        model = Infinity(config, attn_backend=attn_backend)
    _fit_cfg_uncond(state, config, source)
    check_state_dict(model, state, source)
    return model


def _adopt_state_dict(
    model: Infinity,
    state: dict[str, Tensor],
    *,
    dtype: torch.dtype | None,
    device: torch.device | str,
    source: str,
) -> Infinity:
    """Cast `state` (checked by :func:`_checked_meta_model`) tensor by tensor and assign it as the weights."""
    device = torch.device(device)
    for key in list(state):
        value = state[key]
        if not value.is_floating_point():
            raise CheckpointError(
                f"{source}: {key} has dtype {value.dtype}; every Infinity tensor is floating point"
            )
        target = value.dtype if dtype is None else dtype
        if value.dtype != target or value.device != device:
            state[key] = value.to(device=device, dtype=target)
    return _assign(model, state).eval()


def assign_state_dict(model: ModuleT, state: Mapping[str, Tensor], source: str) -> ModuleT:
    """Adopt ``state`` as ``model``'s weights (strict, assigned: a meta-device model takes the tensors themselves),
    after :func:`check_state_dict` names any missing, unexpected or misshapen key."""
    check_state_dict(model, state, source)
    return _assign(model, state)


def _assign(model: ModuleT, state: Mapping[str, Tensor]) -> ModuleT:
    """The package's one strict load: ``state``'s tensors become the weights (keys and shapes checked before)."""
    model.load_state_dict(state, strict=True, assign=True)
    return model


def load_official_infinity(
    path: str | os.PathLike[str],
    config: InfinityConfig | None = None,
    *,
    dtype: torch.dtype | None = torch.float32,
    device: torch.device | str = "cpu",
    attn_backend: AttnBackend = "auto",
) -> Infinity:
    """Load an official Infinity checkpoint strictly: a flat `.pth` (e.g. infinity_2b_reg.pth), a sharded
    HF-style folder (infinity_8b_weights/: index json + .bin or .safetensors shards) or a single file.

    config None infers the architecture from the shapes (see `infer_infinity_config`). Returns the model in eval mode.
    """
    state = read_state_dict(path)
    if config is None:
        try:
            config = infer_infinity_config(state)
        except CheckpointError as exc:
            raise CheckpointError(f"{path}: {exc}") from None
        logger.info("%s: inferred %s", path, _describe(config))
    return load_state_dict_into_meta_model(
        config, state, dtype=dtype, device=device, source=str(path), attn_backend=attn_backend
    )


# -------------------------------------------------------------------------------------- our format


def save_infinity(
    model: Infinity, directory: str | os.PathLike[str], dtype: torch.dtype | None = None
) -> Path:
    """Write `config.json` + `model.safetensors` (optionally cast to dtype) into directory; returns it.

    The weights go through bsq_tokenizer's safetensors writer (the project's one writer; atomic rename).
    """
    directory = Path(directory)
    tensors = savable_state_dict(model, dtype)
    directory.mkdir(parents=True, exist_ok=True)
    model.config.to_json(directory / CONFIG_FILE)
    metadata = {"format": "pt", "library": "infinity-model", "config": json.dumps(model.config.to_dict())}
    save_safetensors(tensors, directory / WEIGHTS_FILE, metadata=metadata)  # atomic: temp file + rename
    return directory


def load_infinity(
    directory: str | os.PathLike[str],
    *,
    dtype: torch.dtype | None = None,
    device: torch.device | str = "cpu",
    attn_backend: AttnBackend = "auto",
) -> Infinity:
    """Load a model written by `save_infinity` (strict; dtype None keeps the stored dtype)."""
    directory = Path(directory)
    config_path, weights_path = directory / CONFIG_FILE, directory / WEIGHTS_FILE
    for p in (config_path, weights_path):
        if not p.is_file():
            raise CheckpointError(
                f"{directory} is not a saved Infinity model: {p.name} is missing (see save_infinity)"
            )
    config = InfinityConfig.from_json(config_path)
    try:
        state = load_safetensors(weights_path)
    except (OSError, ValueError, TypeError) as exc:
        raise CheckpointError(f"{weights_path}: not a readable safetensors file: {exc}") from exc
    return load_state_dict_into_meta_model(
        config, state, dtype=dtype, device=device, source=str(weights_path), attn_backend=attn_backend
    )


# ------------------------------------------------------------------------------------------ inspection
@dataclass(frozen=True)
class CheckpointInfo:
    """What a transformer checkpoint is, read without loading its weights (files are memory-mapped)."""

    path: Path
    format: str  # "official .pth", "sharded folder", "safetensors folder", "safetensors file"
    config: InfinityConfig
    preset: str | None  # name in PRESETS whose architecture matches, if any
    shapes: Mapping[str, tuple[int, ...]]
    dtypes: tuple[str, ...]

    @property
    def num_params(self) -> int:
        """Parameters (state-dict entries except the all-zero ``zero_k_bias`` buffers)."""
        return sum(math.prod(shape) for key, shape in self.shapes.items() if not key.endswith("zero_k_bias"))


def _safetensors_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """Shapes from a safetensors header, read by the safetensors library; reads no tensor data."""
    try:
        with safe_open(path, framework="pt") as f:
            return {name: tuple(f.get_slice(name).get_shape()) for name in f.keys()}  # noqa: SIM118
    except SafetensorError as err:
        raise ValueError(f"{path} is not a valid safetensors file: {err}") from err


def _format(path: Path) -> str:
    if path.is_file():
        return "safetensors file" if path.suffix == ".safetensors" else "official .pth"
    if any(path.glob("*.index.json")):
        return "sharded folder"
    return "safetensors folder" if (path / CONFIG_FILE).is_file() else "folder"


def inspect_checkpoint(path: str | Path) -> CheckpointInfo:
    """Format, architecture (from config.json or the shapes) and shapes of a transformer checkpoint.

    The weights are memory-mapped, not read: this is cheap even for the 8B.
    """
    return _open_checkpoint(path)[0]


def _open_checkpoint(path: str | Path) -> tuple[CheckpointInfo, dict[str, Tensor]]:
    """:func:`inspect_checkpoint` and the memory-mapped state dict it read, so a loader reads the file once."""
    path = Path(path).expanduser()
    if not path.exists():
        raise FileNotFoundError(
            f"transformer checkpoint {path} does not exist; pass an official .pth, a sharded folder or a "
            "folder written by save_infinity"
        )
    state = read_state_dict(path)
    shapes = {k: tuple(v.shape) for k, v in state.items()}
    dtypes = tuple(sorted({str(v.dtype).removeprefix("torch.") for v in state.values()}))
    fmt = _format(path)
    config = InfinityConfig.from_json(path / CONFIG_FILE) if fmt == "safetensors folder" else None
    config = config or infer_infinity_config(shapes)
    return CheckpointInfo(path, fmt, config, match_preset(config), shapes, dtypes), state


def describe_checkpoint(path: str | Path) -> dict[str, str]:
    """Human-readable summary of a checkpoint (``infinity info``)."""
    info = inspect_checkpoint(path)
    cfg = info.config
    n = info.num_params
    return {
        "path": str(info.path),
        "format": info.format,
        "preset": info.preset or "custom (no released preset has these shapes)",
        "depth": str(cfg.depth),
        "embed_dim": str(cfg.embed_dim),
        "num_heads": str(cfg.num_heads),
        "ffn_dim": str(cfg.ffn_dim),
        "block_chunks": str(cfg.block_chunks),
        "bits_per_token": f"{cfg.d_vae} ({'2x2 patchified ' if cfg.patchify else ''}{cfg.vae_channels}-bit VAE)",
        "vae": cfg.vae_name,
        "text_channels": str(cfg.text_channels),
        "parameters": f"{n:,} ({n / 1e9:.2f}B)",
        "stored_dtypes": ", ".join(info.dtypes),
        "size_bf16": f"{2 * n / 2**30:.2f} GiB",
    }


def check_compatible(
    model_config: InfinityConfig, vae_config: VAEConfig, model_src: str, vae_src: str
) -> None:
    """Raise ValueError unless the VAE gives the transformer its bits per token at 16 pixels per token.

    A plain model needs a stride-16 VAE with d_vae bits; a patchified one (8B) a stride-8 VAE with d_vae / 4
    bits (the patchify flag itself is not visible in VAE weights, so stride and width decide).
    """
    factor = 4 if model_config.patchify else 1
    stride = 8 if model_config.patchify else 16
    if vae_config.codebook_dim * factor != model_config.d_vae or vae_config.patch_size != stride:
        raise ValueError(
            f"transformer {model_src} predicts {model_config.d_vae} bits per token"
            f"{' (2x2 patchified)' if model_config.patchify else ''} and needs {model_config.vae_name} "
            f"({model_config.vae_channels} bits, stride {stride}), but VAE {vae_src} has "
            f"{vae_config.codebook_dim} bits at stride {vae_config.patch_size}; pass the matching VAE"
        )


def infer_config(shapes: Mapping[str, Sequence[int] | Tensor], drop_path_rate: float = 0.1) -> InfinityConfig:
    """Deprecated name of :func:`infer_infinity_config` (removed in the next minor version)."""
    warnings.warn(
        "infinity_model.infer_config is deprecated; use infinity_model.checkpoint.infer_infinity_config "
        "(bsq_tokenizer's is infer_vae_config)",
        DeprecationWarning,
        stacklevel=2,
    )
    return infer_infinity_config(shapes, drop_path_rate)
