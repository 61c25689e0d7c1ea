"""Text-to-image pipeline: T5 text encoder + Infinity transformer + BSQ-VAE, loaded from local files.

``InfinityPipeline.from_pretrained(folder)`` opens a model folder (its ``model_index.json`` names the three
parts, see :mod:`infinity_model.model_folder`); the parts can also be named one by one. It reads only tensor
*shapes* first (memory-mapped ``.pth``, safetensors headers, JSON configs) and checks that the transformer, the
VAE and the text encoder fit together before any weights are loaded.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from pathlib import Path

import torch
from bsq_tokenizer import BSQVAE, ScaleSchedule, VAEConfig, get_schedule, image_to_tensor, load_official_vae
from bsq_tokenizer.image import to_rgb
from bsq_tokenizer.io import infer_vae_config, read_state_dict, saved_vae_config
from PIL import Image

from .checkpoint import (
    CheckpointInfo,
    _adopt_state_dict,
    _checked_meta_model,
    _open_checkpoint,
    _safetensors_shapes,
    check_compatible,
    describe_checkpoint,
    inspect_checkpoint,
)
from .config import InfinityConfig
from .edit import fit_mask, fit_source, keep_masks, open_image, outpaint_canvas
from .generation import GenerationConfig
from .model_folder import read_model_folder
from .sampler import EditSource, SamplerConfig, SampleResult, ScaleStep, codes_to_uint8, sample
from .text import TextEncoder
from .transformer import Infinity

__all__ = [
    "CheckpointInfo",  # re-exported from .checkpoint, their home
    "InfinityPipeline",
    "check_compatible",
    "describe_checkpoint",
    "inspect_checkpoint",
]

_DEFAULTS = GenerationConfig()

logger = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------- VAE side
def _vae_config(path: Path, preset: str | None) -> VAEConfig:
    """The VAE architecture: a preset name, else the config saved with our safetensors, else the tensor shapes."""
    if not path.exists():
        raise FileNotFoundError(
            f"VAE checkpoint {path} does not exist; pass an official infinity_vae_*.pth or a folder (or older "
            ".safetensors file) written by bsq_tokenizer.save_vae"
        )
    if preset is not None:
        return VAEConfig.preset(preset)
    saved = saved_vae_config(path)
    if saved is not None:
        return saved
    if path.suffix == ".safetensors":
        state = {k: torch.empty(shape, device="meta") for k, shape in _safetensors_shapes(path).items()}
    else:
        state = read_state_dict(path)
    return infer_vae_config(state)


def _t5_width(text_encoder: str | Path) -> int | None:
    config = Path(text_encoder).expanduser() / "config.json"
    if not config.is_file():
        return None
    return int(json.loads(config.read_text()).get("d_model", 0)) or None


def _per_scale_value(value: float | Sequence[float]) -> float | tuple[float, ...]:
    """One number for every scale, or one per scale (as a tuple, the form :class:`SamplerConfig` keeps)."""
    return float(value) if isinstance(value, (int, float)) else tuple(float(v) for v in value)


# ---------------------------------------------------------------------------------------- pipeline
class InfinityPipeline:
    """Prompts in, PIL images out: ``pipe(["a red fox"], ratio=1.0, pn="1M", cfg=3, tau=0.5, seed=0)``."""

    def __init__(
        self,
        model: Infinity,
        vae: BSQVAE,
        text_encoder: TextEncoder,
        *,
        dtype: torch.dtype = torch.float32,
        generation: GenerationConfig | None = None,
    ) -> None:
        check_compatible(model.config, vae.config, "model", "vae")
        if text_encoder.hidden_size != model.config.text_channels:
            raise ValueError(
                f"text encoder width {text_encoder.hidden_size} != model text_channels {model.config.text_channels}; "
                "the released models need flan-t5-xl (2048)"
            )
        self.model = model.eval()
        self.vae = vae.eval()
        self.text_encoder = text_encoder
        self.dtype = dtype
        self.generation = generation or GenerationConfig()  # the model folder's settings (the CLI's defaults)

    @classmethod
    def from_pretrained(
        cls,
        folder: str | Path | None = None,
        vae: str | Path | None = None,
        text_encoder: str | Path | None = None,
        *,
        model: str | Path | None = None,
        generation: GenerationConfig | None = None,
        device: str | torch.device = "cpu",
        dtype: torch.dtype | None = None,
        model_preset: str | None = None,
        vae_preset: str | None = None,
        allow_download: bool = False,
    ) -> InfinityPipeline:
        """Load a model folder, or the three parts named one by one, after checking that they fit together.

        ``from_pretrained("path/to/folder")`` reads the folder's ``model_index.json`` (the parts' paths and its
        ``generation_config.json``, kept as :attr:`generation`); ``from_pretrained(model=..., vae=...,
        text_encoder=...)`` (or those three positionally) names the parts: ``model`` an official ``.pth`` (flat or
        training checkpoint), an official sharded folder, or a folder from ``save_infinity``; ``vae`` an official
        ``infinity_vae_*.pth`` or our ``.safetensors``; ``text_encoder`` a local flan-t5-xl folder (a hub id only
        with ``allow_download``). ``generation`` replaces the folder's settings. ``dtype``: transformer compute
        precision (default bf16 autocast on CUDA like the reference, fp32 elsewhere).
        """
        if folder is not None and model is None and vae is None and text_encoder is None:
            index = read_model_folder(folder)
            model, vae, text_encoder = index.model, index.vae, index.text_encoder
            generation = generation or index.generation
        elif folder is not None:
            if model is not None:
                raise ValueError(
                    f"the transformer is given twice ({folder} and model={model}); pass one of them"
                )
            model = folder  # the older positional form from_pretrained(model, vae, text_encoder)
        if model is None or vae is None or text_encoder is None:
            missing = [name for name, value in (("model", model), ("vae", vae), ("text_encoder", text_encoder))
                       if value is None]  # fmt: skip
            raise ValueError(
                f"InfinityPipeline.from_pretrained: pass a model folder, or all of model=, vae=, text_encoder= "
                f"({', '.join(missing)} missing)"
            )
        device = torch.device(device)
        if dtype is None:
            dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
        model_path, vae_path = Path(model).expanduser(), Path(vae).expanduser()
        info, state = _open_checkpoint(model_path)  # memory-mapped: shapes now, weights read once below
        config = info.config if model_preset is None else InfinityConfig.preset(model_preset)
        # built once on the meta device, its keys and shapes checked once (check_state_dict); no data read yet
        transformer = _checked_meta_model(config, state, str(model_path))
        width = _t5_width(text_encoder)
        if width is not None and width != config.text_channels:
            raise ValueError(
                f"text encoder {text_encoder} has width {width} but {model_path} expects text_channels="
                f"{config.text_channels}; the released models use google/flan-t5-xl (2048)"
            )
        vae_config = _vae_config(vae_path, vae_preset)
        check_compatible(config, vae_config, str(model_path), str(vae_path))
        logger.info("loading %s transformer (%s) from %s", info.preset or "custom", info.format, model_path)
        # the mapped tensors adopted as fp32 weights; `dtype` is the autocast precision of the blocks (the
        # head/AdaLN stay fp32 as in the reference)
        transformer = _adopt_state_dict(
            transformer, state, dtype=torch.float32, device=device, source=str(model_path)
        )
        del state
        vae_model = load_official_vae(vae_path, vae_config, device=device)
        encoder = TextEncoder.from_pretrained(text_encoder, device=device, allow_download=allow_download)
        return cls(transformer, vae_model, encoder, dtype=dtype, generation=generation)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @staticmethod
    def schedule(ratio: float = _DEFAULTS.ratio, pn: str = _DEFAULTS.pn) -> ScaleSchedule:
        """Scale schedule of the template nearest to ``ratio`` = height / width at pixel budget ``pn``."""
        if ratio <= 0:
            raise ValueError(f"ratio (height / width) must be > 0, got {ratio}")
        return get_schedule(ratio, pn)

    def _autocast(self):
        if self.dtype == torch.float32:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    def generate(
        self,
        prompts: Sequence[str],
        negative_prompt: str | Sequence[str] | None = None,
        *,
        schedule: ScaleSchedule,
        sampler: SamplerConfig,
        seed: int | Sequence[int] | None = 0,
        callback: Callable[[ScaleStep], None] | None = None,
        prefix_bits: Sequence[torch.Tensor] | None = None,
        edit: EditSource | None = None,
    ) -> SampleResult:
        """Bits, codes and uint8 RGB images ``(B, H, W, 3)`` for the prompts (see :func:`sample`)."""
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        text = self.text_encoder.encode(prompts)
        negative = None
        if negative_prompt is not None:
            negatives = (
                [negative_prompt] * len(prompts)
                if isinstance(negative_prompt, str)
                else list(negative_prompt)
            )
            if len(negatives) != len(prompts):
                raise ValueError(f"got {len(negatives)} negative prompts for {len(prompts)} prompts")
            negative = self.text_encoder.encode(negatives)
        with self._autocast():
            return sample(
                self.model,
                text,
                schedule,
                sampler,
                negative_text=negative,
                seed=seed,
                vae=self.vae,
                callback=callback,
                prefix_bits=prefix_bits,
                edit=edit,
            )

    def __call__(
        self,
        prompts: str | Sequence[str],
        negative_prompt: str | Sequence[str] | None = None,
        *,
        ratio: float = _DEFAULTS.ratio,
        pn: str = _DEFAULTS.pn,
        cfg: float | Sequence[float] = _DEFAULTS.cfg,
        tau: float | Sequence[float] = _DEFAULTS.tau,
        seed: int | Sequence[int] | None = 0,
        schedule: ScaleSchedule | None = None,
        callback: Callable[[ScaleStep], None] | None = None,
        **sampler_options,
    ) -> list[Image.Image]:
        """One PIL RGB image per prompt. ``schedule`` overrides ``ratio``/``pn`` (e.g. a custom schedule);
        ``sampler_options`` go to :class:`SamplerConfig` (top_k, top_p, cfg_insertion_layer, cfg_off_last, use_cache,
        candidates)."""
        schedule = schedule or self.schedule(ratio, pn)
        sampler = SamplerConfig(cfg=_per_scale_value(cfg), tau=_per_scale_value(tau), **sampler_options)
        result = self.generate(
            prompts, negative_prompt, schedule=schedule, sampler=sampler, seed=seed, callback=callback
        )
        assert result.images is not None
        return [Image.fromarray(img.cpu().numpy()) for img in result.images]

    # ------------------------------------------------------------------------------------------ editing
    def edit_source(
        self,
        image: Image.Image,
        mask: torch.Tensor | None,
        schedule: ScaleSchedule,
        batch: int = 1,
        *,
        dilate: int = 0,
        keep_scales: int | None = None,
    ) -> EditSource:
        """The sampler's :class:`EditSource` for a source already at the schedule's pixel size.

        ``mask``: pixel mask ``(H, W)`` bool, True = regenerate (:mod:`infinity_model.edit` documents how it
        maps to every scale's grid), None = nothing masked.
        """
        height, width = schedule.pixel_hw
        if image.size != (width, height):
            raise ValueError(
                f"the source is {image.width}x{image.height} but the schedule needs {width}x{height}; fit it "
                "with infinity_model.edit.fit_source first"
            )
        if mask is not None and tuple(mask.shape) != (height, width):
            raise ValueError(
                f"the pixel mask has shape {tuple(mask.shape)}; the schedule needs {(height, width)}"
            )
        device = self.device
        with torch.no_grad():
            latent = self.vae.encode(image_to_tensor(to_rgb(image)).to(device)).float()
        grids = schedule.vae_scales(bool(self.model.config.patchify))
        keep = keep_masks(mask, grids, dilate=dilate, keep_scales=keep_scales)
        return EditSource(
            latent.expand(batch, -1, -1, -1).contiguous(),
            tuple(m.to(device).expand(batch, -1, -1).contiguous() for m in keep),
        )

    def reconstruct(self, edit: EditSource, schedule: ScaleSchedule) -> torch.Tensor:
        """uint8 RGB ``(1, H, W, 3)``: the tokenizer's reconstruction of an edit's source.

        What an edit that holds every token returns: the sampler would give exactly the source's bits and
        codes, so the transformer is skipped and the tokenizer's own codes are decoded (pixel for pixel)."""
        with torch.no_grad():
            grids = schedule.vae_scales(bool(self.model.config.patchify))
            codes = self.vae.quantizer.quantize(edit.latent[:1], grids).codes
            return codes_to_uint8(self.vae, codes)

    def edit(
        self,
        image: Image.Image | str | Path,
        mask: Image.Image | str | Path | None,
        prompts: str | Sequence[str],
        negative_prompt: str | Sequence[str] | None = None,
        *,
        keep_scales: int | None = None,
        dilate: int = 0,
        ratio: float | None = None,
        pn: str = _DEFAULTS.pn,
        cfg: float | Sequence[float] = _DEFAULTS.cfg,
        tau: float | Sequence[float] = _DEFAULTS.tau,
        seed: int | Sequence[int] | None = 0,
        schedule: ScaleSchedule | None = None,
        callback: Callable[[ScaleStep], None] | None = None,
        **sampler_options,
    ) -> list[Image.Image]:
        """Inpainting and variations of a real image: one PIL image of the template's size per prompt.

        ``mask`` (white = regenerate, any size: resized to the source with a notice) is None for nothing
        masked; ``keep_scales = k`` holds the source's first k scales entirely (with no mask: a variation).
        The source is cover-resized and centre-cropped to the template of ``ratio`` (default: the source's
        own height / width) at ``pn``, like training data; ``infinity_model.edit.paste_back`` puts the result
        back into the original. An empty mask returns the tokenizer's reconstruction; a full one is plain
        generation with the same seed. Other arguments as :meth:`__call__`.
        """
        source = open_image(image, "source image")
        schedule = schedule or self.schedule(ratio if ratio is not None else source.height / source.width, pn)
        pixel_mask = None
        if mask is not None:
            pixel_mask = fit_mask(open_image(mask, "mask", rgb=False), source.size, schedule)
        return self._edit(
            fit_source(source, schedule), pixel_mask, prompts, negative_prompt, schedule=schedule,
            dilate=dilate, keep_scales=keep_scales, cfg=cfg, tau=tau, seed=seed, callback=callback,
            **sampler_options,
        )  # fmt: skip

    def outpaint(
        self,
        image: Image.Image | str | Path,
        prompts: str | Sequence[str],
        negative_prompt: str | Sequence[str] | None = None,
        *,
        ratio: float,
        pn: str = _DEFAULTS.pn,
        dilate: int = 0,
        cfg: float | Sequence[float] = _DEFAULTS.cfg,
        tau: float | Sequence[float] = _DEFAULTS.tau,
        seed: int | Sequence[int] | None = 0,
        schedule: ScaleSchedule | None = None,
        callback: Callable[[ScaleStep], None] | None = None,
        **sampler_options,
    ) -> list[Image.Image]:
        """The source placed whole (aspect kept, centred) on the canvas of the template nearest to ``ratio``
        (height / width) at ``pn``, and the rest of the canvas generated for each prompt."""
        schedule = schedule or self.schedule(ratio, pn)
        canvas, pixel_mask = outpaint_canvas(open_image(image, "source image"), schedule)
        return self._edit(
            canvas, pixel_mask, prompts, negative_prompt, schedule=schedule, dilate=dilate, keep_scales=None,
            cfg=cfg, tau=tau, seed=seed, callback=callback, **sampler_options,
        )  # fmt: skip

    def _edit(
        self,
        source: Image.Image,
        pixel_mask: torch.Tensor | None,
        prompts: str | Sequence[str],
        negative_prompt: str | Sequence[str] | None,
        *,
        schedule: ScaleSchedule,
        dilate: int,
        keep_scales: int | None,
        cfg: float | Sequence[float],
        tau: float | Sequence[float],
        seed: int | Sequence[int] | None,
        callback: Callable[[ScaleStep], None] | None,
        **sampler_options,
    ) -> list[Image.Image]:
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        edit = self.edit_source(
            source, pixel_mask, schedule, len(prompts), dilate=dilate, keep_scales=keep_scales
        )
        sampler = SamplerConfig(cfg=_per_scale_value(cfg), tau=_per_scale_value(tau), **sampler_options)
        if edit.holds_everything:
            image = Image.fromarray(self.reconstruct(edit, schedule)[0].cpu().numpy())
            return [image.copy() for _ in prompts]
        result = self.generate(
            prompts,
            negative_prompt,
            schedule=schedule,
            sampler=sampler,
            seed=seed,
            callback=callback,
            edit=edit,
        )
        assert result.images is not None
        return [Image.fromarray(img.cpu().numpy()) for img in result.images]
