"""Input readers for the converters: each turns one kind of input into a stream of :class:`SourceItem`.

Readers only enumerate (cheap, in input order); image bytes of files on disk and caption sidecars are read
later in the worker processes. A reader never raises for one bad record: it emits an item carrying the
``error`` so that the converter counts and reports it.
"""

from __future__ import annotations

import codecs
import csv
import fnmatch
import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .images import IMAGE_EXTENSIONS, SHARD_IMAGE_EXTS
from .shards import read_member_table
from .storage import Store, check_location, local_copy, resolve, split_url

__all__ = [
    "SourceItem",
    "detect_kind",
    "folder_items",
    "img2dataset_items",
    "jsonl_items",
    "table_items",
]

_CAPTION_KEYS = ("long_caption", "caption", "prompt", "text")
_PATH_COLUMNS = ("image_path", "path", "filepath", "file", "image")
_TABLE_CAPTION_COLUMNS = ("caption", "long_caption", "text", "prompt")
DEFAULT_CAPTION_TYPE = "user_prompt"  # the reference's default when long_caption_type is missing


@dataclass(frozen=True)
class SourceItem:
    """One input record. ``source`` names this occurrence (for reports); ``identity`` names the image
    (two records with the same identity are duplicates: the first accepted wins)."""

    source: str
    identity: str
    image_path: str | None = None
    image_bytes: bytes | None = None
    caption: str | None = None
    caption_file: str | None = None  # folder input: .json / .txt sidecar read by the worker
    short_caption: str | None = None
    caption_type: str | None = None
    short_caption_type: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    error: tuple[str, str] | None = None  # (code, message) when the reader already knows it is bad


def captions_from_json(record: dict[str, Any]) -> dict[str, str | None]:
    """Caption fields of a sidecar / metadata JSON: the long caption under the first of long_caption,
    caption, prompt, text; a short one under short_caption (or text when long_caption is present)."""
    caption = next((record[k] for k in _CAPTION_KEYS if isinstance(record.get(k), str)), None)
    short = record.get("short_caption")
    if short is None and isinstance(record.get("long_caption"), str):
        short = record.get("text")
    return {
        "caption": caption,
        "short_caption": short if isinstance(short, str) else None,
        "caption_type": record.get("long_caption_type") or record.get("caption_type"),
        "short_caption_type": record.get("short_caption_type"),
    }


def _sorted_walk(root: Path, skip: Path | None) -> Iterator[Path]:
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        dirnames[:] = sorted(d for d in dirnames if skip is None or (here / d).resolve() != skip)
        for name in sorted(filenames):
            yield here / name


def folder_items(root: str | Path, skip_dir: str | Path | None = None) -> Iterator[SourceItem]:
    """Images under ``root`` (recursive, sorted) with captions in ``<stem>.json`` or ``<stem>.txt`` beside them."""
    root = Path(root)
    if not root.is_dir():
        raise NotADirectoryError(f"{root} is not a folder of images; pass the folder that holds them")
    skip = Path(skip_dir).resolve() if skip_dir is not None else None
    for path in _sorted_walk(root, skip):
        if path.suffix.lower() not in IMAGE_EXTENSIONS:
            continue
        rel = path.relative_to(root).as_posix()
        stem = path.with_suffix("")
        sidecar = next((str(p) for p in (Path(f"{stem}.json"), Path(f"{stem}.txt")) if p.is_file()), None)
        if sidecar is None:
            yield SourceItem(
                rel, rel, image_path=str(path), error=("missing_caption", "no <stem>.txt or <stem>.json")
            )
            continue
        yield SourceItem(rel, rel, image_path=str(path), caption_file=sidecar)


_LIST_SUFFIXES = (".jsonl", ".tar", ".parquet", ".csv", ".tsv")


def _input_files(location: str | Path, suffixes: tuple[str, ...], what: str) -> Iterator[tuple[str, Store]]:
    """``(relative name, store of its folder)`` of each input file: ``location`` itself when it names a
    file (a local file, or a URL ending in one of ``suffixes``), else the folder's matching files, sorted."""
    where = check_location(location)
    if isinstance(where, Path):
        if where.is_file():
            yield where.name, Store(where.parent)
            return
        if not where.is_dir():
            raise FileNotFoundError(f"{where}: expected {what}")
        store = Store(where)
    elif where.lower().endswith(suffixes):
        folder, name = split_url(where)
        yield name, Store(folder)
        return
    else:
        store = Store(where)
    # one listing, filtered as a glob per suffix would match: local names with the platform's case rule
    # (pathlib's), object names case-sensitively (fsspec's)
    matches = fnmatch.fnmatchcase if store.is_remote else fnmatch.fnmatch
    names = sorted(rel for rel in store.glob("*") if any(matches(rel, f"*{suffix}") for suffix in suffixes))
    if not names:
        raise FileNotFoundError(f"{store.display(None)}: expected {what}")
    for name in names:
        yield name, store


