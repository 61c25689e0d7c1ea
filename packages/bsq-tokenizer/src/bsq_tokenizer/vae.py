"""The BSQ-VAE: a Flux-style convolutional encoder/decoder around the multi-scale bitwise quantizer.

Module and attribute names reproduce the released state-dict keys exactly (including the ``.conv`` / ``.norm``
wrapper levels and the quantizer registered under both ``quantizer`` and ``quantize``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .config import VAEConfig, group_count
from .image import check_multiple
from .quantizer import MultiScaleBSQ, QuantizeOutput, codes_from_bits

__all__ = ["BSQVAE", "Decoder", "Encoder"]


def _swish(x: Tensor) -> Tensor:
    return x * torch.sigmoid(x)


class Conv(nn.Module):
    """Wrapper holding ``.conv`` (an ``nn.Conv2d``); 5-D ``(B, C, T, H, W)`` inputs are folded into the batch."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int, stride: int = 1, padding: int = 0) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, kernel, stride=stride, padding=padding)

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() == 5:
            b, c, t, h, w = x.shape
            y = self.conv(x.permute(0, 2, 1, 3, 4).reshape(b * t, c, h, w))
            return y.reshape(b, t, *y.shape[1:]).permute(0, 2, 1, 3, 4)
        return self.conv(x)


class Norm(nn.Module):
    """Wrapper holding ``.norm``: GroupNorm (32 groups if C % 32 == 0 else 24, or ``norm_groups``), eps 1e-6,
    affine; per frame for 5-D."""

    def __init__(self, channels: int, norm_groups: int | None = None) -> None:
        super().__init__()
        self.norm = nn.GroupNorm(group_count(channels, norm_groups), channels, eps=1e-6, affine=True)

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() == 5:
            b, c, t, h, w = x.shape
            y = self.norm(x.permute(0, 2, 1, 3, 4).reshape(b * t, c, h, w))
            return y.reshape(b, t, c, h, w).permute(0, 2, 1, 3, 4)
        return self.norm(x)


class ResnetBlock(nn.Module):
    """h = conv2(swish(norm2(conv1(swish(norm1(x)))))); out = shortcut(x) + h (1x1 shortcut when widths differ)."""

    def __init__(self, in_ch: int, out_ch: int, norm_groups: int | None = None) -> None:
        super().__init__()
        self.norm1 = Norm(in_ch, norm_groups)
        self.conv1 = Conv(in_ch, out_ch, 3, padding=1)
        self.norm2 = Norm(out_ch, norm_groups)
        self.conv2 = Conv(out_ch, out_ch, 3, padding=1)
        self.nin_shortcut = Conv(in_ch, out_ch, 1) if in_ch != out_ch else None

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv1(_swish(self.norm1(x)))
        h = self.conv2(_swish(self.norm2(h)))
        shortcut = self.nin_shortcut(x) if self.nin_shortcut is not None else x
        return shortcut + h


class Downsample(nn.Module):
    """Zero-pad right and bottom by one, then a stride-2 3x3 convolution without padding."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = Conv(channels, channels, 3, stride=2, padding=0)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1), mode="constant", value=0.0))


class Upsample(nn.Module):
    """Nearest-neighbour x2, then a 3x3 convolution with padding 1."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = Conv(channels, channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class _Level(nn.Module):
    """One resolution level: ``block`` (ResnetBlocks), an always-empty ``attn`` list, optional resampler."""

    def __init__(self, blocks: list[ResnetBlock]) -> None:
        super().__init__()
        self.block = nn.ModuleList(blocks)
        self.attn = nn.ModuleList()

    def forward(self, h: Tensor) -> Tensor:
        """The level's blocks, then its ``downsample`` (encoder) or ``upsample`` (decoder) if it has one."""
        for block in self.block:
            h = block(h)
        for name in ("downsample", "upsample"):
            resample = self._modules.get(name)
            if resample is not None:
                h = resample(h)
        return h


class _Mid(nn.Module):
    def __init__(self, channels: int, norm_groups: int | None = None) -> None:
        super().__init__()
        self.block_1 = ResnetBlock(channels, channels, norm_groups)
        self.block_2 = ResnetBlock(channels, channels, norm_groups)

    def forward(self, x: Tensor) -> Tensor:
        return self.block_2(self.block_1(x))


