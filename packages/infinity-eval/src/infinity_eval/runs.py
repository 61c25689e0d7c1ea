"""Run bookkeeping: append-only per-image results, resume, shards, CSV/JSON summaries, provenance.

`results*.jsonl` rows are never rewritten: each batch is appended, flushed and fsynced. A crash can leave at
most a half-written last line; on reopen it is cut off (it was never a complete row) and the work it stood for
is redone. Rows are keyed by (metric, protocol, weights, image, prompt_id, sample_index); reruns skip existing
keys, and summaries de-duplicate across all results files of a run folder (so shards merge by reading).
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import os
import platform
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, TypeVar

from .remote import redact

__all__ = [
    "HARNESS_VERSION",
    "ResultStore",
    "Shard",
    "library_versions",
    "protocol_id",
    "read_all_results",
    "row_key",
    "run_header",
    "write_csv",
    "write_json",
]

logger = logging.getLogger(__name__)

try:
    HARNESS_VERSION = metadata.version("infinity-eval")
except metadata.PackageNotFoundError:  # running from a source tree
    HARNESS_VERSION = "0+unknown"

T = TypeVar("T")
KEY_FIELDS = ("metric", "protocol", "weights", "image", "prompt_id", "sample_index")


def protocol_id(metric: str, options: Mapping[str, Any]) -> str:
    """A short stable id of a metric's options (results of different ids are never mixed)."""
    blob = json.dumps({"metric": metric, **options}, sort_keys=True, default=str)
    return f"{metric}-{hashlib.sha256(blob.encode()).hexdigest()[:12]}"


def row_key(row: Mapping[str, Any]) -> tuple[str, ...]:
    return tuple(str(row.get(k, "")) for k in KEY_FIELDS)


@dataclass(frozen=True)
class Shard:
    """Shard `index` of `count` (0-based): a deterministic slice of the sorted work list."""

    index: int = 0
    count: int = 1

    def __post_init__(self) -> None:
        if self.count < 1 or not 0 <= self.index < self.count:
            raise ValueError(f"shard {self.index}/{self.count} is invalid; use i/n with 0 <= i < n")

    @classmethod
    def parse(cls, text: str) -> Shard:
        try:
            i, n = (int(x) for x in text.split("/"))
        except ValueError as err:
            raise ValueError(f"--shard {text!r} is not of the form i/n (e.g. 0/4)") from err
        return cls(i, n)

    def select(self, items: Sequence[T], key=None) -> list[T]:
        ordered = sorted(items, key=key) if key is not None else list(items)
        return ordered[self.index :: self.count]

    @property
    def suffix(self) -> str:
        return "" if self.count == 1 else f".shard-{self.index}-of-{self.count}"


def _repair_tail(path: Path) -> None:
    """Cut a half-written last line (no trailing newline and not valid JSON) left by a crash."""
    size = path.stat().st_size
    if size == 0:
        return
    with open(path, "rb+") as handle:
        handle.seek(max(0, size - 1))
        if handle.read(1) == b"\n":
            return
        handle.seek(0)
        data = handle.read()
        cut = data.rfind(b"\n") + 1
        tail = data[cut:]
        try:
            json.loads(tail)
            complete = True
        except ValueError:
            complete = False
        if complete:  # a full row that only lost its newline
            handle.seek(size)
            handle.write(b"\n")
        else:
            logger.warning(
                "%s: dropping a half-written last line (%d bytes) left by a crash", path, len(tail)
            )
            handle.truncate(cut)


def _read_rows(path: Path) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    with open(path, encoding="utf-8") as handle:
        lines = handle.read().split("\n")
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as err:
            if lineno == len(lines):  # unterminated last line: a crash mid-write, not a complete row
                logger.warning("%s:%d: ignoring a half-written last line", path, lineno)
                continue
            raise ValueError(
                f"{path}:{lineno}: corrupt results row ({err.msg}); remove that line to resume"
            ) from err
    return rows


class ResultStore:
    """Append-only JSONL results file with resume by key."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists():
            _repair_tail(self.path)
            self._rows = _read_rows(self.path)
        else:
            self._rows = []
        self._keys = {row_key(r) for r in self._rows}

    @property
    def rows(self) -> list[dict[str, Any]]:
        return list(self._rows)

    def __contains__(self, key: tuple[str, ...]) -> bool:
        return key in self._keys

    def append(self, rows: Iterable[Mapping[str, Any]]) -> int:
        """Append rows whose key is new; flush and fsync. Returns the number written."""
        fresh: list[dict[str, Any]] = []
        for row in rows:
            key = row_key(row)
            if key in self._keys:
                continue
            self._keys.add(key)
            fresh.append(dict(row))
        if not fresh:
            return 0
        payload = "".join(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n" for r in fresh)
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        self._rows.extend(fresh)
        return len(fresh)


def read_all_results(folder: str | os.PathLike[str], metric: str, protocol: str) -> tuple[list[dict], dict]:
    """Rows of every `results*.jsonl` in `folder` for (metric, protocol), de-duplicated by key.

    Also returns counts of rows skipped because their protocol differs (never mixed into a summary).
    """
    rows: dict[tuple[str, ...], dict] = {}
    other: dict[str, int] = {}
    for path in sorted(Path(folder).glob("results*.jsonl")):
        for row in _read_rows(path):
            if row.get("metric") != metric:
                continue
            if row.get("protocol") != protocol:
                other[str(row.get("protocol"))] = other.get(str(row.get("protocol")), 0) + 1
                continue
            rows.setdefault(row_key(row), row)
    return list(rows.values()), other


def write_csv(
    path: str | os.PathLike[str], rows: Sequence[Mapping[str, Any]], columns: Sequence[str]
) -> None:
    p = Path(path)
    tmp = p.with_name(p.name + ".tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(columns), extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow(row)
    os.replace(tmp, p)


def write_json(path: str | os.PathLike[str], obj: Any) -> None:
    p = Path(path)
    tmp = p.with_name(p.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n", encoding="utf-8")
    os.replace(tmp, p)


def library_versions(extra: Sequence[str] = ()) -> dict[str, str]:
    out: dict[str, str] = {"python": platform.python_version()}
    for name in ("torch", "numpy", "scipy", "pillow", *extra):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def run_header(
    metric: str,
    protocol: str,
    options: Mapping[str, Any],
    weights: Sequence[Mapping[str, Any]] = (),
    extra_libraries: Sequence[str] = (),
    device: str | None = None,
) -> dict[str, Any]:
    """Provenance recorded in every summary: versions, options, weights (name, size, SHA-256, source)."""
    return {
        "harness": "infinity-eval",
        "harness_version": HARNESS_VERSION,
        "metric": metric,
        "protocol": protocol,
        "options": dict(options),
        "weights": [dict(w) for w in weights],
        "libraries": library_versions(extra_libraries),
        "device": device,
        "command_line": [redact(arg) for arg in sys.argv],  # URLs without credentials
    }
