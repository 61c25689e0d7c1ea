"""Image inputs in object storage: ``s3://`` and ``gs://`` folders, and JSONL manifests or ``.npz`` statistics at
any of ``s3://``, ``gs://``, ``http(s)://``, copied through fsspec into a temporary local folder that is removed
afterwards, so every scorer reads exactly the bytes a local copy holds.

A ``scheme://`` string is never a local path. Each scheme needs its extra (``infinity-eval[s3]``, ``[gcs]``,
``[http]``, the names infinity-data uses); an unknown scheme or a missing extra is refused with the fix.
Credentials come only from each store's standard environment (``AWS_*`` variables and ``~/.aws`` for s3fs,
Google application-default credentials for gcsfs); every URL we print or record loses its user info and query.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import posixpath
import re
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from .errors import InfinityEvalError
from .io import IMAGE_EXTENSIONS, ImageRecord

__all__ = ["SCHEME_EXTRAS", "LocalImages", "RemoteInputError", "is_url", "local_images", "redact"]

# URL scheme -> the infinity-eval extra (named as infinity-data's) -> the module its fsspec backend imports
SCHEME_EXTRAS: dict[str, str] = {"s3": "s3", "gs": "gcs", "gcs": "gcs", "http": "http", "https": "http"}
_BACKENDS: dict[str, str] = {"s3": "s3fs", "gcs": "gcsfs", "http": "aiohttp"}
_UNLISTABLE = frozenset({"http", "https"})
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*)://")
# a URL anywhere in a text: scheme, optional user info, the rest up to a query/fragment/space
_ANY_URL = re.compile(r"([A-Za-z][A-Za-z0-9+.\-]*://)(?:[^/@\s]*@)?([^\s?#]*)(?:[?#]\S*)?")
# what a folder mirror keeps: images (any case: the HPS and ImageReward readers accept upper case) and GenEval's
# per-prompt metadata; the readers then pick from the mirror exactly what they pick from a local folder
_KEPT_NAMES = frozenset({"metadata.jsonl"})


class RemoteInputError(InfinityEvalError, ValueError):
    """A URL input that cannot be read: unknown scheme, missing extra, unlistable folder, unreadable object."""


def is_url(location: object) -> bool:
    """True for ``scheme://...`` strings; a :class:`~pathlib.Path` is always local."""
    return isinstance(location, str) and _SCHEME.match(location) is not None


def redact(text: str) -> str:
    """``text`` with every URL's user info (``user:secret@``) and query/fragment (signed tokens) removed."""
    return _ANY_URL.sub(r"\1\2", text)


def _filesystem(url: str) -> tuple[Any, str]:
    """The fsspec filesystem of ``url`` and the path in it, after checking its scheme and extra."""
    scheme = url.split("://", 1)[0].lower()
    if scheme not in SCHEME_EXTRAS:
        known = ", ".join(f"{s}://" for s in SCHEME_EXTRAS)
        raise RemoteInputError(
            f"{redact(url)}: URL scheme {scheme!r} is not supported; give a local path or one of {known}"
        )
    extra = SCHEME_EXTRAS[scheme]
    for module in ("fsspec", _BACKENDS[extra]):
        if importlib.util.find_spec(module) is None:
            raise RemoteInputError(
                f"{redact(url)}: reading {scheme}:// needs the {module} package; install it with "
                f"`pip install 'infinity-eval[{extra}]'`"
            )
    import fsspec  # type: ignore[import-untyped]  # fsspec ships no type information

    # a private instance: the environment (endpoint, credentials) is read afresh for each input
    fs, path = fsspec.core.url_to_fs(url, skip_instance_cache=True)
    return fs, str(path).rstrip("/")


def _relative(name: str, where: str) -> str:
    """``name`` if it is a plain relative posix path inside its folder; refused otherwise (no escaping the
    temporary folder through ``..`` or absolute names)."""
    parts = name.split("/")
    if not name or name.startswith("/") or is_url(name) or any(p in ("", ".", "..") for p in parts):
        raise RemoteInputError(
            f"{where}: {name!r} is not a plain relative path; remote inputs name their files relative to the "
            "folder or manifest, without '..', '.', '//' or a leading '/'"
        )
    return name


def _manifest_images(text: str, where: str) -> list[str]:
    """The relative image paths a JSONL manifest names (read_manifest checks the rest after the copy)."""
    names = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise RemoteInputError(f"{where}:{lineno}: not valid JSON ({err.msg})") from err
            if not isinstance(row, dict) or not isinstance(row.get("image"), str):
                raise RemoteInputError(f"{where}:{lineno}: expected a JSON object with an 'image' path")
            names.append(_relative(row["image"], f"{where}:{lineno}"))
    return names


