"""Converting into object storage: shards are written in a local staging folder and uploaded whole.

``convert ... s3://bucket/prefix`` runs the usual resumable pipeline in a staging folder (its journal stays
there, so a resume happens on the same machine), uploads each finished tar as one object under its final
name (a PUT is atomic: no partial object ever appears under a shard's name), and only then journals it.
``index.json`` and ``report.json`` are uploaded at the end; a killed run re-run with the same command redoes
the unjournaled work and writes the same objects an uninterrupted run writes.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from .shards import ShardInfo
from .storage import Store, check_location, redact

__all__ = ["RemoteOutput", "output_target", "staging_folder"]


def staging_folder(url: str) -> Path:
    """``$XDG_CACHE_HOME/infinity-data/convert/<hash of the URL>`` (``~/.cache`` by default)."""
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    digest = hashlib.sha1(redact(url).encode("utf-8")).hexdigest()[:16]
    return base / "infinity-data" / "convert" / digest


@dataclass
class RemoteOutput:
    """Uploads of one conversion into ``url`` from its local ``staging`` folder."""

    url: str
    staging: Path
    store: Store

    def upload_shard(self, info: ShardInfo) -> None:
        """Upload a finished tar whole, then drop the local copy (the journal records it after this)."""
        local = self.staging / info.path
        self.store.put_file(local, info.path)
        local.unlink()

    def upload(self, local: Path, rel: str) -> None:
        self.store.put_file(local, rel)


def output_target(out: str | Path) -> tuple[Path, RemoteOutput | None]:
    """The local folder to convert into, and the remote output when ``out`` is a writable URL."""
    where = check_location(out, write=True)
    if isinstance(where, Path):
        return where, None
    staging = staging_folder(where)
    return staging, RemoteOutput(where, staging, Store(where, write=True))
