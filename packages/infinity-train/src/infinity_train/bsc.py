"""Bitwise self-correction: transformer inputs + bit labels from a raw VAE latent (official `infinity/models/bitwise_self_correction.py`, `flip_requant`).

Scales are re-quantised against the accumulation of earlier scales whose bits were randomly flipped, so the
labels of scale k teach the model to correct the (corrupted) prediction of scales < k.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from bsq_tokenizer import BSQ, area_resize, bits_to_codes, trilinear_resize

from .config import BSCConfig

__all__ = ["BSCOutput", "bitwise_self_correction"]


@dataclass(frozen=True)
class BSCOutput:
    """inputs: (B, L−1, d') transformer inputs of scales 1..K−1; labels: (B, L, d') clean bits of every scale.

    ``noisy_bits`` / ``flip_probs`` record what was fed forward (per scale, VAE side (B, h, w, d)) for tests and logs.
    """

    inputs: torch.Tensor
    labels: torch.Tensor
    noisy_bits: list[torch.Tensor]
    flip_probs: list[float]


def _tokens(x: torch.Tensor, patchify: bool) -> torch.Tensor:
    """(B, d, h, w) map → (B, h·w, d) row-major tokens (space-to-depth ×2 first when patchified)."""
    if patchify:
        x = F.pixel_unshuffle(x, 2)  # channel c*4 + dy*2 + dx
    return x.flatten(2).transpose(1, 2)


@torch.no_grad()
def bitwise_self_correction(
    latent: torch.Tensor,
    vae_scales: Sequence[tuple[int, int]],
    bsq: BSQ,
    config: BSCConfig,
    generator: torch.Generator,
    *,
    patchify: bool = False,
) -> BSCOutput:
    """Run BSC on ``latent`` (B, d, H, W) raw encoder output, VAE-side ``vae_scales`` ending at (H, W).

    ``bsq`` is the tokenizer's single-scale quantizer (``vae.quantizer.lfq``).

    Randomness: per noisy scale one integer draw for the flip probability then one ``torch.rand`` of the bit
    shape, both from ``generator`` (a CPU generator owned by the trainer, saved in checkpoints).
    """
    b, d, big_h, big_w = latent.shape
    if tuple(vae_scales[-1]) != (big_h, big_w):
        raise ValueError(f"last scale {vae_scales[-1]} must equal the latent grid {(big_h, big_w)}")
    with torch.autocast(device_type=latent.device.type, enabled=False):
        feats = latent.float().unsqueeze(2)  # (B, d, 1, H, W)
        accumulated = torch.zeros_like(feats)
        num_scales = len(vae_scales)
        levels = math.floor(100 * config.noise_apply_strength)
        inputs, labels, noisy_all, probs = [], [], [], []
        for k, (h, w) in enumerate(vae_scales):
            residual = feats - accumulated
            if k < num_scales - 1:
                residual = area_resize(residual, (h, w))
            code, bits = bsq(
                residual
            )  # straight-through code (B, d, 1, h, w); clean bits (B, h, w, d) = labels
            labels.append(_tokens(bits.permute(0, 3, 1, 2), patchify))
            noisy = bits
            p = 0.0
            if k < config.noise_apply_layers and config.noise_apply_strength >= 0:
                p = int(torch.randint(0, levels + 1, (1,), generator=generator).item()) * 0.01
                flip = torch.rand(bits.shape, generator=generator, dtype=torch.float32) < p
                noisy = bits ^ flip.to(device=bits.device, dtype=bits.dtype)
                if config.requant:
                    code = bits_to_codes(noisy)
            noisy_all.append(noisy)
            probs.append(p)
            accumulated = accumulated + trilinear_resize(code, (big_h, big_w))
            if k < num_scales - 1:
                nxt = trilinear_resize(accumulated, tuple(vae_scales[k + 1]))
                inputs.append(_tokens(nxt.squeeze(2), patchify))
        d_tok = d * 4 if patchify else d
        x = torch.cat(inputs, 1) if inputs else latent.new_zeros(b, 0, d_tok)
        y = torch.cat(labels, 1)
    return BSCOutput(inputs=x, labels=y, noisy_bits=noisy_all, flip_probs=probs)
