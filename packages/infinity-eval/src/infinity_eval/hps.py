"""HPSv2 / HPSv2.1: an open_clip ViT-H-14 CLIP scoring cosine(image, prompt), run on `transformers.CLIPModel`.

The official `HPS_v2.1_compressed.pt` holds open_clip's state dict; `infinity_eval._clip.open_clip_to_transformers`
maps its keys (fused q/k/v split, projections transposed) and the model loads strictly. Numerics
(tgxs002/HPSv2 `hpsv2/img_score.py`, `score`): pre-LN blocks, LayerNorm eps 1e-5, exact GELU, causal text
attention, text feature at the first <end_of_text>, image feature at the class token after ln_post, both projected
and L2-normalised; the per-image score is their cosine, the benchmark value 100 x cosine. `logit_scale` is unused.

Files the user provides (never downloaded): `HPS_v2.1_compressed.pt` (or `HPS_v2_compressed.pt` for v2.0) from the
Hugging Face repo xswu/HPSv2, and open_clip's `bpe_simple_vocab_16e6.txt.gz` (shipped in the `open-clip-torch`
wheel, found there automatically when that package is installed, and in the HPSv2 GitHub repo).
Needs the extra `hps` (transformers, ftfy).
"""

from __future__ import annotations

import importlib.util
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from ._checkpoints import load_official_state_dict
from ._clip import (
    OpenCLIPConfig,
    OpenCLIPTokenizer,
    build_clip_model,
    clip_to_device,
    encode_image,
    encode_text,
    open_clip_to_transformers,
    require_transformers,
)
from .io import CLIP_MEAN, CLIP_STD
from .scoring import paired_batches
from .weights import WeightFile, resolve_weight_file

if TYPE_CHECKING:
    from transformers import CLIPModel

__all__ = [
    "HPS_BPE_VOCAB_FILE",
    "HPS_V2_WEIGHTS_FILE",
    "HPS_V21_WEIGHTS_FILE",
    "HPSv21Scorer",
    "OpenCLIPConfig",
    "OpenCLIPTokenizer",
    "hps_benchmark_summary",
    "hps_preprocess",
    "open_clip_to_transformers",
]

logger = logging.getLogger(__name__)

HPS_CHUNK = 80  # images per chunk in the official per-style mean

HPS_V21_WEIGHTS_FILE = WeightFile(
    filename="HPS_v2.1_compressed.pt",
    source="the Hugging Face repo xswu/HPSv2 (file HPS_v2.1_compressed.pt)",
    hf_repos=("xswu/HPSv2",),
    subdirs=("hpsv2", "HPSv2"),
)
HPS_V2_WEIGHTS_FILE = WeightFile(
    filename="HPS_v2_compressed.pt",
    source="the Hugging Face repo xswu/HPSv2 (file HPS_v2_compressed.pt)",
    hf_repos=("xswu/HPSv2",),
    subdirs=("hpsv2", "HPSv2"),
)
HPS_BPE_VOCAB_FILE = WeightFile(
    filename="bpe_simple_vocab_16e6.txt.gz",
    source=(
        "the PyPI wheel open-clip-torch (open_clip/bpe_simple_vocab_16e6.txt.gz; found automatically when it is "
        "installed) or the tgxs002/HPSv2 GitHub repo"
    ),
    subdirs=("open_clip", "hpsv2", "HPSv2"),
)


# ----------------------------------------------------------------------------------------------------------------
# Image preprocessing


