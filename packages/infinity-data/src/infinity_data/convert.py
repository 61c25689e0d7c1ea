"""Converters: image folders, the reference's JSONL lists and img2dataset output -> bucketed WebDataset shards.

Every converter runs the same resumable pipeline: read records in input order, decode and check each image in
worker processes, write accepted samples into ``<out>/<bucket>/shard-NNNNNN.tar`` and record every rejected
one with its reason. Finished shards and rejects are journaled under ``<out>/_convert/``; running the same
command again after an interruption skips what is done and finishes the rest, without duplicating samples.
At the end ``<out>/index.json`` (a :class:`ShardIndex`) and ``<out>/report.json`` are written.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Executor, Future
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bsq_tokenizer import resize_crop_for_template

from .buckets import check_pn, needs_downscale, parse_bucket_name, template_of_size
from .distribute import check_distributor, make_executor
from .errors import InfinityDataError
from .images import ImageDecodeError, encode_rgb, open_image, stored_extension, to_rgb
from .processes import shutdown_pool as _shutdown
from .remote import RemoteOutput, output_target
from .shards import ShardIndex, ShardInfo, ShardSample, ShardWriter
from .sources import (
    DEFAULT_CAPTION_TYPE,
    SourceItem,
    captions_from_json,
    folder_items,
    img2dataset_items,
    jsonl_items,
)
from .storage import Store, UnsupportedLocationError, check_location, is_url, redact, split_url

if sys.platform != "win32":
    import fcntl

__all__ = [
    "ConvertConfig",
    "ConvertLockedError",
    "ConvertResult",
    "convert_folder",
    "convert_img2dataset",
    "convert_items",
    "convert_jsonl",
]

logger = logging.getLogger(__name__)

JOURNAL_DIR = "_convert"
REPORT_NAME = "report.json"
_KEY_HEX = 20  # 80-bit keys: collisions are negligible for billions of samples
LOCK_NAME = "lock"  # under JOURNAL_DIR; held (flock) for the whole conversion
# CLI flag of each ConvertConfig field / input setting, for naming what differs on a refused resume
_FLAGS = {
    "pn": "--pn",
    "max_samples_per_shard": "--shard-size",
    "max_bytes_per_shard": "--max-shard-mb",
    "max_aspect": "--max-aspect",
    "min_side": "--min-side",
    "jpeg_quality": "--jpeg-quality",
    "kind": "--from",
    "input": "the input path",
    "image_root": "--image-root",
    "path_column": "--path-column",
    "caption_column": "--caption-column",
}


class ConvertLockedError(InfinityDataError, ValueError):
    """Another conversion is writing into the same output folder."""


@dataclass(frozen=True)
class ConvertConfig:
    """How to convert. ``pn``: shrink images larger than that pixel budget's target size for their template
    (resize-to-cover + centre crop, re-encoded); None stores the original bytes. ``workers``: decoding
    processes (0 = in this process)."""

    pn: str | None = None
    workers: int = 0
    max_samples_per_shard: int = 1000
    max_bytes_per_shard: int = 1 << 30
    max_aspect: float = 4.0  # reject images whose long side exceeds max_aspect x the short side
    min_side: int = 8  # reject images smaller than this on either side
    jpeg_quality: int = 95
    distributor: str = "multiprocessing"  # or "ray" (see infinity_data.distribute); the output is the same

    def __post_init__(self) -> None:
        check_distributor(self.distributor)
        if self.pn is not None:
            check_pn(self.pn)
        if self.workers < 0:
            raise ValueError(f"workers must be >= 0, got {self.workers}")
        if self.max_aspect < 1.0:
            raise ValueError(f"max_aspect must be >= 1 (long side / short side), got {self.max_aspect}")
        if not 1 <= self.jpeg_quality <= 100:
            raise ValueError(f"jpeg_quality must be in 1..100, got {self.jpeg_quality}")

    def fingerprint(self) -> dict[str, Any]:
        """Options that change the output (resume refuses to mix runs that differ in these)."""
        options = asdict(self)
        options.pop("workers")
        options.pop("distributor")
        return options


@dataclass(frozen=True)
class ConvertResult:
    """What a conversion produced: the index, counts, and where the report lies."""

    index: ShardIndex
    num_accepted: int
    num_rejected: int
    rejected_by_reason: dict[str, int]
    num_resumed: int  # samples / rejects found done by an earlier, interrupted run and skipped
    report_path: Path


def sample_key(identity: str) -> str:
    """Stable WebDataset key of a sample: hex digest of its identity (path / img2dataset key)."""
    return hashlib.sha1(identity.encode("utf-8")).hexdigest()[:_KEY_HEX]


# ---------------------------------------------------------------------------------------------------------
# Per-sample work (runs in worker processes)


@dataclass(frozen=True)
class _Accepted:
    source: str
    sample: ShardSample
    image_path: str | None = None


@dataclass(frozen=True)
class _Rejected:
    source: str
    code: str
    reason: str


class _Reject(Exception):
    def __init__(self, code: str, reason: str) -> None:
        super().__init__(reason)
        self.code = code


def _name_image(source: str, image_path: str | None, reason: str) -> str:
    """``reason`` prefixed with the image path when the record's source (e.g. ``list.jsonl:12``) does not
    already name the image, so every reject leads to its file."""
    if image_path is None or image_path in reason or Path(image_path).as_posix().endswith(source):
        return reason
    return f"{redact(image_path)}: {reason}"


def _clean_text(text: str | None, what: str) -> str | None:
    """Drop a leading byte-order mark; refuse text that cannot be stored as UTF-8 (lone surrogates)."""
    if text is None:
        return None
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise _Reject("invalid_utf8", f"{what} is not valid Unicode ({exc.reason} at {exc.start})") from exc
    return text.removeprefix("\ufeff")


def _read_captions(item: SourceItem) -> dict[str, str | None]:
    fields: dict[str, str | None] = {
        "caption": item.caption,
        "short_caption": item.short_caption,
        "caption_type": item.caption_type,
        "short_caption_type": item.short_caption_type,
    }
    if item.caption_file is not None:
        path = Path(item.caption_file)
        try:
            text = path.read_text(encoding="utf-8-sig")  # a byte-order mark is not part of the caption
        except UnicodeDecodeError as exc:
            raise _Reject(
                "invalid_utf8",
                f"caption file {path.name} is not valid UTF-8 ({exc.reason}: byte "
                f"0x{exc.object[exc.start]:02x} at offset {exc.start}); save it as UTF-8",
            ) from exc
        except OSError as exc:
            raise _Reject("bad_caption_file", f"cannot read caption file {path.name}: {exc}") from exc
        if path.suffix == ".json":
            try:
                record = json.loads(text)
            except json.JSONDecodeError as exc:
                raise _Reject("bad_caption_file", f"{path.name} is not JSON: {exc}") from exc
            if not isinstance(record, dict):
                raise _Reject("bad_caption_file", f"{path.name} is not a JSON object")
            fields = captions_from_json(record)
        else:
            fields["caption"] = text
    caption = _clean_text(fields["caption"], "caption")
    fields["short_caption"] = _clean_text(fields["short_caption"], "short caption")
    if caption is None:
        raise _Reject("missing_caption", "no caption")
    if not caption.strip():
        raise _Reject("empty_caption", "caption is empty")
    fields["caption"] = caption.strip()
    short = fields["short_caption"]
    fields["short_caption"] = short.strip() if short and short.strip() else None
    fields["caption_type"] = fields["caption_type"] or DEFAULT_CAPTION_TYPE
    return fields


def _object_store(url: str, stores: dict[str, Store]) -> tuple[Store, str]:
    """The store in ``stores`` that reads ``url`` (made on first use) and the object's path under its root.

    Remote stores are kept per bucket or host (``s3://bucket``, ``https://host``), so that a worker reuses one
    client across folders; the root and path join back to ``url`` exactly. ``file://`` URLs, and URLs with an
    empty bucket, keep one store per folder, whose root is the same string the URL starts with.
    """
    folder, name = split_url(url)
    scheme, _, rest = folder.partition("://")
    bucket, _, prefix = rest.partition("/")
    if bucket and scheme.lower() != "file":
        root, rel = f"{scheme}://{bucket}", f"{prefix}/{name}" if prefix else name
    else:
        root, rel = folder, name
    if root not in stores:
        check_location(folder)  # an unusable scheme is reported with the folder's URL, as before
        stores[root] = Store(root)
    return stores[root], rel


def _read_image(image_path: str, stores: dict[str, Store]) -> bytes:
    """The bytes of a local image file or of an image URL (one GET through fsspec, with retries; ``stores``
    keeps one store per bucket or host so that a worker reuses its connections)."""
    try:
        if not is_url(image_path):
            return Path(image_path).read_bytes()
        store, rel = _object_store(image_path, stores)
        return store.read_bytes(rel)
    except OSError as exc:
        shown = redact(image_path)
        detail = redact(str(exc.strerror or exc))
        raise _Reject("unreadable_file", f"cannot read {shown}: {detail}") from exc
    except UnsupportedLocationError as exc:
        raise _Reject("unreadable_file", str(exc)) from exc
    except Exception as exc:  # an HTTP client error (e.g. 403) is this record's fault, not the run's
        shown = redact(image_path)
        raise _Reject(
            "unreadable_file", f"cannot read {shown}: {type(exc).__name__}: {redact(str(exc))}"
        ) from exc


def _process(item: SourceItem, config: ConvertConfig, stores: dict[str, Store]) -> _Accepted | _Rejected:
    try:
        if item.error is not None:
            raise _Reject(*item.error)
        captions = _read_captions(item)
        data = item.image_bytes
        if data is None:
            if item.image_path is None:
                raise _Reject("missing_image", "record names no image")
            data = _read_image(item.image_path, stores)
        try:
            img, fmt = open_image(data)
            rgb = to_rgb(img)
        except ImageDecodeError as exc:
            raise _Reject(exc.code, str(exc)) from exc
        width, height = rgb.size
        if min(width, height) < config.min_side:
            raise _Reject("too_small", f"{width}x{height} is below min_side={config.min_side}")
        if max(width, height) > config.max_aspect * min(width, height):
            raise _Reject(
                "extreme_aspect",
                f"{width}x{height} (h/w={height / width:.3f}) is beyond max_aspect={config.max_aspect}: "
                "cropping it to a template would discard most of it",
            )
        template = template_of_size(width, height)
        ext = stored_extension(fmt)
        resized = config.pn is not None and needs_downscale(width, height, template, config.pn)
        if resized:
            assert config.pn is not None
            rgb = resize_crop_for_template(rgb, template, config.pn)
            data, ext = encode_rgb(rgb, fmt, config.jpeg_quality)
        elif ext is None:  # BMP / GIF / TIFF: stored as PNG (lossless) so every WebDataset reader decodes it
            data, ext = encode_rgb(rgb, "PNG", config.jpeg_quality)
        meta: dict[str, Any] = {
            "key": sample_key(item.identity),
            "source": item.source,
            "template": template,
            "width": width,
            "height": height,
            "h_div_w": height / width,
            "stored_width": rgb.width,
            "stored_height": rgb.height,
            "resized": resized,
            "format": fmt,
            **{k: v for k, v in captions.items() if v is not None},
            **item.extra,
        }
        return _Accepted(item.source, ShardSample(meta["key"], data, ext, meta), item.image_path)
    except _Reject as rej:
        return _Rejected(item.source, rej.code, _name_image(item.source, item.image_path, str(rej)))


def _process_chunk(items: list[SourceItem], config: ConvertConfig) -> list[_Accepted | _Rejected]:
    stores: dict[str, Store] = {}
    return [_process(item, config, stores) for item in items]


class _Pool:
    """A process pool that survives a worker dying (e.g. a decoder crashing on a hostile file): chunks lost
    with it are redone, and the item that kills a worker again on its own is rejected as ``worker_crash``."""

    def __init__(self, config: ConvertConfig) -> None:
        self.config = config
        self.pool = self._new()

    def _new(self) -> Executor:
        return make_executor(self.config.distributor, self.config.workers)

    def restart(self) -> None:
        _shutdown(self.pool, cancel=True)
        self.pool = self._new()

    def submit(self, items: list[SourceItem]) -> Future[list[_Accepted | _Rejected]]:
        return self.pool.submit(_process_chunk, items, self.config)

    def isolate(self, items: list[SourceItem]) -> list[_Accepted | _Rejected]:
        """Redo a chunk one item at a time to find the one that crashes a worker."""
        out: list[_Accepted | _Rejected] = []
        for item in items:
            try:
                out += self.submit([item]).result()
            except BrokenProcessPool:
                logger.error("a worker process died while decoding %s; rejecting it", item.source)
                out.append(_Rejected(item.source, "worker_crash", "the decoding process died on this file"))
                self.restart()
        return out

    def close(self, cancel: bool) -> None:
        _shutdown(self.pool, cancel=cancel)


def _results(
    items: Iterable[SourceItem], config: ConvertConfig, chunk: int = 8
) -> Iterator[_Accepted | _Rejected]:
    """Process items in input order; with workers, keep a bounded number of chunks in flight."""
    if config.workers == 0:
        stores: dict[str, Store] = {}
        for item in items:
            yield _process(item, config, stores)
        return
    pool = _Pool(config)
    in_flight: deque[tuple[list[SourceItem], Future[list[_Accepted | _Rejected]]]] = deque()

    def oldest() -> list[_Accepted | _Rejected]:
        batch, future = in_flight.popleft()
        try:
            return future.result()
        except BrokenProcessPool:
            pool.restart()
            redo = list(in_flight)  # every other chunk in flight died with the pool
            in_flight.clear()
            results = pool.isolate(batch)
            in_flight.extend((b, pool.submit(b)) for b, _ in redo)
            return results

    try:
        batch: list[SourceItem] = []
        for item in items:
            batch.append(item)
            if len(batch) == chunk:
                in_flight.append((batch, pool.submit(batch)))
                batch = []
            while len(in_flight) > 4 * config.workers:
                yield from oldest()
        if batch:
            in_flight.append((batch, pool.submit(batch)))
        while in_flight:
            yield from oldest()
    except BaseException:
        pool.close(cancel=True)
        raise
    pool.close(cancel=False)


# ---------------------------------------------------------------------------------------------------------
# Journal and resume


@dataclass
class _Journal:
    """Append-only record of finished shards and rejects under ``<out>/_convert/``."""

    folder: Path
    done: dict[str, str] = field(default_factory=dict)  # key -> source of the accepted occurrence
    shards: list[ShardInfo] = field(default_factory=list)
    rejects: dict[str, tuple[str, str]] = field(default_factory=dict)  # source -> (code, reason)

    @classmethod
    def open(cls, out: Path, description: dict[str, Any]) -> _Journal:
        folder = out / JOURNAL_DIR
        config_path = folder / "config.json"
        if not config_path.is_file() and _holds_shards(out):
            raise ValueError(
                f"{out} already holds shards that no conversion journal in {folder} describes; "
                "convert into an empty (or new) folder"
            )
        if config_path.is_file():
            previous = json.loads(config_path.read_text(encoding="utf-8"))
            if previous != description:
                raise ValueError(
                    f"{out} holds a conversion with different inputs or options: "
                    f"{_differences(previous, description)}; resume needs the same command. "
                    f"Use a new output folder, or delete {out} to start over."
                )
        else:
            folder.mkdir(parents=True, exist_ok=True)
            config_path.write_text(
                json.dumps(description, indent=1, ensure_ascii=False) + "\n", encoding="utf-8"
            )
        journal = cls(folder)
        for record in _read_jsonl(folder / "shards.jsonl"):
            journal.shards.append(ShardInfo.from_dict(record["shard"]))
            journal.done.update({key: source for key, source in record["samples"]})
        for record in _read_jsonl(folder / "rejects.jsonl"):
            journal.rejects[record["source"]] = (record["code"], record["reason"])
        return journal

    def add_shard(self, info: ShardInfo, samples: list[tuple[str, str]]) -> None:
        record = {"shard": info.to_dict(), "samples": samples}
        _append_line(self.folder / "shards.jsonl", record, sync=True)
        self.shards.append(info)
        self.done.update(dict(samples))

    def add_reject(self, rejected: _Rejected) -> None:
        record = {"source": rejected.source, "code": rejected.code, "reason": rejected.reason}
        _append_line(self.folder / "rejects.jsonl", record, sync=False)
        self.rejects[rejected.source] = (rejected.code, rejected.reason)

    def next_numbers(self) -> dict[str, int]:
        numbers: dict[str, int] = {}
        for shard in self.shards:
            number = int(Path(shard.path).stem.rpartition("-")[2])
            numbers[shard.bucket] = max(numbers.get(shard.bucket, 0), number + 1)
        return numbers


def _differences(previous: dict[str, Any], current: dict[str, Any]) -> str:
    """``name (flag): before -> now`` for each input setting or option that differs between two runs."""

    def flat(description: dict[str, Any]) -> dict[str, Any]:
        options = description.get("options")
        settings = {k: v for k, v in description.items() if k != "options"}
        return {**settings, **(options if isinstance(options, dict) else {})}

    before, now = flat(previous), flat(current)
    parts = []
    for name in sorted(before.keys() | now.keys()):
        if before.get(name) != now.get(name):
            label = f"{name} ({_FLAGS[name]})" if name in _FLAGS else name
            parts.append(f"{label}: {before.get(name)!r} before, {now.get(name)!r} now")
    return "; ".join(parts)


def _holds_shards(out: Path) -> bool:
    for child in out.iterdir():
        try:
            parse_bucket_name(child.name)
        except ValueError:
            continue
        if child.is_dir() and any(child.glob("*.tar*")):
            return True
    return False


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    records = []
    lines = path.read_text(encoding="utf-8").splitlines()
    for i, line in enumerate(lines):
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            if i == len(lines) - 1:  # torn last line from a hard stop: its work is simply redone
                logger.warning("%s: ignoring a torn last line left by an interrupted run", path)
                continue
            raise ValueError(
                f"{path}: line {i + 1} is corrupt; delete the output folder and convert again"
            ) from None
    return records


def _append_line(path: Path, record: dict[str, Any], sync: bool) -> None:
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(record, ensure_ascii=False) + "\n")
        fh.flush()
        if sync:
            os.fsync(fh.fileno())


def _remove_unjournaled(out: Path, journal: _Journal) -> None:
    """Delete partial tars and tars a crash left unjournaled (their samples will be written again)."""
    known = {s.path for s in journal.shards}
    for bucket_dir in out.iterdir():
        try:
            parse_bucket_name(bucket_dir.name)
        except ValueError:
            continue
        for path in bucket_dir.iterdir():
            rel = path.relative_to(out).as_posix()
            if path.name.endswith(".tar.part") or (path.suffix == ".tar" and rel not in known):
                logger.info("removing %s left by an interrupted run", rel)
                path.unlink()


# ---------------------------------------------------------------------------------------------------------
# The pipeline


@contextmanager
def _locked(out: Path) -> Iterator[None]:
    """Hold an exclusive lock (flock) on ``<out>/_convert/lock`` for a whole conversion, so a second one
    into the same folder is refused instead of deleting the first one's open shards. The kernel drops the
    lock when its process dies, so a killed conversion leaves no stale lock behind."""
    if sys.platform == "win32":
        logger.warning("%s is not locked on Windows: do not run two conversions into it at once", out)
        yield
        return
    folder = out / JOURNAL_DIR
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_NAME
    with open(path, "a+", encoding="utf-8") as fh:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip() or "another process"
            raise ConvertLockedError(
                f"{out} is being written by another conversion ({holder} holds {path}); wait for it to "
                "finish (re-run the same command afterwards to check it is complete) or use another folder"
            ) from None
        try:
            fh.truncate(0)
            fh.write(f"pid {os.getpid()}\n")
            fh.flush()
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def convert_items(
    items: Iterable[SourceItem],
    out_dir: str | Path,
    config: ConvertConfig,
    description: dict[str, Any],
    progress: Callable[[int], object] | None = None,
) -> ConvertResult:
    """Convert any stream of :class:`SourceItem` (the public ``convert_*`` functions build the stream).

    ``description`` names the input (kind, path); with ``config.fingerprint()`` it must match an earlier
    run in ``out_dir`` for that run to be resumed. ``progress(n)`` is called after every n records handled.
    The output folder is locked for the run: a second conversion into it raises :class:`ConvertLockedError`.
    """
    out, remote = output_target(out_dir)  # a URL: staged in a local folder, each shard uploaded whole
    out.mkdir(parents=True, exist_ok=True)
    with _locked(out):
        return _convert_locked(items, out, remote, config, description, progress)


def _convert_locked(
    items: Iterable[SourceItem],
    out: Path,
    remote: RemoteOutput | None,
    config: ConvertConfig,
    description: dict[str, Any],
    progress: Callable[[int], object] | None,
) -> ConvertResult:
    description = {**description, "options": config.fingerprint()}
    journal = _Journal.open(out, description)
    _remove_unjournaled(out, journal)
    resumed = len(journal.done) + len(journal.rejects)
    pending_sources: dict[str, str] = {}  # key -> source of samples in tars not yet closed

    def on_closed(info: ShardInfo, keys: list[str]) -> None:
        if remote is not None:
            remote.upload_shard(info)  # journaled only once the object is complete in the store
        journal.add_shard(info, [(key, pending_sources.pop(key)) for key in keys])

    writer = ShardWriter(
        out,
        max_samples_per_shard=config.max_samples_per_shard,
        max_bytes_per_shard=config.max_bytes_per_shard,
        start_numbers=journal.next_numbers(),
        on_shard_closed=on_closed,
    )
    accepted: dict[str, str] = dict(journal.done)

    def todo() -> Iterator[SourceItem]:
        for item in items:
            if item.source in journal.rejects:
                if progress is not None:
                    progress(1)
                continue
            done_source = journal.done.get(sample_key(item.identity))
            if done_source == item.source:
                if progress is not None:
                    progress(1)
                continue
            yield item

    try:
        for result in _results(todo(), config):
            if isinstance(result, _Accepted):
                key = result.sample.key
                if key in accepted:
                    reason = f"same image as {accepted[key]} (key {key})"
                    journal.add_reject(
                        _Rejected(
                            result.source,
                            "duplicate_key",
                            _name_image(result.source, result.image_path, reason),
                        )
                    )
                else:
                    accepted[key] = result.source
                    pending_sources[key] = result.source
                    writer.write(result.sample)
            else:
                logger.info("rejected %s: %s", result.source, result.reason)
                journal.add_reject(result)
            if progress is not None:
                progress(1)
    finally:
        # Also on KeyboardInterrupt: every sample already written is complete, so finish and journal the tars.
        writer.close()

    index = ShardIndex(
        out if remote is None else remote.url,
        tuple(sorted(journal.shards, key=lambda s: s.path)),
        info={
            "input": {k: v for k, v in description.items() if k != "options"},
            "options": description["options"],
        },
    )
    index.save()
    by_reason = dict(sorted(Counter(code for code, _ in journal.rejects.values()).items()))
    report = {
        "num_accepted": index.num_samples,
        "num_rejected": len(journal.rejects),
        "rejected_by_reason": by_reason,
        "buckets": index.bucket_sizes(),
        "rejected": [
            {"source": source, "code": code, "reason": reason}
            for source, (code, reason) in journal.rejects.items()
        ],
    }
    report_path = out / REPORT_NAME
    report_path.write_text(json.dumps(report, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    if remote is not None:
        remote.upload(report_path, REPORT_NAME)
    logger.info(
        "converted %d samples into %d shards; %d rejected",
        index.num_samples,
        len(index.shards),
        len(journal.rejects),
    )
    return ConvertResult(index, index.num_samples, len(journal.rejects), by_reason, resumed, report_path)


def _input_location(location: str | Path) -> Path | str:
    """An absolute local path, or a readable URL (its scheme checked; see :func:`storage.check_location`)."""
    where = check_location(location)
    return where.resolve() if isinstance(where, Path) else where


def _shown(location: Path | str | None) -> str | None:
    """How an input is recorded in the journal and index (a URL without credentials)."""
    if location is None:
        return None
    return str(location) if isinstance(location, Path) else redact(location)


def convert_folder(
    input_dir: str | Path,
    out_dir: str | Path,
    config: ConvertConfig = ConvertConfig(),
    progress: Callable[[int], object] | None = None,
) -> ConvertResult:
    """Images under ``input_dir`` (recursive) with captions in ``<stem>.txt`` or ``<stem>.json`` sidecars."""
    if is_url(input_dir):
        raise UnsupportedLocationError(
            f"{redact(str(input_dir))}: a folder of images is read from local disk only; for images in a "
            "bucket, list their URLs and captions in a JSONL or parquet file and convert that list"
        )
    source = Path(input_dir).resolve()
    items = folder_items(source, skip_dir=Path(out_dir).resolve())
    return convert_items(items, out_dir, config, {"kind": "folder", "input": str(source)}, progress)


def convert_jsonl(
    input_path: str | Path,
    out_dir: str | Path,
    config: ConvertConfig = ConvertConfig(),
    image_root: str | Path | None = None,
    progress: Callable[[int], object] | None = None,
) -> ConvertResult:
    """The reference's JSONL lists (a file or a folder of ``*.jsonl``); see :func:`sources.jsonl_items`."""
    source = _input_location(input_path)
    root = _input_location(image_root) if image_root is not None else None
    items = jsonl_items(source, image_root=root)
    description = {"kind": "jsonl", "input": _shown(source), "image_root": _shown(root)}
    return convert_items(items, out_dir, config, description, progress)


def convert_img2dataset(
    input_path: str | Path,
    out_dir: str | Path,
    config: ConvertConfig = ConvertConfig(),
    path_column: str | None = None,
    caption_column: str | None = None,
    progress: Callable[[int], object] | None = None,
) -> ConvertResult:
    """img2dataset output: a folder of ``*.tar`` (+ parquet) shards, one .tar, or a parquet/CSV table with
    image paths and captions (columns found by name or given explicitly)."""
    source = _input_location(input_path)
    items = img2dataset_items(source, path_column=path_column, caption_column=caption_column)
    description = {
        "kind": "img2dataset",
        "input": _shown(source),
        "path_column": path_column,
        "caption_column": caption_column,
    }
    return convert_items(items, out_dir, config, description, progress)
