"""CLIP for HPSv2 and GenEval's colour classifier, on `transformers.CLIPModel` and its fast BPE tokenizer.

Official weights use open_clip's names (mlfoundations/open_clip `src/open_clip/model.py`, class `CLIP`;
OpenAI's `ViT-L-14.pt` uses the same ones): `OPEN_CLIP_KEY_MAP` and `open_clip_to_transformers` translate them,
splitting the fused attention input projection into q/k/v and transposing the two output projections.
The tokenizer is built from open_clip's `bpe_simple_vocab_16e6.txt.gz` (open_clip `tokenizer.py`,
`SimpleTokenizer`): the vocabulary is 256 byte symbols, the same with "</w>", one token per merge, then the
start/end markers; text is cleaned like open_clip (ftfy, HTML unescaped twice) before the fast tokenizer.
"""

from __future__ import annotations

import dataclasses
import gzip
import html
import json
import os
import re
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from .io import CLIP_MEAN, CLIP_STD

if TYPE_CHECKING:
    from transformers import CLIPModel, PreTrainedTokenizerBase

__all__ = [
    "OPEN_CLIP_KEY_MAP",
    "OpenCLIPConfig",
    "OpenCLIPTokenizer",
    "build_clip_model",
    "clip_preprocess",
    "encode_image",
    "encode_text",
    "open_clip_to_transformers",
    "read_bpe_merges",
    "require_transformers",
]

_NUM_MERGES = 49152 - 256 - 2  # merges open_clip uses from the vocabulary file
_START, _END = "<|startoftext|>", "<|endoftext|>"


def require_transformers(extra: str) -> None:
    """Fail with the extra to install when `transformers` is missing."""
    try:
        import transformers  # noqa: F401
    except ImportError as exc:
        raise ImportError(
            f"this scorer runs on Hugging Face transformers: `pip install 'infinity-eval[{extra}]'`"
        ) from exc


@dataclass(frozen=True)
class OpenCLIPConfig:
    """open_clip CLIP sizes (ViT image tower + causal text transformer)."""

    embed_dim: int = 1024
    image_size: int = 224
    patch_size: int = 14
    vision_width: int = 1280
    vision_layers: int = 32
    vision_head_width: int = 80
    vision_mlp_ratio: float = 4.0
    context_length: int = 77
    vocab_size: int = 49408
    text_width: int = 1024
    text_heads: int = 16
    text_layers: int = 24
    text_mlp_ratio: float = 4.0
    eps: float = 1e-5
    quick_gelu: bool = False  # OpenAI's CLIP weights use x·sigmoid(1.702x); LAION/HPS models use exact GELU

    @classmethod
    def preset(cls, name: str) -> OpenCLIPConfig:
        """ "ViT-H-14" (HPSv2 / HPSv2.1) and "ViT-L-14-quickgelu" (OpenAI's ViT-L/14, GenEval's colour classifier)."""
        if name == "ViT-H-14":
            return cls()
        if name == "ViT-L-14-quickgelu":
            return cls(
                embed_dim=768,
                vision_width=1024,
                vision_layers=24,
                vision_head_width=64,
                text_width=768,
                text_heads=12,
                text_layers=12,
                quick_gelu=True,
            )
        raise ValueError(f"unknown open_clip preset {name!r}; known: 'ViT-H-14', 'ViT-L-14-quickgelu'")

    @property
    def vision_heads(self) -> int:
        return self.vision_width // self.vision_head_width

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> OpenCLIPConfig:
        return cls(**data)

    def to_transformers(self) -> Any:
        """The equivalent `transformers.CLIPConfig` (end-of-text = the highest id, as open_clip pools)."""
        from transformers import CLIPConfig

        if self.vision_width % self.vision_head_width:
            raise ValueError(
                f"vision_width {self.vision_width} is not a multiple of {self.vision_head_width}"
            )
        act = "quick_gelu" if self.quick_gelu else "gelu"
        text = {
            "vocab_size": self.vocab_size,
            "hidden_size": self.text_width,
            "intermediate_size": int(self.text_width * self.text_mlp_ratio),
            "num_hidden_layers": self.text_layers,
            "num_attention_heads": self.text_heads,
            "max_position_embeddings": self.context_length,
            "hidden_act": act,
            "layer_norm_eps": self.eps,
            "bos_token_id": self.vocab_size - 2,
            "eos_token_id": self.vocab_size - 1,
            "pad_token_id": 0,
        }
        vision = {
            "hidden_size": self.vision_width,
            "intermediate_size": int(self.vision_width * self.vision_mlp_ratio),
            "num_hidden_layers": self.vision_layers,
            "num_attention_heads": self.vision_heads,
            "image_size": self.image_size,
            "patch_size": self.patch_size,
            "hidden_act": act,
            "layer_norm_eps": self.eps,
        }
        return CLIPConfig(text_config=text, vision_config=vision, projection_dim=self.embed_dim)


