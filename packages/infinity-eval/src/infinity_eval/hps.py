"""HPSv2 / HPSv2.1: an open_clip ViT-H-14 CLIP scoring cosine(image, prompt), written in plain torch.

Parameter names are open_clip's (`visual.conv1.weight`, `visual.transformer.resblocks.i.attn.in_proj_weight`,
`token_embedding.weight`, `text_projection`, `logit_scale`, ...), so the `state_dict` inside
`HPS_v2.1_compressed.pt` loads with `strict=True` and no renaming. Numerics (spec evaluation.md §4): pre-LN
residual blocks, LayerNorm eps 1e-5, exact GELU, causal text attention, text feature at the first highest token id
(<end_of_text>), image feature at the class token after ln_post, both projected and L2-normalised; the per-image
score is their cosine (`hpsv2.score`), the benchmark value 100 × cosine. `logit_scale` is loaded but unused.

Files the user provides (never downloaded): `HPS_v2.1_compressed.pt` (or `HPS_v2_compressed.pt` for v2.0) from the
Hugging Face repo xswu/HPSv2, and open_clip's `bpe_simple_vocab_16e6.txt.gz` (shipped in the `open-clip-torch`
wheel, found there automatically when that package is installed, and in the HPSv2 GitHub repo).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import logging
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor, nn

from ._checkpoints import load_official_state_dict
from ._clip_tokenizer import CLIPBPETokenizer
from .scoring import paired_batches
from .weights import WeightFile, resolve_weight_file

__all__ = [
    "HPS_BPE_VOCAB_FILE",
    "HPS_V2_WEIGHTS_FILE",
    "HPS_V21_WEIGHTS_FILE",
    "CLIPBPETokenizer",
    "HPSv21Scorer",
    "OpenCLIP",
    "OpenCLIPConfig",
    "hps_benchmark_summary",
    "hps_preprocess",
    "load_official_hps_state_dict",
]

logger = logging.getLogger(__name__)

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
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


@dataclass(frozen=True)
class OpenCLIPConfig:
    """open_clip CLIP sizes (ViT vision tower + causal text transformer)."""

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
        """Named configurations: "ViT-H-14" (HPSv2 / HPSv2.1) and "ViT-L-14-quickgelu" (OpenAI's ViT-L/14, as
        used by GenEval's colour classifier and Infinity's CLIP score)."""
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
# open_clip modules


class _LayerNorm(nn.LayerNorm):
    """open_clip's LayerNorm: computes in the input dtype and returns it (fp32 here)."""

    def forward(self, x: Tensor) -> Tensor:
        return F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps).to(x.dtype)


