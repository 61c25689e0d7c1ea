"""infinity-data: convert images into aspect-bucketed WebDataset shards, verify, summarise and stream them."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import replace
from typing import Any

from tqdm import tqdm

from .convert import ConvertConfig, ConvertResult, convert_folder, convert_img2dataset, convert_jsonl
from .distribute import DISTRIBUTORS
from .errors import InfinityDataError
from .loader import BucketLoader, LoaderConfig
from .shards import INDEX_NAME, ShardIndex
from .sources import detect_kind
from .stats import stats
from .storage import check_location, join
from .verify import verify

_KINDS = ("auto", "folder", "jsonl", "img2dataset")
# Decoding processes when --num-workers is not given: this machine's cores, up to 8 (the library's own default,
# ConvertConfig.workers = 0, keeps a caller's conversion in its process).
_DEFAULT_WORKERS = min(8, os.cpu_count() or 1)
# The configs the commands start from: the library dataclasses' defaults (their one home), with the CLI's own
# choices named here once. The flags' defaults are read from these, and each command replaces what was given.
CONVERT_DEFAULTS = ConvertConfig(workers=_DEFAULT_WORKERS)
STREAM_DEFAULTS = LoaderConfig(batch_size=8, num_workers=0)  # a quick look at a few batches, in this process


class _DeprecatedFlag(argparse.Action):
    """An old spelling of a flag, hidden from --help: stores into the new flag's dest and warns on stderr."""

    def __init__(self, option_strings: Sequence[str], dest: str, *, new: str, **kwargs: Any) -> None:
        kwargs.setdefault("default", argparse.SUPPRESS)
        super().__init__(option_strings, dest, help=argparse.SUPPRESS, **kwargs)
        self.new = new

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: str | Sequence[Any] | None,
        option_string: str | None = None,
    ) -> None:
        _warn_deprecated(parser.prog, f"{option_string}", self.new)
        setattr(namespace, self.dest, values)


def _warn_deprecated(prog: str, old: str, new: str) -> None:
    print(f"{prog}: warning: {old} is deprecated and will be removed; use {new}", file=sys.stderr)


def _add_num_workers(p: argparse.ArgumentParser, default: int, help: str) -> None:
    p.add_argument("--num-workers", type=int, default=default, help=help)
    p.add_argument("--workers", dest="num_workers", type=int, action=_DeprecatedFlag, new="--num-workers")


@contextmanager
def _bar(desc: str, total: int | None, unit: str) -> Iterator[Callable[[int], object]]:
    with tqdm(total=total, desc=desc, unit=unit, dynamic_ncols=True, disable=None) as bar:
        yield bar.update


def _convert_output(args: argparse.Namespace) -> str:
    """``-o/--output``, or the deprecated second positional that was the output before."""
    if args.legacy_output is not None:
        _warn_deprecated("infinity-data convert", "the positional OUTPUT", "-o/--output OUTPUT")
        if args.output is not None and args.output != args.legacy_output:
            raise InfinityDataError(
                f"two outputs given ({args.legacy_output} and -o {args.output}); keep only -o/--output"
            )
        return str(args.legacy_output)
    if args.output is None:
        raise InfinityDataError("convert needs -o/--output: an output folder or s3:// / gs:// URL")
    return str(args.output)


def convert_config(args: argparse.Namespace) -> ConvertConfig:
    """The :class:`ConvertConfig` the ``convert`` flags give (unset flags keep :data:`CONVERT_DEFAULTS`)."""
    return replace(
        CONVERT_DEFAULTS,
        pn=args.pn,
        workers=args.num_workers,
        max_samples_per_shard=args.shard_size,
        max_bytes_per_shard=int(args.max_shard_mb * (1 << 20)),
        max_aspect=args.max_aspect,
        min_side=args.min_side,
        jpeg_quality=args.jpeg_quality,
        distributor=args.distributor,
    )


def loader_config(args: argparse.Namespace) -> LoaderConfig:
    """The :class:`LoaderConfig` the ``stream`` flags give (unset flags keep :data:`STREAM_DEFAULTS`)."""
    return replace(
        STREAM_DEFAULTS, batch_size=args.batch_size, pn=args.pn, num_workers=args.num_workers, seed=args.seed
    )


