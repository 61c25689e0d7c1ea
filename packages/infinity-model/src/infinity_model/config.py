"""Configuration of the Infinity transformer: one frozen dataclass with the released presets."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

__all__ = ["PRESETS", "VAE_FOR_BITS", "InfinityConfig"]

# Which official BSQ-VAE produces `d_vae` bits per transformer token (see bsq_tokenizer presets).
VAE_FOR_BITS: dict[tuple[int, bool], str] = {
    (16, False): "d16",
    (24, False): "d24",
    (32, False): "d32 / d32reg",
    (64, False): "d64",
    (56, True): "d14_patchify",
}


@dataclass(frozen=True)
class InfinityConfig:
    """Architecture of one Infinity transformer (official `infinity/models/infinity.py`, the `infinity_2b` … model functions).

    Only fields that change the computation or the state-dict layout live here; the fixed settings of all
    released models (shared AdaLN, cosine attention, star RoPE, bitwise head, ...) are built in.
    """

    depth: int
    embed_dim: int
    num_heads: int
    mlp_ratio: float = 4.0
    d_vae: int = 32  # bits per transformer token (56 for the patchified 8B: 14 VAE bits x 2x2)
    block_chunks: int = 1  # only changes key names: block n is block_chunks.{n // per}.module.{n % per}
    text_channels: int = 2048  # T5 width (flan-t5-xl)
    text_maxlen: int = 512  # rows of cfg_uncond
    drop_path_rate: float = 0.1
    patchify: bool = False  # tokens are 2x2 space-to-depth of a stride-8 VAE grid (8B)
    num_levels: int = 15  # rows of lvl_embed (maximal number of scales)
    norm_eps: float = 1e-6
    pool_heads: int | None = None  # None: the reference rule text_channels // (64 if C > 4096 else 128)
    rope_base: float = 10000.0

    def __post_init__(self) -> None:
        if self.depth < 1 or self.embed_dim < 1 or self.num_heads < 1:
            raise ValueError(f"InfinityConfig: depth/embed_dim/num_heads must be positive, got {self}")
        if self.embed_dim % self.num_heads:
            raise ValueError(
                f"InfinityConfig: embed_dim={self.embed_dim} is not divisible by num_heads={self.num_heads}"
            )
        if self.head_dim % 4:
            raise ValueError(
                f"InfinityConfig: head_dim={self.head_dim} must be a multiple of 4 for the 2D RoPE "
                "(row and column halves of rotation pairs); change embed_dim or num_heads"
            )
        if self.block_chunks < 1 or self.depth % self.block_chunks:
            raise ValueError(
                f"InfinityConfig: depth={self.depth} must be a multiple of block_chunks={self.block_chunks}"
            )
        if self.patchify and self.d_vae % 4:
            raise ValueError(
                f"InfinityConfig: patchify=True needs d_vae divisible by 4, got d_vae={self.d_vae}"
            )
        hp = self.pool_num_heads
        if hp < 1 or self.embed_dim % hp:
            raise ValueError(
                f"InfinityConfig: the text pool needs embed_dim={self.embed_dim} divisible by pool heads={hp} "
                f"(text_channels={self.text_channels}); set pool_heads explicitly for small test models"
            )
        if self.ffn_dim < 1:
            raise ValueError(f"InfinityConfig: FFN width rounds to 0 for embed_dim={self.embed_dim}")

    # ----------------------------------------------------------------------------------------- derived
    @property
    def head_dim(self) -> int:
        return self.embed_dim // self.num_heads

    @property
    def ffn_dim(self) -> int:
        """FFN hidden width: round(C * mlp_ratio / 256) * 256 with round-half-to-even (layer32 -> 8192)."""
        return round(self.embed_dim * self.mlp_ratio / 256) * 256

    @property
    def pool_num_heads(self) -> int:
        if self.pool_heads is not None:
            return self.pool_heads
        return self.text_channels // (64 if self.embed_dim > 4096 else 128)

    @property
    def vae_channels(self) -> int:
        """Bits per VAE latent position (d_vae / 4 for the patchified 8B)."""
        return self.d_vae // 4 if self.patchify else self.d_vae

    @property
    def blocks_per_chunk(self) -> int:
        return self.depth // self.block_chunks

    @property
    def vae_name(self) -> str:
        return VAE_FOR_BITS.get((self.d_vae, self.patchify), f"a {self.vae_channels}-bit VAE")

    # -------------------------------------------------------------------------------------- presets
    @classmethod
    def preset(cls, name: str, **overrides: Any) -> InfinityConfig:
        """A released/registered architecture by name ("2b", "8b", "layer12", ..., "infinity_2b", "2bc8").

        A trailing `cN` (training-script style, e.g. "layer12c4") sets block_chunks = N.
        """
        key = name.lower().removeprefix("infinity_")
        chunks: int | None = None
        if key not in PRESETS and "c" in key:
            base, _, suffix = key.rpartition("c")
            if suffix.isdigit() and base in PRESETS:
                key, chunks = base, int(suffix)
        if key not in PRESETS:
            raise ValueError(f"unknown Infinity preset {name!r}; choose one of {sorted(PRESETS)}")
        config = PRESETS[key]
        if chunks is not None:
            config = replace(config, block_chunks=chunks)
        return replace(config, **overrides) if overrides else config

    # ----------------------------------------------------------------------------------------- JSON
    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> InfinityConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(
                f"InfinityConfig.from_dict: unknown fields {unknown}; known fields are {sorted(known)}"
            )
        return cls(**data)

    def to_json(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def from_json(cls, path: str | Path) -> InfinityConfig:
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ValueError(f"cannot read Infinity config {path}: {exc}") from exc
        return cls.from_dict(data)


def _layer(depth: int, width: int, heads: int) -> InfinityConfig:
    return InfinityConfig(depth=depth, embed_dim=width, num_heads=heads, block_chunks=4)


PRESETS: dict[str, InfinityConfig] = {
    "layer12": _layer(12, 768, 8),
    "layer16": _layer(16, 1152, 12),
    "layer24": _layer(24, 1536, 16),
    "layer32": _layer(32, 2080, 20),
    "layer40": _layer(40, 2688, 24),
    "layer48": _layer(48, 3360, 28),
    "2b": InfinityConfig(depth=32, embed_dim=2048, num_heads=16, block_chunks=8),
    "8b": InfinityConfig(depth=40, embed_dim=3584, num_heads=28, block_chunks=8, d_vae=56, patchify=True),
    # registered in the reference without released weights (constructor default: no chunking, keys blocks.N)
    "20b": InfinityConfig(depth=58, embed_dim=4608, num_heads=36, block_chunks=1, drop_path_rate=0.25),
}
