"""WebDataset shards on disk: writing bucketed tars, reading their member tables, and the dataset index.

Layout of a converted dataset::

    <root>/index.json                   ShardIndex: every shard with its bucket and sample count
    <root>/<bucket>/shard-000000.tar    e.g. 1.000/shard-000000.tar, 0.666/shard-000003.tar

Each sample is a run of consecutive tar members sharing a key (WebDataset convention, so the
``webdataset`` library reads these shards too): ``<key>.json`` (captions, sizes, template, source),
``<key>.jpg|png|webp`` (image bytes) and optionally ``<key>.t5.npy`` (precomputed T5 features [L, C]).
"""

from __future__ import annotations

import io
import json
import os
import tarfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .buckets import bucket_name, parse_bucket_name
from .storage import Store, join, local_copy

__all__ = [
    "INDEX_NAME",
    "T5_EXT",
    "ShardIndex",
    "ShardInfo",
    "ShardSample",
    "ShardWriter",
    "read_member_table",
    "read_shard",
]

INDEX_NAME = "index.json"
INDEX_FORMAT = "infinity-data/shards-v1"
T5_EXT = "t5.npy"
_BLOCK = tarfile.BLOCKSIZE


@dataclass(frozen=True)
class ShardSample:
    """One sample to store: ``meta`` must hold the ``template`` (float) that selects its bucket."""

    key: str
    image: bytes
    image_ext: str
    meta: dict[str, Any]
    t5: np.ndarray | None = None  # [L, C] precomputed text features, stored as <key>.t5.npy


@dataclass(frozen=True)
class ShardInfo:
    """A finished shard: ``path`` is relative to the dataset root (posix), e.g. "1.000/shard-000000.tar"."""

    path: str
    bucket: str
    num_samples: int
    num_bytes: int

    @property
    def template(self) -> float:
        return parse_bucket_name(self.bucket)

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "bucket": self.bucket,
            "num_samples": self.num_samples,
            "num_bytes": self.num_bytes,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ShardInfo:
        return cls(str(data["path"]), str(data["bucket"]), int(data["num_samples"]), int(data["num_bytes"]))


def check_key(key: str) -> str:
    """WebDataset splits a member name at the first dot, so keys must not contain dots or slashes."""
    if not key or "." in key or "/" in key or "\\" in key:
        raise ValueError(f"sample key {key!r} must be non-empty and contain no '.', '/' or '\\'")
    return key