def _folder_files(fs: Any, root: str, recursive: bool, where: str) -> list[str]:
    """Relative names of the images (and GenEval metadata files) under a folder URL, sorted."""
    if not fs.isdir(root):
        raise RemoteInputError(f"{where}: no such folder (or it holds no objects)")
    found = fs.find(root, maxdepth=None if recursive else 1)
    names = []
    for full in found:
        name = str(full)[len(root) + 1 :]
        if name.rsplit(".", 1)[-1].lower() in IMAGE_EXTENSIONS or posixpath.basename(name) in _KEPT_NAMES:
            names.append(_relative(name, where))
    if not any(n.rsplit(".", 1)[-1].lower() in IMAGE_EXTENSIONS for n in names):
        raise RemoteInputError(f"{where}: no image files ({', '.join(IMAGE_EXTENSIONS)}) in this folder")
    return sorted(names)


@dataclass(frozen=True)
class LocalImages:
    """An input as the readers see it: ``path`` is the local input itself, or its temporary copy.

    ``url`` (redacted) and ``root`` (the copy's folder) are set for a remote input; :meth:`named` then gives
    records their URLs, so results, resume keys and messages name the objects, not the temporary copy.
    """

    path: Path
    url: str | None = None
    root: Path | None = None

    @property
    def display(self) -> str:
        """The input as messages and summaries show it (a URL without credentials, or the local path)."""
        return self.url if self.url is not None else str(self.path)

    def named(self, records: Sequence[ImageRecord]) -> list[ImageRecord]:
        if self.url is None or self.root is None:
            return list(records)
        base = self.url if self.path == self.root else self.url.rsplit("/", 1)[0]
        return [replace(r, url=f"{base}/{r.image.relative_to(self.root).as_posix()}") for r in records]


@contextlib.contextmanager
def local_images(location: str | os.PathLike[str], recursive: bool = True) -> Iterator[LocalImages]:
    """A local view of an input: a local path (or ``file://`` URL) as it is; a URL copied into a temporary folder (removed on
    exit). A URL ending in ``.jsonl`` is a manifest (its images, relative to it, are copied too), one ending
    in ``.npz`` a statistics file, any other an ``s3://``/``gs://`` folder: its images (sub-folders too when
    ``recursive``) and GenEval ``metadata.jsonl`` files. http(s) folders cannot be listed: give a manifest."""
    if is_url(location) and str(location).lower().startswith("file://"):
        location = str(location)[len("file://") :]  # a local path spelt as a URL
    if not is_url(location):
        yield LocalImages(Path(location))
        return
    url = str(location).rstrip("/")
    where = redact(url)
    fs, root = _filesystem(url)
    bare = root.split("?", 1)[0]  # an http(s) path keeps its query string: the file name comes before it
    name = posixpath.basename(bare)
    is_file = name.endswith((".jsonl", ".npz"))
    if not is_file and url.split("://", 1)[0].lower() in _UNLISTABLE:
        raise RemoteInputError(
            f"{where}: http(s) folders cannot be listed; give the URL of a JSONL manifest that names the "
            "images relative to it, or copy the folder to local disk, s3:// or gs://"
        )
    with tempfile.TemporaryDirectory(prefix="infinity-eval-") as tmp:
        local = Path(tmp)
        path = local / name if is_file else local
        try:
            if is_file:
                folder = posixpath.dirname(bare)
                fs.get_file(root, str(path))
                names = _manifest_images(path.read_text("utf-8"), where) if name.endswith(".jsonl") else []
            else:
                folder = root
                names = _folder_files(fs, root, recursive, where)
            unique = list(dict.fromkeys(names))
            for rel in unique:
                (local / rel).parent.mkdir(parents=True, exist_ok=True)
            if unique:  # one batched call: the async backends (s3fs, gcsfs, http) fetch files concurrently
                fs.get([f"{folder}/{n}" for n in unique], [str(local / n) for n in unique])
        except RemoteInputError:
            raise
        except Exception as exc:  # the backends raise their own types (botocore, aiohttp): name the URL
            raise RemoteInputError(
                f"{where}: cannot read it ({type(exc).__name__}: {redact(str(exc))})"
            ) from exc
        yield LocalImages(path, where, local)