def hps_preprocess(image: Image.Image, size: int = 224, *, antialias: bool = True) -> Tensor:
    """HPSv2's `light_augmentation` transform -> [3, size, size] float32.

    RGB -> [0, 1] tensor -> bicubic resize (on the float tensor, no clamping) so the longer side is `size`, new
    sides round(side · size/longer) with Python rounding -> zero padding centred (left/top get the floor half)
    -> CLIP mean/std. `antialias` reproduces torchvision >= 0.17 (True) or < 0.17 (False). Deviations, where the
    original cannot score at all: RGBA is converted to RGB (the original fails), and an image whose longer side
    already equals `size` but is not square is padded (the original leaves it unpadded and the model fails).
    """
    if not isinstance(image, Image.Image):
        raise TypeError(f"expected a PIL.Image, got {type(image).__name__}")
    if image.mode != "RGB":
        image = image.convert("RGB")
    width, height = image.size
    x = torch.from_numpy(np.asarray(image, dtype=np.uint8).copy()).permute(2, 0, 1).to(torch.float32).div(255)
    scale = size / float(max(height, width))
    if scale != 1.0:
        new_h, new_w = round(height * scale), round(width * scale)
        x = F.interpolate(
            x[None], size=(new_h, new_w), mode="bicubic", align_corners=False, antialias=antialias
        )[0]
    else:
        new_h, new_w = height, width
    pad_h, pad_w = size - new_h, size - new_w
    if pad_h or pad_w:
        x = F.pad(x, (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2), value=0.0)
    mean = torch.tensor(CLIP_MEAN, dtype=torch.float32).view(3, 1, 1)
    std = torch.tensor(CLIP_STD, dtype=torch.float32).view(3, 1, 1)
    return (x - mean) / std


# ----------------------------------------------------------------------------------------------------------------
# Scorer


def _installed_open_clip_vocab() -> list[Path]:
    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        return []
    return [Path(loc) / HPS_BPE_VOCAB_FILE.filename for loc in spec.submodule_search_locations]


