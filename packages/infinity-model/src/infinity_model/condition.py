"""Packed variable-length text features (the T5 prompt rows the transformer is conditioned on)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["TextCondition", "pack_padded", "packed_positions", "unpack_to_padded"]


@dataclass
class TextCondition:
    """A batch of prompts as packed rows: sample b owns rows [cu_seqlens[b], cu_seqlens[b+1]).

    features: (sum_len, C) float; lengths: (B,) integer, every length >= 1 (a T5 prompt always has </s>).
    """

    features: Tensor
    lengths: Tensor

    def __post_init__(self) -> None:
        if self.features.ndim != 2:
            raise ValueError(
                f"TextCondition.features must be (sum_len, C), got shape {tuple(self.features.shape)}; "
                "use TextCondition.from_padded for (B, N, C) features"
            )
        lengths = torch.as_tensor(self.lengths)
        if lengths.ndim != 1 or lengths.dtype.is_floating_point or lengths.dtype == torch.bool:
            raise ValueError(f"TextCondition.lengths must be a 1-D integer tensor, got {lengths!r}")
        self.lengths = lengths.to(torch.int64)
        if self.lengths.numel() == 0:
            raise ValueError("TextCondition needs at least one prompt (lengths is empty)")
        if int(self.lengths.min()) < 1:
            raise ValueError(
                f"TextCondition: every prompt needs >= 1 row, got lengths {self.lengths.tolist()}"
            )
        total = int(self.lengths.sum())
        if total != self.features.shape[0]:
            raise ValueError(
                f"TextCondition: lengths sum to {total} but features has {self.features.shape[0]} rows"
            )

    @property
    def batch_size(self) -> int:
        return int(self.lengths.numel())

    @property
    def max_len(self) -> int:
        return int(self.lengths.max())

    @property
    def cu_seqlens(self) -> Tensor:
        """int32 prefix sums with a leading 0, length B + 1, on the device of `features` (flash-attn layout)."""
        cu = torch.zeros(self.batch_size + 1, dtype=torch.int32)
        cu[1:] = torch.cumsum(self.lengths.cpu(), 0)
        return cu.to(self.features.device)

    @classmethod
    def from_padded(cls, features: Tensor, mask: Tensor) -> TextCondition:
        """Pack (B, N, C) features, keeping the rows where mask (B, N) is true, in order."""
        if features.ndim != 3 or mask.shape != features.shape[:2]:
            raise ValueError(
                f"from_padded expects features (B, N, C) and mask (B, N); got {tuple(features.shape)} "
                f"and {tuple(mask.shape)}"
            )
        mask = mask.to(device=features.device, dtype=torch.bool)
        return cls(features=features[mask], lengths=mask.sum(1).cpu())

    @staticmethod
    def concat(*conditions: TextCondition) -> TextCondition:
        """Batch-concatenate (e.g. [cond; uncond] for classifier-free guidance)."""
        if not conditions:
            raise ValueError("TextCondition.concat needs at least one condition")
        return TextCondition(
            features=torch.cat([c.features for c in conditions], 0),
            lengths=torch.cat([c.lengths.cpu() for c in conditions], 0),
        )

    def split(self) -> list[TextCondition]:
        """One TextCondition per sample."""
        rows = self.features.split(self.lengths.tolist(), 0)
        return [TextCondition(r, self.lengths[i : i + 1]) for i, r in enumerate(rows)]

    def select(self, indices: Sequence[int]) -> TextCondition:
        parts = self.split()
        return TextCondition.concat(*(parts[i] for i in indices))

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> TextCondition:
        return TextCondition(self.features.to(device=device, dtype=dtype), self.lengths)

    def to_padded(self) -> tuple[Tensor, Tensor]:
        """(B, max_len, C) zero-padded features and the (B, max_len) bool mask of real rows."""
        return unpack_to_padded(self.features, self.lengths, self.max_len)


def packed_positions(lengths: Tensor, device: torch.device | str) -> tuple[Tensor, Tensor]:
    """For every packed row: (sample index, position inside its sample), both int64 on `device`."""
    lengths = lengths.to(torch.int64).cpu()
    sample = torch.repeat_interleave(torch.arange(lengths.numel()), lengths)
    starts = torch.cumsum(lengths, 0) - lengths
    pos = torch.arange(int(lengths.sum())) - starts[sample]
    return sample.to(device), pos.to(device)


def unpack_to_padded(packed: Tensor, lengths: Tensor, max_len: int) -> tuple[Tensor, Tensor]:
    """Scatter packed rows (sum_len, *rest) into (B, max_len, *rest) zeros plus a (B, max_len) bool mask."""
    sample, pos = packed_positions(lengths, packed.device)
    batch = int(lengths.numel())
    flat = sample * max_len + pos
    out = packed.new_zeros((batch * max_len, *packed.shape[1:])).index_copy_(0, flat, packed)
    mask = torch.zeros(batch * max_len, dtype=torch.bool, device=packed.device)
    mask[flat] = True
    return out.view(batch, max_len, *packed.shape[1:]), mask.view(batch, max_len)


def pack_padded(padded: Tensor, lengths: Tensor) -> Tensor:
    """Inverse of unpack_to_padded: (B, N, *rest) -> (sum_len, *rest) keeping the first len_b rows."""
    sample, pos = packed_positions(lengths, padded.device)
    return padded[sample, pos]
