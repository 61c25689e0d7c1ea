"""Training of the BSQ-VAE: reconstruction + perceptual + BSQ entropy/commitment + patch GAN with warm-up."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from .checkpoint import load_strict
from .config import RunConfig
from .distributed import DistInfo, build_ds_config, create_engine
from .ema import EMA
from .loop import TrainLoop
from .lr_schedule import apply_lr_wd, peak_lr
from .vae_losses import (
    PatchDiscriminator,
    bsq_entropy_and_commitment,
    build_perceptual_loss,
    disc_hinge_loss,
    lecam_regularizer,
)

__all__ = ["TokenizerTrainer", "build_vae_config"]

log = logging.getLogger(__name__)


def build_vae_config(config: RunConfig):
    from dataclasses import fields

    from bsq_tokenizer import VAEConfig

    tc = config.tokenizer_model
    known = {f.name for f in fields(VAEConfig)}
    bad = sorted(set(tc.overrides) - known)
    if bad:
        raise ValueError(
            f"tokenizer_model.overrides: unknown VAEConfig field(s) {bad}; known: {sorted(known)}"
        )
    overrides = {k: tuple(v) if isinstance(v, list) else v for k, v in tc.overrides.items()}
    return VAEConfig.preset(tc.preset).replace(**overrides)


class TokenizerTrainer(TrainLoop):
    """Two DeepSpeed engines on one loader: the VAE ("vae", main) and the discriminator ("disc")."""

    def __init__(self, config: RunConfig, dist: DistInfo, loader: Any, val_loader: Any | None = None) -> None:
        super().__init__(config, dist, loader, val_loader)
        from bsq_tokenizer import BSQVAE

        self.vae_config = build_vae_config(config)
        if config.tokenizer_model.channels_last and config.deepspeed.zero_stage != 0:
            raise ValueError(
                f"tokenizer_model.channels_last needs deepspeed.zero_stage = 0 (got {config.deepspeed.zero_stage}): "
                "ZeRO-1/2/3 keep the parameters as views of flat buffers, which NHWC copies would detach"
            )
        torch.manual_seed(config.seed)
        vae = BSQVAE(self.vae_config)
        if config.checkpoint.init_from:
            self._init_from(vae, config.checkpoint.init_from)
        disc = PatchDiscriminator(3, config.tokenizer_model.disc_channels, config.tokenizer_model.disc_layers)
        torch.manual_seed(config.seed * 7919 + dist.rank)
        self.perceptual = build_perceptual_loss(config.tokenizer_model.perceptual_path).to(dist.device)
        world_batch = config.data.batch_size * dist.world_size
        self.lr_peak = peak_lr(config.optim, world_batch)
        vae_opt = torch.optim.AdamW(
            [{"params": [p for p in vae.parameters() if p.requires_grad], "wd_scale": 1.0}],
            lr=self.lr_peak,
            betas=config.optim.betas,
            eps=config.optim.eps,
            weight_decay=0.0,
        )
        lc = config.tokenizer_loss
        disc_opt = torch.optim.Adam(disc.parameters(), lr=lc.disc_lr, betas=lc.disc_betas)
        self.engines = {
            "vae": create_engine(vae, vae_opt, build_ds_config(config)),
            "disc": create_engine(disc, disc_opt, build_ds_config(config)),
        }
        if config.tokenizer_model.channels_last:
            # after the engines: DeepSpeed's initial parameter broadcast views each tensor as contiguous bytes.
            # Module.to swaps param.data in place, so the optimizers keep the same parameters.
            for engine in self.engines.values():
                engine.module.to(memory_format=torch.channels_last)
        self.ema = (
            EMA(self.vae_engine.module, config.transformer.ema_decay)
            if config.transformer.ema_decay > 0
            else None
        )
        self.lecam_real = 0.0
        self.lecam_fake = 0.0
        self.try_resume()

    @property
    def vae_engine(self) -> Any:
        return self.engines["vae"]

    @property
    def disc_engine(self) -> Any:
        return self.engines["disc"]

    def _init_from(self, vae: torch.nn.Module, path: str) -> None:
        from bsq_tokenizer import load_official_vae, load_vae

        p = Path(path)
        loaded = load_official_vae(p, self.vae_config) if p.suffix == ".pth" else load_vae(p)
        if loaded.config != self.vae_config:
            raise ValueError(f"{p} holds VAE {loaded.config}, the run config asks for {self.vae_config}")
        load_strict(vae, loaded.state_dict())

    def _scales(self, template: float, latent_hw: tuple[int, int]) -> list[tuple[int, int]]:
        """VAE-side quantizer schedule: ``data.scales`` when set, else the batch's (template, ``data.pn``) one."""
        from .transformer_trainer import schedule_for

        scales = list(schedule_for(self.config, template).vae_scales(self.vae_config.patchify))
        if tuple(scales[-1]) != tuple(latent_hw):
            raise ValueError(
                f"the schedule for template {template} at data.pn={self.config.data.pn!r} ends at {scales[-1]}, "
                f"but the VAE's latent is {latent_hw}; set data.scales to a schedule ending at the latent size"
            )
        return scales

    def _images(self, batch: dict[str, Any]) -> torch.Tensor:
        """The batch's images on the device in fp32 (NHWC strides with ``tokenizer_model.channels_last``)."""
        images = batch["images"].to(self.dist.device, torch.float32)
        if self.config.tokenizer_model.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return images

    def _autocast(self):
        if self.config.deepspeed.precision == "bf16":
            return torch.autocast(self.dist.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _forward_vae(self, images: torch.Tensor, template: float) -> tuple[torch.Tensor, torch.Tensor]:
        """(encoder latent z, unclamped reconstruction); the quantizer runs in fp32.

        Submodules are called directly (ZeRO-3 gathers parameters per submodule through its hooks)."""
        vae = self.vae_engine.module
        dtype = next(vae.parameters()).dtype
        with self._autocast():
            z = vae.encoder(images.to(dtype)).float()
        quant = vae.quantizer.quantize(z, self._scales(template, (z.shape[-2], z.shape[-1])))
        with self._autocast():
            recon = vae.decoder(quant.codes.to(dtype)).float()
        return z, recon

    def _gan_on(self, it: int) -> bool:
        lc = self.config.tokenizer_loss
        return lc.gan_weight > 0 and it >= lc.disc_start

    # ------------------------------------------------------------------------------------ hooks
    def micro_step(self, batch: dict[str, Any], it: int) -> dict[str, Any] | None:
        cfg, lc = self.config, self.config.tokenizer_loss
        images = self._images(batch)
        self.vae_engine.train()
        z, recon = self._forward_vae(images, float(batch["template"]))
        rec_l1 = (recon - images).abs().mean()
        rec_l2 = (recon - images).pow(2).mean()
        perceptual = self.perceptual(recon, images) if lc.perceptual_weight > 0 else recon.new_zeros(())
        entropy, commitment = bsq_entropy_and_commitment(z, lc.entropy_inv_temperature)
        loss = (
            lc.l1_weight * rec_l1
            + lc.l2_weight * rec_l2
            + lc.perceptual_weight * perceptual
            + lc.entropy_weight * entropy
            + lc.commitment_weight * commitment
        )
        gan_on = self._gan_on(it)
        gen_adv = recon.new_zeros(())
        if gan_on:
            disc = self.disc_engine.module
            disc.requires_grad_(False)  # the generator loss must not write gradients into D
            with self._autocast():
                gen_adv = -disc(recon).float().mean()
            disc.requires_grad_(True)
            loss = loss + lc.gan_weight * gen_adv
        if not self.all_finite(loss):
            return None
        apply_lr_wd(self.vae_engine.optimizer, cfg.optim, it, self.lr_peak)
        boundary = self.vae_engine.is_gradient_accumulation_boundary()
        self.vae_engine.backward(loss)
        self.optimizer_step(self.vae_engine, "vae")
        if self.ema is not None and boundary:
            self.ema.update(self.vae_engine.module)
        metrics: dict[str, Any] = {
            "loss": loss.item(),
            "rec_l1": rec_l1.item(),
            "rec_mse": rec_l2.item(),
            "perceptual": float(perceptual.item()),
            "entropy": entropy.item(),
            "commitment": commitment.item(),
            "gen_adv": float(gen_adv.item()),
            "lr": self.vae_engine.optimizer.param_groups[0]["lr"],
            "tokens": int(images.shape[0] * images.shape[-1] * images.shape[-2]),  # pixels
            "samples": int(images.shape[0]),
        }
        if gan_on:
            self.disc_engine.train()
            with self._autocast():
                real = self.disc_engine(images).float()
                fake = self.disc_engine(recon.detach()).float()
            d_loss = disc_hinge_loss(real, fake)
            if lc.lecam_weight > 0:
                d_loss = d_loss + lc.lecam_weight * lecam_regularizer(
                    real, fake, self.lecam_real, self.lecam_fake
                )
            # the D loss is finite whenever the G loss was (same inputs); a NaN here still skips the D step
            if self.all_finite(d_loss):
                self.disc_engine.backward(d_loss)
                self.optimizer_step(self.disc_engine, "disc")
                decay = lc.lecam_decay
                self.lecam_real = decay * self.lecam_real + (1 - decay) * real.detach().mean().item()
                self.lecam_fake = decay * self.lecam_fake + (1 - decay) * fake.detach().mean().item()
                metrics["disc_loss"] = d_loss.item()
        return metrics

    @torch.no_grad()
    def validation_metrics(self, batches: Iterable[dict[str, Any]]) -> dict[str, float]:
        self.vae_engine.eval()
        sums = {"rec_l1": 0.0, "rec_mse": 0.0, "psnr": 0.0}
        n = 0
        for batch in batches:
            images = self._images(batch)
            _, recon = self._forward_vae(images, float(batch["template"]))
            recon = recon.clamp(-1, 1)
            mse = F.mse_loss(recon, images).item()
            sums["rec_l1"] += (recon - images).abs().mean().item()
            sums["rec_mse"] += mse
            sums["psnr"] += 10 * torch.log10(torch.tensor(4.0 / max(mse, 1e-12))).item()
            n += 1
        self.vae_engine.train()
        return self.mean_over_ranks({k: v / n for k, v in sums.items()}) if n else {}

    def extra_state(self) -> dict[str, Any]:
        return {"lecam_real": self.lecam_real, "lecam_fake": self.lecam_fake}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self.lecam_real = float(state["lecam_real"])
        self.lecam_fake = float(state["lecam_fake"])

    def save_extra_files(self, ckpt_dir: Path) -> None:
        self.vae_config.to_json(ckpt_dir / "vae_config.json")
        if self.ema is not None:
            from bsq_tokenizer.safetensors_io import save_safetensors

            save_safetensors(self.ema.state_dict(), ckpt_dir / "ema.safetensors")

    def load_extra_files(self, ckpt_dir: Path) -> None:
        from bsq_tokenizer import VAEConfig

        stored = VAEConfig.from_json(ckpt_dir / "vae_config.json")
        if stored != self.vae_config:
            raise ValueError(
                f"checkpoint {ckpt_dir} holds a different VAE ({stored}) than this run's config ({self.vae_config}); "
                "use another run_dir or the matching tokenizer_model settings"
            )
        if self.ema is not None:
            from bsq_tokenizer.safetensors_io import load_safetensors

            self.ema.load_state_dict(load_safetensors(ckpt_dir / "ema.safetensors"))