class HPSv21Scorer:
    """Human Preference Score v2.1 (or v2.0 weights): `score` returns the cosine per (prompt, image) pair.

    Options recorded for provenance: `antialias` of the tensor resize (torchvision >= 0.17 behaviour by default;
    which one reproduces the published tables is unverified) and `autocast_dtype` (the reference runs under
    float16 autocast on CUDA; None = float32).
    """

    def __init__(
        self,
        model: CLIPModel,
        tokenizer: OpenCLIPTokenizer,
        config: OpenCLIPConfig,
        *,
        device: str | torch.device = "cpu",
        batch_size: int = 16,
        antialias: bool = True,
        autocast_dtype: torch.dtype | None = None,
        version: Literal["v2.0", "v2.1"] = "v2.1",
        weights_file: Path | None = None,
        vocab_file: Path | None = None,
    ) -> None:
        if tokenizer.vocab_size != config.vocab_size:
            raise ValueError(
                f"tokenizer has {tokenizer.vocab_size} tokens but the model expects {config.vocab_size}; "
                "use open_clip's bpe_simple_vocab_16e6.txt.gz"
            )
        if tokenizer.context_length != config.context_length:
            raise ValueError(
                f"tokenizer context {tokenizer.context_length} != model context {config.context_length}"
            )
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.device = torch.device(device)
        self.model = clip_to_device(model, self.device)
        self.tokenizer = tokenizer
        self.config = config
        self.batch_size = batch_size
        self.antialias = antialias
        self.autocast_dtype = autocast_dtype
        self.version = version
        self.weights_file = weights_file
        self.vocab_file = vocab_file

    def options(self) -> dict[str, Any]:
        """Protocol options to record next to the scores."""
        return {
            "hps_version": self.version,
            "hps_antialias": self.antialias,
            "hps_ftfy": self.tokenizer.fix_text,
            "hps_preprocess": f"tensor bicubic long side {self.config.image_size}, centred zero pad, CLIP mean/std",
            "autocast_dtype": None if self.autocast_dtype is None else str(self.autocast_dtype),
            "image_size": self.config.image_size,
        }

    @classmethod
    def from_state_dict(
        cls,
        state: Mapping[str, Tensor],
        tokenizer: OpenCLIPTokenizer,
        config: OpenCLIPConfig | None = None,
        *,
        source: str = "HPS state dict",
        **options: Any,
    ) -> HPSv21Scorer:
        """A scorer holding an open_clip-named state dict (the `state_dict` of an HPS checkpoint), strictly loaded."""
        require_transformers("hps")
        config = config or OpenCLIPConfig.preset("ViT-H-14")
        return cls(build_clip_model(config, state, source), tokenizer, config, **options)

    @classmethod
    def from_pretrained(
        cls,
        path: str | os.PathLike[str] | None = None,
        *,
        vocab: str | os.PathLike[str] | None = None,
        version: Literal["v2.0", "v2.1"] = "v2.1",
        device: str | torch.device = "cpu",
        config: OpenCLIPConfig | None = None,
        fix_text: bool = True,
        **options: Any,
    ) -> HPSv21Scorer:
        """Load the HPS checkpoint and the BPE vocabulary: explicit path (file or folder) ->
        $INFINITY_EVAL_WEIGHTS_DIR -> local Hugging Face cache (-> the installed open_clip wheel for the vocab)."""
        if version not in ("v2.0", "v2.1"):
            raise ValueError(f"unknown HPS version {version!r}; use 'v2.0' or 'v2.1'")
        require_transformers("hps")
        config = config or OpenCLIPConfig.preset("ViT-H-14")
        weights_spec = HPS_V21_WEIGHTS_FILE if version == "v2.1" else HPS_V2_WEIGHTS_FILE
        weights_path = resolve_weight_file(weights_spec, path)
        vocab_path = resolve_weight_file(
            HPS_BPE_VOCAB_FILE, vocab, extra_candidates=_installed_open_clip_vocab()
        )
        tokenizer = OpenCLIPTokenizer.from_file(
            vocab_path, context_length=config.context_length, fix_text=fix_text
        )
        state = load_official_state_dict(weights_path, wrapper_key="state_dict")
        return cls.from_state_dict(
            state,
            tokenizer,
            config,
            source=str(weights_path),
            device=device,
            version=version,
            weights_file=weights_path,
            vocab_file=vocab_path,
            **options,
        )

    @torch.no_grad()
    def features(self, pixels: Tensor, tokens: Tensor) -> tuple[Tensor, Tensor]:
        """L2-normalised image and text features, [B, embed] each."""
        return F.normalize(encode_image(self.model, pixels), dim=-1), F.normalize(
            encode_text(self.model, tokens), dim=-1
        )

    @torch.no_grad()
    def score(self, prompts: Sequence[str], images: Sequence[Image.Image]) -> list[float]:
        """Cosine of the normalised image and text features per pair (x100 gives the benchmark's unit)."""
        out: list[float] = []
        for batch_prompts, batch_images in paired_batches(prompts, images, self.batch_size):
            pixels = torch.stack(
                [hps_preprocess(im, self.config.image_size, antialias=self.antialias) for im in batch_images]
            )
            tokens = self.tokenizer(batch_prompts)
            with torch.autocast(
                device_type=self.device.type,
                dtype=self.autocast_dtype or torch.float32,
                enabled=self.autocast_dtype is not None,
            ):
                image, text = self.features(pixels.to(self.device), tokens.to(self.device))
            out.extend((image.float() * text.float()).sum(dim=-1).cpu().tolist())
        return out


def hps_benchmark_summary(scores_by_style: Mapping[str, Sequence[float]]) -> dict[str, Any]:
    """Official HPS benchmark aggregation from per-image cosines listed in image order per style.

    Per style: the mean of the means of consecutive 80-image chunks, ×100, and the population std of those chunk
    means (raw cosine, as `hpsv2.evaluate` prints it); "average": 100 × the mean over all scored images.
    """
    styles: dict[str, dict[str, float | int]] = {}
    all_scores: list[float] = []
    for style, values in scores_by_style.items():
        values = [float(v) for v in values]
        if not values:
            continue
        chunks = [float(np.mean(values[i : i + HPS_CHUNK])) for i in range(0, len(values), HPS_CHUNK)]
        styles[style] = {
            "hps": 100.0 * float(np.mean(chunks)),
            "chunk_std": float(np.std(chunks)),
            "images": len(values),
            "chunks": len(chunks),
        }
        all_scores.extend(values)
    if not all_scores:
        raise ValueError("no HPS scores to aggregate")
    return {"styles": styles, "average": 100.0 * float(np.mean(all_scores)), "images": len(all_scores)}
