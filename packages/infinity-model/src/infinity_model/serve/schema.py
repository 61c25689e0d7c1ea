"""What a client may ask of ``infinity serve``: the JSON request, its checks, and the settings reported back.

Every field is checked here, before anything reaches the sampler: a bad value becomes a :class:`RequestError`
that names the field (the server answers it with a 4xx JSON error and keeps serving). No field names a file.
"""

from __future__ import annotations

import math
import random
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from bsq_tokenizer import ScaleSchedule, get_schedule
from bsq_tokenizer.schedules import EXTRA_PIXEL_BUDGETS, PIXEL_BUDGETS

from ..errors import InfinityModelError
from ..generation import GenerationConfig
from ..sampler import SamplerConfig

if TYPE_CHECKING:
    from PIL import Image
    from torch import Tensor

__all__ = [
    "MAX_SEED",
    "EditSpec",
    "ImageRequest",
    "RequestError",
    "ServeLimits",
    "available_pixel_budgets",
    "generate_command",
    "parse_request",
]

MAX_SEED = 2**53 - 1  # the largest integer a browser's JSON numbers hold exactly
_FIELDS = (
    "prompt",
    "negative_prompt",
    "num_images",
    "ratio",
    "pn",
    "cfg",
    "tau",
    "top_k",
    "top_p",
    "candidates",
    "seed",
)


class RequestError(InfinityModelError, ValueError):
    """A request the server refuses; ``field`` names the JSON field at fault (None for the body itself)."""

    def __init__(self, field: str | None, message: str, status: int = 422) -> None:
        super().__init__(message)
        self.field = field
        self.message = message
        self.status = status

    def to_dict(self) -> dict[str, Any]:
        """The JSON body the server answers it with (with ``status``)."""
        return {"error": {"field": self.field, "message": self.message}}


@dataclass(frozen=True)
class ServeLimits:
    """What one request may ask and how much the server holds; ``infinity serve`` flags set each one."""

    max_images: int = 16  # images per request (prompts x num_images)
    max_prompt_chars: int = 1000
    max_candidates: int = 16
    max_cfg: float = 30.0
    max_tau: float = 10.0
    max_queue: int = 64  # requests waiting for the sampler; one more is answered 503
    batch_size: int = 16  # images per sampler call; 1 turns micro-batching off
    batch_rows: int = 64  # images x candidates per sampler call (one request is never held back by it)
    batch_wait: float = 0.01  # seconds a shared call waits for more requests while the last one was shared
    max_body_bytes: int = 1 << 16
    max_edit_body_bytes: int = 32 << 20  # an edit request carries its source image (and mask) as base64
    max_source_pixels: int = 4096 * 4096  # width x height of an uploaded source image or mask

    def __post_init__(self) -> None:
        for name in (
            "max_images",
            "max_prompt_chars",
            "max_candidates",
            "max_queue",
            "batch_size",
            "batch_rows",
            "max_source_pixels",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"ServeLimits.{name} must be >= 1, got {getattr(self, name)}")
        if (
            self.max_cfg <= 0
            or self.max_tau <= 0
            or min(self.max_body_bytes, self.max_edit_body_bytes) < 1024
            or self.batch_wait < 0
        ):
            raise ValueError(
                "ServeLimits: max_cfg and max_tau must be > 0, max_body_bytes and max_edit_body_bytes >= 1024, "
                f"batch_wait >= 0; got {self}"
            )

    def to_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}


def available_pixel_budgets(num_levels: int) -> tuple[str, ...]:
    """Pixel budgets whose schedules fit a model with ``num_levels`` level embeddings, smallest first."""
    budgets = EXTRA_PIXEL_BUDGETS + PIXEL_BUDGETS
    return tuple(pn for pn in budgets if get_schedule(1.0, pn).num_scales <= num_levels)


@dataclass(frozen=True, eq=False)
class EditSpec:
    """What an edit request holds of the source: the image already at the schedule's pixel size (the
    outpainting canvas for ``outpaint``), its pixel mask (True = regenerate; None = nothing masked) and how the
    mask maps to the scales (:func:`infinity_model.edit.keep_masks`)."""

    mode: str  # "inpaint", "outpaint" or "variation"
    source: Image.Image
    mask: Tensor | None
    keep_scales: int | None
    dilate: int
    notices: tuple[str, ...] = ()  # what the server changed about the input (e.g. a resized mask)


