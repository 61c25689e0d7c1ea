"""Typed run configuration: TOML/JSON → frozen dataclasses, strictly checked.

Every section is a frozen dataclass; unknown keys and wrong types raise :class:`ConfigError` naming the
dotted key and the file. The resolved config is written as ``run_config.json`` beside every checkpoint.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, Literal, Union

from .errors import InfinityTrainError

__all__ = [
    "BSCConfig",
    "CheckpointConfig",
    "ConfigError",
    "DataConfig",
    "DeepSpeedConfig",
    "LoggingConfig",
    "OptimConfig",
    "RunConfig",
    "TokenizerLossConfig",
    "TokenizerModelConfig",
    "TransformerModelConfig",
    "TransformerTrainConfig",
    "check_value_ranges",
    "config_from_dict",
    "config_to_dict",
    "load_run_config",
    "read_config_file",
    "save_run_config",
    "toml_module",
]

Task = Literal["transformer", "tokenizer"]
Precision = Literal["fp32", "bf16", "fp16"]
ScheduleName = Literal["lin0", "lin", "lin00", "cos", "const"]


class ConfigError(InfinityTrainError, ValueError):
    """A run config value is missing, unknown or of the wrong type."""


@dataclass(frozen=True)
class DataConfig:
    """Where the training shards are and how batches are formed (passed to ``infinity_data.BucketLoader``)."""

    shards: str = ""  # folder written by `infinity-data convert` (index.json + .tar shards)
    val_shards: str = ""  # optional; empty disables periodic validation
    batch_size: int = 4  # per process ("lbs")
    pn: str = "0.06M"  # pixel budget of the scale schedule (and of the loader's images)
    # custom square schedule (template 1.0) replacing pn's; images are area-resized to 16x its last grid
    scales: tuple[tuple[int, int], ...] = ()
    num_workers: int = 0
    shuffle_window: int = 8
    mode: Literal["epoch", "resampled"] = "epoch"
    use_precomputed_text: bool = False  # read T5 features stored in the shards instead of running T5
    # keep each image's frozen-VAE latent in memory after its first encode (transformer training): skips the
    # encoder from the second epoch on; d * H/16 * W/16 floats per image, e.g. 4 KB at 128x128 with d = 16
    cache_latents: bool = False
    short_caption_prob: float = 0.5
    dynamic_caption_length: bool = True


@dataclass(frozen=True)
class OptimConfig:
    """AdamW + the reference's LR/WD schedule (official `infinity/utils/lr_control.py`)."""

    lr: float = 0.0  # peak LR; 0 → derived from base_lr * global_batch / 256
    base_lr: float = 6e-3  # "tblr"
    betas: tuple[float, float] = (0.9, 0.97)
    eps: float = 1e-8
    weight_decay: float = 0.005
    weight_decay_end: float = -1.0  # < 0 → equal to weight_decay (constant)
    grad_clip: float = 5.0
    grad_accum: int = 1
    schedule: ScheduleName = "lin0"
    warmup_iters: int = 0
    warmup_start: float = 0.005  # "wp0"
    end_factor: float = 1.0  # "wpe" (1 → constant LR after warm-up)
    max_iters: int = 1000  # total optimizer steps of the run (schedule length)


@dataclass(frozen=True)
class DeepSpeedConfig:
    """What goes into the generated DeepSpeed config; ``extra`` is deep-merged into it verbatim."""

    zero_stage: Literal[0, 1, 2, 3] = 2
    precision: Precision = "bf16"
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class CheckpointConfig:
    save_every: int = 1000  # optimizer steps; 0 → only at the end
    keep_last: int = 2  # older complete checkpoints are deleted; 0 keeps all
    init_from: str = ""  # official .pth (transformer) / .pth or safetensors (tokenizer), loaded strictly