# ----------------------------------------------------------------------------------------------------------------
# Checkpoint key map: official (open_clip / OpenAI) name -> transformers CLIPModel name

OPEN_CLIP_KEY_MAP: dict[str, str] = {
    "visual.class_embedding": "vision_model.embeddings.class_embedding",
    "visual.conv1.weight": "vision_model.embeddings.patch_embedding.weight",
    "visual.positional_embedding": "vision_model.embeddings.position_embedding.weight",
    "visual.ln_pre.weight": "vision_model.pre_layrnorm.weight",
    "visual.ln_pre.bias": "vision_model.pre_layrnorm.bias",
    "visual.ln_post.weight": "vision_model.post_layernorm.weight",
    "visual.ln_post.bias": "vision_model.post_layernorm.bias",
    "visual.proj": "visual_projection.weight",  # transposed: open_clip computes x @ proj
    "token_embedding.weight": "text_model.embeddings.token_embedding.weight",
    "positional_embedding": "text_model.embeddings.position_embedding.weight",
    "ln_final.weight": "text_model.final_layer_norm.weight",
    "ln_final.bias": "text_model.final_layer_norm.bias",
    "text_projection": "text_projection.weight",  # transposed
    "logit_scale": "logit_scale",
}
_TRANSPOSED = frozenset({"visual.proj", "text_projection"})
# Inside `[visual.]transformer.resblocks.<i>.`; `attn.in_proj_*` ([3w, ...], q;k;v stacked) is split in three.
OPEN_CLIP_BLOCK_KEY_MAP: dict[str, str] = {
    "ln_1.weight": "layer_norm1.weight",
    "ln_1.bias": "layer_norm1.bias",
    "ln_2.weight": "layer_norm2.weight",
    "ln_2.bias": "layer_norm2.bias",
    "attn.out_proj.weight": "self_attn.out_proj.weight",
    "attn.out_proj.bias": "self_attn.out_proj.bias",
    "mlp.c_fc.weight": "mlp.fc1.weight",
    "mlp.c_fc.bias": "mlp.fc1.bias",
    "mlp.c_proj.weight": "mlp.fc2.weight",
    "mlp.c_proj.bias": "mlp.fc2.bias",
    "attn.in_proj_weight": "self_attn.{q,k,v}_proj.weight",
    "attn.in_proj_bias": "self_attn.{q,k,v}_proj.bias",
}
_BLOCK = re.compile(r"^(visual\.)?transformer\.resblocks\.(\d+)\.(.+)$")


def open_clip_to_transformers(state: Mapping[str, Tensor], source: str = "checkpoint") -> dict[str, Tensor]:
    """Rename an open_clip/OpenAI CLIP state dict to `transformers.CLIPModel`'s names (float32 tensors).

    Keys the map does not know raise a `KeyError` naming them (nothing is dropped silently).
    """
    out: dict[str, Tensor] = {}
    unknown: list[str] = []
    for key, value in state.items():
        value = value.float()
        if key in OPEN_CLIP_KEY_MAP:
            out[OPEN_CLIP_KEY_MAP[key]] = value.T.contiguous() if key in _TRANSPOSED else value
            continue
        match = _BLOCK.match(key)
        if match is None or match.group(3) not in OPEN_CLIP_BLOCK_KEY_MAP:
            unknown.append(key)
            continue
        tower = "vision_model" if match.group(1) else "text_model"
        prefix = f"{tower}.encoder.layers.{match.group(2)}."
        name = match.group(3)
        if name.startswith("attn.in_proj_"):
            kind = name.removeprefix("attn.in_proj_")
            for letter, chunk in zip("qkv", value.chunk(3, dim=0), strict=True):
                out[f"{prefix}self_attn.{letter}_proj.{kind}"] = chunk.contiguous()
        else:
            out[prefix + OPEN_CLIP_BLOCK_KEY_MAP[name]] = value
    if unknown:
        raise KeyError(
            f"{source}: keys outside the open_clip CLIP layout {sorted(unknown)[:20]} ({len(unknown)}); "
            "expected an open_clip / OpenAI CLIP state dict (e.g. HPS_v2.1_compressed.pt, ViT-L-14.pt)"
        )
    return out