def convert_command(args: argparse.Namespace) -> int:
    output = _convert_output(args)
    check_location(output, write=True)  # a URL output needs its extra and a writable scheme
    source = args.input  # a local path or a URL (an img2dataset folder or a JSONL/parquet list in a bucket)
    kind = detect_kind(source) if args.kind == "auto" else args.kind
    config = convert_config(args)
    start = time.perf_counter()
    with _bar(f"convert ({kind})", None, "img") as progress:
        result: ConvertResult
        if kind == "folder":
            result = convert_folder(source, output, config, progress=progress)
        elif kind == "jsonl":
            result = convert_jsonl(source, output, config, image_root=args.image_root, progress=progress)
        else:
            result = convert_img2dataset(
                source, output, config, args.path_column, args.caption_column, progress=progress
            )
    elapsed = time.perf_counter() - start
    print(
        f"{result.num_accepted} samples in {len(result.index.shards)} shards ({elapsed:.1f} s); "
        f"{result.num_rejected} rejected",
        end="",
    )
    print(
        f" ({', '.join(f'{k}: {v}' for k, v in result.rejected_by_reason.items())})"
        if result.num_rejected
        else ""
    )
    if result.num_resumed:
        print(f"resumed: {result.num_resumed} records were already done by an earlier run")
    for name, count in result.index.bucket_sizes().items():
        print(f"  {name}: {count}")
    print(f"index: {join(result.index.root, INDEX_NAME)}\nreport: {result.report_path}")
    return 0


def verify_command(args: argparse.Namespace) -> int:
    try:
        total = len(ShardIndex.load(args.root).shards)
    except (FileNotFoundError, ValueError):
        total = None
    with _bar("verify", total, "shard") as progress:
        report = verify(args.root, decode=not args.no_decode, workers=args.num_workers, progress=progress)
    for error in report.errors[: args.max_errors]:
        print(f"error: {error}")
    if len(report.errors) > args.max_errors:
        print(f"... and {len(report.errors) - args.max_errors} more errors")
    status = "OK" if report.ok else f"FAILED with {len(report.errors)} errors"
    print(f"{report.num_shards} shards, {report.num_samples} samples: {status}")
    return 0 if report.ok else 1


def _fmt_summary(summary: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.1f}" for k, v in summary.items()) if summary else "-"


def stats_command(args: argparse.Namespace) -> int:
    total = len(ShardIndex.load(args.root).shards)
    with _bar("stats", total, "shard") as progress:
        result = stats(args.root, histogram_path=args.histogram, progress=progress)
    if args.json:
        print(json.dumps(result.to_dict(), indent=1))
        return 0
    print(f"{result.num_samples} samples")
    print("bucket (h/w)  samples  share")
    for name, count in result.bucket_sizes.items():
        print(f"  {name:>9}  {count:7d}  {count / max(result.num_samples, 1):6.1%}")
    print(f"caption characters: {_fmt_summary(result.caption_chars)}")
    print(f"caption words:      {_fmt_summary(result.caption_words)}")
    print(f"samples with a short caption: {result.num_short_captions}")
    if args.histogram:
        print(f"aspect-ratio histogram: {args.histogram}")
    return 0


def index_command(args: argparse.Namespace) -> int:
    root = args.root  # a folder or a URL
    previous: dict[str, Any] = {}
    with suppress(FileNotFoundError, ValueError):
        previous = ShardIndex.load(root).info
    index = ShardIndex.scan(root, info=previous)
    path = index.save()
    print(f"{path}: {len(index.shards)} shards, {index.num_samples} samples")
    return 0


