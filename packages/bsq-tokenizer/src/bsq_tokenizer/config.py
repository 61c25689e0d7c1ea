"""``VAEConfig``: the hyper-parameters of a BSQ-VAE, with named presets for every released checkpoint."""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any, overload

__all__ = ["VAE_PRESETS", "VAEConfig"]


def group_count(channels: int, norm_groups: int | None = None) -> int:
    """GroupNorm groups: ``norm_groups`` when set, else the reference's rule (32 if C % 32 == 0 else 24)."""
    if norm_groups is not None:
        return norm_groups
    return 32 if channels % 32 == 0 else 24


@dataclass(frozen=True)
class VAEConfig:
    """Architecture of a Flux-style BSQ-VAE (no attention, no quant convs).

    ``codebook_dim`` = d = bits per latent position; ``patch_size`` = spatial stride (2 ** number of
    down-sampling levels); ``patchify`` marks the 8B tokenizer whose transformer tokens are 2x2
    space-to-depth groups of latent positions (4 * d bits per token). ``norm_groups`` = None keeps the
    reference's GroupNorm rule (32 groups if C % 32 == 0 else 24); an int fixes the group count, for narrow
    models whose layers would otherwise normalise single channels (the weights' shapes do not change).
    """

    codebook_dim: int = 32
    ch: int = 128
    ch_mult: tuple[int, ...] = (1, 2, 4, 4, 4)
    num_res_blocks: int = 2
    in_channels: int = 3
    out_channels: int = 3
    patch_size: int = 16
    patchify: bool = False
    norm_groups: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "ch_mult", tuple(int(m) for m in self.ch_mult))
        if self.codebook_dim < 1:
            raise ValueError(f"codebook_dim must be >= 1, got {self.codebook_dim}")
        if self.ch < 1 or not self.ch_mult or min(self.ch_mult) < 1:
            raise ValueError(f"ch and ch_mult must be positive, got ch={self.ch}, ch_mult={self.ch_mult}")
        if self.num_res_blocks < 1:
            raise ValueError(f"num_res_blocks must be >= 1, got {self.num_res_blocks}")
        levels = self.num_downsamples
        if self.patch_size < 1 or 2**levels != self.patch_size:
            raise ValueError(f"patch_size must be a power of two, got {self.patch_size}")
        if levels > len(self.ch_mult) - 1:
            raise ValueError(
                f"patch_size {self.patch_size} needs {levels} down-sampling levels but ch_mult={self.ch_mult} "
                f"only allows {len(self.ch_mult) - 1}; use a longer ch_mult or a smaller patch_size"
            )
        if self.norm_groups is not None and self.norm_groups < 1:
            raise ValueError(f"norm_groups must be None or >= 1, got {self.norm_groups}")
        for c in sorted({self.ch * m for m in self.ch_mult}):
            groups = self.groups_for(c)
            if c % groups:
                rule = f"norm_groups={self.norm_groups}" if self.norm_groups else "32 (or 24)"
                raise ValueError(
                    f"channel count {c} (ch={self.ch} x ch_mult) must be divisible by {rule} for GroupNorm; "
                    "use ch = 32, 64, 128, ... or a norm_groups that divides every width"
                )

    def groups_for(self, channels: int) -> int:
        """GroupNorm group count for a layer of ``channels`` in this model."""
        return group_count(channels, self.norm_groups)

    @property
    def num_downsamples(self) -> int:
        return max(self.patch_size, 1).bit_length() - 1

    @property
    def bits_per_token(self) -> int:
        """Bits per transformer token: d, or 4d for the 2x2-patchified tokenizer."""
        return 4 * self.codebook_dim if self.patchify else self.codebook_dim

    @property
    def token_stride(self) -> int:
        """Pixels per transformer token: the VAE stride, doubled when patchified."""
        return 2 * self.patch_size if self.patchify else self.patch_size

    @classmethod
    def preset(cls, name: str) -> VAEConfig:
        """A released configuration: one of d16, d24, d32, d32reg, d64, d14_patchify."""
        if name not in VAE_PRESETS:
            raise ValueError(f"unknown VAE preset {name!r}; available presets: {', '.join(VAE_PRESETS)}")
        return VAE_PRESETS[name]

    @classmethod
    def from_vae_type(cls, vae_type: int) -> VAEConfig:
        """The configuration the reference inference loader builds for ``--vae_type`` (14, 16, 18, 20, 24, 32, 64).

        14 is the stride-8 patchified 8B tokenizer; the others share the stride-16 architecture (18 and 20 have
        no released weights).
        """
        if vae_type == 14:
            return VAE_PRESETS["d14_patchify"]
        if vae_type in (16, 18, 20, 24, 32, 64):
            return cls(codebook_dim=vae_type)
        raise ValueError(
            f"unknown vae_type {vae_type!r}; accepted: 14, 16, 18, 20, 24, 32, 64 (presets: {', '.join(VAE_PRESETS)})"
        )

    def replace(self, **changes: Any) -> VAEConfig:
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["ch_mult"] = list(self.ch_mult)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> VAEConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown VAEConfig fields {sorted(unknown)}; known fields: {sorted(known)}")
        values = dict(data)
        if "ch_mult" in values:
            values["ch_mult"] = tuple(values["ch_mult"])
        return cls(**values)

    @overload
    def to_json(self, path: str | os.PathLike[str]) -> Path: ...
    @overload
    def to_json(self, path: None = None) -> str: ...
    def to_json(self, path: str | os.PathLike[str] | None = None) -> Path | str:
        """Write the config as JSON to ``path`` (``config.json`` in a :func:`save_vae` folder) and return it.

        Without ``path`` (deprecated, removed in the next minor version) it returns the JSON text; use
        ``json.dumps(config.to_dict())`` for that.
        """
        if path is None:
            warnings.warn(
                "VAEConfig.to_json() without a path is deprecated; it writes a file like InfinityConfig.to_json. "
                "Use json.dumps(config.to_dict()) for the text.",
                DeprecationWarning,
                stacklevel=2,
            )
            return json.dumps(self.to_dict(), sort_keys=True)
        path = Path(path)
        path.write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n")
        return path

    @classmethod
    def from_json(cls, path: str | os.PathLike[str]) -> VAEConfig:
        """Read a config written by :meth:`to_json`; raises ValueError naming the file when it is not valid.

        Given JSON text instead of a path (deprecated, removed in the next minor version) it parses the text;
        use ``VAEConfig.from_dict(json.loads(text))`` for that.
        """
        if isinstance(path, str) and path.lstrip().startswith("{"):
            warnings.warn(
                "VAEConfig.from_json(text) is deprecated; it reads a file like InfinityConfig.from_json. "
                "Use VAEConfig.from_dict(json.loads(text)) for text.",
                DeprecationWarning,
                stacklevel=2,
            )
            return cls.from_dict(json.loads(path))
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ValueError(f"cannot read VAE config {path}: {exc}") from exc
        if not isinstance(data, dict):
            raise ValueError(f"VAE config {path} holds a JSON {type(data).__name__}, expected an object")
        return cls.from_dict(data)


VAE_PRESETS: Mapping[str, VAEConfig] = MappingProxyType(
    {
        "d16": VAEConfig(codebook_dim=16),
        "d24": VAEConfig(codebook_dim=24),
        "d32": VAEConfig(codebook_dim=32),
        "d32reg": VAEConfig(codebook_dim=32),
        "d64": VAEConfig(codebook_dim=64),
        "d14_patchify": VAEConfig(codebook_dim=14, ch_mult=(1, 2, 4, 4), patch_size=8, patchify=True),
    }
)
"""Released tokenizers (d32reg / d32_rdn_short share the d32 layout; only their weights differ)."""