def _lines(store: Store, rel: str) -> Iterator[bytes]:
    """The lines of a list file: streamed from disk, or one whole GET from a store."""
    if not store.is_remote:
        with open(store.display(rel), "rb") as fh:
            yield from fh
        return
    yield from store.read_bytes(rel).splitlines(keepends=True)


def jsonl_items(path: str | Path, image_root: str | Path | None = None) -> Iterator[SourceItem]:
    """The reference's JSONL format: ``image_path``, ``h_div_w``, ``long_caption``, ``long_caption_type``,
    optional ``text`` (short caption) and ``short_caption_type``. Relative image paths are resolved against
    ``image_root`` (default: the folder of the .jsonl file); ``path``, ``image_root`` and image paths may be
    URLs (``s3://``, ``https://``, ...), read through fsspec."""
    root = check_location(image_root) if image_root is not None else None
    for name, store in _input_files(path, (".jsonl",), "a .jsonl file or a folder with *.jsonl files"):
        base = root if root is not None else store.root
        for lineno, raw in enumerate(
            _lines(store, name), start=1
        ):  # decoded line by line: one bad line, one reject
            if lineno == 1:
                raw = raw.removeprefix(codecs.BOM_UTF8)
            bad_utf8: UnicodeDecodeError | None = None
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                bad_utf8, line = exc, raw.decode("utf-8", errors="replace")  # only to find the path
            if not line.strip():
                continue
            source = f"{name}:{lineno}"
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                yield SourceItem(source, source, error=("malformed_json", f"line is not JSON: {exc}"))
                continue
            if not isinstance(record, dict):
                yield SourceItem(source, source, error=("malformed_json", "line is not a JSON object"))
                continue
            image_path = record.get("image_path")
            if not isinstance(image_path, str) or not image_path:
                yield SourceItem(source, source, error=("missing_field", "no 'image_path' string"))
                continue
            resolved = resolve(base, image_path)
            if bad_utf8 is not None:
                reason = (
                    f"line is not valid UTF-8 ({bad_utf8.reason}: byte 0x{raw[bad_utf8.start]:02x} at "
                    f"offset {bad_utf8.start}); save the file as UTF-8"
                )
                yield SourceItem(source, resolved, image_path=resolved, error=("invalid_utf8", reason))
                continue
            caption = record.get("long_caption")
            if not isinstance(caption, str):
                yield SourceItem(
                    source,
                    resolved,
                    image_path=resolved,
                    error=("missing_caption", "no 'long_caption' string"),
                )
                continue
            short = record.get("text")
            extra = {}
            if isinstance(record.get("h_div_w"), (int, float)):
                extra["declared_h_div_w"] = float(record["h_div_w"])
            yield SourceItem(
                source,
                resolved,
                image_path=resolved,
                caption=caption,
                short_caption=short if isinstance(short, str) else None,
                caption_type=record.get("long_caption_type") or DEFAULT_CAPTION_TYPE,
                short_caption_type=record.get("short_caption_type"),
                extra=extra,
            )


def _tar_items(tar_path: Path) -> Iterator[SourceItem]:
    try:
        table = read_member_table(tar_path)
    except ValueError as exc:
        yield SourceItem(tar_path.name, tar_path.name, error=("unreadable_tar", str(exc)))
        return
    with open(tar_path, "rb") as fh:

        def read(entry: dict[str, tuple[int, int]], ext: str) -> bytes:
            offset, size = entry[ext]
            fh.seek(offset)
            return fh.read(size)

        for key, entry in zip(table.keys, table.files, strict=True):
            source = f"{tar_path.name}:{key}"
            meta: dict[str, Any] = {}
            if "json" in entry:
                try:
                    loaded = json.loads(read(entry, "json"))
                    meta = loaded if isinstance(loaded, dict) else {}
                except (json.JSONDecodeError, UnicodeDecodeError):
                    meta = {}
            identity = str(meta.get("key") or key.rpartition("/")[2])
            image_ext = next((e for e in SHARD_IMAGE_EXTS if e in entry), None)
            if image_ext is None:
                yield SourceItem(
                    source, identity, error=("missing_image", f"no image member among {sorted(entry)}")
                )
                continue
            caption = read(entry, "txt").decode("utf-8", errors="replace") if "txt" in entry else None
            fields = captions_from_json(meta)
            extra = {k: meta[k] for k in ("url", "key") if isinstance(meta.get(k), str)}
            yield SourceItem(
                source,
                identity,
                image_bytes=read(entry, image_ext),
                caption=caption if caption is not None else fields["caption"],
                short_caption=fields["short_caption"],
                caption_type=fields["caption_type"] or DEFAULT_CAPTION_TYPE,
                extra=extra,
            )


def _pick_column(
    columns: Sequence[str], wanted: str | None, candidates: Sequence[str], what: str, file: str
) -> str:
    if wanted is not None:
        if wanted not in columns:
            raise ValueError(f"{file}: no column {wanted!r} for the {what}; columns are {list(columns)}")
        return wanted
    for name in candidates:
        if name in columns:
            return name
    raise ValueError(
        f"{file}: cannot tell which column holds the {what} (looked for {', '.join(candidates)}); "
        f"columns are {list(columns)}: name it explicitly"
    )