def stream_command(args: argparse.Namespace) -> int:
    loader = BucketLoader(args.root, loader_config(args))
    start = time.perf_counter()
    images = 0
    for i, batch in enumerate(loader):
        if i >= args.batches:
            break
        images += len(batch["keys"])
        shape = tuple(batch["images"].shape)
        print(
            f"batch {batch['index']:5d}  template {batch['template']:.3f}  images {shape}  first: {batch['captions'][0][:50]!r}"
        )
    elapsed = time.perf_counter() - start
    print(
        f"{images} images in {elapsed:.2f} s ({images / max(elapsed, 1e-9):.1f} images/s); {len(loader)} batches per epoch"
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="infinity-data", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser(
        "convert", help="convert images + captions into bucketed WebDataset shards (resumable)"
    )
    p.add_argument(
        "input", help="image folder, .jsonl file/folder, or img2dataset output (folder, .tar, parquet/CSV)"
    )
    p.add_argument(
        "-o",
        "--output",
        default=None,
        help="output folder or s3:// / gs:// URL (staged locally, each shard uploaded whole); "
        "re-run the same command to resume",
    )
    p.add_argument("legacy_output", nargs="?", default=None, help=argparse.SUPPRESS)
    p.add_argument("--from", dest="kind", choices=_KINDS, default="auto", help="input kind (default: detect)")
    convert = CONVERT_DEFAULTS
    p.add_argument(
        "--pn", default=convert.pn, help="shrink larger images to this pixel budget (e.g. 0.25M or 1M)"
    )
    _add_num_workers(
        p, convert.workers, "decoding processes (0 = this process; default: this machine's cores, up to 8)"
    )
    p.add_argument(
        "--distributor",
        choices=DISTRIBUTORS,
        default=convert.distributor,
        help="where records are decoded: this machine's processes, or Ray (RAY_ADDRESS, else a local "
        "instance; needs infinity-data[ray]); the shards are the same either way",
    )
    p.add_argument("--shard-size", type=int, default=convert.max_samples_per_shard,
                   help="samples per shard (default %(default)s)")  # fmt: skip
    p.add_argument("--max-shard-mb", type=float, default=convert.max_bytes_per_shard / (1 << 20),
                   help="MiB per shard before rolling over (default %(default)g)")  # fmt: skip
    p.add_argument("--max-aspect", type=float, default=convert.max_aspect,
                   help="reject images whose long side exceeds this x the short side (default %(default)g)")  # fmt: skip
    p.add_argument("--min-side", type=int, default=convert.min_side,
                   help="reject images smaller than this (default %(default)s)")  # fmt: skip
    p.add_argument("--jpeg-quality", type=int, default=convert.jpeg_quality,
                   help="quality of re-encoded JPEGs (default %(default)s)")  # fmt: skip
    p.add_argument("--image-root", default=None, help="jsonl: base folder of relative image paths")
    p.add_argument("--path-column", default=None, help="img2dataset table: column with image paths")
    p.add_argument("--caption-column", default=None, help="img2dataset table: column with captions")

    p = sub.add_parser("verify", help="check every shard, count and sample of a converted dataset")
    p.add_argument("root")
    p.add_argument(
        "--no-decode", action="store_true", help="skip decoding images (structure and counts only)"
    )
    _add_num_workers(p, _DEFAULT_WORKERS, "checking processes (0 = this process)")
    p.add_argument("--max-errors", type=int, default=50, help="errors to print")

    p = sub.add_parser("stats", help="per-bucket counts, caption lengths, aspect-ratio histogram")
    p.add_argument("root")
    p.add_argument("--histogram", default=None, help="write the aspect-ratio histogram PNG here")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")

    p = sub.add_parser("index", help="rebuild index.json from the tars on disk")
    p.add_argument("root")

    p = sub.add_parser("stream", help="stream a few loader batches and report their shapes and speed")
    p.add_argument("root")
    stream = STREAM_DEFAULTS
    p.add_argument(
        "--batch-size", type=int, default=stream.batch_size, help="images per batch (default %(default)s)"
    )
    p.add_argument("--pn", default=stream.pn, help="pixel budget of the batches (default %(default)s)")
    _add_num_workers(p, stream.num_workers, "loader processes (0 = this process; default %(default)s)")
    p.add_argument("--seed", type=int, default=stream.seed, help="shuffling seed (default %(default)s)")
    p.add_argument("--batches", type=int, default=10, help="batches to stream")
    return parser


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "convert": convert_command,
    "verify": verify_command,
    "stats": stats_command,
    "index": index_command,
    "stream": stream_command,
}

# Errors that mean "bad input", reported in one line: the package's base error (storage, decode, lock, ...), plus
# the ValueError/OSError that path and JSON handling raise for a missing or malformed file.
_USER_ERRORS = (InfinityDataError, ValueError, OSError)


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv``, run the subcommand, and return its exit code (2 after a reported error)."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    try:
        return COMMANDS[args.command](args)
    except _USER_ERRORS as exc:
        print(f"infinity-data {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
