"""The default model: a small Infinity trained on the synthetic shapes world, shipped as package data.

``infinity generate "a photo of a red circle above a blue square"`` uses it when no ``--model`` is given, so a
fresh install turns text into an image without any download. It is a model folder (see
:mod:`infinity_model.model_folder`), written by ``recipes/shapes/reproduce.sh`` (see ``recipes/shapes/README.md``)
with :func:`write_default_model` and opened with ``InfinityPipeline.from_pretrained(default_model_dir())``.
"""

from __future__ import annotations

from pathlib import Path

from .model_folder import (
    LEGACY_INDEX_FILE,
    MODEL_INDEX_FILE,
    ModelFolder,
    ModelFolderNotFoundError,
    read_model_folder,
    write_model_folder,
)

__all__ = [
    "DEFAULT_MODEL_FILE",
    "DefaultModel",
    "DefaultModelNotFoundError",
    "default_model_dir",
    "load_default_model",
    "write_default_model",
]

DEFAULT_MODEL_FILE = (
    LEGACY_INDEX_FILE  # the shipped folder's index, in the layout read before model_index.json
)
_PACKAGED = Path(__file__).resolve().parent / "default_model"

DefaultModel = ModelFolder  # the earlier name of a model folder's parsed index
DefaultModelNotFoundError = ModelFolderNotFoundError


def default_model_dir(folder: str | Path | None = None) -> Path:
    """The default model's folder (the packaged one unless ``folder`` is given); raises if it is not there."""
    root = Path(folder) if folder is not None else _PACKAGED
    if not (root / MODEL_INDEX_FILE).is_file() and not (root / LEGACY_INDEX_FILE).is_file():
        raise DefaultModelNotFoundError(
            f"no default model in {root} ({MODEL_INDEX_FILE} missing): this installation of infinity-model "
            "ships without its weights. Pass --model, --vae and --text-encoder, or rebuild the default model "
            "with `bash recipes/shapes/reproduce.sh` from the source repository"
        )
    return root


def load_default_model(folder: str | Path | None = None) -> ModelFolder:
    """The default model's index (parts, generation settings, provenance), every part checked to exist."""
    return read_model_folder(default_model_dir(folder))


# The default model's folder is an ordinary model folder: writing one is write_model_folder.
write_default_model = write_model_folder
