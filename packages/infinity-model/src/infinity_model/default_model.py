"""The default model: a small Infinity trained on the synthetic shapes world, shipped as package data.

``infinity generate "a photo of a red circle above a blue square"`` uses it when no ``--model`` is given, so a
fresh install turns text into an image without any download. The folder is written by
``recipes/shapes/reproduce.sh`` (see ``recipes/shapes/README.md``) with :func:`write_default_model`:

    default_model/default_model.json    what the folder holds, generation defaults, provenance (score, run)
    default_model/transformer/          save_infinity output (config.json + model.safetensors)
    default_model/vae.safetensors       save_vae output (config in the metadata, .json beside)
    default_model/text_encoder/         T5 encoder + tokenizer (save_pretrained), see local_t5.py
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "DEFAULT_MODEL_FILE",
    "DefaultModel",
    "DefaultModelNotFoundError",
    "default_model_dir",
    "load_default_model",
    "write_default_model",
]

DEFAULT_MODEL_FILE = "default_model.json"
_PACKAGED = Path(__file__).resolve().parent / "default_model"
_GENERATION_KEYS = {
    "pn": str,
    "ratio": float,
    "cfg": float,
    "tau": float,
    "top_k": int,
    "top_p": float,
    "candidates": int,
}


class DefaultModelNotFoundError(FileNotFoundError):
    """The package was installed without the default model's weights."""


@dataclass(frozen=True)
class DefaultModel:
    """Paths of the three parts and the sampling settings the model was evaluated with."""

    root: Path
    model: Path
    vae: Path
    text_encoder: Path
    generation: dict[str, Any] = field(default_factory=dict)  # pn, ratio, cfg, tau, top_k, top_p, candidates
    provenance: dict[str, Any] = field(default_factory=dict)


def default_model_dir(folder: str | Path | None = None) -> Path:
    """The default model's folder (the packaged one unless ``folder`` is given); raises if it is not there."""
    root = Path(folder) if folder is not None else _PACKAGED
    if not (root / DEFAULT_MODEL_FILE).is_file():
        raise DefaultModelNotFoundError(
            f"no default model in {root} ({DEFAULT_MODEL_FILE} missing): this installation of infinity-model "
            "ships without its weights. Pass --model, --vae and --text-encoder, or rebuild the default model "
            "with `bash recipes/shapes/reproduce.sh` from the source repository"
        )
    return root


def load_default_model(folder: str | Path | None = None) -> DefaultModel:
    """Read ``default_model.json`` and check that every part it names exists."""
    root = default_model_dir(folder)
    spec_path = root / DEFAULT_MODEL_FILE
    try:
        spec = json.loads(spec_path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{spec_path} is not valid JSON: {err}") from err
    parts = {}
    for key in ("model", "vae", "text_encoder"):
        if not isinstance(spec.get(key), str):
            raise ValueError(f"{spec_path}: key '{key}' must name a path relative to {root}")
        path = root / spec[key]
        if not path.exists():
            raise DefaultModelNotFoundError(
                f"{spec_path} names {key} = {spec[key]!r} but {path} does not exist; reinstall infinity-model "
                "or rebuild the default model with `bash recipes/shapes/reproduce.sh`"
            )
        parts[key] = path
    generation = dict(spec.get("generation", {}))
    for key, value in generation.items():
        kind = _GENERATION_KEYS.get(key)
        if kind is None:
            raise ValueError(
                f"{spec_path}: unknown generation key '{key}'; known: {sorted(_GENERATION_KEYS)}"
            )
        if not isinstance(value, (int, float) if kind is float else kind) or isinstance(value, bool):
            raise ValueError(f"{spec_path}: generation.{key} must be a {kind.__name__}, got {value!r}")
    return DefaultModel(root, generation=generation, provenance=dict(spec.get("provenance", {})), **parts)


def write_default_model(
    folder: str | Path,
    model: str | Path,
    vae: str | Path,
    text_encoder: str | Path,
    generation: dict[str, Any],
    provenance: dict[str, Any] | None = None,
) -> Path:
    """Copy a ``save_infinity`` folder, a ``save_vae`` file (+ its .json) and a T5 folder into ``folder``.

    Existing parts in ``folder`` are replaced; ``default_model.json`` is written last, so a folder without
    it is never mistaken for a complete model.
    """
    root = Path(folder)
    model, vae, text_encoder = Path(model), Path(vae), Path(text_encoder)
    for path, what in ((model, "model folder"), (text_encoder, "text encoder folder")):
        if not path.is_dir():
            raise FileNotFoundError(f"{what} {path} does not exist")
    if not vae.is_file():
        raise FileNotFoundError(f"VAE file {vae} does not exist")
    root.mkdir(parents=True, exist_ok=True)
    (root / DEFAULT_MODEL_FILE).unlink(missing_ok=True)
    for name, source in (("transformer", model), ("text_encoder", text_encoder)):
        shutil.rmtree(root / name, ignore_errors=True)
        shutil.copytree(source, root / name)
    shutil.copyfile(vae, root / "vae.safetensors")
    if vae.with_suffix(".json").is_file():
        shutil.copyfile(vae.with_suffix(".json"), root / "vae.json")
    unknown = sorted(set(generation) - set(_GENERATION_KEYS))
    if unknown:
        raise ValueError(f"unknown generation settings {unknown}; known: {sorted(_GENERATION_KEYS)}")
    spec = {
        "model": "transformer",
        "vae": "vae.safetensors",
        "text_encoder": "text_encoder",
        "generation": generation,
        "provenance": portable_provenance(provenance or {}, _repository_root(root)),
    }
    (root / DEFAULT_MODEL_FILE).write_text(json.dumps(spec, indent=2) + "\n")
    return root


def _repository_root(start: Path) -> Path:
    """The nearest folder above ``start`` (or the working directory) holding ``.git``; else the working directory."""
    for base in (start.resolve(), Path.cwd().resolve()):
        for folder in (base, *base.parents):
            if (folder / ".git").exists():
                return folder
    return Path.cwd().resolve()


def portable_provenance(value: Any, repository: Path, *, key: str = "") -> Any:
    """``value`` with the build machine's paths removed, so a committed ``default_model.json`` is the same anywhere.

    Absolute paths inside ``repository`` become relative to it, and the program of a ``command_line`` list
    (e.g. ``/somewhere/.venv/bin/infinity-eval``) becomes its name.
    """
    if isinstance(value, dict):
        return {k: portable_provenance(v, repository, key=str(k)) for k, v in value.items()}
    if isinstance(value, list):
        items = [portable_provenance(v, repository) for v in value]
        if key == "command_line" and items and isinstance(items[0], str):
            items[0] = Path(items[0]).name
        return items
    if isinstance(value, str) and value.startswith("/"):
        path = Path(value)
        if path.is_relative_to(repository):
            return path.relative_to(repository).as_posix() or "."
    return value