def build_clip_model(config: OpenCLIPConfig, state: Mapping[str, Tensor], source: str) -> CLIPModel:
    """A `transformers.CLIPModel` of `config` holding the official `state` (strict; float32; eval mode)."""
    from transformers import CLIPModel

    from ._checkpoints import load_state_dict_into_meta_model

    with torch.device("meta"):
        model = CLIPModel(config.to_transformers())
    return load_state_dict_into_meta_model(model, open_clip_to_transformers(state, source), source).eval()


def clip_to_device(model: CLIPModel, device: torch.device) -> CLIPModel:
    """`model.to(device).eval()`, in place. transformers decorates `PreTrainedModel.to` with `functools.wraps`,
    which type checkers read as an unbound function; calling it through `nn.Module` still runs that override."""
    module: torch.nn.Module = model
    module.to(device).eval()
    return model


def _pooled(output: Any) -> Tensor:
    return output if isinstance(output, Tensor) else output.pooler_output


def encode_image(model: CLIPModel, pixels: Tensor) -> Tensor:
    """Projected class-token features (after ln_post), unnormalised: [B, 3, S, S] -> [B, embed]."""
    return model.visual_projection(_pooled(model.vision_model(pixel_values=pixels)))


def encode_text(model: CLIPModel, tokens: Tensor) -> Tensor:
    """Projected features at the first end-of-text token, unnormalised (causal mask only, like open_clip)."""
    return model.text_projection(_pooled(model.text_model(input_ids=tokens)))


