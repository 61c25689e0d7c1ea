"""Checks of a run config that need the file system or the model packages, run before any process group exists.

``load_run_config`` already rejects unknown keys, wrong types and out-of-range values. What remains (a data
folder or weights file that is not there, an override naming no model field, an unknown preset) would otherwise
surface only after the launcher, the process group and DeepSpeed have started, minutes later on a slow machine.
Every message names the config file and the dotted key.
"""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path
from typing import Any

from infinity_data.storage import is_url  # URLs (object stores, HTTP) are passed on as given

from .config import ConfigError, RunConfig

__all__ = ["check_run_config"]


def _check_shards(value: str, key: str, source: str, *, required: bool) -> None:
    if not value:
        if required:
            raise ConfigError(
                f"{source}: key '{key}' is empty; set it to the output folder of `infinity-data convert`"
            )
        return
    if is_url(value):
        return
    path = Path(value).expanduser()
    if not path.exists():
        raise ConfigError(
            f"{source}: key '{key}' = {value!r}: {path} does not exist; convert images with "
            f"`infinity-data convert <images> {value}` or fix the path"
        )
    if not path.is_dir():
        raise ConfigError(
            f"{source}: key '{key}' = {value!r} is a file; give the folder written by `infinity-data convert`"
        )


def _check_file(value: str, key: str, source: str, what: str, *, required: bool) -> None:
    if not value:
        if required:
            raise ConfigError(f"{source}: key '{key}' is empty; point it at {what}")
        return
    if not Path(value).expanduser().exists():
        raise ConfigError(f"{source}: key '{key}' = {value!r} does not exist; point it at {what}")


def _check_overrides(cls: type, overrides: dict[str, Any], key: str, source: str) -> None:
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ConfigError(
            f"{source}: key '{key}.{unknown[0]}' is not a {cls.__name__} field; known fields: "
            f"{', '.join(sorted(known))}"
        )


def _check_transformer(config: RunConfig, source: str) -> None:
    from bsq_tokenizer import VAEConfig
    from infinity_model import InfinityConfig

    mc = config.transformer_model
    _check_overrides(InfinityConfig, mc.overrides, "transformer_model.overrides", source)
    _check_overrides(VAEConfig, mc.vae_overrides, "transformer_model.vae_overrides", source)
    try:
        InfinityConfig.preset(mc.preset, **mc.overrides)
    except (ValueError, TypeError, KeyError) as exc:
        raise ConfigError(
            f"{source}: key 'transformer_model.preset' = {mc.preset!r} with these overrides: {exc}"
        ) from exc
    try:
        VAEConfig.preset(mc.vae_preset)
    except (ValueError, KeyError) as exc:
        raise ConfigError(f"{source}: key 'transformer_model.vae_preset': {exc}") from exc
    _check_file(
        mc.vae_path,
        "transformer_model.vae_path",
        source,
        "the frozen BSQ-VAE (an official .pth or a `save_vae` output)",
        required=True,
    )
    if not mc.text_encoder_path and not config.data.use_precomputed_text:
        raise ConfigError(
            f"{source}: key 'transformer_model.text_encoder_path' is empty and data.use_precomputed_text is "
            "false; give the local T5 folder or train on shards with precomputed T5 features"
        )


def _check_tokenizer(config: RunConfig, source: str) -> None:
    from bsq_tokenizer import VAEConfig

    tc = config.tokenizer_model
    _check_overrides(VAEConfig, tc.overrides, "tokenizer_model.overrides", source)
    try:
        VAEConfig.preset(tc.preset)
    except (ValueError, KeyError) as exc:
        raise ConfigError(f"{source}: key 'tokenizer_model.preset': {exc}") from exc
    _check_file(
        tc.perceptual_path,
        "tokenizer_model.perceptual_path",
        source,
        "a TorchScript feature network (or leave it empty for the Laplacian fallback)",
        required=False,
    )


def check_run_config(config: RunConfig, source: str) -> None:
    """Raise :class:`ConfigError` for a run that cannot start: data, weights, overrides and presets.

    Local paths must exist; ``scheme://`` shard locations are accepted as given (the loader opens them).
    """
    _check_shards(config.data.shards, "data.shards", source, required=True)
    _check_shards(config.data.val_shards, "data.val_shards", source, required=False)
    init_what = "an official checkpoint to fine-tune from (or leave it empty)"
    _check_file(config.checkpoint.init_from, "checkpoint.init_from", source, init_what, required=False)
    if config.task == "transformer":
        _check_transformer(config, source)
    else:
        _check_tokenizer(config, source)