@dataclass(frozen=True)
class ImageRequest:
    """A checked request: one prompt and one seed per image, shared sampler settings (and, for an edit, the
    source)."""

    prompts: tuple[str, ...]
    seeds: tuple[int, ...]
    negative_prompt: str | None
    ratio: float
    schedule: ScaleSchedule
    sampler: SamplerConfig
    edit: EditSpec | None = None

    @property
    def num_images(self) -> int:
        return len(self.prompts)

    @property
    def batch_key(self) -> tuple[Any, ...]:
        """Requests with equal keys can share one sampler call (same scales, same settings, same guidance)."""
        s = self.schedule
        # an edit holds its own source: it shares a sampler call with no other request (EditSpec compares and
        # hashes by identity, eq=False)
        return (
            s.template,
            s.pn,
            s.scales,
            s.rope_grid,
            self.sampler,
            self.negative_prompt is None,
            self.edit,
        )

    def settings(self, index: int) -> dict[str, Any]:
        """The settings of image ``index``: enough to draw it again with ``infinity generate``."""
        height, width = self.schedule.pixel_hw
        cfg, tau = self.sampler.cfg, self.sampler.tau
        return {
            "prompt": self.prompts[index],
            "negative_prompt": self.negative_prompt,
            "seed": self.seeds[index],
            "ratio": self.ratio,
            "pn": self.schedule.pn,
            "cfg": list(cfg) if isinstance(cfg, tuple) else cfg,
            "tau": list(tau) if isinstance(tau, tuple) else tau,
            "top_k": self.sampler.top_k,
            "top_p": self.sampler.top_p,
            "candidates": self.sampler.candidates,
            "width": width,
            "height": height,
            **({} if self.edit is None else {"edit": self._edit_settings()}),
        }

    def _edit_settings(self) -> dict[str, Any]:
        assert self.edit is not None
        return {"mode": self.edit.mode, "keep_scales": self.edit.keep_scales, "dilate": self.edit.dilate}


def _number_text(value: float | Sequence[float]) -> str:
    if isinstance(value, (int, float)):
        return str(int(value)) if float(value).is_integer() else repr(float(value))
    return ",".join(_number_text(v) for v in value)


def generate_command(settings: Mapping[str, Any], model_args: Sequence[str] = ()) -> str:
    """The ``infinity generate`` command line that draws the image described by ``settings`` again; for an
    edit, the ``infinity edit`` one (with ``source.png`` and ``mask.png`` standing for the uploaded files)."""
    edit = settings.get("edit")
    if edit is None:
        args = ["infinity", "generate", str(settings["prompt"]), *model_args]
    else:
        args = ["infinity", "edit", "source.png", str(settings["prompt"]), *model_args]
        if edit["mode"] == "outpaint":
            args += ["--outpaint", _number_text(settings["ratio"]), "--dilate", str(edit["dilate"])]
        elif edit["mode"] == "inpaint":
            args += ["--mask", "mask.png", "--dilate", str(edit["dilate"])]
        if edit["keep_scales"] is not None:
            args += ["--keep-scales", str(edit["keep_scales"])]
    if settings.get("negative_prompt") is not None:
        args += ["--negative-prompt", str(settings["negative_prompt"])]
    if edit is None or edit["mode"] != "outpaint":
        args += ["--ratio", _number_text(settings["ratio"])]
    args += ["--pn", str(settings["pn"])]
    args += ["--cfg", _number_text(settings["cfg"]), "--tau", _number_text(settings["tau"])]
    args += ["--top-k", str(settings["top_k"]), "--top-p", _number_text(settings["top_p"])]
    args += ["--candidates", str(settings["candidates"]), "--seed", str(settings["seed"]), "-o", "out.png"]
    return shlex.join(args)


