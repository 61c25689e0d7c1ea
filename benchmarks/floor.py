"""Floor-aware timings: how far each inference workload is from the machine's matmul rate, today vs fast paths.

    uv run --no-sync python benchmarks/floor.py [--repeats 3] [--threads 1]

Per workload and path: GFLOP (``torch.utils.flop_counter.FlopCounterMode``: matmuls, convolutions, attention),
the best time of ``--repeats`` round-robin runs, GFLOP/s, and that rate as a fraction of a 4096x4096 matmul
in fp32 and in bf16 measured in the same process (the floor a dense workload could reach on this CPU).
Workloads: the sampler on a small random transformer (depth 8, width 512) at 0.06M (1:1), batch 1 and 4, cfg 3;
the VAE decoder of the d32 preset (random weights) at 256x256, batch 1. Paths: today's (fp32), cfg_off_last=1
(fp32), bf16 autocast, bf16 + cfg_off_last=1. Checks before timing: fp32 cfg_off_last=1 draws exactly the bits
of guidance 1 at the last scale (the same computation in half the batch), bf16 agrees with fp32 on most bits.
"""

from __future__ import annotations

import argparse
import contextlib
import time
from collections.abc import Callable

import torch
from bsq_tokenizer import BSQVAE, VAEConfig, get_schedule
from infinity_model.condition import TextCondition
from infinity_model.config import InfinityConfig
from infinity_model.sampler import SamplerConfig, SampleResult, sample
from infinity_model.transformer import Infinity
from torch.utils.flop_counter import FlopCounterMode

SMALL = InfinityConfig(depth=8, embed_dim=512, num_heads=8, text_channels=256, text_maxlen=64, pool_heads=4)
PN = "0.06M"
MM = 4096


def _autocast(bf16: bool) -> contextlib.AbstractContextManager:
    return torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()


def matmul_rate(dtype: torch.dtype, repeats: int) -> float:
    """GFLOP/s of a ``MM x MM`` matmul in ``dtype`` (best of ``repeats``)."""
    a, b = torch.randn(MM, MM).to(dtype), torch.randn(MM, MM).to(dtype)
    best = min(_timed(lambda: a @ b) for _ in range(repeats))
    return 2 * MM**3 / best / 1e9


def _timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _gflop(fn: Callable[[], object]) -> float:
    counter = FlopCounterMode(display=False)
    with counter:
        fn()
    return counter.get_total_flops() / 1e9


def sampler_workloads(batch: int) -> dict[str, Callable[[], SampleResult]]:
    torch.manual_seed(0)
    model = Infinity(SMALL)
    model.init_weights()
    model.eval()
    schedule = get_schedule(1.0, PN)
    text = TextCondition(torch.randn(20 * batch, SMALL.text_channels), torch.tensor([20] * batch))
    n = schedule.num_scales

    def run(bf16: bool, off: int, cfg: float | tuple[float, ...] = 3.0) -> Callable[[], SampleResult]:
        def go() -> SampleResult:
            with _autocast(bf16):
                return sample(model, text, schedule, SamplerConfig(cfg=cfg, cfg_off_last=off), seed=0)

        return go

    paths = {
        "today (fp32)": run(False, 0),
        "fp32 cfg_off_last=1": run(False, 1),
        "bf16": run(True, 0),
        "bf16 cfg_off_last=1": run(True, 1),
    }
    today, off = paths["today (fp32)"](), paths["fp32 cfg_off_last=1"]()
    explicit = run(False, 0, cfg=(3.0,) * (n - 1) + (1.0,))()
    assert all(torch.equal(a, b) for a, b in zip(today.bits, run(False, 0)().bits, strict=True)), (
        "not deterministic"
    )
    assert all(torch.equal(a, b) for a, b in zip(off.bits, explicit.bits, strict=True)), (
        "cfg_off_last bits differ"
    )
    low = paths["bf16"]()
    agree = float((low.bits[-1] == today.bits[-1]).float().mean())
    print(
        f"  sampler B={batch}: fp32 cfg_off_last=1 bits == cfg 1 at the last scale; bf16 last-scale bit agreement {agree:.3f}"
    )
    assert agree > 0.5, f"bf16 bits agree with fp32 on only {agree:.3f} of the last scale"
    return paths


def vae_workloads() -> dict[str, Callable[[], torch.Tensor]]:
    torch.manual_seed(0)
    vae = BSQVAE(VAEConfig.preset("d32")).eval()
    codes = torch.randint(0, 2, (1, 32, 16, 16)).float() * 2 - 1  # 256x256 pixels at stride 16

    def run(bf16: bool) -> Callable[[], torch.Tensor]:
        def go() -> torch.Tensor:
            with torch.no_grad(), _autocast(bf16):
                return vae.decode(codes).float()

        return go

    paths = {"today (fp32)": run(False), "bf16": run(True)}
    exact, again, low = paths["today (fp32)"](), paths["today (fp32)"](), paths["bf16"]()
    assert torch.equal(exact, again), "fp32 decode is not deterministic"
    err = float((exact - low).abs().max())
    print(f"  VAE d32 256x256: bf16 max |difference| {err:.4f} (pixels in [-1, 1]; {err * 127.5:.1f} of 255)")
    assert err < 0.25, f"bf16 decode differs from fp32 by {err}"
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"CPU threads {torch.get_num_threads()}; checks:")
    workloads: dict[str, dict[str, Callable[[], object]]] = {
        "sampler small B=1": dict(sampler_workloads(1)),
        "sampler small B=4": dict(sampler_workloads(4)),
        "VAE d32 decode 256² B=1": dict(vae_workloads()),
    }
    rate = {"fp32": 0.0, "bf16": 0.0}
    results: dict[str, tuple[dict[str, float], dict[str, float]]] = {}
    for workload, paths in workloads.items():
        with torch.no_grad():
            flops = {name: _gflop(fn) for name, fn in paths.items()}
            times: dict[str, list[float]] = {name: [] for name in paths}
            for _ in range(args.repeats):  # round-robin: machine load hits every path and the floor alike
                for name, fn in paths.items():
                    times[name].append(_timed(fn))
                for key, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
                    rate[key] = max(rate[key], matmul_rate(dtype, 1))
        results[workload] = (flops, {name: min(t) for name, t in times.items()})
    print(
        f"floor (best of the run): {MM}² matmul fp32 {rate['fp32']:.1f} GFLOP/s, bf16 {rate['bf16']:.1f} GFLOP/s"
    )
    print(
        "\n| workload | path | GFLOP | best s | GFLOP/s | of fp32 mm | of bf16 mm | speed-up |\n"
        "|---|---|---:|---:|---:|---:|---:|---:|"
    )
    for workload, (flops, best_times) in results.items():
        base = best_times["today (fp32)"]
        for name in flops:
            best = best_times[name]
            speed = flops[name] / best
            print(
                f"| {workload} | {name} | {flops[name]:.2f} | {best:.3f} | {speed:.1f} | "
                f"{speed / rate['fp32']:.0%} | {speed / rate['bf16']:.0%} | {base / best:.2f}x |"
            )


if __name__ == "__main__":
    main()