@dataclass(frozen=True)
class LoggingConfig:
    log_every: int = 10
    val_every: int = 0  # optimizer steps; 0 disables
    val_batches: int = 4
    tensorboard: bool = True  # used only when installed
    wandb_project: str = ""  # empty → wandb off


@dataclass(frozen=True)
class BSCConfig:
    """Bitwise self-correction (official `BitwiseSelfCorrection`)."""

    noise_apply_layers: int = 13
    noise_apply_strength: float = 0.3
    requant: bool = True


@dataclass(frozen=True)
class TransformerModelConfig:
    """The transformer, its frozen tokenizer and text encoder."""

    preset: str = "layer12"  # InfinityConfig.preset name
    overrides: dict[str, Any] = field(default_factory=dict)  # InfinityConfig fields replacing the preset's
    vae_path: str = ""  # official .pth or a save_vae folder/file
    vae_preset: str = "d32"
    vae_overrides: dict[str, Any] = field(default_factory=dict)
    text_encoder_path: str = ""  # local T5 folder; empty requires data.use_precomputed_text


@dataclass(frozen=True)
class TransformerTrainConfig:
    """Loss and conditioning knobs of the transformer run (official `infinity/models/infinity.py`, `trainer.py`)."""

    cond_drop_rate: float = 0.1
    reweight_loss_by_scale: bool = True
    label_smoothing: float = 0.0
    bitloss: Literal["mean", "sum"] = "mean"
    ema_decay: float = 0.0  # 0 disables EMA; reference value when on: 0.9999
    activation_checkpointing: bool = False
    # "math": the training forward's self-attention uses SDPA's math kernel (explicit matmul + softmax); at short
    # sequences on CPU it beats the default fused CPU kernel, whose bf16 backward is slow. "auto": torch picks.
    attention_backend: Literal["auto", "math"] = "auto"
    max_nonfinite_in_a_row: int = 10
    bsc: BSCConfig = field(default_factory=BSCConfig)


@dataclass(frozen=True)
class TokenizerModelConfig:
    preset: str = "d32"  # VAEConfig.preset name
    overrides: dict[str, Any] = field(default_factory=dict)
    disc_channels: int = 64
    disc_layers: int = 3
    perceptual_path: str = ""  # TorchScript feature network; empty → Laplacian-pyramid fallback (README)
    # NHWC VAE, discriminator and images (ZeRO-0 only): the same model, faster convolution kernels on CPU
    # (benchmarks/cpu_precision.py, the shapes tokenizer's bare step on 2 cores: 1.15x)
    channels_last: bool = False


@dataclass(frozen=True)
class TokenizerLossConfig:
    """BSQ-VAE training losses."""

    l1_weight: float = 4.0
    l2_weight: float = 0.0
    perceptual_weight: float = 0.0
    entropy_weight: float = 0.1
    commitment_weight: float = 0.25
    entropy_inv_temperature: float = 100.0
    gan_weight: float = 1.0
    disc_start: int = 2000  # optimizer steps before the discriminator and GAN loss switch on
    lecam_weight: float = 0.05
    lecam_decay: float = 0.999
    disc_lr: float = 1e-4
    disc_betas: tuple[float, float] = (0.9, 0.95)


