"""Where shards live: a local folder or an fsspec URL (``s3://``, ``gs://``, ``http(s)://`` read-only).

A location string with a ``scheme://`` prefix is always a URL and never a local path (``Path("s3://b/x")``
would silently become the local folder ``s3:/b/x``). Known schemes need their optional extra
(``infinity-data[s3]``, ``[gcs]``, ``[http]``); an unknown scheme or a missing extra is refused with the fix.
Credentials are never passed by us: s3fs/gcsfs read them from the standard environment (``AWS_*`` variables,
``~/.aws``, Google application-default credentials, fsspec's ``FSSPEC_<PROTOCOL>_<OPTION>`` variables), and
every URL we print has its user info and query string removed.

Remote objects are read whole, one sequential GET each (:meth:`Store.fetch`), with retries and exponential
backoff on transient errors (5xx, connection resets, timeouts) counted in :class:`IOStats`.
:class:`ShardCache` keeps local copies of remote shards in a folder bounded in bytes (least recently used out).
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import logging
import os
import posixpath
import re
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, TypeVar

from .errors import InfinityDataError

__all__ = [
    "EXTRAS",
    "READ_ONLY_SCHEMES",
    "IOStats",
    "RetryPolicy",
    "ShardCache",
    "ShardUnavailableError",
    "StorageError",
    "Store",
    "UnsupportedLocationError",
    "check_location",
    "is_url",
    "local_copy",
    "redact",
    "resolve",
    "split_url",
]

logger = logging.getLogger(__name__)

# scheme -> (module the fsspec backend needs, infinity-data extra that installs it)
EXTRAS: dict[str, tuple[str, str]] = {
    "s3": ("s3fs", "s3"),
    "gs": ("gcsfs", "gcs"),
    "gcs": ("gcsfs", "gcs"),
    "http": ("aiohttp", "http"),
    "https": ("aiohttp", "http"),
}
READ_ONLY_SCHEMES = frozenset({"http", "https"})
# Backend options that leave retrying to :meth:`Store.call`, so that every retry is counted in IOStats: s3fs
# retries some errors itself (``retries``, default 5) and botocore retries 5xx/throttling below it
# (``total_max_attempts``, default 5 in its legacy mode); both are set to a single attempt.
_SINGLE_ATTEMPT: dict[str, dict[str, Any]] = {
    "s3": {"config_kwargs": {"retries": {"total_max_attempts": 1, "mode": "standard"}}},
}
_URL = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*)://")
_T = TypeVar("_T")


class UnsupportedLocationError(InfinityDataError, ValueError):
    """A URL whose scheme is unknown, whose extra is not installed, or that cannot be written."""


class StorageError(InfinityDataError, OSError):
    """A store could not be reached or an object could not be read/written after all retries."""


class ShardUnavailableError(InfinityDataError, ValueError):
    """A shard that still fails after all retries: the loader handles it like a corrupt shard."""


def is_url(location: str | Path) -> bool:
    """True for ``scheme://...`` strings (a :class:`Path` is always local)."""
    return isinstance(location, str) and _URL.match(location) is not None


def redact(url: str) -> str:
    """The URL without user info (``user:secret@``) and query string (signed tokens), for messages."""
    match = _URL.match(url)
    if match is None:
        return url
    rest = url[match.end() :]
    host, slash, path = rest.partition("/")
    host = host.rpartition("@")[2]
    path = path.split("?", 1)[0].split("#", 1)[0]
    return f"{match.group(1)}://{host}{slash}{path}"


def check_location(location: str | Path, write: bool = False) -> Path | str:
    """A local :class:`Path`, or the URL (trailing slashes removed) after checking its scheme is usable.

    ``file://`` URLs become paths. Raises :class:`UnsupportedLocationError` naming the extra to install, or
    when ``write`` is asked of a read-only scheme (http/https).
    """
    if not is_url(location):
        return Path(location)
    url = str(location)
    scheme = _URL.match(url).group(1).lower()  # type: ignore[union-attr]
    if scheme == "file":
        return Path(url[len("file://") :])
    if scheme not in EXTRAS:
        known = ", ".join(f"{s}://" for s in EXTRAS)
        raise UnsupportedLocationError(
            f"{redact(url)}: the URL scheme {scheme!r} is not supported; use a local path or one of {known}"
        )
    module, extra = EXTRAS[scheme]
    if importlib.util.find_spec(module) is None:
        raise UnsupportedLocationError(
            f"{redact(url)}: {scheme}:// needs the {module} package; install it with "
            f"`pip install 'infinity-data[{extra}]'`"
        )
    if write and scheme in READ_ONLY_SCHEMES:
        raise UnsupportedLocationError(
            f"{redact(url)}: {scheme}:// is read-only here; write shards to a local folder, s3:// or gs://"
        )
    return url.rstrip("/")


