"""Zero-shot colour classification of object crops (djghosh13/geneval `evaluation/evaluate_images.py`,
`color_classification`, with clip-benchmark's zero-shot classifier).

Per colour the three templates are encoded, each text feature L2-normalised, averaged, re-normalised; the
prediction is the argmax of (normalised image feature . class vector). The CLIP backend is pluggable: the
official one is open_clip ViT-L-14 with OpenAI weights (`ViT-L-14.pt`): `load_clip_color_classifier` runs it on
`transformers.CLIPModel` (extra `geneval-clip`; no open_clip / torchvision needed), `load_openclip_color_classifier`
on open_clip itself.

A plug-in classifier is called as `classifier(crops, object_name, context=ColorContext(...))`: the context holds
the whole image, the detections the crops were cut from (box, score, mask, in crop order) and the image record.
Plug-ins written for the older two-argument form `classifier(crops, object_name)` still work, with a
`DeprecationWarning`.
"""

from __future__ import annotations

import inspect
import os
import warnings
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from .._checkpoints import load_official_state_dict
from .._clip import (
    OpenCLIPConfig,
    OpenCLIPTokenizer,
    build_clip_model,
    clip_preprocess,
    clip_to_device,
    encode_image,
    encode_text,
    require_transformers,
)
from ..io import ImageRecord
from ..weights import WeightFile, resolve_weight_file
from .rules import COLORS, Detection, GenEvalOptions, color_crops

if TYPE_CHECKING:
    from transformers import CLIPModel

__all__ = [
    "CLIP_VIT_L14_WEIGHTS",
    "COLOR_TEMPLATES",
    "ColorClassifier",
    "ColorContext",
    "ZeroShotColorClassifier",
    "classify_object_colors",
    "clip_color_classifier",
    "clip_preprocess",
    "load_clip_color_classifier",
    "load_openai_clip_state_dict",
    "load_openclip_color_classifier",
]

COLOR_TEMPLATES = (
    "a photo of a {c} {object}",
    "a photo of a {c}-colored {object}",
    "a photo of a {c} object",
)

CLIP_VIT_L14_WEIGHTS = WeightFile(
    filename="ViT-L-14.pt",
    source=(
        "openaipublic.azureedge.net/clip/models/b8cca3fd41ae0c99ba7e8951adf17d267cdb84cd88be6f7c2e0eca1737a03836/"
        "ViT-L-14.pt (OpenAI CLIP)"
    ),
    sha256="b8cca3fd41ae0c99ba7e8951adf17d267cdb84cd88be6f7c2e0eca1737a03836",
    subdirs=("clip", "open_clip"),
)


@dataclass(frozen=True)
class ColorContext:
    """What a colour classifier may use besides the crops.

    `detections[i]` is the detection crop i was cut from (box (x1, y1, x2, y2), score, mask in image pixels);
    `image` is the whole generated image (RGB); `record` the image's record (path, prompt, GenEval metadata), None
    when the rules are applied outside a run; `options` the rule options (background colour, cropping).
    """

    image: Image.Image
    detections: tuple[Detection, ...]
    record: ImageRecord | None
    options: GenEvalOptions


@runtime_checkable
class ColorClassifier(Protocol):
    """Predicts one colour name (from `COLORS`) per crop of an object of class `object_name`.

    `context` gives the detections behind the crops, the image and its record (see `ColorContext`).
    """

    def __call__(
        self, crops: Sequence[Image.Image], object_name: str, *, context: ColorContext | None = None
    ) -> list[str]: ...


def _accepts_context(classifier: Callable[..., Any]) -> bool:
    try:
        parameters = inspect.signature(classifier).parameters.values()
    except (TypeError, ValueError):  # builtins without a signature: call the documented form
        return True
    return any(p.name == "context" or p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters)