def _table_rows(file: Path) -> tuple[list[str], Iterator[dict[str, Any]]]:
    if file.suffix.lower() == ".parquet":
        import pyarrow.parquet as pq

        parquet = pq.ParquetFile(file)
        columns = list(parquet.schema_arrow.names)

        def parquet_rows() -> Iterator[dict[str, Any]]:
            for batch in parquet.iter_batches(batch_size=4096):
                yield from batch.to_pylist()

        return columns, parquet_rows()
    if file.suffix.lower() in (".csv", ".tsv"):
        delimiter = "\t" if file.suffix.lower() == ".tsv" else ","
        with open(file, encoding="utf-8", newline="") as fh:
            header = next(csv.reader(fh, delimiter=delimiter), [])

        def csv_rows() -> Iterator[dict[str, Any]]:
            with open(file, encoding="utf-8", newline="") as fh:
                yield from csv.DictReader(fh, delimiter=delimiter)

        return header, csv_rows()
    raise ValueError(f"{file}: expected a .parquet, .csv or .tsv table")


def _store_table_items(
    store: Store, rel: str, path_column: str | None, caption_column: str | None
) -> Iterator[SourceItem]:
    """Rows of table ``rel`` (downloaded whole first when remote); image paths relative to its folder."""
    with local_copy(store, rel) as file:
        columns, rows = _table_rows(file)
        shown = store.display(rel)
        path_col = _pick_column(columns, path_column, _PATH_COLUMNS, "image path", shown)
        caption_col = _pick_column(columns, caption_column, _TABLE_CAPTION_COLUMNS, "caption", shown)
        for row_number, row in enumerate(rows, start=1):
            source = f"{file.name}:{row_number}"
            image_path = row.get(path_col)
            if not isinstance(image_path, str) or not image_path:
                yield SourceItem(source, source, error=("missing_field", f"empty {path_col!r}"))
                continue
            resolved = resolve(store.root, image_path)
            caption = row.get(caption_col)
            identity = str(row["key"]) if row.get("key") not in (None, "") else resolved
            extra = {"url": row["url"]} if isinstance(row.get("url"), str) else {}
            yield SourceItem(
                source,
                identity,
                image_path=resolved,
                caption=caption if isinstance(caption, str) else None,
                caption_type=DEFAULT_CAPTION_TYPE,
                extra=extra,
            )


def table_items(
    file: str | Path, path_column: str | None = None, caption_column: str | None = None
) -> Iterator[SourceItem]:
    """A parquet / CSV table (a local file or a URL) with one image path and one caption per row (paths
    relative to the table's folder, or URLs)."""
    for rel, store in _input_files(file, (".parquet", ".csv", ".tsv"), "a .parquet, .csv or .tsv table"):
        yield from _store_table_items(store, rel, path_column, caption_column)


def img2dataset_items(
    path: str | Path, path_column: str | None = None, caption_column: str | None = None
) -> Iterator[SourceItem]:
    """img2dataset output: a folder of ``*.tar`` shards (webdataset format; the parquet files beside them
    hold only metadata), one such .tar, or a parquet / CSV table of image paths and captions. ``path`` may
    be a URL (``s3://bucket/laion``, ``https://host/part-00000.tar``): each tar/table is read whole, in one
    GET, then handled as a local one."""
    where = check_location(path)
    if isinstance(where, Path) and not where.exists():
        raise FileNotFoundError(
            f"{where} does not exist; pass img2dataset's output folder, a .tar, or a parquet/CSV table"
        )
    files = list(_input_files(where, _LIST_SUFFIXES[1:], "*.tar shards or a .parquet/.csv table"))
    tars = [(rel, store) for rel, store in files if rel.lower().endswith(".tar")]
    if tars:
        for rel, store in tars:
            with local_copy(store, rel) as tar_path:
                yield from _tar_items(tar_path)
        return
    for rel, store in files:
        yield from _store_table_items(store, rel, path_column, caption_column)


def detect_kind(location: str | Path) -> str:
    """``jsonl``, ``img2dataset`` or ``folder`` for an input location (a local path or a URL)."""
    where = check_location(location)
    if isinstance(where, str):
        if where.lower().endswith(_LIST_SUFFIXES):
            return "jsonl" if where.lower().endswith(".jsonl") else "img2dataset"
        store = Store(where)
        if store.glob("*.jsonl"):
            return "jsonl"
        if any(store.glob(f"*{suffix}") for suffix in _LIST_SUFFIXES[1:]):
            return "img2dataset"
        raise FileNotFoundError(
            f"{store.display(None)}: no *.jsonl list, *.tar shards or .parquet/.csv table there (a folder of "
            "images in a bucket is not read: list its image URLs in a JSONL or parquet file)"
        )
    if where.is_file():
        return "jsonl" if where.suffix.lower() == ".jsonl" else "img2dataset"
    if where.is_dir():
        if any(where.glob("*.jsonl")):
            return "jsonl"
        if any(where.glob("*.tar")):
            return "img2dataset"
        return "folder"
    raise FileNotFoundError(f"{where} does not exist")