# ------------------------------------------------------------------------------------------ parsing
def _is_number(value: Any) -> bool:
    """A finite JSON number that a float holds (not a bool, not an integer beyond the float range)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:  # an integer of over 308 digits: refused, not a 500
        return False


def _integer(body: Mapping[str, Any], name: str, default: int, low: int, high: int) -> int:
    value = body.get(name, default)
    if value is None:
        value = default
    if isinstance(value, bool) or not isinstance(value, int):
        raise RequestError(name, f"{name} must be an integer, got {value!r}")
    if not low <= value <= high:
        raise RequestError(name, f"{name} must be in [{low}, {high}], got {value}")
    return value


def _real(body: Mapping[str, Any], name: str, default: float) -> float:
    value = body.get(name, default)
    if value is None:
        value = default
    if not _is_number(value):
        raise RequestError(name, f"{name} must be a finite number, got {value!r}")
    return float(value)


def _per_scale(
    body: Mapping[str, Any], name: str, default: float | tuple[float, ...], num_scales: int
) -> float | tuple[float, ...]:
    """A number, or a list of one number per scale (as ``--cfg 3,3,4`` on the command line)."""
    value = body.get(name, default)
    if value is None:
        return default
    if isinstance(value, list):
        if len(value) != num_scales or not all(_is_number(v) for v in value):
            raise RequestError(
                name,
                f"{name} must be a number or a list of {num_scales} numbers (one per scale), got {value!r}",
            )
        return tuple(float(v) for v in value)
    if not _is_number(value):
        raise RequestError(name, f"{name} must be a finite number or a list of numbers, got {value!r}")
    return float(value)


def _text(value: Any, name: str, limit: int) -> str:
    if not isinstance(value, str):
        raise RequestError(name, f"{name} must be a string, got {type(value).__name__}")
    if not value.strip():
        raise RequestError(name, f"{name} is empty; write what the image should show")
    if len(value) > limit:
        raise RequestError(name, f"{name} has {len(value)} characters; at most {limit} are allowed")
    return value


def parse_request(
    body: Any,
    defaults: GenerationConfig,  # for the fields a request leaves out: the model folder's
    limits: ServeLimits,
    pixel_budgets: Sequence[str],
    rng: random.Random | None = None,
) -> ImageRequest:
    """Check a decoded JSON body and turn it into an :class:`ImageRequest`; raises :class:`RequestError`.

    ``prompt`` is a string or a list of strings; every prompt is drawn ``num_images`` times. Image ``i`` of
    the request uses ``seed + i`` (as ``infinity generate``); without ``seed`` the server draws one.
    """
    if not isinstance(body, dict):
        raise RequestError(None, f"the body must be a JSON object, got {type(body).__name__}", status=400)
    unknown = sorted(set(body) - set(_FIELDS))
    if unknown:
        raise RequestError(unknown[0], f"unknown field {unknown[0]!r}; known fields: {', '.join(_FIELDS)}")
    if "prompt" not in body:
        raise RequestError("prompt", "prompt is missing; pass a string or a list of strings")
    raw = body["prompt"]
    prompts = raw if isinstance(raw, list) else [raw]
    if not prompts:
        raise RequestError("prompt", "prompt is an empty list; pass at least one prompt")
    prompts = [_text(p, "prompt", limits.max_prompt_chars) for p in prompts]
    negative = body.get("negative_prompt")
    if negative is not None:
        negative = _text(negative, "negative_prompt", limits.max_prompt_chars)
    num_images = _integer(body, "num_images", 1, 1, limits.max_images)
    if len(prompts) * num_images > limits.max_images:
        raise RequestError(
            "num_images",
            f"{len(prompts)} prompts x {num_images} images = {len(prompts) * num_images} images; at most "
            f"{limits.max_images} per request",
        )

    ratio = _real(body, "ratio", defaults.ratio)
    if ratio <= 0:
        raise RequestError("ratio", f"ratio (height / width) must be > 0, got {ratio}")
    pn = body.get("pn", defaults.pn)
    if pn is None:
        pn = defaults.pn
    if not isinstance(pn, str) or pn not in pixel_budgets:
        raise RequestError(
            "pn", f"unknown pixel budget {pn!r}; this model draws at {', '.join(pixel_budgets)}"
        )
    schedule = get_schedule(ratio, pn)

    cfg = _per_scale(body, "cfg", defaults.cfg, schedule.num_scales)
    for value in cfg if isinstance(cfg, tuple) else (cfg,):
        if not 0 <= value <= limits.max_cfg:
            raise RequestError("cfg", f"cfg must be in [0, {limits.max_cfg}], got {value}")
    tau = _per_scale(body, "tau", defaults.tau, schedule.num_scales)
    for value in tau if isinstance(tau, tuple) else (tau,):
        if not 0 < value <= limits.max_tau:
            raise RequestError("tau", f"tau must be in (0, {limits.max_tau}], got {value}")
    top_k = _integer(body, "top_k", defaults.top_k, 0, 1 << 30)
    top_p = _real(body, "top_p", defaults.top_p)
    if not 0 <= top_p <= 1:
        raise RequestError("top_p", f"top_p must be in [0, 1] (0 disables it), got {top_p}")
    candidates = _integer(body, "candidates", defaults.candidates, 1, limits.max_candidates)
    seed = body.get("seed")
    if seed is None:
        seed = (rng or random.SystemRandom()).randrange(0, 2**31)
    elif isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED - limits.max_images:
        raise RequestError(
            "seed", f"seed must be an integer in [0, {MAX_SEED - limits.max_images}], got {seed!r}"
        )

    sampler = SamplerConfig(cfg=cfg, tau=tau, top_k=top_k, top_p=top_p, candidates=candidates)
    per_image = [p for p in prompts for _ in range(num_images)]
    return ImageRequest(
        prompts=tuple(per_image),
        seeds=tuple(seed + i for i in range(len(per_image))),
        negative_prompt=negative,
        ratio=ratio,
        schedule=schedule,
        sampler=sampler,
    )
