"""infinity_data: aspect-bucketed WebDataset shards for Infinity.

Converters (image folder, the reference's JSONL lists, img2dataset output) write per-template shards with an
index; ``verify`` and ``stats`` check and summarise them; :class:`BucketLoader` streams bucket-pure batches
across ranks and workers and resumes at the exact next sample.
"""

from .buckets import bucket_name, template_of_size
from .captions import choose_caption
from .convert import (
    ConvertConfig,
    ConvertLockedError,
    ConvertResult,
    convert_folder,
    convert_img2dataset,
    convert_jsonl,
)
from .errors import InfinityDataError
from .images import ImageDecodeError, decode_rgb
from .loader import BucketLoader, CorruptDataLimitError, LoaderConfig
from .shards import ShardIndex, ShardInfo, ShardSample, ShardWriter, read_shard
from .stats import DatasetStats, stats
from .verify import VerifyReport, verify

__all__ = [
    "BucketLoader",
    "ConvertConfig",
    "ConvertLockedError",
    "ConvertResult",
    "CorruptDataLimitError",
    "DatasetStats",
    "ImageDecodeError",
    "InfinityDataError",
    "LoaderConfig",
    "ShardIndex",
    "ShardInfo",
    "ShardSample",
    "ShardWriter",
    "VerifyReport",
    "bucket_name",
    "choose_caption",
    "convert_folder",
    "convert_img2dataset",
    "convert_jsonl",
    "decode_rgb",
    "read_shard",
    "stats",
    "template_of_size",
    "verify",
]

from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as _dist_version

try:
    __version__ = _dist_version("infinity-data")  # one source of truth: the version in pyproject.toml
except PackageNotFoundError:  # imported from a source tree that is not installed
    __version__ = "0+unknown"