def classify_object_colors(
    classifier: Callable[..., Sequence[str]],
    image: Image.Image,
    detections: Sequence[Detection],
    object_name: str,
    options: GenEvalOptions,
    record: ImageRecord | None = None,
) -> list[str]:
    """Crop each detection as the official evaluator does and ask the classifier for one colour per crop.

    Classifiers without a `context` parameter are called the old way, `classifier(crops, object_name)`, with a
    `DeprecationWarning` (that form will be removed in a future minor version).
    """
    crops = color_crops(image, detections, options)
    if _accepts_context(classifier):
        context = ColorContext(image.convert("RGB"), tuple(detections), record, options)
        colors = list(classifier(crops, object_name, context=context))
    else:
        warnings.warn(
            f"colour classifier {classifier!r} takes (crops, object_name) only; accept a keyword argument "
            "`context` (infinity_eval.geneval.ColorContext: detections, image, record) — the two-argument form "
            "is deprecated",
            DeprecationWarning,
            stacklevel=2,
        )
        colors = list(classifier(crops, object_name))
    if len(colors) != len(crops):
        raise ValueError(
            f"colour classifier {classifier!r} returned {len(colors)} colours for {len(crops)} {object_name} crops"
        )
    return colors


class ZeroShotColorClassifier:
    """clip-benchmark-style zero-shot classifier over `COLORS` for a given CLIP backend.

    `encode_image(pixels [B,3,S,S]) -> [B, D]`, `encode_text(list[str]) -> [N, D]` (unnormalised features).
    """

    def __init__(
        self,
        encode_image: Callable[[Tensor], Tensor],
        encode_text: Callable[[list[str]], Tensor],
        preprocess: Callable[[Image.Image], Tensor] = clip_preprocess,
        device: str | torch.device = "cpu",
        batch_size: int = 16,
        autocast_dtype: torch.dtype | None = None,
        colors: Sequence[str] = COLORS,
    ) -> None:
        self._encode_image = encode_image
        self._encode_text = encode_text
        self._preprocess = preprocess
        self.device = torch.device(device)
        self.batch_size = batch_size
        self.autocast_dtype = autocast_dtype
        self.colors = tuple(colors)

    def _autocast(self) -> AbstractContextManager[Any]:
        if self.autocast_dtype is None:
            return torch.autocast(self.device.type, enabled=False)
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)

    @torch.no_grad()
    def class_vectors(self, object_name: str) -> Tensor:
        """(n_colors, D): per colour the normalised mean of the normalised template embeddings."""
        vectors = []
        with self._autocast():
            for c in self.colors:
                texts = [t.format(c=c, object=object_name) for t in COLOR_TEMPLATES]
                emb = F.normalize(self._encode_text(texts).float(), dim=-1)
                vectors.append(F.normalize(emb.mean(dim=0), dim=-1))
        return torch.stack(vectors)

    @torch.no_grad()
    def __call__(
        self, crops: Sequence[Image.Image], object_name: str, *, context: ColorContext | None = None
    ) -> list[str]:
        """One colour per crop; the context is not needed (CLIP sees only the crop, as in the original)."""
        if not crops:
            return []
        weights = self.class_vectors(object_name).to(self.device)
        predictions: list[str] = []
        for start in range(0, len(crops), self.batch_size):
            pixels = torch.stack([self._preprocess(c) for c in crops[start : start + self.batch_size]])
            with self._autocast():
                feats = F.normalize(self._encode_image(pixels.to(self.device)).float(), dim=-1)
            logits = feats @ weights.T
            predictions.extend(self.colors[i] for i in logits.argmax(dim=-1).tolist())
        return predictions


_OPENAI_NON_WEIGHTS = ("input_resolution", "context_length", "vocab_size")


def load_openai_clip_state_dict(path: str | os.PathLike[str]) -> dict[str, Tensor]:
    """OpenAI's CLIP checkpoint (a TorchScript archive, or a plain state dict) as float32 open_clip-named tensors.

    The scalar entries `input_resolution`, `context_length`, `vocab_size` are dropped (not weights). The file is
    read by `infinity_eval._checkpoints.load_official_state_dict` (callers verify its SHA-256 first).
    """
    state = load_official_state_dict(path, wrapper_key="state_dict")
    return {k: v.float() for k, v in state.items() if k not in _OPENAI_NON_WEIGHTS}


