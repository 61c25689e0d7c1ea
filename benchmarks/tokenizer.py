"""BSQ-VAE tokenizer throughput: encode (image -> bits) and decode (bits -> image), images/s at 256x256.

    uv run --no-sync python benchmarks/tokenizer.py                     # d32 config, CPU, batch 1 and 8
    uv run --no-sync python benchmarks/tokenizer.py --device cuda --batch-sizes 1 8 32

Random weights with the released d32 architecture (110M parameters), fp32, template 1.0 at 0.06M (7 scales).
The ratio column is throughput relative to batch 1 of the same operation, measured in the same run.
On 2 shared CPU cores the default run takes about 3-5 minutes (the d32 decoder is ~0.5 TFLOP per 256x256 image).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import TypeVar

import torch
from bsq_tokenizer import BSQVAE, VAEConfig, get_schedule
from bsq_tokenizer.schedules import PIXEL_BUDGETS

T = TypeVar("T")


def _timed(fn: Callable[[], T], repeats: int, device: torch.device) -> tuple[float, T]:
    """(median seconds over ``repeats`` calls, result of the last call)."""
    times, result = [], None
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        result = fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--preset", default="d32")
    parser.add_argument("--pn", default="0.06M", choices=PIXEL_BUDGETS, help="pixel budget (0.06M = 256x256)")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--repeats", type=int, default=1, help="timed repeats per row (median)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--channels-last", action="store_true", help="NHWC weights/inputs (about 1.3x faster on CPU)"
    )
    args = parser.parse_args()

    device = torch.device(args.device)
    torch.manual_seed(0)
    config = VAEConfig.preset(args.preset)
    vae = BSQVAE(config).to(device).eval().requires_grad_(False)
    fmt = torch.channels_last if args.channels_last else torch.contiguous_format
    vae = vae.to(memory_format=fmt)
    schedule = get_schedule(1.0, args.pn)
    scales = schedule.vae_scales(config.patchify)
    height, width = schedule.pixel_hw
    print(
        f"{args.preset}: {sum(p.numel() for p in vae.parameters()) / 1e6:.1f}M params (random), {height}x{width}, "
        f"fp32, {'channels_last' if args.channels_last else 'NCHW'}, device {device}, threads {torch.get_num_threads()}, median of {args.repeats}"
    )

    rows: list[tuple[str, int, float]] = []
    with torch.inference_mode():
        warm = (torch.rand(1, 3, height, width, device=device) * 2 - 1).to(memory_format=fmt)
        vae.decode_from_bits(vae.encode_to_bits(warm, scales).bits)  # warm-up (kernel selection, allocator)
        for batch in args.batch_sizes:
            img = (torch.rand(batch, 3, height, width, device=device) * 2 - 1).to(memory_format=fmt)
            enc, out = _timed(lambda img=img: vae.encode_to_bits(img, scales), args.repeats, device)
            dec, _ = _timed(lambda bits=out.bits: vae.decode_from_bits(bits), args.repeats, device)
            rows.append(("encode", batch, batch / enc))
            rows.append(("decode", batch, batch / dec))

    base = {op: ips for op, batch, ips in rows if batch == args.batch_sizes[0]}
    print(f"\n| op | batch | images/s | ratio vs batch {args.batch_sizes[0]} |\n|---|---:|---:|---:|")
    for op, batch, ips in sorted(rows, key=lambda r: (r[0] != "encode", r[1])):
        print(f"| {op} | {batch} | {ips:.3f} | {ips / base[op]:.2f} |")


if __name__ == "__main__":
    main()
