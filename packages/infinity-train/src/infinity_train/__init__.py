"""infinity_train: DeepSpeed (ZeRO 0/2/3) training of the Infinity transformer and of its BSQ-VAE tokenizer.

The CLI (``infinity-train``) wraps :func:`train`; everything it does is available as a Python API. The names below
are the front door; the public modules hold the rest: ``infinity_train.config`` (the config sections),
``infinity_train.bsc``, ``infinity_train.losses``, ``infinity_train.vae_losses``, ``infinity_train.lr_schedule``,
``infinity_train.ema``, ``infinity_train.distributed``, ``infinity_train.data``, ``infinity_train.loop``,
``infinity_train.export``, ``infinity_train.transformer_trainer`` and ``infinity_train.tokenizer_trainer``.
Other modules (``cli``, ``runner``, ``preflight``, ``metrics``, ``checkpoint``, ``errors``) are internal.
"""

from __future__ import annotations

import importlib
import warnings
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as _dist_version

from .bsc import bitwise_self_correction
from .config import ConfigError, RunConfig, config_from_dict, config_to_dict, load_run_config, save_run_config
from .ema import EMA
from .errors import InfinityTrainError
from .export import consolidated_state_dict, export_checkpoint
from .loop import TrainLoop
from .runner import train
from .tokenizer_trainer import TokenizerTrainer
from .transformer_trainer import TransformerTrainer

try:
    __version__ = _dist_version("infinity-train")  # one source of truth: the version in pyproject.toml
except PackageNotFoundError:  # imported from a source tree that is not installed
    __version__ = "0+unknown"

__all__ = [
    "EMA",
    "ConfigError",
    "InfinityTrainError",
    "RunConfig",
    "TokenizerTrainer",
    "TrainLoop",
    "TransformerTrainer",
    "bitwise_self_correction",
    "config_from_dict",
    "config_to_dict",
    "consolidated_state_dict",
    "export_checkpoint",
    "load_run_config",
    "save_run_config",
    "train",
]

# Names exported here before 0.2, now imported from their module (deprecated here for one minor version).
_MOVED = {
    **dict.fromkeys(("BSCOutput",), "bsc"),
    **dict.fromkeys(
        (
            "BSCConfig",
            "CheckpointConfig",
            "DataConfig",
            "DeepSpeedConfig",
            "LoggingConfig",
            "OptimConfig",
            "TokenizerLossConfig",
            "TokenizerModelConfig",
            "TransformerModelConfig",
            "TransformerTrainConfig",
        ),
        "config",
    ),
    **dict.fromkeys(("build_loader",), "data"),
    **dict.fromkeys(
        ("DistInfo", "build_ds_config", "init_distributed", "shutdown_distributed"), "distributed"
    ),
    **dict.fromkeys(("NonFiniteGradientError", "NonFiniteLossError"), "loop"),
    **dict.fromkeys(("BitLoss", "bit_cross_entropy"), "losses"),
    **dict.fromkeys(("apply_lr_wd", "lr_factor", "peak_lr", "weight_decay_at"), "lr_schedule"),
    **dict.fromkeys(("param_groups",), "transformer_trainer"),
    **dict.fromkeys(
        ("LaplacianPyramidLoss", "PatchDiscriminator", "bsq_entropy_and_commitment"), "vae_losses"
    ),
}


def __getattr__(name: str) -> object:
    """Forward a name moved off the front door to its module, with a DeprecationWarning naming the new import."""
    module = _MOVED.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    warnings.warn(
        f"infinity_train.{name} is deprecated; import it from infinity_train.{module} "
        "(the package's front door keeps only its main API)",
        DeprecationWarning,
        stacklevel=2,
    )
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
