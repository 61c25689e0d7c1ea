"""Bitwise self-correction: transformer inputs + bit labels from a raw VAE latent (official `infinity/models/bitwise_self_correction.py`, `flip_requant`).

Scales are re-quantised against the accumulation of earlier scales whose bits were randomly flipped, so the
labels of scale k teach the model to correct the (corrupted) prediction of scales < k. The residual loop is
bsq-tokenizer's ``residual_quantize`` (residual recomputed as latent - accumulation, as the reference does).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from bsq_tokenizer.quantizer import BSQ, RandomBitFlips, residual_quantize

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
    levels: Callable[[int], int] | None = None,
) -> BSCOutput:
    """Run BSC on ``latent`` (B, d, H, W) raw encoder output, VAE-side ``vae_scales`` ending at (H, W).

    ``bsq`` is the tokenizer's single-scale quantizer (``vae.quantizer.lfq``).

    Randomness: per noisy scale one integer draw for the flip probability then one ``torch.rand`` of the bit
    shape, both from ``generator`` (a CPU generator owned by the trainer, saved in checkpoints); ``levels(n)``
    replaces the integer draw (e.g. a numpy ``RandomState.randint``, as the reference validation-loss script).
    """
    b, d, big_h, big_w = latent.shape
    if tuple(vae_scales[-1]) != (big_h, big_w):
        raise ValueError(f"last scale {vae_scales[-1]} must equal the latent grid {(big_h, big_w)}")
    flips = RandomBitFlips(config.noise_apply_layers, config.noise_apply_strength, generator, levels)
    out = residual_quantize(
        latent,
        vae_scales,
        bsq,
        flip=flips,
        requant=config.requant,
        next_inputs=True,
        residual="recompute",
    )
    labels = torch.cat([_tokens(bits.permute(0, 3, 1, 2), patchify) for bits in out.bits], 1)
    d_tok = d * 4 if patchify else d
    inputs = [_tokens(x, patchify) for x in out.next_inputs]
    x = torch.cat(inputs, 1) if inputs else latent.new_zeros(b, 0, d_tok)
    return BSCOutput(inputs=x, labels=labels, noisy_bits=out.fed_bits, flip_probs=flips.probs)
