"""infinity-data from object storage: loader images/s from local disk vs a loopback S3 store (moto), cold and
with a warm cache folder, and convert images/s with the process pool vs Ray, all in one run.

    uv run --no-sync python benchmarks/loader_remote.py                  # 600 images, 2 loader workers
    uv run --no-sync python benchmarks/loader_remote.py --images 2000 --workers 2 --rounds 3 --skip-ray

The loader rows time one epoch each (256x256 batches of 16), each from a fresh loader: "local" reads the
shards from disk; "s3, cold" starts with an empty cache (the default: one temporary folder shared by the
loader's workers, each shard downloaded once); "prefetch 2" adds a background thread per worker that
downloads the shards of its next 2 batches while it decodes the current one
(``prefetch_shard_batches=2``); "warm cache dir" reads through a cache folder filled by an earlier epoch
(the cost of the cache lookups only). The loader rows are interleaved over ``--rounds`` rounds, in an order
rotated each round (the row right after another ran slower, whichever it was), and the best of each is
kept; ratios are relative to local in the same run (target: the store at >= 0.8x on loopback).
The convert rows time ``convert_folder`` with 2 workers; Ray's row includes its task overhead but not
``ray.init`` (stated separately). Needs the dev group (moto server, s3fs, ray).
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import logging
import os
import tempfile
import time
from pathlib import Path

import numpy as np
from infinity_data import BucketLoader, ConvertConfig, LoaderConfig, convert_folder
from infinity_data.storage import Store
from PIL import Image


def _photo_like(size: int, rng: np.random.Generator) -> bytes:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    base = np.stack([yy, xx, (xx + yy) / 2], axis=-1) * rng.uniform(80, 255, 3)
    noisy = base + rng.normal(0, 12, base.shape)
    buf = io.BytesIO()
    Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8)).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def _images(root: Path, count: int) -> Path:
    rng = np.random.default_rng(0)
    src = root / "src"
    src.mkdir()
    for i in range(count):
        (src / f"{i:05d}.jpg").write_bytes(_photo_like(320, rng))
        (src / f"{i:05d}.txt").write_text(f"synthetic image {i}")
    return src


def _epoch(root: str | Path, cfg: LoaderConfig) -> float:
    loader = BucketLoader(root, cfg)
    start = time.perf_counter()
    n = sum(len(b["keys"]) for b in loader)
    return n / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", type=int, default=600)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--skip-ray", action="store_true")
    args = parser.parse_args()

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's server logs every request

    rows: list[tuple[str, float, float]] = []
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        src = _images(tmp, args.images)
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()
        try:
            host, port = server.get_host_and_port()
            os.environ.update(
                AWS_ACCESS_KEY_ID="bench",
                AWS_SECRET_ACCESS_KEY="bench",
                AWS_DEFAULT_REGION="us-east-1",
                AWS_ENDPOINT_URL=f"http://{host}:{port}",
                XDG_CACHE_HOME=str(tmp / "xdg"),  # the bucket conversion's staging folder: fresh each run
            )
            Store("s3://bench").fs.mkdir("bench")
            local = tmp / "shards"
            start = time.perf_counter()
            convert_folder(src, local, ConvertConfig(max_samples_per_shard=50, workers=2))
            convert_mp = args.images / (time.perf_counter() - start)
            url = "s3://bench/ds"
            convert_folder(src, url, ConvertConfig(max_samples_per_shard=50, workers=2))

            cfg = LoaderConfig(batch_size=16, num_workers=args.workers, load_t5=False)
            prefetch = dataclasses.replace(cfg, prefetch_shard_batches=2)
            warm_cfg = dataclasses.replace(cfg, cache_dir=str(tmp / "cache"))
            _epoch(local, cfg)  # warm the page cache and the imports
            _epoch(url, warm_cfg)  # fills the warm cache folder
            runs: dict[str, tuple[str | Path, LoaderConfig]] = {
                "loader: local disk": (local, cfg),
                "loader: s3 loopback, cold (default)": (url, cfg),
                "loader: s3 loopback, cold, prefetch 2": (url, prefetch),
                "loader: s3 loopback, warm cache dir": (url, warm_cfg),
            }
            best = dict.fromkeys(runs, 0.0)
            names = list(runs)
            for r in range(args.rounds):  # interleaved: the shared machine's load hits every row alike
                for name in names[r % len(names) :] + names[: r % len(names)]:  # each row in each position
                    root, run_cfg = runs[name]
                    best[name] = max(best[name], _epoch(root, run_cfg))
            base = best["loader: local disk"]
            rows += [(name, rate, rate / base) for name, rate in best.items()]
        finally:
            server.stop()

        rows.append(("convert: multiprocessing (2 workers)", convert_mp, 1.0))
        ray_init = float("nan")
        if not args.skip_ray:
            os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")
            import ray

            start = time.perf_counter()
            ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
            ray_init = time.perf_counter() - start
            try:
                start = time.perf_counter()
                cfg_ray = ConvertConfig(max_samples_per_shard=50, workers=2, distributor="ray")
                convert_folder(src, tmp / "ray", cfg_ray)
                convert_ray = args.images / (time.perf_counter() - start)
                rows.append(("convert: ray (local, 2 CPUs)", convert_ray, convert_ray / convert_mp))
            finally:
                ray.shutdown()

    print(
        f"{args.images} images, {args.workers} loader workers, best of {args.rounds} interleaved rounds, "
        f"{os.cpu_count()} cores (shared)"
    )
    print(f"{'row':40s} {'img/s':>9s} {'ratio':>7s}")
    for name, rate, ratio in rows:
        print(f"{name:40s} {rate:9.1f} {ratio:7.2f}")
    if not args.skip_ray:
        print(f"ray.init (local instance start, not in the row above): {ray_init:.1f} s")


if __name__ == "__main__":
    main()