@dataclass(frozen=True)
class RunConfig:
    """A whole training run."""

    task: Task = "transformer"
    run_dir: str = "runs/default"
    seed: int = 0
    max_steps: int = 1000  # optimizer steps
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    deepspeed: DeepSpeedConfig = field(default_factory=DeepSpeedConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    transformer_model: TransformerModelConfig = field(default_factory=TransformerModelConfig)
    transformer: TransformerTrainConfig = field(default_factory=TransformerTrainConfig)
    tokenizer_model: TokenizerModelConfig = field(default_factory=TokenizerModelConfig)
    tokenizer_loss: TokenizerLossConfig = field(default_factory=TokenizerLossConfig)

    def replace(self, **changes: Any) -> RunConfig:
        return dataclasses.replace(self, **changes)


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _convert(value: Any, tp: Any, key: str, source: str) -> Any:
    """Check ``value`` against the annotation ``tp`` and convert lists to tuples / tables to dataclasses."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)

    def fail(expected: str) -> ConfigError:
        return ConfigError(
            f"{source}: key '{key}' must be {expected}, got {type(value).__name__} {value!r}; fix the value"
        )

    if tp is Any:
        return value
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise fail(f"a table of {tp.__name__} fields")
        return _build(tp, value, key, source)
    if origin is Literal:
        if value not in args or isinstance(value, bool) != any(isinstance(a, bool) for a in args):
            raise fail("one of " + ", ".join(repr(a) for a in args))
        return value
    if origin in (Union, types.UnionType):
        for option in args:
            try:
                return _convert(value, option, key, source)
            except ConfigError:
                continue
        raise fail(" or ".join(_type_name(a) for a in args))
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise fail(f"a list ({_type_name(tp)})")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(v, args[0], f"{key}[{i}]", source) for i, v in enumerate(value))
        if len(value) != len(args):
            raise fail(f"a list of {len(args)} items")
        return tuple(
            _convert(v, a, f"{key}[{i}]", source) for i, (v, a) in enumerate(zip(value, args, strict=True))
        )
    if origin is dict:
        if not isinstance(value, dict):
            raise fail("a table")
        return dict(value)
    if tp is bool:
        if not isinstance(value, bool):
            raise fail("true or false")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise fail("an integer")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise fail("a number")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise fail("a string")
        return value
    if tp is type(None):
        if value is not None:
            raise fail("null")
        return None
    raise ConfigError(f"{source}: key '{key}' has an unsupported annotation {tp!r}")  # pragma: no cover


def _build(cls: type, data: dict[str, Any], prefix: str, source: str) -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        where = f"'{prefix}.{unknown[0]}'" if prefix else f"'{unknown[0]}'"
        raise ConfigError(
            f"{source}: unknown key {where} (section '{prefix or '<top level>'}' accepts: "
            f"{', '.join(sorted(names))}); remove or rename it"
        )
    kwargs = {}
    for name, value in data.items():
        key = f"{prefix}.{name}" if prefix else name
        kwargs[name] = _convert(value, hints[name], key, source)
    return cls(**kwargs)


# (dotted key, lowest value, highest value, what the value means); None = unbounded on that side
_RANGES: tuple[tuple[str, float | None, float | None, str], ...] = (
    ("seed", 0, None, "the run's seed"),
    ("max_steps", 1, None, "optimizer steps of the run"),
    ("data.batch_size", 1, None, "samples per process and micro step"),
    ("data.num_workers", 0, None, "loader worker processes (0 = in the training process)"),
    ("data.shuffle_window", 0, None, "shards shuffled together (0 = a whole bucket)"),
    ("data.short_caption_prob", 0, 1, "a probability"),
    ("optim.lr", 0, None, "peak LR (0 = derived from base_lr)"),
    ("optim.base_lr", 0, None, "LR per 256 samples"),
    ("optim.eps", 0, None, "AdamW's epsilon"),
    ("optim.grad_clip", 0, None, "gradient-norm clip (0 = off)"),
    ("optim.grad_accum", 1, None, "micro steps per optimizer step"),
    ("optim.warmup_iters", 0, None, "warm-up steps"),
    ("optim.max_iters", 1, None, "the LR schedule's length in steps"),
    ("checkpoint.save_every", 0, None, "steps between checkpoints (0 = only at the end)"),
    ("checkpoint.keep_last", 0, None, "complete checkpoints kept (0 = all)"),
    ("logging.log_every", 1, None, "steps between train records"),
    ("logging.val_every", 0, None, "steps between validations (0 = off)"),
    ("logging.val_batches", 1, None, "validation batches per rank"),
    ("transformer.cond_drop_rate", 0, 1, "a probability"),
    ("transformer.label_smoothing", 0, 1, "a fraction"),
    ("transformer.ema_decay", 0, 1, "EMA decay (0 = off, below 1)"),
    ("transformer.max_nonfinite_in_a_row", 1, None, "non-finite losses tolerated in a row"),
    ("tokenizer_loss.disc_start", 0, None, "steps before the discriminator starts"),
)


def _lookup(config: RunConfig, dotted: str) -> Any:
    value: Any = config
    for part in dotted.split("."):
        value = getattr(value, part)
    return value


def check_value_ranges(config: RunConfig, source: str = "<dict>") -> None:
    """Reject values out of their meaningful range (``batch_size = 0``, ``save_every = -1``, ...)."""
    for dotted, low, high, meaning in _RANGES:
        value = _lookup(config, dotted)
        bad = (
            not math.isfinite(value)
            or (low is not None and value < low)
            or (high is not None and value > high)
            or (dotted == "transformer.ema_decay" and value == 1)
        )
        if bad:
            if dotted == "transformer.ema_decay":
                allowed = "in [0, 1)"
            elif high is None:
                allowed = f">= {low}"
            else:
                allowed = f"in [{low}, {high}]"
            raise ConfigError(
                f"{source}: key '{dotted}' = {value!r} must be {allowed} ({meaning}); fix the value"
            )
    for i, (h, w) in enumerate(config.data.scales):
        if h < 1 or w < 1:
            raise ConfigError(f"{source}: key 'data.scales[{i}]' = [{h}, {w}] must hold positive grid sizes")


def config_from_dict(data: dict[str, Any], source: str = "<dict>", *, check_ranges: bool = True) -> RunConfig:
    """Build a :class:`RunConfig` from plain data, rejecting unknown keys, wrong types and (unless
    ``check_ranges`` is false, as when reading the config saved beside an old checkpoint) out-of-range values."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the top level must be a table, got {type(data).__name__}")
    config = _build(RunConfig, data, "", source)
    if check_ranges:
        check_value_ranges(config, source)
    return config


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def config_to_dict(config: RunConfig) -> dict[str, Any]:
    """JSON-ready dict of the config (tuples become lists); ``config_from_dict`` inverts it."""
    return _plain(config)


