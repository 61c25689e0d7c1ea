"""infinity-data loader throughput: images/s decoded + resized + batched, at 256x256 and 512x512.

    uv run --no-sync python benchmarks/loader.py                       # 1 and 2 DataLoader workers
    uv run --no-sync python benchmarks/loader.py --workers 1 2 4 8 --images 2000

A synthetic dataset of JPEGs (1:1, ``--source-size`` pixels, smooth gradients plus noise so they compress
like photos) is converted once into shards; then one epoch of ``BucketLoader`` is timed per row (after a
short warm-up that starts the worker processes). Pixel budgets 0.06M and 0.25M give 256x256 and 512x512
batches for the 1:1 template. The ratio column is throughput relative to 1 worker at the same size,
measured in the same run. "CPU ms/img" is the CPU time of the process and its workers per image: the
cost that does not depend on how busy the machine is (images/s per core ~ 1000 / it). On a machine whose
cores are busy with other work, more workers cannot get more CPU and the ratio stays near 1.
"""

from __future__ import annotations

import argparse
import gc
import io
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
from infinity_data import BucketLoader, ConvertConfig, LoaderConfig, convert_folder
from PIL import Image


def _photo_like(size: int, rng: np.random.Generator) -> bytes:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    base = np.stack([yy, xx, (xx + yy) / 2], axis=-1) * rng.uniform(80, 255, 3)
    noisy = base + rng.normal(0, 12, base.shape)
    buf = io.BytesIO()
    Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8)).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def _make_dataset(root: Path, count: int, size: int) -> Path:
    rng = np.random.default_rng(0)
    src = root / "src"
    src.mkdir()
    for i in range(count):
        (src / f"{i:05d}.jpg").write_bytes(_photo_like(size, rng))
        (src / f"{i:05d}.txt").write_text(f"synthetic image {i}")
    out = root / "shards"
    convert_folder(src, out, ConvertConfig(max_samples_per_shard=100))
    return out


def _burn(_: int) -> None:
    x = 0
    for i in range(2_000_000):
        x += i


def _parallelism(processes: int) -> float:
    """How much more pure-CPU work ``processes`` processes get done than one, right now (a control)."""
    import multiprocessing

    rates = []
    for n in (1, processes):
        with multiprocessing.get_context("fork").Pool(n) as pool:
            start = time.perf_counter()
            pool.map(_burn, range(4 * processes))
            rates.append(1.0 / (time.perf_counter() - start))
    return rates[1] / rates[0]


def _cpu_seconds() -> float:
    """CPU time of this process plus its reaped children (the DataLoader workers, once joined)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _measure(root: Path, pn: str, workers: int, batch_size: int) -> tuple[float, float, tuple[int, ...]]:
    """(images/s, CPU ms per image, image shape) over one epoch, after a warm-up epoch prefix."""
    config = LoaderConfig(batch_size=batch_size, pn=pn, num_workers=workers, prefetch_factor=4)
    warm = BucketLoader(root, config)
    for i, _ in enumerate(warm):  # warm the page cache and the code paths
        if i == 2:
            break
    del warm
    gc.collect()  # joins the warm-up workers so their CPU time is not counted below
    loader = BucketLoader(root, config)
    count, shape = 0, ()
    cpu0, start = _cpu_seconds(), time.perf_counter()
    for batch in loader:  # the epoch ends -> the DataLoader joins its workers
        count += batch["images"].shape[0]
        shape = tuple(batch["images"].shape[1:])
    wall, cpu = time.perf_counter() - start, _cpu_seconds() - cpu0
    return count / wall, 1000.0 * cpu / count, shape


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", type=int, default=384, help="images in the synthetic dataset")
    parser.add_argument("--source-size", type=int, default=640, help="side of the stored JPEGs")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--pn", nargs="+", default=["0.06M", "0.25M"])
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        root = _make_dataset(Path(tmp), args.images, args.source_size)
        print(
            f"{args.images} JPEGs of {args.source_size}x{args.source_size}, batch {args.batch_size}, "
            "decode + LANCZOS resize-crop + [-1, 1] tensor + stack, one epoch per row"
        )
        most = max(args.workers)
        print(
            f"control: {most} processes do {_parallelism(most):.2f}x the CPU work of 1 on this machine right now"
        )
        ratio_header = f"vs {args.workers[0]} worker" + ("s" if args.workers[0] != 1 else "")
        print(f"{'pn':>6} {'output':>9} {'workers':>7} {'images/s':>9} {ratio_header:>12} {'CPU ms/img':>10}")
        for pn in args.pn:
            baseline = None
            for workers in args.workers:
                rate, cpu_ms, shape = _measure(root, pn, workers, args.batch_size)
                baseline = baseline if baseline is not None else rate
                size = f"{shape[1]}x{shape[2]}"
                print(f"{pn:>6} {size:>9} {workers:>7} {rate:9.1f} {rate / baseline:11.2f}x {cpu_ms:10.1f}")


if __name__ == "__main__":
    main()
