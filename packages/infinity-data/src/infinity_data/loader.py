"""Bucket-aware, distributed, exactly resumable batch loader over converted shards.

Every batch comes from one bucket (one template, so one scale schedule and one image size). The order of an
epoch is a pure function of ``(seed, epoch)`` and the index, computed identically in every process:

1. per bucket, shards are permuted and taken ``shuffle_window`` at a time; the samples of each window are
   permuted together (shuffled within and across shards, while reading only a few shards at once);
2. each bucket's sample order is cut into batches; the bucket of each global batch is drawn by permuting
   the multiset of batch labels (so buckets appear in proportion to their sizes, like the reference);
3. global batch ``j`` goes to rank ``j % world_size``; a rank's ``i``-th batch is built by DataLoader worker
   ``(i - start) % num_workers``, where ``start`` is the batch the iteration resumed from.

The state is just ``(epoch, next batch index)`` counted on batches the trainer actually received, so worker
prefetch never loses or repeats a sample on resume. ``mode="resampled"`` draws every batch independently
(bucket proportional to size, samples without replacement within the batch) from ``(seed, epoch, rank,
batch index)``: no cross-rank agreement beyond the index is needed, which suits many nodes.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import math
import shutil
import tempfile
import threading
import weakref
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

import numpy as np
import torch
from bsq_tokenizer import resize_crop_for_template
from bsq_tokenizer.schedules import target_pixel_size
from PIL import Image
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from .buckets import check_pn, parse_bucket_name
from .captions import choose_caption
from .errors import InfinityDataError
from .images import SHARD_IMAGE_EXTS, ImageDecodeError, batch_to_tensor_pm1, decode_rgb
from .shards import T5_EXT, MemberTable, ShardIndex, read_member_table
from .storage import IOStats, ShardCache, ShardUnavailableError, Store

__all__ = ["BucketLoader", "CorruptDataLimitError", "LoaderConfig"]

logger = logging.getLogger(__name__)

_MODES = ("epoch", "resampled")
_SKIPPED = "_skipped"  # internal batch entry: reasons of the samples skipped in it (removed before yielding)


class CorruptDataLimitError(InfinityDataError, RuntimeError):
    """More samples were unreadable than ``LoaderConfig.max_skipped_samples`` allows."""


class _CorruptSample(Exception):
    """A sample whose stored data cannot be used (unreadable shard, missing member, undecodable bytes).

    Only this is skipped; any other exception while building a batch is a bug and propagates."""


@dataclass(frozen=True)
class LoaderConfig:
    """How batches are made. ``pn``: pixel budget of the output images (0.06M -> 256x256 for 1:1).
    ``shuffle_window``: shards whose samples are shuffled together (0 = the whole bucket).
    ``short_caption_prob`` / ``dynamic_caption_length``: caption choice (see :func:`choose_caption`).
    ``max_skipped_samples``: unreadable samples tolerated over the run (counted in the state) before
    iteration stops with :class:`CorruptDataLimitError`; None = no limit."""

    batch_size: int = 16
    pn: str = "0.06M"
    seed: int = 0
    num_workers: int = 2
    mode: str = "epoch"
    shuffle_window: int = 8
    drop_last: bool = False
    load_t5: bool = True
    prefetch_factor: int = 2
    pin_memory: bool = False
    short_caption_prob: float = 0.0
    dynamic_caption_length: bool = False
    buckets: tuple[str, ...] | None = None  # only these bucket names (e.g. ("1.000",)); None = all
    max_skipped_samples: int | None = 1000
    # remote shards (URL roots): local copies shared by the loader's workers (each shard downloaded once),
    # least recently used out past the bound; None = a temporary folder of this loader, removed with it
    cache_dir: str | None = None
    cache_max_bytes: int = 8 << 30
    # remote shards: how many of its next batches each worker downloads shards for in a background thread
    # while it decodes the current one (0 = download when a shard is first read). Off by default: on a
    # loopback store with 2 busy cores it was no faster (benchmarks/loader_remote.py); it can pay when GET
    # latency, not CPU, bounds the loader
    prefetch_shard_batches: int = 0

    def __post_init__(self) -> None:
        check_pn(self.pn)
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.mode not in _MODES:
            raise ValueError(f"mode must be one of {_MODES}, got {self.mode!r}")
        if self.num_workers < 0 or self.shuffle_window < 0 or self.seed < 0:
            raise ValueError(
                f"seed, num_workers and shuffle_window must be >= 0, got seed={self.seed}, "
                f"num_workers={self.num_workers}, shuffle_window={self.shuffle_window}"
            )
        if self.prefetch_factor < 1:
            raise ValueError(f"prefetch_factor must be >= 1, got {self.prefetch_factor}")
        if self.cache_max_bytes < 1:
            raise ValueError(f"cache_max_bytes must be >= 1, got {self.cache_max_bytes}")
        if self.prefetch_shard_batches < 0:
            raise ValueError(f"prefetch_shard_batches must be >= 0, got {self.prefetch_shard_batches}")
        if not 0.0 <= self.short_caption_prob <= 1.0:
            raise ValueError(f"short_caption_prob must be in [0, 1], got {self.short_caption_prob}")
        if self.max_skipped_samples is not None and self.max_skipped_samples < 0:
            raise ValueError(
                f"max_skipped_samples must be >= 0 (or None for no limit), got {self.max_skipped_samples}"
            )

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> LoaderConfig:
        """Named settings: "default" (long captions as stored) or "reference" (the reference recipe's
        caption policy: dynamic caption length, short caption with probability 0.5)."""
        presets = {
            "default": cls(),
            "reference": cls(short_caption_prob=0.5, dynamic_caption_length=True),
        }
        if name not in presets:
            raise ValueError(f"unknown loader preset {name!r}; choose one of {', '.join(presets)}")
        return replace(presets[name], **overrides)


@dataclass(frozen=True)
class _Bucket:
    name: str
    template: float
    shard_paths: tuple[str, ...]
    starts: np.ndarray  # [num_shards + 1] cumulative sample counts

    @property
    def size(self) -> int:
        return int(self.starts[-1])

    def locate(self, sample_id: int) -> tuple[str, int]:
        """The shard holding sample ``sample_id`` of this bucket, and the sample's position in that shard."""
        shard = int(np.searchsorted(self.starts, sample_id, side="right")) - 1
        return self.shard_paths[shard], int(sample_id - self.starts[shard])