# ----------------------------------------------------------------------------------------------------------------
# Tokenizer


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character table, in its order (transformers 5 / 4 locations)."""
    try:
        from transformers.convert_slow_tokenizer import bytes_to_unicode
    except ImportError:  # transformers 4 keeps it here; transformers 5 (which the type checker sees) does not
        from transformers.models.gpt2.tokenization_gpt2 import (  # type: ignore[attr-defined,no-redef]
            bytes_to_unicode,
        )
    return bytes_to_unicode()


def read_bpe_merges(path: str | os.PathLike[str]) -> list[tuple[str, str]]:
    """The merges open_clip uses from `bpe_simple_vocab_16e6.txt[.gz]`: after the header line, at most 48,894."""
    p = Path(path)
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise FileNotFoundError(f"{p}: cannot read the CLIP BPE vocabulary ({exc})") from exc
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    lines = raw.decode("utf-8").split("\n")
    while lines and not lines[-1]:
        lines.pop()
    merges: list[tuple[str, str]] = []
    for number, line in enumerate(lines[1 : _NUM_MERGES + 1], start=2):
        parts = line.split()
        if len(parts) != 2:
            raise ValueError(f"{p}: line {number} is not a BPE merge ('a b'): {line!r}")
        merges.append((parts[0], parts[1]))
    return merges


def _ftfy_fix_text() -> Callable[[str], str]:
    try:
        import ftfy
    except ImportError as exc:
        raise ImportError(
            "open_clip cleans prompts with ftfy.fix_text; install it with `pip install 'infinity-eval[hps]'` "
            "(or pass fix_text=False, which deviates from the reference)"
        ) from exc
    return ftfy.fix_text


class OpenCLIPTokenizer:
    """open_clip's tokenization on `transformers.CLIPTokenizerFast`: `__call__` gives [B, context_length] int64
    ids, <start> ids <end>, cut to length with <end> kept last, zero-padded."""

    def __init__(
        self, merges: Sequence[tuple[str, str]], *, context_length: int = 77, fix_text: bool = True
    ) -> None:
        # transformers 4 names the Rust-backed class CLIPTokenizerFast; transformers 5 keeps that name only as an
        # undeclared runtime alias of CLIPTokenizer, so its type information lacks it.
        from transformers import CLIPTokenizerFast  # type: ignore[attr-defined]

        symbols = list(_bytes_to_unicode().values())
        tokens = [*symbols, *(s + "</w>" for s in symbols), *("".join(m) for m in merges), _START, _END]
        with tempfile.TemporaryDirectory() as folder:  # the fast tokenizer reads its vocabulary from files
            vocab_file, merges_file = Path(folder) / "vocab.json", Path(folder) / "merges.txt"
            vocab_file.write_text(json.dumps({t: i for i, t in enumerate(tokens)}), encoding="utf-8")
            merges_file.write_text(
                "#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges), encoding="utf-8"
            )
            self.fast: PreTrainedTokenizerBase = CLIPTokenizerFast(str(vocab_file), str(merges_file))
        self.vocab_size = len(tokens)
        if len(self.fast) != self.vocab_size:
            raise ValueError(
                f"the BPE vocabulary has duplicate tokens ({len(self.fast)} != {self.vocab_size})"
            )
        self.start_id, self.end_id = self.vocab_size - 2, self.vocab_size - 1
        self.context_length = context_length
        self.fix_text = fix_text
        self._fix_text = _ftfy_fix_text() if fix_text else None

    @classmethod
    def from_file(
        cls, path: str | os.PathLike[str], *, context_length: int = 77, fix_text: bool = True
    ) -> OpenCLIPTokenizer:
        """Read open_clip's `bpe_simple_vocab_16e6.txt.gz` (gzip) or the same text uncompressed."""
        return cls(read_bpe_merges(path), context_length=context_length, fix_text=fix_text)

    def clean(self, text: str) -> str:
        """open_clip's `basic_clean` (ftfy, HTML unescaped twice); whitespace and case are the fast tokenizer's."""
        if self._fix_text is not None:
            text = self._fix_text(text)
        return html.unescape(html.unescape(text))

    def __call__(self, texts: Sequence[str]) -> Tensor:
        rows = self.fast([self.clean(t) for t in texts], truncation=True, max_length=self.context_length)[
            "input_ids"
        ]
        out = torch.zeros((len(texts), self.context_length), dtype=torch.long)
        for i, row in enumerate(rows):
            out[i, : len(row)] = torch.tensor(row, dtype=torch.long)
        return out


# ----------------------------------------------------------------------------------------------------------------
# Image transform


def clip_preprocess(image: Image.Image, size: int = 224) -> Tensor:
    """CLIP's eval transform (torchvision Resize, CenterCrop, RGB, ToTensor, Normalize) -> [3, size, size] float32.

    PIL bicubic resize of the short side to `size` (long side floored), centre crop with offsets rounded
    half-to-even, conversion to RGB after the crop, [0, 1], CLIP mean/std.
    """
    if not isinstance(image, Image.Image):
        raise TypeError(f"expected a PIL.Image, got {type(image).__name__}")
    width, height = image.size
    if width <= height:
        new_w, new_h = size, int(size * height / width)
    else:
        new_w, new_h = int(size * width / height), size
    if (new_w, new_h) != (width, height):
        image = image.resize((new_w, new_h), Image.Resampling.BICUBIC)
    top = round((new_h - size) / 2.0)
    left = round((new_w - size) / 2.0)
    image = image.crop((left, top, left + size, top + size)).convert("RGB")
    x = torch.from_numpy(np.asarray(image, dtype=np.uint8).copy()).permute(2, 0, 1).to(torch.float32).div(255)
    mean = torch.tensor(CLIP_MEAN, dtype=torch.float32).view(3, 1, 1)
    std = torch.tensor(CLIP_STD, dtype=torch.float32).view(3, 1, 1)
    return (x - mean) / std
