"""Training of the Infinity transformer: frozen BSQ-VAE + text encoder → BSC → bit-label CE (official `trainer.py`, `train_step`)."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from .bsc import bitwise_self_correction
from .checkpoint import load_strict
from .config import BSCConfig, RunConfig
from .distributed import DistInfo, build_ds_config, create_engine
from .ema import EMA
from .loop import TrainLoop
from .losses import bit_cross_entropy
from .lr_schedule import apply_lr_wd, peak_lr

if TYPE_CHECKING:
    from bsq_tokenizer import BSQVAE
    from infinity_model import Infinity

__all__ = [
    "TransformerTrainer",
    "build_infinity_config",
    "init_from_official",
    "load_frozen_vae",
    "param_groups",
    "schedule_for",
    "text_condition_from_batch",
]

log = logging.getLogger(__name__)

# BSC of the reference's validation-loss script (official `validation_loss.py` defaults).
VALIDATION_BSC = BSCConfig(noise_apply_layers=20, noise_apply_strength=0.2, requant=True)

# Parameter-name fragments of the no-weight-decay group (official `lr_control.py`, ``--nowd 1``).
_NO_DECAY_NAMES = (
    "cls_token",
    "start_token",
    "task_token",
    "cfg_uncond",
    "pos_embed",
    "pos_1LC",
    "pos_start",
    "start_pos",
    "lvl_embed",
    "gamma",
    "beta",
    "ada_gss",
    "moe_bias",
    "scale_mul",
    "text_proj_for_sos.ca.mat_q",
)


def param_groups(model: nn.Module) -> list[dict[str, Any]]:
    """Decay / no-decay AdamW groups: 1-D params, biases and the spec's named parameters get no decay."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        if param.ndim <= 1 or name.endswith("bias") or any(n in name for n in _NO_DECAY_NAMES):
            no_decay.append(param)
        else:
            decay.append(param)
    return [
        {"params": decay, "wd_scale": 1.0, "lr_scale": 1.0},
        {"params": no_decay, "wd_scale": 0.0, "lr_scale": 1.0},
    ]


def schedule_for(config: RunConfig, template: float):
    """Scale schedule of a batch: ``data.scales`` (square, template 1.0) when set, else the ``data.pn`` one."""
    from bsq_tokenizer import get_schedule
    from bsq_tokenizer.schedules import custom_schedule

    if config.data.scales:
        if abs(template - 1.0) > 1e-6:
            raise ValueError(
                f"data.scales is a square schedule but a batch has template {template}; use data.pn"
            )
        return custom_schedule(config.data.scales, 1.0, name="custom")
    return get_schedule(template, config.data.pn)


def build_infinity_config(config: RunConfig):
    """``InfinityConfig`` of the run: the preset with ``transformer_model.overrides`` applied (strictly)."""
    from dataclasses import fields

    from infinity_model import InfinityConfig

    mc = config.transformer_model
    known = {f.name for f in fields(InfinityConfig)}
    bad = sorted(set(mc.overrides) - known)
    if bad:
        raise ValueError(
            f"transformer_model.overrides: unknown InfinityConfig field(s) {bad}; known: {sorted(known)}"
        )
    try:
        return InfinityConfig.preset(mc.preset, **mc.overrides)
    except TypeError as exc:
        raise ValueError(f"transformer_model.overrides {mc.overrides}: {exc}") from exc


def load_frozen_vae(path: str, preset: str, overrides: dict[str, Any], device: torch.device) -> BSQVAE:
    """The frozen tokenizer: an official ``.pth`` (strict, with ``vae_preset``) or a ``save_vae`` output."""
    from bsq_tokenizer import VAEConfig, load_official_vae, load_vae

    if not path:
        raise ValueError("transformer_model.vae_path is empty; point it at the BSQ-VAE checkpoint")
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"transformer_model.vae_path {p} does not exist")
    if p.suffix == ".pth":
        vae = load_official_vae(p, VAEConfig.preset(preset).replace(**overrides))
    else:
        vae = load_vae(p)
    return vae.to(device).eval().requires_grad_(False)


def init_from_official(model: Infinity, path: str) -> None:
    """Fine-tuning start: copy an official checkpoint into ``model`` strictly (same architecture required)."""
    from infinity_model import load_official_infinity

    loaded = load_official_infinity(path, model.config, dtype=torch.float32)
    load_strict(model, loaded.state_dict())
    log.info("initialised the transformer from %s (strict)", path)


def text_condition_from_batch(batch: dict[str, Any], precomputed: bool, encoder: Any, device: torch.device):
    """Packed T5 features of a batch: the shards' precomputed rows (``t5_features``: list of (L_i, C)) or the
    online encoder's output for ``captions``."""
    from infinity_model import TextCondition

    if precomputed:
        feats = batch.get("t5_features")
        if feats is None:
            raise KeyError(
                "data.use_precomputed_text is true but the batch has no 't5_features' (some sample of "
                f"{batch.get('keys', '?')} has none); write the shards with T5 features or set it to false"
            )
        if isinstance(feats, TextCondition):
            return feats.to(device)
        rows = [torch.as_tensor(f).float() for f in feats]
        lengths = torch.tensor([r.shape[0] for r in rows], dtype=torch.int64)
        return TextCondition(torch.cat(rows, 0), lengths).to(device)
    return encoder.encode(list(batch["captions"])).to(device)