@dataclass(frozen=True)
class _Plan:
    """Everything needed to build any batch of any epoch for one rank (cheap to pickle to workers)."""

    root: Path | str  # a folder or a URL
    buckets: tuple[_Bucket, ...]
    config: LoaderConfig
    rank: int
    world_size: int
    batches_per_rank: int
    global_batches: int  # before padding / truncation to a multiple of world_size
    bucket_batches: tuple[int, ...] = field(default_factory=tuple)

    # ---- epoch mode ------------------------------------------------------------------------------------
    def bucket_order(self, b: int, epoch: int) -> np.ndarray:
        """Sample ids (0..size-1 within bucket ``b``) in this epoch's order."""
        bucket = self.buckets[b]
        rng = np.random.default_rng([self.config.seed, epoch, b, 0])
        counts = np.diff(bucket.starts)
        shard_perm = rng.permutation(len(counts))
        window = self.config.shuffle_window or len(counts)
        parts = []
        for lo in range(0, len(counts), window):
            group = shard_perm[lo : lo + window]
            ids = np.concatenate([np.arange(bucket.starts[s], bucket.starts[s + 1]) for s in group])
            parts.append(rng.permutation(ids))
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)

    def batch_labels(self, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        """(bucket, occurrence) of every global batch of the epoch, padded/truncated to world_size."""
        labels = np.repeat(np.arange(len(self.buckets)), self.bucket_batches)
        labels = np.random.default_rng([self.config.seed, epoch, 1 << 30]).permutation(labels)
        occurrence = np.zeros(len(labels), dtype=np.int64)
        for b in range(len(self.buckets)):
            where = np.flatnonzero(labels == b)
            occurrence[where] = np.arange(len(where))
        total = self.batches_per_rank * self.world_size
        take = np.arange(total) % max(len(labels), 1)  # pads by wrapping around (drop_last truncates)
        return labels[take], occurrence[take]

    # ---- both modes ------------------------------------------------------------------------------------
    def batch_members(self, epoch: int, index: int, cache: dict[str, Any]) -> tuple[int, np.ndarray]:
        """(bucket, sample ids) of this rank's batch ``index`` in ``epoch``."""
        bs = self.config.batch_size
        if self.config.mode == "resampled":
            rng = np.random.default_rng([self.config.seed, epoch, self.rank, index, 1])
            sizes = np.array([bk.size for bk in self.buckets], dtype=np.float64)
            b = int(rng.choice(len(self.buckets), p=sizes / sizes.sum()))
            n = self.buckets[b].size
            return b, rng.choice(n, size=bs, replace=n < bs)
        if cache.get("epoch") != epoch:
            cache.clear()
            cache["epoch"] = epoch
            cache["labels"] = self.batch_labels(epoch)
            cache["orders"] = {}
        labels, occurrence = cache["labels"]
        j = index * self.world_size + self.rank
        b, occ = int(labels[j]), int(occurrence[j])
        if b not in cache["orders"]:
            cache["orders"][b] = self.bucket_order(b, epoch)
        return b, cache["orders"][b][occ * bs : (occ + 1) * bs]


class _ShardReader:
    """Random access to samples: member tables and open files cached per worker (LRU)."""

    def __init__(self, shards: ShardCache, max_open: int = 16, max_tables: int = 256) -> None:
        self.shards = shards  # local path of a shard (a remote one is downloaded whole, once)
        self.max_open, self.max_tables = max_open, max_tables
        self.files: OrderedDict[str, BinaryIO] = OrderedDict()
        self.tables: OrderedDict[str, MemberTable | ValueError] = OrderedDict()

    def _table(self, rel: str) -> MemberTable:
        if rel not in self.tables:
            try:
                self.tables[rel] = read_member_table(self.shards.local(rel))
            except ValueError as exc:
                self.tables[rel] = exc
            if len(self.tables) > self.max_tables:
                self.tables.popitem(last=False)
        self.tables.move_to_end(rel)
        table = self.tables[rel]
        if isinstance(table, ValueError):
            raise table
        return table

    def _file(self, rel: str) -> BinaryIO:
        if rel not in self.files:
            self.files[rel] = open(self.shards.local(rel), "rb")  # noqa: SIM115 (kept open in the LRU)
            if len(self.files) > self.max_open:
                self.files.popitem(last=False)[1].close()
        self.files.move_to_end(rel)
        return self.files[rel]

    def read(self, rel: str, position: int, exts: tuple[str, ...]) -> tuple[str, dict[str, bytes]]:
        """``(key, {ext: bytes})`` of sample ``position`` of shard ``rel``; raises _CorruptSample when the
        shard is missing, unreadable, shorter than the index says, or a member is truncated."""
        try:
            table = self._table(rel)
        except ValueError as exc:  # read_member_table's report of an unreadable tar
            raise _CorruptSample(str(exc)) from exc
        if position >= len(table.keys):
            raise _CorruptSample(
                f"{rel} holds {len(table.keys)} samples, sample #{position} requested (stale index?)"
            )
        out = {}
        try:
            fh = self._file(rel)
            for ext, (offset, size) in table.files[position].items():
                if ext in exts:
                    fh.seek(offset)
                    out[ext] = fh.read(size)
                    if len(out[ext]) != size:
                        raise _CorruptSample(f"{rel}: member {table.keys[position]}.{ext} is truncated")
        except OSError as exc:
            raise _CorruptSample(f"{rel}: cannot read ({exc})") from exc
        return table.keys[position], out

    def close(self) -> None:
        for fh in self.files.values():
            fh.close()
        self.files.clear()


def _read_sample(
    reader: _ShardReader, rel: str, position: int, exts: tuple[str, ...]
) -> tuple[str, dict[str, Any], Image.Image, torch.Tensor | None]:
    """Key, metadata, decoded RGB image and optional T5 features of one stored sample.

    Raises _CorruptSample for data at fault (missing or undecodable members); nothing else is caught here.
    """
    key, files = reader.read(rel, position, exts)
    if "json" not in files:
        raise _CorruptSample(f"{rel}: sample {key} has no .json member")
    try:
        meta = json.loads(files["json"])
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _CorruptSample(f"{rel}: {key}.json is not valid JSON ({exc})") from exc
    if not isinstance(meta, dict):
        raise _CorruptSample(f"{rel}: {key}.json is not a JSON object")
    image_ext = next((e for e in SHARD_IMAGE_EXTS if e in files), None)
    if image_ext is None:
        raise _CorruptSample(f"{rel}: sample {key} has no image member (one of {SHARD_IMAGE_EXTS})")
    try:
        image = decode_rgb(files[image_ext])
    except ImageDecodeError as exc:
        raise _CorruptSample(f"{rel}: {key}.{image_ext}: {exc}") from exc
    feats = None
    if T5_EXT in files:
        try:
            feats = torch.from_numpy(np.load(io.BytesIO(files[T5_EXT]), allow_pickle=False))
        except (ValueError, OSError, EOFError) as exc:
            raise _CorruptSample(f"{rel}: {key}.{T5_EXT} is not a readable .npy array ({exc})") from exc
    return key, meta, image, feats


def _caption_rng(seed: int, epoch: int, key: str) -> np.random.Generator:
    digest = int.from_bytes(hashlib.sha1(key.encode("utf-8")).digest()[:8], "little")
    return np.random.default_rng([seed, epoch, digest, 2])


class _ShardPrefetcher:
    """Downloads, in a background thread, the shards a worker's next batches will read, at most ``ahead``
    batches ahead of the one it builds, so that the download of one shard overlaps the decoding of another.
    A shard that fails here is left to the reader, which retries and reports it."""

    def __init__(self, shards: ShardCache, needs: Iterator[tuple[int, str]], ahead: int) -> None:
        self._shards, self._needs, self._ahead = shards, needs, ahead
        self._cond = threading.Condition()
        self._building = -1
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name="shard-prefetch", daemon=True)
        self._thread.start()

    def building(self, position: int) -> None:
        """The worker builds its ``position``-th batch now."""
        with self._cond:
            self._building = position
            self._cond.notify_all()

    def _may_fetch(self, position: int) -> bool:
        return self._stopped or self._building >= position - self._ahead

    def _run(self) -> None:
        fetched: set[str] = set()
        for position, rel in self._needs:
            with self._cond:
                # fetch for batch ``position`` once the worker builds batch ``position - ahead``
                self._cond.wait_for(partial(self._may_fetch, position))
                if self._stopped:
                    return
            if rel in fetched:
                continue
            fetched.add(rel)
            with contextlib.suppress(ShardUnavailableError):
                self._shards.local(rel, count_failure=False)

    def close(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify_all()
        self._thread.join()


class _BatchStream(IterableDataset):
    """This rank's batches ``start..end-1`` of one epoch, split over DataLoader workers."""

    def __init__(self, plan: _Plan, epoch: int, start: int, cache_dir: str | None) -> None:
        super().__init__()
        self.plan, self.epoch, self.start, self.cache_dir = plan, epoch, start, cache_dir

    def _shards_needed(self, indices: range) -> Iterator[tuple[int, str]]:
        """``(position, shard)`` of every sample of the worker's batches, in the order it reads them."""
        cache: dict[str, Any] = {}
        for position, index in enumerate(indices):
            b, ids = self.plan.batch_members(self.epoch, index, cache)
            bucket = self.plan.buckets[b]
            for sample_id in ids:
                yield position, bucket.locate(int(sample_id))[0]

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = get_worker_info()
        worker, num_workers = (info.id, info.num_workers) if info is not None else (0, 1)
        cfg = self.plan.config
        store = Store(self.plan.root)
        shards = ShardCache(store, self.cache_dir, cfg.cache_max_bytes)
        reader = _ShardReader(shards)
        cache: dict[str, Any] = {}
        reported: dict[str, int] = {}
        indices = range(self.start + worker, self.plan.batches_per_rank, num_workers)
        prefetch = None
        if store.is_remote and cfg.prefetch_shard_batches > 0:
            prefetch = _ShardPrefetcher(shards, self._shards_needed(indices), cfg.prefetch_shard_batches)
        try:
            for position, index in enumerate(indices):
                if prefetch is not None:
                    prefetch.building(position)
                # exactly one item per index, even when nothing was readable: the DataLoader takes items from
                # the workers in turn, so a worker that skipped an index would put the order out of step
                batch = self._build(index, reader, cache)
                batch["io"] = store.stats.minus(reported)  # remote reads since the last batch
                reported = store.stats.to_dict()
                yield batch
        finally:
            if prefetch is not None:
                prefetch.close()
            reader.close()
            shards.close()

    def _build(self, index: int, reader: _ShardReader, cache: dict[str, Any]) -> dict[str, Any]:
        """This rank's batch ``index``, with the reasons of skipped samples under ``_SKIPPED`` (and only
        ``index``, ``epoch`` and those reasons when no sample was readable)."""
        plan, cfg = self.plan, self.plan.config
        b, ids = plan.batch_members(self.epoch, index, cache)
        bucket = plan.buckets[b]
        exts = (*SHARD_IMAGE_EXTS, "json", T5_EXT) if cfg.load_t5 else (*SHARD_IMAGE_EXTS, "json")
        target = target_pixel_size(bucket.template, cfg.pn)
        images, captions, stored, keys, t5 = [], [], [], [], []
        skipped: list[str] = []
        for sample_id in ids:
            rel, position = bucket.locate(int(sample_id))
            try:
                key, meta, decoded, feats = _read_sample(reader, rel, position, exts)
            except _CorruptSample as exc:
                logger.warning(
                    "skipping corrupt sample #%d of %s (bucket %s): %s", position, rel, bucket.name, exc
                )
                skipped.append(f"sample #{position} of {rel}: {exc}")
                continue
            img = resize_crop_for_template(decoded, bucket.template, cfg.pn)
            if (img.height, img.width) != target:
                raise RuntimeError(
                    f"{rel} sample #{position}: resized to {(img.height, img.width)}, expected {target}"
                )
            stored.append(str(meta.get("caption", "")))
            caption = choose_caption(
                stored[-1],
                meta.get("short_caption"),
                str(meta.get("caption_type", "user_prompt")),
                _caption_rng(cfg.seed, self.epoch, key),
                short_prob=cfg.short_caption_prob,
                dynamic_length=cfg.dynamic_caption_length,
            )
            images.append(img)
            captions.append(caption)
            keys.append(key)
            t5.append(feats)
        if not images:
            logger.error(
                "batch %d of epoch %d (bucket %s) had no readable sample; skipped",
                index,
                self.epoch,
                bucket.name,
            )
            return {"epoch": self.epoch, "index": index, _SKIPPED: skipped}
        batch: dict[str, Any] = {
            "images": batch_to_tensor_pm1(images, shared=get_worker_info() is not None),
            "captions": captions,
            "template": bucket.template,
            "keys": keys,
            "epoch": self.epoch,
            "index": index,
            _SKIPPED: skipped,
        }
        if cfg.load_t5 and all(f is not None for f in t5):
            # precomputed features encode the stored caption: report that one, not a policy-chosen variant
            batch["t5_features"] = t5
            batch["captions"] = stored
        return batch


_T = TypeVar("_T")


def _identity(batch: _T) -> _T:
    """The collate function: the stream yields whole batches (``batch_size=None``), so there is nothing to merge."""
    return batch


class BucketLoader:
    """Iterate bucket-pure batches of a converted dataset; ``for batch in loader`` runs to the end of the
    current epoch (resuming mid-epoch after :meth:`load_state_dict`), then the state moves to the next epoch.

    A batch is a dict: ``images`` float32 [B, 3, H, W] in [-1, 1], ``captions`` list[str], ``template``
    float (h/w of the bucket; the scale schedule is ``get_schedule(template, pn)``), ``keys`` list[str],
    ``epoch`` and ``index`` (this rank's batch number), and ``t5_features`` (list of [L_i, C] tensors) when
    every sample of the batch has precomputed features and ``load_t5`` is on. Corrupt samples (unreadable
    shard, missing member, undecodable image / JSON / T5 array) are skipped with a logged warning (the batch
    is then smaller, and a batch with none left is not yielded but still counted as done); their number is
    kept in the state, and past ``config.max_skipped_samples`` iteration raises
    :class:`CorruptDataLimitError`. Any other error while building a batch propagates.
    """

    def __init__(
        self, root: str | Path, config: LoaderConfig = LoaderConfig(), rank: int = 0, world_size: int = 1
    ):
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"need 0 <= rank < world_size, got rank={rank}, world_size={world_size}")
        self.index = ShardIndex.load(root)
        self.config = config
        self.rank, self.world_size = rank, world_size
        self._plan = self._make_plan()
        self._epoch = 0
        self._next = 0
        self._skipped = 0
        self._io = IOStats()
        self._cache_dir = config.cache_dir
        if config.cache_dir is None and isinstance(self.index.root, str):
            # one folder for all workers of all epochs (a shard read by two workers is downloaded once),
            # removed when the loader is garbage-collected or the interpreter exits
            self._cache_dir = tempfile.mkdtemp(prefix="infinity-shards-")
            weakref.finalize(self, shutil.rmtree, self._cache_dir, ignore_errors=True)

    def _make_plan(self) -> _Plan:
        cfg = self.config
        names = sorted({s.bucket for s in self.index.shards})
        if cfg.buckets is not None:
            unknown = set(cfg.buckets) - set(names)
            if unknown:
                raise ValueError(f"buckets {sorted(unknown)} are not in {self.index.root}; it has {names}")
            names = [n for n in names if n in cfg.buckets]
        buckets = []
        for name in names:
            shards = [s for s in self.index.shards_of(name) if s.num_samples > 0]
            if shards:
                starts = np.concatenate([[0], np.cumsum([s.num_samples for s in shards])]).astype(np.int64)
                buckets.append(_Bucket(name, parse_bucket_name(name), tuple(s.path for s in shards), starts))
        if not buckets:
            raise ValueError(
                f"{self.index.root}: no samples to load (check the index and the buckets option)"
            )
        bs = cfg.batch_size
        per_bucket = tuple((b.size // bs if cfg.drop_last else math.ceil(b.size / bs)) for b in buckets)
        total = sum(per_bucket)
        per_rank = total // self.world_size if cfg.drop_last else math.ceil(total / self.world_size)
        if per_rank == 0:
            raise ValueError(
                f"{self.index.root}: {total} batches of {bs} cannot feed {self.world_size} ranks; "
                "lower batch_size or turn off drop_last"
            )
        return _Plan(
            self.index.root, tuple(buckets), cfg, self.rank, self.world_size, per_rank, total, per_bucket
        )

    def __len__(self) -> int:
        """Batches per epoch for this rank."""
        return self._plan.batches_per_rank

    @property
    def epoch(self) -> int:
        return self._epoch

    @property
    def skipped_samples(self) -> int:
        """Unreadable samples skipped so far over the run (restored by :meth:`load_state_dict`)."""
        return self._skipped

    @property
    def io_stats(self) -> dict[str, int]:
        """Remote reads of the batches yielded so far: fetches, bytes_fetched, cache_hits, retries and
        failed_shards (all zero for a local dataset)."""
        return self._io.to_dict()

    @property
    def bucket_sizes(self) -> dict[str, int]:
        return {b.name: b.size for b in self._plan.buckets}

    def set_epoch(self, epoch: int) -> None:
        """Start ``epoch`` from its first batch at the next iteration."""
        self._epoch, self._next = int(epoch), 0

    def __iter__(self) -> Iterator[dict[str, Any]]:
        if self._next >= len(self):
            self._epoch, self._next = self._epoch + 1, 0
        epoch = self._epoch
        cfg = self.config
        stream = _BatchStream(self._plan, epoch, self._next, self._cache_dir)
        loader = DataLoader(
            stream,
            batch_size=None,
            num_workers=cfg.num_workers,
            collate_fn=_identity,
            pin_memory=cfg.pin_memory,
            prefetch_factor=cfg.prefetch_factor if cfg.num_workers > 0 else None,
        )
        for batch in loader:
            if int(batch["index"]) != self._next:  # one item per index, in order: anything else is a bug
                raise RuntimeError(f"loader expected batch {self._next}, got batch {batch['index']}")
            skipped: list[str] = batch.pop(_SKIPPED)
            if skipped:
                self._skipped += len(skipped)
                limit = cfg.max_skipped_samples
                if limit is not None and self._skipped > limit:
                    raise CorruptDataLimitError(
                        f"{self.index.root}: {self._skipped} unreadable samples skipped so far, more than "
                        f"max_skipped_samples={limit} (latest: {skipped[-1]}). Run `infinity-data verify "
                        f"{self.index.root}` to list them, then re-create or drop the shards at fault, or "
                        "raise LoaderConfig.max_skipped_samples"
                    )
            self._io.add(batch.pop("io", {}))
            self._next = int(batch["index"]) + 1
            if "images" not in batch:  # nothing readable: counted as done, not handed to the trainer
                continue
            yield batch
        if self._epoch == epoch:
            self._epoch, self._next = epoch + 1, 0

    def state_dict(self) -> dict[str, Any]:
        """Where the trainer is: the epoch and the next batch this rank will yield (plus what must match)."""
        return {
            "epoch": self._epoch,
            "next_batch": self._next,
            "skipped_samples": self._skipped,
            "seed": self.config.seed,
            "mode": self.config.mode,
            "batch_size": self.config.batch_size,
            "world_size": self.world_size,
            "rank": self.rank,
            "bucket_sizes": self.bucket_sizes,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue exactly after the last batch the saved loader yielded (num_workers may differ)."""
        expected = self.state_dict()
        for name in ("seed", "mode", "batch_size", "world_size", "rank", "bucket_sizes"):
            if state.get(name) != expected[name]:
                raise ValueError(
                    f"loader state has {name}={state.get(name)!r} but this loader has {expected[name]!r}; "
                    "resume with the same dataset, seed, mode, batch size, rank and world size"
                )
        self._epoch, self._next = int(state["epoch"]), int(state["next_batch"])
        self._skipped = int(state.get("skipped_samples", 0))  # absent in states saved before it was counted