def toml_module() -> ModuleType:
    """The TOML reader: the standard library's ``tomllib`` (Python >= 3.11) or the ``tomli`` backport (3.10)."""
    try:
        return importlib.import_module("tomllib")
    except ModuleNotFoundError:  # Python 3.10: the package depends on tomli there
        return importlib.import_module("tomli")


def read_config_file(path: str | Path) -> dict[str, Any]:
    """The raw table of a ``.toml`` or ``.json`` run config file (no type checks yet)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"run config {path} does not exist; pass an existing .toml or .json file")
    text = path.read_text()
    toml = toml_module()
    try:
        if path.suffix == ".toml":
            data = toml.loads(text)
        elif path.suffix == ".json":
            data = json.loads(text)
        else:
            raise ConfigError(f"run config {path}: unknown extension '{path.suffix}'; use .toml or .json")
    except (toml.TOMLDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"run config {path} is not valid {path.suffix[1:].upper()}: {exc}") from exc
    return data


def load_run_config(path: str | Path, overrides: dict[str, Any] | None = None) -> RunConfig:
    """Read a ``.toml`` or ``.json`` run config; ``overrides`` maps dotted keys to values (CLI ``--set``)."""
    path = Path(path)
    data = read_config_file(path)
    for dotted, value in (overrides or {}).items():
        node = data
        parts = dotted.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override '{dotted}': '{part}' is not a section")
        node[parts[-1]] = value
    return config_from_dict(data, str(path))


def save_run_config(config: RunConfig, path: str | Path) -> None:
    """Write the config as JSON (used beside every checkpoint)."""
    Path(path).write_text(json.dumps(config_to_dict(config), indent=2, sort_keys=True) + "\n")
