"""Bitwise self-correction: transformer inputs + bit labels from a raw VAE latent (official `infinity/models/bitwise_self_correction.py`, `flip_requant`).

Scales are re-quantised against the accumulation of earlier scales whose bits were randomly flipped, so the
labels of scale k teach the model to correct the (corrupted) prediction of scales < k. The residual loop is
bsq-tokenizer's ``residual_quantize`` (residual recomputed as latent - accumulation, as the reference does).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial

import torch
import torch.nn.functional as F
from bsq_tokenizer.quantizer import BSQ, RandomBitFlips, bits_to_codes, residual_quantize

from .config import BSCConfig

__all__ = ["BSCOutput", "EditRegions", "bitwise_self_correction"]


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


class EditRegions:
    """Edit regions of ``BSCConfig.region_*``: another image's coarse codes inside a random box.

    Per image, with probability ``prob``, one box (sides ``size`` of the image's, uniform) is drawn once from
    ``generator``, centred on a latent token drawn with weight its distance from the image's median token
    (where the content is: an edit masks an object, rarely bare background). On scales k < ``layers`` the summed codes inside the box (the tokens of
    the full grid whose cells touch it) take the next image's fed code of that scale instead of the image's
    own (a batch of one takes random bits), composed on the full grid as the sampler composes an edit
    (``EditSource``); the residual is then recomputed, so the later scales' labels rebuild the image inside
    the box: what inpainting asks of the model when the region's coarse codes disagree with the caption.
    """

    def __init__(
        self,
        latent: torch.Tensor,
        prob: float,
        layers: int,
        size: tuple[float, float],
        generator: torch.Generator,
    ) -> None:
        self.layers = layers
        self.generator = generator
        batch, _, height, width = latent.shape
        self.on = torch.rand(batch, generator=generator) < prob
        side = size[0] + (size[1] - size[0]) * torch.rand(batch, 2, generator=generator)  # (h, w) fractions
        # centred on content: a token drawn with weight its latent's distance from the image's median token
        # (+1e-6, so a flat image draws uniformly); a uniform box mostly covers background
        flat = latent.detach().float().cpu().flatten(2)  # (B, d, H*W)
        weight = (flat - flat.median(dim=2, keepdim=True).values).norm(dim=1) + 1e-6
        token = torch.multinomial(weight, 1, generator=generator)[:, 0]
        centre = torch.stack([(token // width + 0.5) / height, (token % width + 0.5) / width], 1)
        start = (centre - side / 2).clamp(min=0.0)
        start = torch.minimum(start, 1.0 - side)
        self.boxes = torch.cat([start, start + side], 1)  # (B, 4): y0, x0, y1, x1 as fractions

    def cells(self, h: int, w: int) -> torch.Tensor:
        """(B, h, w) bool: tokens whose cell [i/h, (i+1)/h) x [j/w, (j+1)/w) overlaps an active box."""
        ys, xs = torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32)
        y0, x0, y1, x1 = (self.boxes[:, i, None] for i in range(4))
        rows = (ys[None] / h < y1) & ((ys[None] + 1) / h > y0)  # (B, h)
        cols = (xs[None] / w < x1) & ((xs[None] + 1) / w > x0)  # (B, w)
        return rows[:, :, None] & cols[:, None, :] & self.on[:, None, None]

    other_bits: list[torch.Tensor] | None = None  # per scale < layers (B, h, w, d): used instead of the roll

    def keep_masks(self, grids: Sequence[tuple[int, int]]) -> tuple[torch.Tensor, ...]:
        """Per grid (B, h, w) bool, True outside the box: an ``EditSource`` keep-mask regenerating the box."""
        return tuple(~self.cells(h, w) for h, w in grids)

    def __call__(
        self, k: int, fed: torch.Tensor, full: tuple[int, int]
    ) -> tuple[torch.Tensor, torch.Tensor] | None:
        if k >= self.layers or not bool(self.on.any()):
            return None
        if self.other_bits is not None:
            other = self.other_bits[k].to(fed.device, fed.dtype)
        elif fed.shape[0] > 1:
            other = fed.roll(1, dims=0)
        else:
            other = (torch.rand(tuple(fed.shape), generator=self.generator) < 0.5).to(fed.device, fed.dtype)
        box = self.cells(*full).to(fed.device)
        return bits_to_codes(other), (~box).float()[:, None, None]


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
    regions: EditRegions | None = None,
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
    compose = None
    if regions is None and config.region_prob > 0:  # region_prob = 0 draws nothing: the reference's draws
        regions = EditRegions(latent, config.region_prob, config.region_layers, config.region_size, generator)
    if regions is not None:
        compose = partial(regions, full=(big_h, big_w))
    out = residual_quantize(
        latent,
        vae_scales,
        bsq,
        flip=flips,
        compose=compose,
        requant=config.requant,
        next_inputs=True,
        residual="recompute",
    )
    labels = torch.cat([_tokens(bits.permute(0, 3, 1, 2), patchify) for bits in out.bits], 1)
    d_tok = d * 4 if patchify else d
    inputs = [_tokens(x, patchify) for x in out.next_inputs]
    x = torch.cat(inputs, 1) if inputs else latent.new_zeros(b, 0, d_tok)
    return BSCOutput(inputs=x, labels=labels, noisy_bits=out.fed_bits, flip_probs=flips.probs)
