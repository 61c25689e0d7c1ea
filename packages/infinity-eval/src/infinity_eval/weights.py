"""Offline weight-file resolution: explicit path -> $INFINITY_EVAL_WEIGHTS_DIR -> local Hugging Face cache.

Nothing here downloads: the Hugging Face cache is read with `huggingface_hub`'s offline functions
(`try_to_load_from_cache` for the revision `refs/main` names, then `scan_cache_dir` for any other cached
revision), which behave as under `HF_HUB_OFFLINE=1` whatever that variable says. The cache folder is
huggingface_hub's (`HF_HUB_CACHE`, else `HF_HOME/hub`, else `~/.cache/huggingface/hub`), as read when
huggingface_hub is imported. A missing file raises `WeightsNotFoundError` naming the file, every place searched
and where the official file comes from.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .errors import InfinityEvalError

__all__ = [
    "WEIGHTS_ENV_VAR",
    "WeightFile",
    "WeightsChecksumError",
    "WeightsNotFoundError",
    "describe_weight_file",
    "hf_cache_dir",
    "resolve_weight_file",
    "sha256_file",
]

logger = logging.getLogger(__name__)

WEIGHTS_ENV_VAR = "INFINITY_EVAL_WEIGHTS_DIR"


class WeightsNotFoundError(InfinityEvalError, FileNotFoundError):
    """A weight or vocabulary file is not available locally (the harness never downloads)."""


class WeightsChecksumError(InfinityEvalError, ValueError):
    """A weight file's SHA-256 differs from the official one."""


@dataclass(frozen=True)
class WeightFile:
    """One official weight file: its name, where it officially comes from, and its checksum when known.

    `hf_repos` are Hugging Face repo ids searched in the local cache (never online); `subdirs` are extra
    relative folders searched below the weights directory (e.g. "ImageReward").
    """

    filename: str
    source: str
    sha256: str | None = None
    hf_repos: tuple[str, ...] = ()
    subdirs: tuple[str, ...] = field(default_factory=tuple)


def sha256_file(path: str | os.PathLike[str], chunk_size: int = 1 << 22) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def hf_cache_dir() -> Path:
    """The Hugging Face hub cache folder huggingface_hub uses (`huggingface_hub.constants.HF_HUB_CACHE`)."""
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def _hf_cached_file(repo_id: str, filename: str) -> Path | None:
    """`filename` of the model repo `repo_id` in the local cache: the `main` revision first, then the most
    recently modified other cached revision holding it; None when absent. Never goes online."""
    from huggingface_hub import CacheNotFound, scan_cache_dir, try_to_load_from_cache

    cache = hf_cache_dir()
    hit = try_to_load_from_cache(repo_id, filename, cache_dir=cache)
    if isinstance(hit, str):
        return Path(hit)
    try:
        info = scan_cache_dir(cache)
    except CacheNotFound:
        return None
    for repo in info.repos:
        if repo.repo_id != repo_id or repo.repo_type != "model":
            continue
        for revision in sorted(repo.revisions, key=lambda r: r.last_modified, reverse=True):
            for file in revision.files:
                if file.file_name == filename and file.file_path.is_file():
                    return file.file_path
    return None


def resolve_weight_file(
    spec: WeightFile,
    explicit: str | os.PathLike[str] | None = None,
    *,
    extra_candidates: Sequence[Path] = (),
    verify: bool = True,
) -> Path:
    """Find `spec.filename` locally: explicit path (file, or folder holding it) -> env folder -> HF cache.

    `extra_candidates` (e.g. a file shipped inside an installed package) are tried last. When `verify` and
    the spec has a SHA-256, a mismatch raises `WeightsChecksumError`.
    """
    searched: list[str] = []
    path: Path | None = None
    if explicit is not None:
        p = Path(explicit).expanduser()
        candidate = p / spec.filename if p.is_dir() else p
        if not candidate.is_file():
            raise WeightsNotFoundError(
                f"{spec.filename}: the explicit path {str(p)!r} is not a file (nor a folder holding "
                f"{spec.filename}); get the official file from {spec.source}"
            )
        path = candidate
    if path is None:
        env_dir = os.environ.get(WEIGHTS_ENV_VAR)
        if env_dir:
            for sub in ("", *spec.subdirs):
                candidate = Path(env_dir).expanduser() / sub / spec.filename
                searched.append(str(candidate))
                if candidate.is_file():
                    path = candidate
                    break
        else:
            searched.append(f"${WEIGHTS_ENV_VAR} (not set)")
    if path is None:
        for repo in spec.hf_repos:
            searched.append(f"local Hugging Face cache of {repo} ({hf_cache_dir()})")
            path = _hf_cached_file(repo, spec.filename)
            if path is not None:
                break
    if path is None:
        for candidate in extra_candidates:
            searched.append(str(candidate))
            if Path(candidate).is_file():
                path = Path(candidate)
                break
    if path is None:
        raise WeightsNotFoundError(
            f"{spec.filename} not found (searched: {'; '.join(searched)}); get it from {spec.source} and pass "
            f"its path, or put it in the folder named by ${WEIGHTS_ENV_VAR}"
        )
    if verify and spec.sha256 is not None:
        actual = sha256_file(path)
        if actual != spec.sha256:
            raise WeightsChecksumError(
                f"{path}: SHA-256 {actual} differs from the official {spec.filename} ({spec.sha256}); "
                f"re-download it from {spec.source}"
            )
    logger.info("using %s for %s", path, spec.filename)
    return path


def describe_weight_file(path: str | os.PathLike[str], source: str | None = None) -> dict[str, object]:
    """Provenance record of a weight file: name, size, SHA-256 and official source."""
    p = Path(path)
    return {
        "file": p.name,
        "path": str(p.resolve()),
        "bytes": p.stat().st_size,
        "sha256": sha256_file(p),
        "source": source,
    }
