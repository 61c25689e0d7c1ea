"""infinity_train: DeepSpeed (ZeRO 0/2/3) training of the Infinity transformer and of its BSQ-VAE tokenizer.

The CLI (``infinity-train``) wraps :func:`train`; everything it does is available here as a Python API.
"""

from .bsc import BSCOutput, bitwise_self_correction
from .config import (
    BSCConfig,
    CheckpointConfig,
    ConfigError,
    DataConfig,
    DeepSpeedConfig,
    LoggingConfig,
    OptimConfig,
    RunConfig,
    TokenizerLossConfig,
    TokenizerModelConfig,
    TransformerModelConfig,
    TransformerTrainConfig,
    config_from_dict,
    config_to_dict,
    load_run_config,
    save_run_config,
)
from .data import build_loader
from .distributed import DistInfo, build_ds_config, init_distributed, shutdown_distributed
from .ema import EMA
from .errors import InfinityTrainError
from .export import consolidated_state_dict, export_checkpoint
from .loop import NonFiniteGradientError, NonFiniteLossError, TrainLoop
from .losses import BitLoss, bit_cross_entropy
from .lr_schedule import apply_lr_wd, lr_factor, peak_lr, weight_decay_at
from .runner import train
from .tokenizer_trainer import TokenizerTrainer
from .transformer_trainer import TransformerTrainer, param_groups
from .vae_losses import LaplacianPyramidLoss, PatchDiscriminator, bsq_entropy_and_commitment

__all__ = [
    "EMA",
    "BSCConfig",
    "BSCOutput",
    "BitLoss",
    "CheckpointConfig",
    "ConfigError",
    "DataConfig",
    "DeepSpeedConfig",
    "DistInfo",
    "InfinityTrainError",
    "LaplacianPyramidLoss",
    "LoggingConfig",
    "NonFiniteGradientError",
    "NonFiniteLossError",
    "OptimConfig",
    "PatchDiscriminator",
    "RunConfig",
    "TokenizerLossConfig",
    "TokenizerModelConfig",
    "TokenizerTrainer",
    "TrainLoop",
    "TransformerModelConfig",
    "TransformerTrainConfig",
    "TransformerTrainer",
    "apply_lr_wd",
    "bit_cross_entropy",
    "bitwise_self_correction",
    "bsq_entropy_and_commitment",
    "build_ds_config",
    "build_loader",
    "config_from_dict",
    "config_to_dict",
    "consolidated_state_dict",
    "export_checkpoint",
    "init_distributed",
    "load_run_config",
    "lr_factor",
    "param_groups",
    "peak_lr",
    "save_run_config",
    "shutdown_distributed",
    "train",
    "weight_decay_at",
]

from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as _dist_version

try:
    __version__ = _dist_version("infinity-train")  # one source of truth: the version in pyproject.toml
except PackageNotFoundError:  # imported from a source tree that is not installed
    __version__ = "0+unknown"
