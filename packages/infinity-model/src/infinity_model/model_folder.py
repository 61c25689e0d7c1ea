"""A model folder: the transformer, the VAE, the text encoder and the settings they were evaluated with.

The shape of diffusers' ``model_index.json`` (``DiffusionPipeline.from_pretrained(folder)`` in
``src/diffusers/pipelines/pipeline_utils.py``): an index names each part's path inside the folder, and
``InfinityPipeline.from_pretrained(folder)`` opens it::

    model_index.json         {"model": "transformer", "vae": "vae", "text_encoder": "text_encoder",
                              "provenance": {...}}  (score, run: where the model comes from)
    generation_config.json   GenerationConfig: pn, ratio, cfg, tau, top_k, top_p, candidates
    transformer/             save_infinity output (config.json + model.safetensors)
    vae/                     save_vae output (config.json + model.safetensors); folders written before
                             0.2 hold vae.safetensors (config in the metadata, .json beside) instead
    text_encoder/            T5 encoder + tokenizer (save_pretrained), see local_t5.py

Folders written before this layout hold one ``default_model.json`` with the generation settings inline under
``"generation"``; they are still read.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import InfinityModelError
from .generation import GENERATION_CONFIG_FILE, GenerationConfig, read_json_object

__all__ = [
    "LEGACY_INDEX_FILE",
    "MODEL_INDEX_FILE",
    "ModelFolder",
    "ModelFolderNotFoundError",
    "read_model_folder",
    "write_model_folder",
]

MODEL_INDEX_FILE = "model_index.json"
LEGACY_INDEX_FILE = "default_model.json"
PARTS = ("model", "vae", "text_encoder")


class ModelFolderNotFoundError(InfinityModelError, FileNotFoundError):
    """A model folder (or a part its index names) is not there."""


@dataclass(frozen=True)
class ModelFolder:
    """A model folder's index: the paths of the three parts, its generation settings and its provenance."""

    root: Path
    model: Path
    vae: Path
    text_encoder: Path
    generation: GenerationConfig = field(default_factory=GenerationConfig)
    provenance: dict[str, Any] = field(default_factory=dict)


def _index_path(root: Path) -> Path:
    for name in (MODEL_INDEX_FILE, LEGACY_INDEX_FILE):
        if (root / name).is_file():
            return root / name
    raise ModelFolderNotFoundError(
        f"{root} is not a model folder: it holds no {MODEL_INDEX_FILE}; write one with "
        "infinity_model.model_folder.write_model_folder, or pass the parts as model=, vae=, text_encoder="
    )


def read_model_folder(folder: str | Path) -> ModelFolder:
    """Read a folder's index (``model_index.json``, or the older ``default_model.json``) and check its parts exist."""
    root = Path(folder).expanduser()
    index_path = _index_path(root)
    index = read_json_object(index_path, f"the parts {', '.join(PARTS)}")
    parts = {}
    for key in PARTS:
        if not isinstance(index.get(key), str):
            raise ValueError(f"{index_path}: key '{key}' must name a path relative to {root}")
        path = root / index[key]
        if not path.exists():
            raise ModelFolderNotFoundError(
                f"{index_path} names {key} = {index[key]!r} but {path} does not exist; reinstall infinity-model "
                "or rebuild the folder (the default model: `bash recipes/shapes/reproduce.sh`)"
            )
        parts[key] = path
    if isinstance(index.get("generation"), dict):  # the older layout: the settings inline
        generation = GenerationConfig.from_dict(index["generation"], source=str(index_path))
    elif (root / GENERATION_CONFIG_FILE).is_file():
        generation = GenerationConfig.from_json(root / GENERATION_CONFIG_FILE)
    else:
        generation = GenerationConfig()
    return ModelFolder(root, generation=generation, provenance=dict(index.get("provenance", {})), **parts)


def write_model_folder(
    folder: str | Path,
    model: str | Path,
    vae: str | Path,
    text_encoder: str | Path,
    generation: GenerationConfig | dict[str, Any],
    provenance: dict[str, Any] | None = None,
) -> Path:
    """Copy a ``save_infinity`` folder, a ``save_vae`` folder (or older file + its .json) and a T5 folder into
    ``folder``, and
    write its ``generation_config.json`` and ``model_index.json``.

    Existing parts in ``folder`` are replaced; the index is written last, so a folder without it is never
    mistaken for a complete model.
    """
    root = Path(folder)
    model, vae, text_encoder = Path(model), Path(vae), Path(text_encoder)
    if not isinstance(generation, GenerationConfig):
        generation = GenerationConfig.from_dict(generation)
    for path, what in ((model, "model folder"), (text_encoder, "text encoder folder")):
        if not path.is_dir():
            raise FileNotFoundError(f"{what} {path} does not exist")
    if not vae.exists():
        raise FileNotFoundError(f"VAE {vae} does not exist")
    root.mkdir(parents=True, exist_ok=True)
    for name in (MODEL_INDEX_FILE, LEGACY_INDEX_FILE, "vae.safetensors", "vae.json"):
        (root / name).unlink(missing_ok=True)
    for name, source in (("transformer", model), ("text_encoder", text_encoder)):
        shutil.rmtree(root / name, ignore_errors=True)
        shutil.copytree(source, root / name)
    shutil.rmtree(root / "vae", ignore_errors=True)
    if vae.is_dir():
        shutil.copytree(vae, root / "vae")
        vae_part = "vae"
    else:  # an older single-file save_vae output
        shutil.copyfile(vae, root / "vae.safetensors")
        if vae.with_suffix(".json").is_file():
            shutil.copyfile(vae.with_suffix(".json"), root / "vae.json")
        vae_part = "vae.safetensors"
    generation.to_json(root / GENERATION_CONFIG_FILE)
    index = {
        "model": "transformer",
        "vae": vae_part,
        "text_encoder": "text_encoder",
        "provenance": portable_provenance(provenance or {}, _repository_root(root)),
    }
    (root / MODEL_INDEX_FILE).write_text(json.dumps(index, indent=2) + "\n")
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
