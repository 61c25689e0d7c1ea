"""Zero-shot colour classification of object crops (spec evaluation.md §1.3, §1.4 step 3).

Per colour the three templates are encoded, each text feature L2-normalised, averaged, re-normalised; the
prediction is the argmax of (normalised image feature · class vector). The CLIP backend is pluggable: the
official one is open_clip ViT-L-14 with OpenAI weights (`ViT-L-14.pt`): `load_clip_color_classifier` runs it
on the package's own torch CLIP (no open_clip / torchvision needed); `load_openclip_color_classifier` uses open_clip.
"""

from __future__ import annotations

import os
import warnings
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from ..weights import WeightFile, resolve_weight_file
from .rules import COLORS

__all__ = [
    "CLIP_VIT_L14_WEIGHTS",
    "COLOR_TEMPLATES",
    "ColorClassifier",
    "ZeroShotColorClassifier",
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
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

CLIP_VIT_L14_WEIGHTS = WeightFile(
    filename="ViT-L-14.pt",
    source=(
        "openaipublic.azureedge.net/clip/models/b8cca3fd41ae0c99ba7e8951adf17d267cdb84cd88be6f7c2e0eca1737a03836/"
        "ViT-L-14.pt (OpenAI CLIP)"
    ),
    sha256="b8cca3fd41ae0c99ba7e8951adf17d267cdb84cd88be6f7c2e0eca1737a03836",
    subdirs=("clip", "open_clip"),
)


@runtime_checkable
class ColorClassifier(Protocol):
    """Predicts one colour name (from `COLORS`) per crop of an object of class `object_name`."""

    def __call__(self, crops: Sequence[Image.Image], object_name: str) -> list[str]: ...


def clip_preprocess(image: Image.Image, size: int = 224) -> Tensor:
    """CLIP eval transform: bicubic resize of the short side to `size`, centre crop, RGB, [0,1], CLIP mean/std."""
    img = image.convert("RGB")
    w, h = img.size
    if w <= h:
        new_w, new_h = size, int(size * h / w)
    else:
        new_w, new_h = int(size * w / h), size
    if (new_w, new_h) != (w, h):
        img = img.resize((new_w, new_h), resample=Image.Resampling.BICUBIC)
    left = round((new_w - size) / 2.0)
    top = round((new_h - size) / 2.0)
    img = img.crop((left, top, left + size, top + size))
    x = torch.from_numpy(np.asarray(img, dtype=np.uint8).copy()).permute(2, 0, 1).float().div(255.0)
    mean = torch.tensor(CLIP_MEAN).view(3, 1, 1)
    std = torch.tensor(CLIP_STD).view(3, 1, 1)
    return (x - mean) / std


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

    def _autocast(self):
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
    def __call__(self, crops: Sequence[Image.Image], object_name: str) -> list[str]:
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

    The scalar entries `input_resolution`, `context_length`, `vocab_size` are dropped (not weights). TorchScript
    archives are opened with `torch.jit.load` (the caller verifies the file's SHA-256 first); plain files with
    `torch.load(weights_only=True)`.
    """
    p = Path(path)
    is_script = False
    if zipfile.is_zipfile(p):
        with zipfile.ZipFile(p) as zf:
            is_script = any(n.startswith("code/") or "/code/" in n for n in zf.namelist())
    if is_script:
        with (
            warnings.catch_warnings()
        ):  # OpenAI ships TorchScript; torch deprecates the format, not the loader
            warnings.simplefilter("ignore", FutureWarning)
            scripted = torch.jit.load(str(p), map_location="cpu")
        state = {k: v.detach() for k, v in scripted.state_dict().items()}
    else:
        state = torch.load(p, map_location="cpu", weights_only=True)
        if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
            state = state["state_dict"]
    if not isinstance(state, dict):
        raise ValueError(f"{p}: expected a CLIP state dict, got {type(state).__name__}")
    return {k: v.float() for k, v in state.items() if k not in _OPENAI_NON_WEIGHTS}


def clip_color_classifier(
    model: torch.nn.Module,
    tokenizer: Callable[[list[str]], Tensor],
    device: str | torch.device = "cpu",
    batch_size: int = 16,
) -> ZeroShotColorClassifier:
    """Colour classifier on an `infinity_eval.hps.OpenCLIP` model and its BPE tokenizer (fp16 autocast on CUDA,
    as clip-benchmark's default)."""
    dev = torch.device(device)
    model = model.to(dev).eval()
    return ZeroShotColorClassifier(
        lambda px: model.encode_image(px, normalize=False),
        lambda texts: model.encode_text(tokenizer(texts).to(dev), normalize=False),
        clip_preprocess,
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
    """The official colour classifier (OpenAI ViT-L/14, QuickGELU) on the package's torch CLIP; strict load.

    `weights`: `ViT-L-14.pt` (SHA-256 checked); `vocab`: open_clip's `bpe_simple_vocab_16e6.txt.gz` (found in an
    installed open-clip-torch wheel too). Returns the classifier and the files used.
    """
    from .._clip_tokenizer import CLIPBPETokenizer
    from ..hps import HPS_BPE_VOCAB_FILE, OpenCLIP, OpenCLIPConfig, _installed_open_clip_vocab

    path = resolve_weight_file(CLIP_VIT_L14_WEIGHTS, weights)
    vocab_path = resolve_weight_file(HPS_BPE_VOCAB_FILE, vocab, extra_candidates=_installed_open_clip_vocab())
    model = OpenCLIP(OpenCLIPConfig.preset("ViT-L-14-quickgelu"))
    model.load_state_dict(load_openai_clip_state_dict(path), strict=True)
    tokenizer = CLIPBPETokenizer.from_file(vocab_path)
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
            "the GenEval colour classifier needs open_clip: `pip install 'infinity-eval[geneval-clip]'` "
            "(it requires a torchvision build matching your torch), or pass --color-classifier module:factory"
        ) from err
    path = resolve_weight_file(CLIP_VIT_L14_WEIGHTS, weights)
    model, _, _ = open_clip.create_model_and_transforms(
        "ViT-L-14", pretrained="openai", cache_dir=str(path.parent), device=device
    )
    model.eval()
    tokenizer = open_clip.get_tokenizer("ViT-L-14")
    dev = torch.device(device)

    def encode_text(texts: list[str]) -> Tensor:
        return model.encode_text(tokenizer(texts).to(dev))

    classifier = ZeroShotColorClassifier(
        model.encode_image,
        encode_text,
        clip_preprocess,
        device=dev,
        batch_size=batch_size,
        autocast_dtype=torch.float16 if dev.type == "cuda" else None,
    )
    return classifier, path