def join(root: Path | str, rel: str) -> Path | str:
    """``root / rel`` for a folder or a URL (``rel`` is a posix path)."""
    return root / rel if isinstance(root, Path) else f"{root}/{rel}"


def split_url(url: str) -> tuple[str, str]:
    """``(folder URL, object name)`` of an object URL (``s3://b/ds/a.tar`` -> ``s3://b/ds``, ``a.tar``)."""
    scheme, _, rest = url.partition("://")
    folder, _, name = rest.rstrip("/").rpartition("/")
    if not folder or not name:
        raise UnsupportedLocationError(f"{redact(url)}: expected the URL of an object inside a bucket/folder")
    return f"{scheme}://{folder}", name


def resolve(base: Path | str, rel: str) -> str:
    """``rel`` (a relative posix path or a URL) against a local folder or a folder URL, normalised
    (``images/../images/a.jpg`` is ``images/a.jpg``); a URL is returned as it is."""
    if is_url(rel):
        return rel
    if isinstance(base, Path):
        return os.path.normpath(base / rel)
    scheme, _, rest = base.partition("://")
    return f"{scheme}://{posixpath.normpath(rest.rstrip('/') + '/' + rel)}"


@dataclass(frozen=True)
class RetryPolicy:
    """Transient failures are retried ``attempts - 1`` times, waiting base * 2**k seconds (capped)."""

    attempts: int = 5
    base_delay_s: float = 0.1
    max_delay_s: float = 5.0

    def __post_init__(self) -> None:
        if self.attempts < 1 or self.base_delay_s < 0 or self.max_delay_s < 0:
            raise ValueError(f"retry policy needs attempts >= 1 and delays >= 0, got {self}")

    def delay(self, attempt: int) -> float:
        return min(self.max_delay_s, self.base_delay_s * (2**attempt))


@dataclass
class IOStats:
    """Counters of remote reads (per process; the loader sums its workers' counts)."""

    fetches: int = 0  # objects downloaded
    bytes_fetched: int = 0
    cache_hits: int = 0  # shards served from the local cache folder
    retries: int = 0  # transient failures that were retried
    failed_shards: int = 0  # shards that still failed after every retry

    def __post_init__(self) -> None:
        self._lock = threading.Lock()  # the loader's prefetch thread counts too

    def __getstate__(self) -> dict[str, int]:
        return self.to_dict()

    def __setstate__(self, state: dict[str, int]) -> None:
        self.__init__(**state)  # type: ignore[misc]

    def count(self, **deltas: int) -> None:
        """Add to counters, safely from several threads."""
        with self._lock:
            for name, delta in deltas.items():
                setattr(self, name, getattr(self, name) + delta)

    def to_dict(self) -> dict[str, int]:
        return asdict(self)

    def add(self, other: dict[str, int]) -> None:
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + int(other.get(f.name, 0)))

    def minus(self, other: dict[str, int]) -> dict[str, int]:
        return {k: v - int(other.get(k, 0)) for k, v in self.to_dict().items()}


def _transient_types() -> tuple[type[BaseException], ...]:
    types: list[type[BaseException]] = [OSError, TimeoutError, ConnectionError]
    with contextlib.suppress(ImportError):
        import aiohttp

        types.append(aiohttp.ClientError)
    with contextlib.suppress(ImportError):
        import botocore.exceptions  # type: ignore[import-untyped]  # botocore ships no type information

        types.append(botocore.exceptions.BotoCoreError)
    return tuple(types)


def _is_permanent(exc: BaseException) -> bool:
    """Missing objects and 4xx answers (other than 408 timeout / 429 slow down) are not worth retrying."""
    if isinstance(exc, (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError)):
        return True
    if type(exc).__name__ in ("NoCredentialsError", "PartialCredentialsError"):  # botocore: no retry helps
        return True
    status = getattr(exc, "status", None)
    return isinstance(status, int) and 400 <= status < 500 and status not in (408, 429)


