"""Consolidate a DeepSpeed checkpoint (any ZeRO stage) into the weights format the model packages load."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TypeVar

import torch

from .checkpoint import checkpoint_root, find_resume_tag, load_strict, read_torch_file
from .config import config_from_dict

__all__ = ["consolidated_state_dict", "export_checkpoint"]

log = logging.getLogger(__name__)

ModuleT = TypeVar("ModuleT", bound=torch.nn.Module)


def _resolve(run_dir: Path, tag: str | None) -> tuple[Path, str]:
    root = checkpoint_root(run_dir)
    if tag is None:
        tag = find_resume_tag(root)
        if tag is None:
            raise FileNotFoundError(f"{root} has no 'latest' checkpoint; train first or pass --tag")
    if not (root / tag).is_dir():
        raise FileNotFoundError(f"checkpoint {root / tag} does not exist")
    return root, tag


def consolidated_state_dict(save_dir: Path, tag: str, zero_stage: int) -> dict[str, torch.Tensor]:
    """Full fp32 state dict (parameters and buffers, plain names) of one DeepSpeed engine checkpoint."""
    if zero_stage == 0:
        path = save_dir / tag / "mp_rank_00_model_states.pt"
        if not path.is_file():
            raise FileNotFoundError(f"{path} missing: not a ZeRO-0 DeepSpeed checkpoint")
        # memory-mapped: the file also holds the optimizer state (twice the weights for AdamW), never read here
        state = read_torch_file(path)
        return {k: v.float() if v.is_floating_point() else v for k, v in state["module"].items()}
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

    state = get_fp32_state_dict_from_zero_checkpoint(str(save_dir), tag=tag)
    return {k: v.contiguous() for k, v in state.items()}


def _fill_aliases(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Add entries for tensors the model holds under two names (BSQVAE's ``quantizer``/``quantize``): DeepSpeed
    stores a shared tensor once, the model's strict state dict lists it under every name. Works on a meta model
    (tensors are matched by identity, not by storage)."""
    first: dict[int, str] = {}
    for key, value in model.state_dict(keep_vars=True).items():
        canonical = first.setdefault(id(value), key)
        if key not in state and canonical in state and value.numel() > 0:
            state[key] = state[canonical]


def _adopt(model: ModuleT, state: dict[str, torch.Tensor]) -> ModuleT:
    """Give a meta-device ``model`` the tensors of ``state`` (strict, no copy: ``assign=True``)."""
    _fill_aliases(model, state)
    load_strict(model, state, assign=True)
    left = [name for name, t in (*model.named_parameters(), *model.named_buffers()) if t.is_meta]
    if left:
        raise RuntimeError(f"tensors {left[:5]} were not in the checkpoint and have no value (meta device)")
    return model


def export_checkpoint(
    run_dir: str | Path, out: str | Path, *, tag: str | None = None, use_ema: bool = False
) -> Path:
    """Write the trained model of ``run_dir`` to the folder ``out`` (``config.json`` + ``model.safetensors``):
    the transformer through ``save_infinity``, the tokenizer through ``save_vae``."""
    run_dir, out = Path(run_dir), Path(out)
    root, tag = _resolve(run_dir, tag)
    ckpt = root / tag
    # the run's own saved config: exported as trained, even if a value is outside today's accepted range
    config = config_from_dict(
        json.loads((ckpt / "run_config.json").read_text()),
        str(ckpt / "run_config.json"),
        check_ranges=False,
    )
    state = consolidated_state_dict(root, tag, config.deepspeed.zero_stage)
    if use_ema:
        from bsq_tokenizer.safetensors_io import load_safetensors

        ema_path = ckpt / "ema.safetensors"
        if not ema_path.is_file():
            raise FileNotFoundError(f"{ema_path} missing: the run had no EMA (transformer.ema_decay = 0)")
        ema = load_safetensors(ema_path)
        unknown = sorted(set(ema) - set(state))
        if unknown:
            raise KeyError(f"EMA tensors {unknown[:5]} are not in the model state dict of {ckpt}")
        state.update(ema)
    out.mkdir(parents=True, exist_ok=True)
    if config.task == "transformer":
        from infinity_model import Infinity, InfinityConfig, save_infinity

        model_config = InfinityConfig.from_json(ckpt / "model_config.json")
        # built on the meta device: the exported tensors are the consolidated ones, no second random model
        with torch.device("meta"):
            model = Infinity(model_config)
        save_infinity(_adopt(model, state), out)
    else:
        from bsq_tokenizer import BSQVAE, VAEConfig, save_vae

        vae_config = VAEConfig.from_json(ckpt / "vae_config.json")
        with torch.device("meta"):
            vae = BSQVAE(vae_config)
        save_vae(_adopt(vae, state), out)
    log.info("exported %s (%s%s) to %s", ckpt, config.task, ", EMA" if use_ema else "", out)
    return out