class TransformerTrainer(TrainLoop):
    """DeepSpeed training of ``infinity_model.Infinity`` with BSC inputs and the spec's loss."""

    def __init__(
        self,
        config: RunConfig,
        dist: DistInfo,
        loader: Any,
        val_loader: Any | None = None,
        *,
        vae: BSQVAE | None = None,
        text_encoder: Any | None = None,
    ) -> None:
        super().__init__(config, dist, loader, val_loader)
        from infinity_model import Infinity

        mc = config.transformer_model
        self.model_config = build_infinity_config(config)
        torch.manual_seed(config.seed)  # identical init on every rank
        model = Infinity(self.model_config)
        if config.checkpoint.init_from:
            init_from_official(model, config.checkpoint.init_from)
        else:
            model.init_weights(generator=torch.Generator().manual_seed(config.seed))
        if config.transformer.activation_checkpointing:
            model.set_gradient_checkpointing(True)
        torch.manual_seed(config.seed * 7919 + dist.rank)  # per-rank stream for drop path
        self.vae = (
            vae
            if vae is not None
            else load_frozen_vae(mc.vae_path, mc.vae_preset, mc.vae_overrides, dist.device)
        )
        self._latent_cache: dict[tuple[str, tuple[int, ...]], torch.Tensor] = {}
        self.text_encoder = text_encoder
        if text_encoder is None and not config.data.use_precomputed_text:
            if not mc.text_encoder_path:
                raise ValueError(
                    "transformer_model.text_encoder_path is empty and data.use_precomputed_text is false; "
                    "give the local T5 folder or train on shards with precomputed T5 features"
                )
            from infinity_model import TextEncoder

            self.text_encoder = TextEncoder.from_pretrained(mc.text_encoder_path, device=dist.device)
        world_batch = config.data.batch_size * dist.world_size
        self.lr_peak = peak_lr(config.optim, world_batch)
        optimizer = torch.optim.AdamW(
            param_groups(model),
            lr=self.lr_peak,
            betas=config.optim.betas,
            eps=config.optim.eps,
            weight_decay=0.0,
        )
        self.engines = {"model": create_engine(model, optimizer, build_ds_config(config))}
        self.ema = (
            EMA(self.engine.module, config.transformer.ema_decay)
            if config.transformer.ema_decay > 0
            else None
        )
        self.try_resume()

    # ------------------------------------------------------------------------------------ pieces
    @property
    def engine(self) -> Any:
        return self.engines["model"]

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.config.deepspeed.precision == "bf16":
            return torch.autocast(self.dist.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _attention_kernel(self) -> contextlib.AbstractContextManager:
        """SDPA kernel choice of ``transformer.attention_backend`` (the backward follows the forward's kernel)."""
        if self.config.transformer.attention_backend == "math":
            from torch.nn.attention import SDPBackend, sdpa_kernel

            return sdpa_kernel(SDPBackend.MATH)
        return contextlib.nullcontext()

    def _encode(self, images: torch.Tensor, keys: Sequence[str] | None) -> torch.Tensor:
        """The frozen VAE's fp32 latents of ``images``; with ``data.cache_latents``, encoded once per training key.

        The loader's crops are deterministic and the VAE is frozen, so a key's latent never changes; only the
        images missing from the cache go through the encoder (a cached latent may come from another batch
        composition, which can differ from a fresh encode in the last float bits).
        """
        if not self.config.data.cache_latents or keys is None:
            return self.vae.encode(images).float()
        hw = tuple(images.shape[-2:])
        names = [(key, hw) for key in keys]
        missing = [i for i, name in enumerate(names) if name not in self._latent_cache]
        if missing:
            fresh = self.vae.encode(images[missing]).float()
            for j, i in enumerate(missing):
                self._latent_cache[names[i]] = fresh[j].clone()
        return torch.stack([self._latent_cache[name] for name in names])

    def text_condition(self, batch: dict[str, Any]):
        return text_condition_from_batch(
            batch, self.config.data.use_precomputed_text, self.text_encoder, self.dist.device
        )

    def forward_loss(
        self,
        batch: dict[str, Any],
        generator: torch.Generator,
        train: bool,
        bsc_config: BSCConfig | None = None,
        levels: Callable[[int], int] | None = None,
    ):
        """BSC + teacher-forced forward + loss of one batch; returns (BitLoss, number of tokens).

        ``levels`` replaces BSC's flip-probability draw (see ``bitwise_self_correction``)."""
        cfg = self.config
        images = batch["images"].to(self.dist.device, torch.float32)
        schedule = schedule_for(cfg, float(batch["template"]))
        if tuple(images.shape[-2:]) != tuple(schedule.pixel_hw):
            raise ValueError(
                f"batch images are {tuple(images.shape[-2:])} but the {schedule.pn} schedule of template "
                f"{batch['template']} needs {schedule.pixel_hw}; the loader's data.pn must match"
            )
        patchify = self.model_config.patchify
        with torch.no_grad():
            latent = self._encode(images, batch.get("keys") if train else None)
            bsc = bitwise_self_correction(
                latent,
                schedule.vae_scales(patchify),
                self.vae.quantizer.lfq,
                bsc_config or cfg.transformer.bsc,
                generator,
                patchify=patchify,
                levels=levels,
            )
        text = self.text_condition(batch)
        b = images.shape[0]
        cond_drop = None
        if train and cfg.transformer.cond_drop_rate > 0:
            cond_drop = torch.rand(b, generator=generator) < cfg.transformer.cond_drop_rate
        with self._autocast(), self._attention_kernel():
            logits = self.engine(text, bsc.inputs.to(self.dist.device), schedule, cond_drop)
        out = bit_cross_entropy(
            logits.float(),
            bsc.labels.to(self.dist.device),
            schedule.scales,
            reweight=cfg.transformer.reweight_loss_by_scale,
            label_smoothing=cfg.transformer.label_smoothing,
            reduction=cfg.transformer.bitloss,
        )
        return out, b * schedule.seq_len

    # ------------------------------------------------------------------------------------ hooks
    def micro_step(self, batch: dict[str, Any], it: int) -> dict[str, Any] | None:
        self.engine.train()
        out, tokens = self.forward_loss(batch, self.generator, train=True)
        if not self.all_finite(out.loss):
            return None
        apply_lr_wd(self.engine.optimizer, self.config.optim, it, self.lr_peak)
        self.engine.backward(out.loss)
        boundary = self.engine.is_gradient_accumulation_boundary()
        self.optimizer_step(self.engine, "model")
        if self.ema is not None and boundary:
            self.ema.update(self.engine.module)
        metrics: dict[str, Any] = {
            "loss": out.loss.item(),
            "bit_acc": out.bit_acc,
            "token_acc": out.token_acc,
            "lr": self.engine.optimizer.param_groups[0]["lr"],
            "tokens": tokens,
            "samples": int(batch["images"].shape[0]),
        }
        for k, value in enumerate(out.per_scale_loss):
            metrics[f"loss_s{k:02d}"] = value
        return metrics

    @property
    def validation_seed(self) -> int:
        """Seed of the validation flips on this rank: ``seed + 12345 + rank``."""
        return self.config.seed + 12345 + self.dist.rank

    @torch.no_grad()
    def validation_metrics(self, batches: Iterable[dict[str, Any]]) -> dict[str, float]:
        """Validation loss as the reference's validation_loss.py: BSC-corrupted inputs (20 layers, strength 0.2,
        requant), no condition dropout, and its flip source (flip probabilities from a legacy numpy
        ``RandomState``, masks from a torch CPU generator), both seeded with ``validation_seed`` so every
        validation sees the same corruption and equals ``infinity-eval val-loss --seed`` of that seed."""
        self.engine.eval()
        seed = self.validation_seed
        gen = torch.Generator().manual_seed(seed)
        np_rng = np.random.RandomState(seed)
        sums: dict[str, float] = {}
        n = 0
        for batch in batches:
            out, _ = self.forward_loss(
                batch, gen, train=False, bsc_config=VALIDATION_BSC, levels=np_rng.randint
            )
            for key, value in (
                ("loss", out.loss.item()),
                ("bit_acc", out.bit_acc),
                ("token_acc", out.token_acc),
            ):
                sums[key] = sums.get(key, 0.0) + value
            n += 1
        self.engine.train()
        if n == 0:
            return {}
        return self.mean_over_ranks({k: v / n for k, v in sums.items()})

    def save_extra_files(self, ckpt_dir: Path) -> None:
        self.model_config.to_json(ckpt_dir / "model_config.json")
        if self.ema is not None:
            from bsq_tokenizer.safetensors_io import save_safetensors

            save_safetensors(self.ema.state_dict(), ckpt_dir / "ema.safetensors")

    def load_extra_files(self, ckpt_dir: Path) -> None:
        from infinity_model import InfinityConfig

        stored = InfinityConfig.from_json(ckpt_dir / "model_config.json")
        if stored != self.model_config:
            raise ValueError(
                f"checkpoint {ckpt_dir} holds a different model ({stored}) than this run's config "
                f"({self.model_config}); use another run_dir or the matching transformer_model settings"
            )
        if self.ema is not None:
            from bsq_tokenizer.safetensors_io import load_safetensors

            path = ckpt_dir / "ema.safetensors"
            if not path.is_file():
                raise FileNotFoundError(
                    f"{path} missing: EMA is enabled but the checkpoint has no EMA weights"
                )
            self.ema.load_state_dict(load_safetensors(path))