class Store:
    """Reads and writes objects under one root (a folder or a URL) with retries; picklable (the fsspec
    filesystem is created lazily in each process, from the standard environment)."""

    def __init__(self, root: str | Path, retry: RetryPolicy = RetryPolicy(), write: bool = False) -> None:
        self.root: Path | str = check_location(root, write=write)
        self.retry = retry
        self.stats = IOStats()
        self._fs: Any = None

    @property
    def is_remote(self) -> bool:
        return isinstance(self.root, str)

    @property
    def scheme(self) -> str:
        """The URL scheme of a remote root as written (``""`` for a local folder)."""
        return self.root.split("://", 1)[0] if isinstance(self.root, str) else ""

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_fs": None}

    def __repr__(self) -> str:
        return f"Store({self.display(None)!r})"

    def display(self, rel: str | None) -> str:
        """The root or one object of it, as shown in messages (credentials removed)."""
        where = self.root if rel is None else join(self.root, rel)
        return redact(where) if isinstance(where, str) else str(where)

    @property
    def fs(self) -> Any:
        if self._fs is None:
            import fsspec  # type: ignore[import-untyped]  # fsspec ships no type information

            # a private instance: tests and long jobs may see the environment (endpoint) change
            scheme = self.scheme.lower()
            options = _SINGLE_ATTEMPT.get(scheme, {})
            self._fs, _ = fsspec.core.url_to_fs(str(self.root), skip_instance_cache=True, **options)
            if scheme == "s3":
                self._fs.retries = 1  # s3fs's own retry loop (a class attribute, not a constructor option)
        return self._fs

    def _path(self, rel: str) -> str:
        return str(join(self.root, rel))

    def call(self, what: str, rel: str, fn: Callable[[], _T]) -> _T:
        """Run ``fn`` with retries on transient errors; raise StorageError naming the object at the end."""
        transient = _transient_types()
        for attempt in range(self.retry.attempts):
            try:
                return fn()
            except transient as exc:
                if _is_permanent(exc):
                    raise
                if attempt + 1 == self.retry.attempts:
                    raise StorageError(
                        f"{self.display(rel)}: {what} failed after {self.retry.attempts} attempts "
                        f"({type(exc).__name__}: {redact(str(exc))})"
                    ) from exc
                self.stats.count(retries=1)
                delay = self.retry.delay(attempt)
                logger.warning(
                    "%s: %s failed (%s), retry %d in %.2f s",
                    self.display(rel),
                    what,
                    type(exc).__name__,
                    attempt + 1,
                    delay,
                )
                time.sleep(delay)
        raise AssertionError("unreachable")

    # ---- reading ---------------------------------------------------------------------------------------
    def read_bytes(self, rel: str) -> bytes:
        if not self.is_remote:
            return Path(self._path(rel)).read_bytes()
        data: bytes = self.call("read", rel, lambda: self.fs.cat_file(self._path(rel)))
        self.stats.count(fetches=1, bytes_fetched=len(data))
        return data

    def fetch(self, rel: str, dest: Path) -> Path:
        """Download one object whole to ``dest`` (written as a temporary file, then renamed)."""
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.{uuid.uuid4().hex}.part")
        try:
            self.call("download", rel, lambda: self.fs.get_file(self._path(rel), str(tmp)))
            os.replace(tmp, dest)
        finally:
            tmp.unlink(missing_ok=True)
        self.stats.count(fetches=1, bytes_fetched=dest.stat().st_size)
        return dest

    def exists(self, rel: str) -> bool:
        if not self.is_remote:
            return Path(self._path(rel)).exists()
        return bool(self.call("look up", rel, lambda: self.fs.exists(self._path(rel))))

    def list_tars(self) -> list[str]:
        """Relative paths of ``<bucket-folder>/*.tar`` objects, sorted (http(s) roots cannot be listed)."""
        return self._glob("*/*.tar", "give the shards' index.json there")

    def glob(self, pattern: str) -> list[str]:
        """Relative paths of the objects matching ``pattern`` directly under the root, sorted (http(s)
        roots cannot be listed: name the file itself there)."""
        return self._glob(pattern, "give the URL of the file itself")

    def _glob(self, pattern: str, hint: str) -> list[str]:
        """Relative paths of the files/objects matching ``pattern``, sorted; ``hint`` ends the message that
        refuses to list an http(s) root."""
        if not self.is_remote:
            root = Path(self.root)
            return sorted(p.relative_to(root).as_posix() for p in root.glob(pattern) if p.is_file())
        if self.scheme in READ_ONLY_SCHEMES:
            raise UnsupportedLocationError(
                f"{self.display(None)}: http(s) locations cannot be listed; {hint}"
            )
        found = self.call("list", "", lambda: self.fs.glob(self._path(pattern)))
        prefix = self.fs._strip_protocol(str(self.root)).rstrip("/") + "/"
        return sorted(str(p)[len(prefix) :] for p in found if str(p).startswith(prefix))

    # ---- writing ---------------------------------------------------------------------------------------
    def write_bytes(self, rel: str, data: bytes) -> None:
        """Write one object whole (a local file via a temporary name and rename)."""
        if not self.is_remote:
            path = Path(self._path(rel))
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(path.name + ".tmp")
            tmp.write_bytes(data)
            os.replace(tmp, path)
            return
        self.call("upload", rel, lambda: self.fs.pipe_file(self._path(rel), data))

    def put_file(self, local: Path, rel: str) -> None:
        """Upload a finished local file whole: the object appears under its name only when complete."""
        self.call("upload", rel, lambda: self.fs.put_file(str(local), self._path(rel)))

    def check_reachable(self) -> None:
        """Fail early with the URL when the store cannot be reached (e.g. before training starts)."""
        if self.is_remote:
            self.call("reach", "", lambda: self.fs.exists(str(self.root)))