def _tar_member(tar: tarfile.TarFile, name: str, payload: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(payload)
    info.mode = 0o644
    info.mtime = 0  # deterministic bytes: the same samples give the same shard
    tar.addfile(info, io.BytesIO(payload))


class _OpenShard:
    """A tar being written under ``<name>.part``; renamed to its final name when closed."""

    def __init__(self, root: Path, rel_path: str) -> None:
        self.rel_path = rel_path
        self.final = root / rel_path
        self.final.parent.mkdir(parents=True, exist_ok=True)
        self.part = self.final.with_name(self.final.name + ".part")
        self.tar = tarfile.open(self.part, "w", format=tarfile.PAX_FORMAT)  # noqa: SIM115 (open across writes)
        self.keys: list[str] = []
        self.num_bytes = 0

    def add(self, sample: ShardSample) -> None:
        key = sample.key
        payload = json.dumps(sample.meta, ensure_ascii=False, sort_keys=True).encode("utf-8")
        _tar_member(self.tar, f"{key}.json", payload)
        _tar_member(self.tar, f"{key}.{sample.image_ext}", sample.image)
        if sample.t5 is not None:
            buf = io.BytesIO()
            np.save(buf, np.ascontiguousarray(sample.t5), allow_pickle=False)
            _tar_member(self.tar, f"{key}.{T5_EXT}", buf.getvalue())
        self.keys.append(key)
        self.num_bytes = self.tar.offset

    def close(self, bucket: str) -> ShardInfo:
        self.tar.close()
        with open(self.part, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(self.part, self.final)
        return ShardInfo(self.rel_path, bucket, len(self.keys), self.final.stat().st_size)


class ShardWriter:
    """Routes samples into per-bucket tars ``<root>/<bucket>/shard-NNNNNN.tar``, rolling over by size.

    A tar is written as ``*.tar.part`` and renamed when full or at :meth:`close`, so a crash never leaves a
    half-written file under a final name. ``on_shard_closed(info, keys)`` is called after each rename (the
    converter journals finished shards there). ``start_numbers`` continues numbering per bucket on resume.
    """

    def __init__(
        self,
        root: str | Path,
        max_samples_per_shard: int = 1000,
        max_bytes_per_shard: int = 1 << 30,
        start_numbers: dict[str, int] | None = None,
        on_shard_closed: Callable[[ShardInfo, list[str]], None] | None = None,
    ) -> None:
        if max_samples_per_shard < 1 or max_bytes_per_shard < 1:
            raise ValueError(
                f"shard limits must be positive, got max_samples_per_shard={max_samples_per_shard}, "
                f"max_bytes_per_shard={max_bytes_per_shard}"
            )
        self.root = Path(root)
        self.max_samples = max_samples_per_shard
        self.max_bytes = max_bytes_per_shard
        self._next_number = dict(start_numbers or {})
        self._open: dict[str, _OpenShard] = {}
        self._on_closed = on_shard_closed
        self.closed_shards: list[ShardInfo] = []

    def write(self, sample: ShardSample) -> None:
        check_key(sample.key)
        bucket = bucket_name(float(sample.meta["template"]))
        parse_bucket_name(bucket)  # raises for a template that is not one of the 15
        shard = self._open.get(bucket)
        if shard is None:
            number = self._next_number.get(bucket, 0)
            self._next_number[bucket] = number + 1
            shard = self._open[bucket] = _OpenShard(self.root, f"{bucket}/shard-{number:06d}.tar")
        shard.add(sample)
        if len(shard.keys) >= self.max_samples or shard.num_bytes >= self.max_bytes:
            self._close(bucket)

    def _close(self, bucket: str) -> None:
        shard = self._open.pop(bucket)
        info = shard.close(bucket)
        self.closed_shards.append(info)
        if self._on_closed is not None:
            self._on_closed(info, list(shard.keys))

    def close(self) -> list[ShardInfo]:
        """Finish every open tar; returns all shards closed by this writer."""
        for bucket in sorted(self._open):
            self._close(bucket)
        return list(self.closed_shards)

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def split_member_name(name: str) -> tuple[str, str]:
    """``dir/key.ext.more`` -> (``dir/key``, ``ext.more``): WebDataset splits at the basename's first dot."""
    head, _, base = name.rpartition("/")
    stem, dot, ext = base.partition(".")
    if not dot or not stem:
        raise ValueError(f"tar member {name!r} has no '<key>.<ext>' name")
    return (f"{head}/{stem}" if head else stem), ext


@dataclass(frozen=True)
class MemberTable:
    """Where each sample's files lie inside one tar: ``files[i][ext] = (offset, size)`` for ``keys[i]``."""

    keys: tuple[str, ...]
    files: tuple[dict[str, tuple[int, int]], ...] = field(repr=False)


def read_member_table(path: str | Path) -> MemberTable:
    """Scan a tar's headers (no data is read) and group consecutive members into samples.

    Raises ValueError naming the shard when the tar is unreadable or a key's members are not consecutive.
    """
    keys: list[str] = []
    files: list[dict[str, tuple[int, int]]] = []
    seen: set[str] = set()
    try:
        with tarfile.open(path, "r:") as tar:
            for member in tar:
                if not member.isfile():
                    continue
                key, ext = split_member_name(member.name)
                if keys and keys[-1] == key:
                    if ext in files[-1]:
                        raise ValueError(f"{path}: member {member.name!r} appears twice")
                    files[-1][ext] = (member.offset_data, member.size)
                    continue
                if key in seen:
                    raise ValueError(
                        f"{path}: members of sample {key!r} are not consecutive (or the key repeats)"
                    )
                seen.add(key)
                keys.append(key)
                files.append({ext: (member.offset_data, member.size)})
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise ValueError(
            f"{path}: unreadable tar ({type(exc).__name__}: {exc}); re-create or drop this shard"
        ) from exc
    return MemberTable(tuple(keys), tuple(files))


def read_shard(
    path: str | Path, exts: tuple[str, ...] | None = None
) -> Iterator[tuple[str, dict[str, bytes]]]:
    """Yield ``(key, {ext: bytes})`` for every sample of a tar, in order; ``exts`` limits which files are read."""
    table = read_member_table(path)
    with open(path, "rb") as fh:
        for key, entry in zip(table.keys, table.files, strict=True):
            out: dict[str, bytes] = {}
            for ext, (offset, size) in entry.items():
                if exts is not None and ext not in exts:
                    continue
                fh.seek(offset)
                data = fh.read(size)
                if len(data) != size:
                    raise ValueError(f"{path}: member {key}.{ext} is truncated ({len(data)} of {size} bytes)")
                out[ext] = data
            yield key, out


@dataclass(frozen=True)
class ShardIndex:
    """The dataset's table of contents (``<root>/index.json``): shards, their buckets and sample counts."""

    root: Path | str  # a local folder, or a URL (see :mod:`infinity_data.storage`)
    shards: tuple[ShardInfo, ...]
    info: dict[str, Any] = field(default_factory=dict)  # free-form: pn, converter, source, ...

    @property
    def num_samples(self) -> int:
        return sum(s.num_samples for s in self.shards)

    def bucket_sizes(self) -> dict[str, int]:
        """Samples per bucket name, sorted by name."""
        sizes: dict[str, int] = {}
        for shard in self.shards:
            sizes[shard.bucket] = sizes.get(shard.bucket, 0) + shard.num_samples
        return dict(sorted(sizes.items()))

    def shards_of(self, bucket: str) -> tuple[ShardInfo, ...]:
        return tuple(s for s in self.shards if s.bucket == bucket)

    def to_dict(self) -> dict[str, Any]:
        buckets = {
            name: {
                "template": parse_bucket_name(name),
                "num_samples": count,
                "num_shards": len(self.shards_of(name)),
            }
            for name, count in self.bucket_sizes().items()
        }
        return {
            "format": INDEX_FORMAT,
            "num_samples": self.num_samples,
            "num_shards": len(self.shards),
            "buckets": buckets,
            "shards": [s.to_dict() for s in self.shards],
            "info": self.info,
        }

    def save(self) -> Path | str:
        """Write ``<root>/index.json`` atomically (an object store puts the object whole)."""
        data = (json.dumps(self.to_dict(), indent=1, ensure_ascii=False) + "\n").encode("utf-8")
        if isinstance(self.root, str):
            Store(self.root, write=True).write_bytes(INDEX_NAME, data)
            return join(self.root, INDEX_NAME)
        path = self.root / INDEX_NAME
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(data)
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, root: str | Path) -> ShardIndex:
        """Read ``<root>/index.json`` of a folder or URL; a store that cannot be reached raises StorageError."""
        store = Store(root)
        root = store.root
        path = store.display(INDEX_NAME)
        missing = FileNotFoundError(
            f"{path} not found: convert data with `infinity-data convert`, or rebuild the index of existing "
            f"shards with `infinity-data index {store.display(None)}`"
        )
        if isinstance(root, Path) and not (root / INDEX_NAME).is_file():
            raise missing
        try:
            raw = store.read_bytes(INDEX_NAME)
        except FileNotFoundError:
            raise missing from None
        try:
            data = json.loads(raw.decode("utf-8"))
            if data.get("format") != INDEX_FORMAT:
                raise ValueError(f"format is {data.get('format')!r}, expected {INDEX_FORMAT!r}")
            shards = tuple(ShardInfo.from_dict(s) for s in data["shards"])
            for shard in shards:
                parse_bucket_name(shard.bucket)
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(
                f"{path}: malformed index ({exc}); rebuild it with `infinity-data index {store.display(None)}`"
            ) from exc
        return cls(root, shards, dict(data.get("info", {})))

    @classmethod
    def scan(cls, root: str | Path, info: dict[str, Any] | None = None) -> ShardIndex:
        """Rebuild the index from the tars on disk or in a bucket (bucket from the folder name, counts from
        tar headers; a remote tar is downloaded whole, one at a time)."""
        store = Store(root)
        if isinstance(store.root, str):
            shards: list[ShardInfo] = []
            for rel in store.list_tars():
                bucket = rel.split("/", 1)[0]
                try:
                    parse_bucket_name(bucket)
                except ValueError:
                    continue
                with local_copy(store, rel) as local:
                    table = read_member_table(local)
                    size = local.stat().st_size
                shards.append(ShardInfo(rel, bucket, len(table.keys), size))
            return cls(store.root, tuple(shards), dict(info or {}))
        root = Path(root)
        shards = []
        for bucket_dir in sorted(p for p in root.iterdir() if p.is_dir()):
            try:
                parse_bucket_name(bucket_dir.name)
            except ValueError:
                continue
            for tar_path in sorted(bucket_dir.glob("*.tar")):
                table = read_member_table(tar_path)
                rel = tar_path.relative_to(root).as_posix()
                shards.append(ShardInfo(rel, bucket_dir.name, len(table.keys), tar_path.stat().st_size))
        return cls(root, tuple(shards), dict(info or {}))