class Encoder(nn.Module):
    """Image ``(B, 3, H, W)`` -> continuous latent ``(B, d, H/stride, W/stride)``."""

    def __init__(self, config: VAEConfig) -> None:
        super().__init__()
        ch, mult = config.ch, config.ch_mult
        self.conv_in = Conv(config.in_channels, ch, 3, padding=1)
        in_mult = (1, *mult)
        self.down = nn.ModuleList()
        for level, m in enumerate(mult):
            block_in, block_out = ch * in_mult[level], ch * m
            blocks = [
                ResnetBlock(block_in if i == 0 else block_out, block_out, config.norm_groups)
                for i in range(config.num_res_blocks)
            ]
            stage = _Level(blocks)
            if level < config.num_downsamples:
                stage.downsample = Downsample(block_out)
            self.down.append(stage)
        top = ch * mult[-1]
        self.mid = _Mid(top, config.norm_groups)
        self.norm_out = Norm(top, config.norm_groups)
        self.conv_out = Conv(top, config.codebook_dim, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv_in(x)
        for stage in self.down:
            h = stage(h)
        h = self.mid(h)
        return self.conv_out(_swish(self.norm_out(h)))


class Decoder(nn.Module):
    """Latent code ``(B, d, h, w)`` -> image ``(B, 3, h*stride, w*stride)`` (not clamped)."""

    def __init__(self, config: VAEConfig) -> None:
        super().__init__()
        ch, mult = config.ch, config.ch_mult
        block_in = ch * mult[-1]
        self.conv_in = Conv(config.codebook_dim, block_in, 3, padding=1)
        self.mid = _Mid(block_in, config.norm_groups)
        stages: list[_Level] = []
        for level in reversed(range(len(mult))):
            block_out = ch * mult[level]
            blocks = []
            for _ in range(config.num_res_blocks + 1):
                blocks.append(ResnetBlock(block_in, block_out, config.norm_groups))
                block_in = block_out
            stage = _Level(blocks)
            if 1 <= level <= config.num_downsamples:
                stage.upsample = Upsample(block_out)
            stages.append(stage)
        self.up = nn.ModuleList(reversed(stages))  # up[l] is level l; applied from the last level to 0
        self.norm_out = Norm(ch * mult[0], config.norm_groups)
        self.conv_out = Conv(ch * mult[0], config.out_channels, 3, padding=1)

    def forward(self, z: Tensor) -> Tensor:
        h = self.mid(self.conv_in(z))
        for stage in reversed(self.up):
            h = stage(h)
        return self.conv_out(_swish(self.norm_out(h)))


class BSQVAE(nn.Module):
    """Encoder + multi-scale BSQ + decoder. Images are ``(B, 3, H, W)`` in [-1, 1], H and W multiples of the stride.

    Scales are given on the VAE latent grid (for the patchified 8B tokenizer that is the transformer grid
    doubled: ``schedule.vae_scales(patchify=True)``); ``None`` selects the tokenizer's default schedule.
    """

    def __init__(self, config: VAEConfig) -> None:
        super().__init__()
        self.config = config
        self.encoder = Encoder(config)
        self.decoder = Decoder(config)
        self.quantizer = MultiScaleBSQ(config.codebook_dim)
        self.quantize = self.quantizer  # the reference stores the same module under both names

    @property
    def _dtype(self) -> torch.dtype:
        return self.encoder.conv_in.conv.weight.dtype

    @property
    def stride(self) -> int:
        return self.config.patch_size

    def check_image(self, img: Tensor) -> None:
        """Raise ValueError unless ``img`` is (B, in_channels, H, W) with H, W multiples of the stride."""
        c = self.config.in_channels
        if img.dim() != 4 or img.shape[1] != c:
            raise ValueError(f"images must have shape (B, {c}, H, W), got {tuple(img.shape)}")
        check_multiple(int(img.shape[3]), int(img.shape[2]), self.stride)

    def encode(self, img: Tensor) -> Tensor:
        """Image in [-1, 1] ``(B, 3, H, W)`` -> continuous latent ``z (B, d, H/stride, W/stride)``."""
        self.check_image(img)
        return self.encoder(img.to(self._dtype))

    def encode_to_bits(self, img: Tensor, scales: Sequence[Sequence[int]] | None = None) -> QuantizeOutput:
        """Image -> summed straight-through code ``(B, d, h, w)`` and per-scale bits ``(B, h_k, w_k, d)``."""
        return self.quantizer.quantize(self.encode(img), scales)

    def decode(self, codes: Tensor) -> Tensor:
        """Latent code ``(B, d, h, w)`` -> image clamped to [-1, 1]."""
        d = self.config.codebook_dim
        if codes.dim() != 4 or codes.shape[1] != d:
            raise ValueError(f"codes must have shape (B, {d}, h, w), got {tuple(codes.shape)}")
        return self.decoder(codes.to(self._dtype)).clamp(-1, 1)

    def decode_from_bits(
        self, bits: Sequence[Tensor], scales: Sequence[Sequence[int]] | None = None
    ) -> Tensor:
        """Per-scale bits ``(B, h_k, w_k, d)`` -> image: sum of the up-sampled normalised codes, decoded and clamped.

        ``scales`` is optional; when given it must match the bit tensors' grids.
        """
        bits = list(bits)
        if not bits:
            raise ValueError("decode_from_bits needs at least one scale of bits")
        d = self.config.codebook_dim
        for k, b in enumerate(bits):
            if b.dim() != 4 or b.shape[-1] != d:
                raise ValueError(f"bits[{k}] must have shape (B, h, w, {d}), got {tuple(b.shape)}")
        if scales is not None:
            grids = [tuple(int(v) for v in s)[-2:] for s in scales]
            got = [(int(b.shape[1]), int(b.shape[2])) for b in bits]
            if grids != got:
                raise ValueError(f"bit tensors have grids {got} but scales {grids} were given")
        return self.decode(codes_from_bits(bits))

    def forward(
        self, img: Tensor, scales: Sequence[Sequence[int]] | None = None
    ) -> tuple[Tensor, QuantizeOutput]:
        """Training-style pass: (unclamped reconstruction, quantizer output)."""
        out = self.encode_to_bits(img, scales)
        return self.decoder(out.codes.to(self._dtype)), out