def clip_color_classifier(
    model: CLIPModel,
    tokenizer: OpenCLIPTokenizer,
    device: str | torch.device = "cpu",
    batch_size: int = 16,
    image_size: int = 224,
) -> ZeroShotColorClassifier:
    """Colour classifier on a `transformers.CLIPModel` and open_clip's tokenization (fp16 autocast on CUDA, as
    clip-benchmark's default)."""
    dev = torch.device(device)
    model = clip_to_device(model, dev)
    return ZeroShotColorClassifier(
        lambda px: encode_image(model, px),
        lambda texts: encode_text(model, tokenizer(texts).to(dev)),
        lambda image: clip_preprocess(image, image_size),
        device=dev,
        batch_size=batch_size,
        autocast_dtype=torch.float16 if dev.type == "cuda" else None,
    )


def load_clip_color_classifier(
    weights: str | os.PathLike[str] | None = None,
    vocab: str | os.PathLike[str] | None = None,
    device: str = "cpu",
    batch_size: int = 16,
) -> tuple[ZeroShotColorClassifier, list[Path]]:
    """The official colour classifier (OpenAI ViT-L/14, QuickGELU) on `transformers.CLIPModel`; strict load.

    `weights`: `ViT-L-14.pt` (SHA-256 checked); `vocab`: open_clip's `bpe_simple_vocab_16e6.txt.gz` (found in an
    installed open-clip-torch wheel too). Returns the classifier and the files used.
    """
    from ..hps import HPS_BPE_VOCAB_FILE, _installed_open_clip_vocab

    require_transformers("geneval-clip")
    path = resolve_weight_file(CLIP_VIT_L14_WEIGHTS, weights)
    vocab_path = resolve_weight_file(HPS_BPE_VOCAB_FILE, vocab, extra_candidates=_installed_open_clip_vocab())
    model = build_clip_model(
        OpenCLIPConfig.preset("ViT-L-14-quickgelu"), load_openai_clip_state_dict(path), str(path)
    )
    tokenizer = OpenCLIPTokenizer.from_file(vocab_path)
    return clip_color_classifier(model, tokenizer, device, batch_size), [path, vocab_path]


def load_openclip_color_classifier(
    weights: str | os.PathLike[str] | None = None, device: str = "cpu", batch_size: int = 16
) -> tuple[ZeroShotColorClassifier, Path]:
    """The official colour classifier: open_clip ViT-L-14, OpenAI weights (QuickGELU), fp16 autocast on CUDA.

    `weights` is `ViT-L-14.pt` or its folder; nothing is downloaded (open_clip only finds the file locally).
    """
    try:
        import open_clip
    except ImportError as err:
        raise ImportError(
            "this colour classifier backend needs open_clip: `pip install 'infinity-eval[open-clip]'` "
            "(it requires a torchvision build matching your torch); the default backend needs "
            "'infinity-eval[geneval-clip]' only, or pass --color-classifier module:factory"
        ) from err
    path = resolve_weight_file(CLIP_VIT_L14_WEIGHTS, weights)
    model, _, _ = open_clip.create_model_and_transforms(
        "ViT-L-14", pretrained="openai", cache_dir=str(path.parent), device=device
    )
    model.eval()
    tokenizer = open_clip.get_tokenizer("ViT-L-14")
    dev = torch.device(device)

    def encode_prompts(texts: list[str]) -> Tensor:
        return model.encode_text(tokenizer(texts).to(dev))

    classifier = ZeroShotColorClassifier(
        model.encode_image,
        encode_prompts,
        clip_preprocess,
        device=dev,
        batch_size=batch_size,
        autocast_dtype=torch.float16 if dev.type == "cuda" else None,
    )
    return classifier, path
