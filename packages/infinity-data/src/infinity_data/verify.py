"""``verify``: every shard of the index is readable, its counts match, and every sample decodes."""

from __future__ import annotations

import io
import json
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .buckets import bucket_name, parse_bucket_name
from .images import SHARD_IMAGE_EXTS, ImageDecodeError, decode_rgb
from .processes import worker_pool
from .shards import INDEX_NAME, T5_EXT, ShardIndex, ShardInfo, read_member_table
from .storage import READ_ONLY_SCHEMES, Store

__all__ = ["VerifyReport", "verify"]


@dataclass(frozen=True)
class VerifyReport:
    """Outcome of :func:`verify`; ``errors`` name the shard (and key) at fault."""

    num_shards: int
    num_samples: int
    errors: tuple[str, ...] = field(default_factory=tuple)

    @property
    def ok(self) -> bool:
        return not self.errors


def _check_sample(shard: str, key: str, files: dict[str, bytes], bucket: str, decode: bool) -> list[str]:
    where = f"{shard}: sample {key}"
    errors = []
    images = [e for e in SHARD_IMAGE_EXTS if e in files]
    if len(images) != 1:
        errors.append(f"{where} has {len(images)} image members ({sorted(files)}), expected exactly one")
    if "json" not in files:
        errors.append(f"{where} has no .json member")
    else:
        try:
            meta = json.loads(files["json"])
            if meta.get("key", key) != key:
                errors.append(f"{where} has key {meta['key']!r} in its .json")
            template = float(meta["template"])
            if bucket_name(template) != bucket:
                errors.append(f"{where} has template {template} but lies in bucket {bucket}")
            if not isinstance(meta.get("caption"), str) or not meta["caption"].strip():
                errors.append(f"{where} has no caption in its .json")
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, ValueError) as exc:
            errors.append(f"{where}: unreadable .json ({type(exc).__name__}: {exc})")
    if decode and len(images) == 1:
        try:
            decode_rgb(files[images[0]])
        except ImageDecodeError as exc:
            errors.append(f"{where}: image does not decode ({exc})")
    if decode and T5_EXT in files:
        try:
            arr = np.load(io.BytesIO(files[T5_EXT]), allow_pickle=False)
            if arr.ndim != 2:
                errors.append(f"{where}: T5 features have shape {arr.shape}, expected [L, C]")
        except (ValueError, OSError) as exc:
            errors.append(f"{where}: T5 features do not load ({exc})")
    return errors


def _verify_shard(root: Path, info: ShardInfo, decode: bool) -> tuple[list[str], list[str]]:
    """Errors and keys of one shard."""
    path = root / info.path
    if not path.is_file():
        return [f"{info.path}: listed in the index but missing on disk"], []
    try:
        table = read_member_table(path)
    except ValueError as exc:
        return [str(exc)], []
    errors = []
    if len(table.keys) != info.num_samples:
        errors.append(f"{info.path}: holds {len(table.keys)} samples, the index says {info.num_samples}")
    size = path.stat().st_size
    if size != info.num_bytes:
        errors.append(f"{info.path}: is {size} bytes, the index says {info.num_bytes}")
    with open(path, "rb") as fh:
        for key, entry in zip(table.keys, table.files, strict=True):
            files = {}
            for ext, (offset, length) in entry.items():
                fh.seek(offset)
                files[ext] = fh.read(length)
                if len(files[ext]) != length:
                    errors.append(f"{info.path}: member {key}.{ext} is truncated")
            errors.extend(_check_sample(info.path, key, files, info.bucket, decode))
    return errors, list(table.keys)


def _verify_remote_shard(store: Store, info: ShardInfo, decode: bool) -> tuple[list[str], list[str]]:
    """Download one shard whole into a temporary folder and check it there (errors name the URL)."""
    with tempfile.TemporaryDirectory(prefix="infinity-verify-") as tmp:
        try:
            store.fetch(info.path, Path(tmp) / info.path)
        except FileNotFoundError:
            return [f"{store.display(info.path)}: listed in the index but missing in the store"], []
        except (OSError, ValueError) as exc:
            return [f"{store.display(info.path)}: cannot be read ({exc})"], []
        return _verify_shard(Path(tmp), info, decode)


def verify(
    root: str | Path,
    decode: bool = True,
    workers: int = 0,
    progress: Callable[[int], object] | None = None,
) -> VerifyReport:
    """Check a converted dataset: index readable, every listed shard present and readable, sample counts
    and sizes as indexed, each sample with one image + a JSON whose template matches its bucket, keys
    unique, no stray tars outside the index, and (``decode``) every image and T5 array decodable.
    ``root`` may be a URL: each shard is downloaded whole once (stray tars are not looked for over http)."""
    store = Store(root)
    try:
        index = ShardIndex.load(root)
    except (FileNotFoundError, ValueError) as exc:
        return VerifyReport(0, 0, (str(exc),))
    errors: list[str] = _check_summary(store, index)
    indexed = {s.path for s in index.shards}
    listable = not (store.is_remote and store.scheme in READ_ONLY_SCHEMES)
    for rel in store.list_tars() if listable else []:  # an http(s) root cannot be listed
        try:
            parse_bucket_name(rel.split("/", 1)[0])
        except ValueError:
            continue
        if rel not in indexed:
            errors.append(f"{rel}: on disk but not in index.json (rebuild it with `infinity-data index`)")
    check: Callable[..., tuple[list[str], list[str]]] = _verify_shard
    where: Path | Store = Path(root)
    if store.is_remote:
        check, where = _verify_remote_shard, store
    seen: dict[str, str] = {}
    if workers > 0:
        with worker_pool(workers) as pool:
            futures = [pool.submit(check, where, info, decode) for info in index.shards]
            results = (f.result() for f in futures)
            outcomes = zip(index.shards, results, strict=True)
            for info, (shard_errors, keys) in outcomes:
                errors.extend(shard_errors)
                _check_duplicates(info, keys, seen, errors)
                if progress is not None:
                    progress(1)
    else:
        for info in index.shards:
            shard_errors, keys = check(where, info, decode)
            errors.extend(shard_errors)
            _check_duplicates(info, keys, seen, errors)
            if progress is not None:
                progress(1)
    return VerifyReport(len(index.shards), index.num_samples, tuple(errors))


def _check_summary(store: Store, index: ShardIndex) -> list[str]:
    """The index's per-bucket and total counts must agree with its shard list."""
    data = json.loads(store.read_bytes(INDEX_NAME).decode("utf-8"))
    errors = []
    if data.get("num_samples") != index.num_samples:
        errors.append(
            f"index.json: num_samples is {data.get('num_samples')}, its shards hold {index.num_samples}"
        )
    listed = {name: entry.get("num_samples") for name, entry in data.get("buckets", {}).items()}
    if listed != index.bucket_sizes():
        errors.append(f"index.json: bucket counts {listed} disagree with its shards {index.bucket_sizes()}")
    return errors


def _check_duplicates(info: ShardInfo, keys: list[str], seen: dict[str, str], errors: list[str]) -> None:
    for key in keys:
        if key in seen:
            errors.append(f"{info.path}: key {key} also appears in {seen[key]}")
        else:
            seen[key] = info.path