@contextlib.contextmanager
def local_copy(store: Store, rel: str) -> Iterator[Path]:
    """A local path holding object ``rel``: the file itself for a folder, else a temporary download."""
    if not store.is_remote:
        yield Path(store._path(rel))
        return
    with tempfile.TemporaryDirectory(prefix="infinity-data-") as tmp:
        yield store.fetch(rel, Path(tmp) / Path(rel).name)


@contextlib.contextmanager
def _shard_lock(path: Path) -> Iterator[None]:
    """An exclusive ``flock`` on ``path`` (POSIX; elsewhere no lock: two workers may then download the
    same shard, which costs time but not correctness, since copies are renamed into place whole)."""
    if sys.platform == "win32":
        yield
        return
    import fcntl

    with open(path, "a") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            path.unlink(missing_ok=True)  # a waiter holding the old file re-checks the cache first
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


class ShardCache:
    """Local copies of a remote store's shards in ``folder``, at most ``max_bytes`` in all (least recently
    used out, by modification time, which every hit refreshes). Several processes may share one folder:
    files are written under temporary names and renamed, and eviction tolerates files already gone.
    ``folder=None`` uses a private temporary folder removed by :meth:`close`."""

    def __init__(self, store: Store, folder: str | Path | None, max_bytes: int) -> None:
        if max_bytes < 1:
            raise ValueError(f"the shard cache needs max_bytes >= 1, got {max_bytes}")
        self.store = store
        self._private = folder is None
        self.max_bytes = max_bytes
        self.folder: Path | None = None  # created on the first remote read (a local root needs none)
        if folder is not None:
            self.folder = Path(folder)

    def _folder(self) -> Path:
        if self.folder is None:
            self.folder = Path(tempfile.mkdtemp(prefix="infinity-shards-"))
        self.folder.mkdir(parents=True, exist_ok=True)
        return self.folder

    def _name(self, rel: str) -> Path:
        digest = hashlib.sha1(self.store.display(rel).encode("utf-8")).hexdigest()[:24]
        return self._folder() / f"{digest}-{Path(rel).name}"

    def _hit(self, path: Path) -> bool:
        try:
            os.utime(path)  # a hit: now the most recently used
        except FileNotFoundError:
            return False
        self.store.stats.count(cache_hits=1)
        return True

    def local(self, rel: str, count_failure: bool = True) -> Path:
        """The local copy of shard ``rel`` (downloaded whole on a miss); ShardUnavailableError on failure
        (counted in ``failed_shards`` unless ``count_failure`` is off, as for a prefetch the reader will
        retry). Processes and threads sharing the folder download each shard once: a miss takes a lock
        file of that shard, and whoever waited on it finds the copy made meanwhile."""
        if not self.store.is_remote:
            return Path(self.store._path(rel))
        path = self._name(rel)
        if self._hit(path):
            return path
        with _shard_lock(path.with_name(f".{path.name}.lock")):
            if self._hit(path):
                return path
            try:
                self.store.fetch(rel, path)
            except (OSError, ValueError) as exc:
                if count_failure:
                    self.store.stats.count(failed_shards=1)
                raise ShardUnavailableError(
                    f"{self.store.display(rel)}: shard unavailable ({type(exc).__name__}: {redact(str(exc))})"
                ) from exc
        self._evict(keep=path)
        return path

    def _evict(self, keep: Path) -> None:
        entries = []
        for entry in os.scandir(self._folder()):
            if entry.name.startswith(".") or not entry.is_file():
                continue
            with contextlib.suppress(FileNotFoundError):
                st = entry.stat()
                entries.append((st.st_mtime_ns, st.st_size, Path(entry.path)))
        total = sum(size for _, size, _ in entries)
        for _, size, path in sorted(entries):
            if total <= self.max_bytes:
                break
            if path == keep:
                continue
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            total -= size
        if total > self.max_bytes:
            logger.warning(
                "shard cache %s holds %d bytes, over its %d-byte bound: one shard is larger than the cache",
                self.folder,
                total,
                self.max_bytes,
            )

    def close(self) -> None:
        if self._private and self.folder is not None:
            for path in self.folder.iterdir():
                path.unlink(missing_ok=True)
            with contextlib.suppress(OSError):
                self.folder.rmdir()