class _MultiheadAttention(nn.Module):
    """nn.MultiheadAttention's parameters (in_proj_weight/in_proj_bias/out_proj) and its SDPA computation."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * width, width))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * width))
        self.out_proj = nn.Linear(width, width)
        nn.init.xavier_uniform_(self.in_proj_weight)

    def forward(self, x: Tensor, causal: bool) -> Tensor:
        b, n, c = x.shape
        q, k, v = (
            F.linear(x, self.in_proj_weight, self.in_proj_bias)
            .view(b, n, 3, self.heads, c // self.heads)
            .permute(2, 0, 3, 1, 4)
        )
        out = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
        return self.out_proj(out.transpose(1, 2).reshape(b, n, c))


class _Mlp(nn.Module):
    def __init__(self, width: int, hidden: int, quick_gelu: bool) -> None:
        super().__init__()
        self.c_fc = nn.Linear(width, hidden)
        self.c_proj = nn.Linear(hidden, width)
        self.quick_gelu = quick_gelu

    def forward(self, x: Tensor) -> Tensor:
        x = self.c_fc(x)
        x = x * torch.sigmoid(1.702 * x) if self.quick_gelu else F.gelu(x)
        return self.c_proj(x)


class _ResidualAttentionBlock(nn.Module):
    def __init__(self, width: int, heads: int, mlp_ratio: float, eps: float, quick_gelu: bool) -> None:
        super().__init__()
        self.ln_1 = _LayerNorm(width, eps=eps)
        self.attn = _MultiheadAttention(width, heads)
        self.ln_2 = _LayerNorm(width, eps=eps)
        self.mlp = _Mlp(width, int(width * mlp_ratio), quick_gelu)

    def forward(self, x: Tensor, causal: bool) -> Tensor:
        x = x + self.attn(self.ln_1(x), causal)
        return x + self.mlp(self.ln_2(x))


class _Transformer(nn.Module):
    def __init__(
        self, width: int, layers: int, heads: int, mlp_ratio: float, eps: float, quick_gelu: bool
    ) -> None:
        super().__init__()
        self.resblocks = nn.ModuleList(
            _ResidualAttentionBlock(width, heads, mlp_ratio, eps, quick_gelu) for _ in range(layers)
        )

    def forward(self, x: Tensor, causal: bool) -> Tensor:
        for block in self.resblocks:
            x = block(x, causal)
        return x


class OpenCLIPVisionTransformer(nn.Module):
    """open_clip's VisionTransformer (class-token pooling, ln_post before the projection): [B,3,S,S] -> [B, embed]."""

    def __init__(self, config: OpenCLIPConfig) -> None:
        super().__init__()
        if config.image_size % config.patch_size:
            raise ValueError(
                f"image_size {config.image_size} is not a multiple of patch_size {config.patch_size}"
            )
        if config.vision_width % config.vision_head_width:
            raise ValueError(
                f"vision_width {config.vision_width} is not a multiple of head width {config.vision_head_width}"
            )
        width = config.vision_width
        grid = config.image_size // config.patch_size
        self.conv1 = nn.Conv2d(3, width, kernel_size=config.patch_size, stride=config.patch_size, bias=False)
        # Allocated uninitialised (cheap on the meta device); `OpenCLIP.init_random_` fills them for tests.
        self.class_embedding = nn.Parameter(torch.empty(width))
        self.positional_embedding = nn.Parameter(torch.empty(grid * grid + 1, width))
        self.ln_pre = _LayerNorm(width, eps=config.eps)
        self.transformer = _Transformer(
            width,
            config.vision_layers,
            config.vision_heads,
            config.vision_mlp_ratio,
            config.eps,
            config.quick_gelu,
        )
        self.ln_post = _LayerNorm(width, eps=config.eps)
        self.proj = nn.Parameter(torch.empty(width, config.embed_dim))

    def forward(self, pixels: Tensor) -> Tensor:
        x = self.conv1(pixels).flatten(2).transpose(1, 2)
        cls = self.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
        x = torch.cat([cls, x], dim=1) + self.positional_embedding.to(x.dtype)
        x = self.transformer(self.ln_pre(x), causal=False)
        return self.ln_post(x)[:, 0] @ self.proj


class OpenCLIP(nn.Module):
    """open_clip `CLIP` (the class HPSv2 builds for ViT-H-14), with its exact parameter names.

    Embeddings and projections are allocated uninitialised: load official weights or call `init_random_` first.
    """

    def __init__(self, config: OpenCLIPConfig) -> None:
        super().__init__()
        self.config = config
        self.visual = OpenCLIPVisionTransformer(config)
        width = config.text_width
        self.token_embedding = nn.Embedding(
            config.vocab_size, width, _weight=torch.empty(config.vocab_size, width)
        )
        self.positional_embedding = nn.Parameter(torch.empty(config.context_length, width))
        self.transformer = _Transformer(
            width, config.text_layers, config.text_heads, config.text_mlp_ratio, config.eps, config.quick_gelu
        )
        self.ln_final = _LayerNorm(width, eps=config.eps)
        self.text_projection = nn.Parameter(torch.empty(width, config.embed_dim))
        self.logit_scale = nn.Parameter(torch.full((), math.log(1 / 0.07)))

    @torch.no_grad()
    def init_random_(self, generator: torch.Generator) -> OpenCLIP:
        """open_clip's initialisation of the embeddings and projections (linear layers keep torch's defaults)."""
        v_scale = self.config.vision_width**-0.5
        for p in (self.visual.class_embedding, self.visual.positional_embedding, self.visual.proj):
            p.normal_(0.0, v_scale, generator=generator)
        self.token_embedding.weight.normal_(0.0, 0.02, generator=generator)
        self.positional_embedding.normal_(0.0, 0.01, generator=generator)
        self.text_projection.normal_(0.0, self.config.text_width**-0.5, generator=generator)
        return self

    def encode_image(self, pixels: Tensor, normalize: bool = True) -> Tensor:
        features = self.visual(pixels)
        return F.normalize(features, dim=-1) if normalize else features

    def encode_text(self, tokens: Tensor, normalize: bool = True) -> Tensor:
        """tokens [B, context_length] -> [B, embed]; pooled at the first position of the highest id (<end_of_text>)."""
        x = self.token_embedding(tokens) + self.positional_embedding
        x = self.ln_final(self.transformer(x, causal=True))
        x = x[torch.arange(x.shape[0], device=x.device), tokens.argmax(dim=-1)] @ self.text_projection
        return F.normalize(x, dim=-1) if normalize else x

    def forward(self, pixels: Tensor, tokens: Tensor) -> Tensor:
        """Cosine between each image and its own prompt, [B] (the diagonal of image_features @ text_featuresᵀ)."""
        return (self.encode_image(pixels) * self.encode_text(tokens)).sum(dim=-1)


