"""Generation settings of a model folder: the one home of the sampling defaults.

``infinity generate``/``edit``/``serve``, :class:`~infinity_model.pipeline.InfinityPipeline` and
:class:`~infinity_model.sampler.SamplerConfig` take their defaults from :class:`GenerationConfig`; a model folder
saves the settings it was evaluated with as ``generation_config.json`` (the shape of transformers'
``GenerationConfig.save_pretrained``), so a trained model carries its own cfg, temperature and pixel budget.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

__all__ = ["GENERATION_CONFIG_FILE", "GenerationConfig"]

GENERATION_CONFIG_FILE = "generation_config.json"


@dataclass(frozen=True)
class GenerationConfig:
    """Template and sampler settings; the defaults are the released 2B's (1M pixels, cfg 3, tau 0.5, top-k 900,
    top-p 0.97, one draw per image).

    ``pn``: pixel budget (0.06M, 0.25M, 0.60M, 1M; the small models also 0.016M ...); ``ratio``: height / width
    (the nearest template is used); ``cfg``/``tau``: a number or one value per scale; ``top_k``/``top_p``: 0
    disables; ``candidates``: draws per image, the most likely kept (see :class:`~infinity_model.SamplerConfig`).
    """

    pn: str = "1M"
    ratio: float = 1.0
    cfg: float | tuple[float, ...] = 3.0
    tau: float | tuple[float, ...] = 0.5
    top_k: int = 900
    top_p: float = 0.97
    candidates: int = 1

    def __post_init__(self) -> None:
        if not isinstance(self.pn, str):
            raise ValueError(f"GenerationConfig.pn must be a pixel budget like '1M', got {self.pn!r}")
        for name in ("cfg", "tau"):
            value = getattr(self, name)
            if isinstance(value, (list, tuple)):
                if not value or not all(_is_number(v) for v in value):
                    raise ValueError(
                        f"GenerationConfig.{name} must be a number or a list of numbers, got {value!r}"
                    )
                object.__setattr__(self, name, tuple(float(v) for v in value))
            elif _is_number(value):
                object.__setattr__(self, name, float(value))
            else:
                raise ValueError(
                    f"GenerationConfig.{name} must be a number or a list of numbers, got {value!r}"
                )
        for name in ("ratio", "top_p"):
            value = getattr(self, name)
            if not _is_number(value):
                raise ValueError(f"GenerationConfig.{name} must be a number, got {value!r}")
            object.__setattr__(self, name, float(value))
        for name in ("top_k", "candidates"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool):
                raise ValueError(f"GenerationConfig.{name} must be an integer, got {value!r}")
        if self.ratio <= 0:
            raise ValueError(f"GenerationConfig.ratio (height / width) must be > 0, got {self.ratio}")

    def sampler_options(self) -> dict[str, Any]:
        """The :class:`~infinity_model.SamplerConfig` keywords among these settings (cfg, tau, top_k, top_p,
        candidates): ``SamplerConfig(**g.sampler_options())`` or ``pipe(prompts, **g.sampler_options())``."""
        return {
            "cfg": self.cfg,
            "tau": self.tau,
            "top_k": self.top_k,
            "top_p": self.top_p,
            "candidates": self.candidates,
        }

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (per-scale values as lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, values: Mapping[str, Any], *, source: str = "generation settings") -> GenerationConfig:
        """Settings from a mapping; missing keys take the defaults, an unknown key is an error naming ``source``."""
        known = [f.name for f in fields(cls)]
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise ValueError(f"{source}: unknown generation key '{unknown[0]}'; known: {known}")
        try:
            return cls(**dict(values))
        except ValueError as err:
            raise ValueError(f"{source}: {err}") from err

    def to_json(self, path: str | Path) -> Path:
        """Write the settings as JSON (``generation_config.json`` in a model folder)."""
        path = Path(path)
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        return path

    @classmethod
    def from_json(cls, path: str | Path) -> GenerationConfig:
        """Read settings written by :meth:`to_json`; raises ValueError naming the file when it is not valid."""
        path = Path(path)
        return cls.from_dict(read_json_object(path, "generation settings"), source=str(path))


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def read_json_object(path: Path, what: str) -> dict[str, Any]:
    """The JSON object in ``path``; ValueError naming the file (and ``what`` it should hold) otherwise."""
    try:
        values = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON: {err}") from err
    if not isinstance(values, dict):
        raise ValueError(f"{path} must hold a JSON object of {what}")
    return values
