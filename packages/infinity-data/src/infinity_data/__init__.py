"""infinity_data: aspect-bucketed WebDataset shards for Infinity.

Converters (image folder, the reference's JSONL lists, img2dataset output) write per-template shards with an
index; ``verify`` and ``stats`` check and summarise them; :class:`BucketLoader` streams bucket-pure batches
across ranks and workers and resumes at the exact next sample.

The names below are the front door. The public modules hold the rest: ``infinity_data.shards``
(``ShardInfo``, ``ShardSample``), ``infinity_data.buckets``, ``infinity_data.captions``, ``infinity_data.images``,
``infinity_data.convert``, ``infinity_data.loader``, ``infinity_data.verify``, ``infinity_data.stats``,
``infinity_data.storage`` and ``infinity_data.shapes`` (the synthetic shapes world). Other modules are internal.
"""

from __future__ import annotations

import importlib
import warnings
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as _dist_version

from .convert import ConvertConfig, ConvertResult, convert_folder, convert_img2dataset, convert_jsonl
from .errors import InfinityDataError
from .loader import BucketLoader, LoaderConfig
from .shards import ShardIndex, ShardWriter, read_shard
from .stats import DatasetStats, stats
from .verify import VerifyReport, verify

try:
    __version__ = _dist_version("infinity-data")  # one source of truth: the version in pyproject.toml
except PackageNotFoundError:  # imported from a source tree that is not installed
    __version__ = "0+unknown"

__all__ = [
    "BucketLoader",
    "ConvertConfig",
    "ConvertResult",
    "DatasetStats",
    "InfinityDataError",
    "LoaderConfig",
    "ShardIndex",
    "ShardWriter",
    "VerifyReport",
    "convert_folder",
    "convert_img2dataset",
    "convert_jsonl",
    "read_shard",
    "stats",
    "verify",
]

# Names exported here before 0.2, now imported from their module (deprecated here for one minor version).
_MOVED = {
    **dict.fromkeys(("bucket_name", "template_of_size"), "buckets"),
    **dict.fromkeys(("choose_caption",), "captions"),
    **dict.fromkeys(("ConvertLockedError",), "convert"),
    **dict.fromkeys(("ImageDecodeError", "decode_rgb"), "images"),
    **dict.fromkeys(("CorruptDataLimitError",), "loader"),
    **dict.fromkeys(("ShardInfo", "ShardSample"), "shards"),
}


def __getattr__(name: str) -> object:
    """Forward a name moved off the front door to its module, with a DeprecationWarning naming the new import."""
    module = _MOVED.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    warnings.warn(
        f"infinity_data.{name} is deprecated; import it from infinity_data.{module} "
        "(the package's front door keeps only its main API)",
        DeprecationWarning,
        stacklevel=2,
    )
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