# ----------------------------------------------------------------------------------------------------------------
# Checkpoint mapping


def load_official_hps_state_dict(model: OpenCLIP, state_dict: Mapping[str, Tensor]) -> None:
    """Load the `state_dict` of an HPS checkpoint strictly (open_clip names map one to one)."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    if missing or unexpected:
        raise KeyError(
            "HPS checkpoint does not match the open_clip ViT-H-14 layout: "
            f"missing keys {missing[:20]}{' ...' if len(missing) > 20 else ''} ({len(missing)}), "
            f"unexpected keys {unexpected[:20]}{' ...' if len(unexpected) > 20 else ''} ({len(unexpected)}); "
            "use the official HPS_v2.1_compressed.pt / HPS_v2_compressed.pt from xswu/HPSv2"
        )
    bad_shapes = [
        f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(expected[k].shape)}"
        for k, v in state_dict.items()
        if tuple(v.shape) != tuple(expected[k].shape)
    ]
    if bad_shapes:
        raise ValueError("HPS checkpoint shapes differ from the config: " + "; ".join(bad_shapes[:20]))
    model.load_state_dict(dict(state_dict), strict=True)


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
        model: OpenCLIP,
        tokenizer: CLIPBPETokenizer,
        *,
        device: str | torch.device = "cpu",
        batch_size: int = 16,
        antialias: bool = True,
        autocast_dtype: torch.dtype | None = None,
        version: Literal["v2.0", "v2.1"] = "v2.1",
        weights_file: Path | None = None,
        vocab_file: Path | None = None,
    ) -> None:
        if tokenizer.vocab_size != model.config.vocab_size:
            raise ValueError(
                f"tokenizer has {tokenizer.vocab_size} tokens but the model expects {model.config.vocab_size}; "
                "use open_clip's bpe_simple_vocab_16e6.txt.gz"
            )
        if tokenizer.context_length != model.config.context_length:
            raise ValueError(
                f"tokenizer context {tokenizer.context_length} != model context {model.config.context_length}"
            )
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.antialias = antialias
        self.autocast_dtype = autocast_dtype
        self.version = version
        self.weights_file = weights_file
        self.vocab_file = vocab_file

    @property
    def config(self) -> OpenCLIPConfig:
        return self.model.config

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
    def from_config(
        cls,
        config: OpenCLIPConfig,
        tokenizer: CLIPBPETokenizer,
        *,
        seed: int = 0,
        device: str | torch.device = "cpu",
        **options: Any,
    ) -> HPSv21Scorer:
        """Random weights of the given architecture (for tests and benchmarks)."""
        state = torch.random.get_rng_state()
        try:
            torch.manual_seed(seed)  # torch's default init of the linear layers
            model = OpenCLIP(config).init_random_(torch.Generator().manual_seed(seed))
        finally:
            torch.random.set_rng_state(state)
        return cls(model, tokenizer, device=device, **options)

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
        config = config or OpenCLIPConfig.preset("ViT-H-14")
        weights_spec = HPS_V21_WEIGHTS_FILE if version == "v2.1" else HPS_V2_WEIGHTS_FILE
        weights_path = resolve_weight_file(weights_spec, path)
        vocab_path = resolve_weight_file(
            HPS_BPE_VOCAB_FILE, vocab, extra_candidates=_installed_open_clip_vocab()
        )
        tokenizer = CLIPBPETokenizer.from_file(
            vocab_path, context_length=config.context_length, fix_text=fix_text
        )
        state = load_official_state_dict(weights_path, wrapper_key="state_dict")
        with torch.device("meta"):
            model = OpenCLIP(config)
        model = model.to_empty(device="cpu")
        load_official_hps_state_dict(model, state)
        return cls(
            model,
            tokenizer,
            device=device,
            version=version,
            weights_file=weights_path,
            vocab_file=vocab_path,
            **options,
        )

    @torch.no_grad()
    def score(self, prompts: Sequence[str], images: Sequence[Image.Image]) -> list[float]:
        """Cosine of the normalised image and text features per pair (×100 gives the benchmark's unit)."""
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
                cosine = self.model(pixels.to(self.device), tokens.to(self.device))
            out.extend(cosine.float().cpu().tolist())
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
