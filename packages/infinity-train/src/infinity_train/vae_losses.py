"""Losses of BSQ-VAE training: reconstruction, perceptual, BSQ entropy/commitment, patch-GAN hinge + LeCam."""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "LaplacianPyramidLoss",
    "PatchDiscriminator",
    "TorchScriptPerceptualLoss",
    "bsq_entropy_and_commitment",
    "build_perceptual_loss",
    "disc_hinge_loss",
    "lecam_regularizer",
]


class PatchDiscriminator(nn.Module):
    """PatchGAN discriminator: stride-2 4×4 convs with GroupNorm + LeakyReLU(0.2), one logit per patch.

    GroupNorm instead of BatchNorm so the statistics do not depend on how the batch is split over ranks.
    """

    def __init__(self, in_channels: int = 3, channels: int = 64, layers: int = 3) -> None:
        super().__init__()
        mods: list[nn.Module] = [nn.Conv2d(in_channels, channels, 4, 2, 1), nn.LeakyReLU(0.2)]
        ch = channels
        for i in range(1, layers + 1):
            out = channels * min(2**i, 8)
            stride = 2 if i < layers else 1
            mods += [
                nn.Conv2d(ch, out, 4, stride, 1, bias=False),
                nn.GroupNorm(min(32, out), out),
                nn.LeakyReLU(0.2),
            ]
            ch = out
        mods.append(nn.Conv2d(ch, 1, 4, 1, 1))
        self.net = nn.Sequential(*mods)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, 0.0, 0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def disc_hinge_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    return F.relu(1.0 - real_logits).mean() + F.relu(1.0 + fake_logits).mean()


def lecam_regularizer(
    real_logits: torch.Tensor, fake_logits: torch.Tensor, ema_real: float, ema_fake: float
) -> torch.Tensor:
    """LeCam regularisation: keeps D's outputs near the EMA of its outputs on the other kind of input."""
    return F.relu(real_logits - ema_fake).pow(2).mean() + F.relu(ema_real - fake_logits).pow(2).mean()


def bsq_entropy_and_commitment(
    z: torch.Tensor, inv_temperature: float = 100.0, gamma: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """BSQ's entropy penalty and commitment loss of encoder latents ``z`` (B, d, H, W).

    u = z/‖z‖ per position; bit probabilities are the analytic ``sigmoid(4·u·inv_temperature/√d)`` (the
    factorised soft assignment of BSQ); entropy = mean per-position bit entropy − γ·entropy of the mean bit
    distribution (low per-sample entropy = confident codes, high codebook entropy = all codes used).
    commitment = ‖u − sign(u)/√d‖² averaged over positions.
    """
    d = z.shape[1]
    u = F.normalize(z.float(), dim=1, eps=1e-12)
    p1 = torch.sigmoid(4.0 * u * inv_temperature / math.sqrt(d))  # P(bit = 1), (B, d, H, W)

    def bit_entropy(p: torch.Tensor) -> torch.Tensor:
        return -(p * torch.log(p.clamp_min(1e-8)) + (1 - p) * torch.log((1 - p).clamp_min(1e-8)))

    per_sample = bit_entropy(p1).sum(1).mean()
    codebook = bit_entropy(p1.mean(dim=(0, 2, 3))).sum()
    entropy = per_sample - gamma * codebook
    s = 1.0 / math.sqrt(d)
    q = torch.where(u > 0, s, -s).detach()
    commitment = (u - q).pow(2).sum(1).mean()
    return entropy, commitment


class LaplacianPyramidLoss(nn.Module):
    """Fallback perceptual loss with no learned weights: L1 between Laplacian pyramids (5 levels).

    It weights edges and textures at every scale, the part of perception a pixel L1 misses most; use a real
    feature network (``perceptual_path``) for LPIPS-like behaviour.
    """

    kernel: torch.Tensor  # registered buffer: the 5x5 binomial filter, one copy per RGB channel

    def __init__(self, levels: int = 5) -> None:
        super().__init__()
        self.levels = levels
        k = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0])
        k = torch.outer(k, k) / 256.0
        self.register_buffer("kernel", k.expand(3, 1, 5, 5).clone(), persistent=False)

    def _blur(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(F.pad(x, (2, 2, 2, 2), mode="reflect"), self.kernel.to(x.dtype), groups=x.shape[1])

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        loss = x.new_zeros(())
        for i in range(self.levels):
            if min(x.shape[-2:]) < 4:
                break
            bx, by = self._blur(x), self._blur(y)
            loss = loss + (x - bx - (y - by)).abs().mean() * (2.0**i)
            x, y = F.avg_pool2d(bx, 2), F.avg_pool2d(by, 2)
        return loss + (x - y).abs().mean()


class TorchScriptPerceptualLoss(nn.Module):
    """LPIPS-style distance on a user-provided frozen TorchScript network mapping [-1, 1] images to features
    (a tensor or a list/tuple of tensors (B, C, h, w)): channel-normalised squared differences, averaged."""

    def __init__(self, path: str | Path) -> None:
        super().__init__()
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(
                f"tokenizer_model.perceptual_path {path} does not exist (a TorchScript .pt file)"
            )
        self.net = torch.jit.load(str(path), map_location="cpu").eval()
        for p in self.net.parameters():
            p.requires_grad_(False)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        fx, fy = self.net(x), self.net(y)
        if isinstance(fx, torch.Tensor):
            fx, fy = [fx], [fy]
        loss = x.new_zeros(())
        for a, b in zip(fx, fy, strict=True):
            a = a / (a.norm(dim=1, keepdim=True) + 1e-10)
            b = b / (b.norm(dim=1, keepdim=True) + 1e-10)
            loss = loss + (a - b).pow(2).sum(1).mean()
        return loss


def build_perceptual_loss(path: str) -> nn.Module:
    return TorchScriptPerceptualLoss(path) if path else LaplacianPyramidLoss()
