"""Floor-aware timings: how far each inference workload is from the machine's matmul rate, before vs fast paths.

    uv run --no-sync python benchmarks/floor.py [--repeats 3] [--threads 1] [--only sampler|vae]

Per workload and path: GFLOP (``torch.utils.flop_counter.FlopCounterMode``: matmuls, convolutions, attention),
the best time of ``--repeats`` round-robin runs, GFLOP/s, and that rate as a fraction of a 4096x4096 matmul
in fp32 and in bf16 measured in the same process (the floor a dense workload could reach on this CPU).

Workloads:
* the sampler, cfg 3 at 0.06M (1:1), on a tiny random transformer (depth 4, width 128, 2 heads of 64, text
  width 256: 2.75 GFLOP per image) at batch 1 and a small one (depth 8, width 512) at batch 1 and 4. The first
  row of each is the plain step (``Infinity.forward_scale_reference``: the implementation before the fast
  step), the second the fast step (``Infinity.forward_scale``, what ``sample``
  runs); the rest use the fast step: cfg_off_last=1, bf16 autocast, both. The tiny model (``--breakdown``:
  tiny, small or both) also gets a per-scale breakdown at B=1 (time inside each scale's transformer step, the
  rest of the sampler, the whole call; best of ``4 * --repeats`` rounds, at least 10, for tiny; ``--repeats``
  for small).
* the VAE of the d32 preset (random weights) at 256x256, batch 1: decode (codes -> image) and encode (image ->
  bits, ``encode_to_bits``), in fp32 NCHW (today), fp32 channels_last, bf16 autocast and bf16 channels_last.

``--only allocator`` (run it alone: it needs a fresh process) prints the tiny sampler's minor page faults and
CPU time per call before and after one d32 VAE decode (glibc's trim threshold, see benchmarks/README.md);
``--only compile`` one tiny block's fast step eager vs ``torch.compile`` (time and max |difference|).

Checks before timing: the fast step draws exactly the plain step's bits, fp32 is deterministic, fp32
cfg_off_last=1 draws exactly the bits of guidance 1 at the last scale, bf16 agrees with fp32 on most bits;
VAE: channels_last and bf16 against fp32 NCHW (max |difference|, and for encode the share of equal bits).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import time
from collections.abc import Callable

import torch
from bsq_tokenizer import BSQVAE, VAEConfig, get_schedule
from infinity_model.attention import LayerKV, TextMemory
from infinity_model.condition import TextCondition
from infinity_model.config import InfinityConfig
from infinity_model.rope import rope_cos_sin
from infinity_model.sampler import SamplerConfig, SampleResult, sample
from infinity_model.transformer import Infinity
from torch import Tensor
from torch.utils.flop_counter import FlopCounterMode

TINY = InfinityConfig(depth=4, embed_dim=128, num_heads=2, text_channels=256, text_maxlen=64, pool_heads=2)
SMALL = InfinityConfig(depth=8, embed_dim=512, num_heads=8, text_channels=256, text_maxlen=64, pool_heads=4)
PN = "0.06M"
MM = 4096
PLAIN, FAST = "plain step (fp32)", "fast step (fp32)"


class PlainStep(Infinity):
    """The implementation before the fast step: ``forward_scale_reference`` at every scale."""

    def forward_scale(self, *args, **kwargs) -> Tensor:
        return self.forward_scale_reference(*args, **kwargs)


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


def _models(config: InfinityConfig) -> tuple[Infinity, PlainStep]:
    torch.manual_seed(0)
    fast = Infinity(config)
    fast.init_weights()
    plain = PlainStep(config)
    plain.load_state_dict(fast.state_dict())
    return fast.eval(), plain.eval()


def _same_bits(a: SampleResult, b: SampleResult) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a.bits, b.bits, strict=True)) and torch.equal(
        a.codes, b.codes
    )


def sampler_workloads(
    config: InfinityConfig, batch: int, variants: bool
) -> dict[str, Callable[[], SampleResult]]:
    """Plain and fast step in fp32; with ``variants`` also cfg_off_last=1, bf16 and both (fast step)."""
    fast, plain = _models(config)
    schedule = get_schedule(1.0, PN)
    text = TextCondition(torch.randn(20 * batch, config.text_channels), torch.tensor([20] * batch))
    n = schedule.num_scales

    def run(
        model: Infinity, bf16: bool, off: int, cfg: float | tuple[float, ...] = 3.0
    ) -> Callable[[], SampleResult]:
        def go() -> SampleResult:
            with _autocast(bf16):
                return sample(model, text, schedule, SamplerConfig(cfg=cfg, cfg_off_last=off), seed=0)

        return go

    paths = {PLAIN: run(plain, False, 0), FAST: run(fast, False, 0)}
    before, today = paths[PLAIN](), paths[FAST]()
    assert _same_bits(before, today), "the fast step draws other bits than the plain step"
    assert _same_bits(today, paths[FAST]()), "not deterministic"
    line = f"  sampler depth {config.depth} width {config.embed_dim} B={batch}: fast step bits == plain step bits"
    if variants:
        paths |= {
            "fp32 cfg_off_last=1": run(fast, False, 1),
            "bf16": run(fast, True, 0),
            "bf16 cfg_off_last=1": run(fast, True, 1),
        }
        explicit = run(fast, False, 0, cfg=(3.0,) * (n - 1) + (1.0,))()
        assert _same_bits(paths["fp32 cfg_off_last=1"](), explicit), "cfg_off_last bits differ"
        agree = float((paths["bf16"]().bits[-1] == today.bits[-1]).float().mean())
        line += f"; fp32 cfg_off_last=1 bits == cfg 1 at the last scale; bf16 last-scale bit agreement {agree:.3f}"
        assert agree > 0.5, f"bf16 bits agree with fp32 on only {agree:.3f} of the last scale"
    print(line)
    return paths


def per_scale_breakdown(config: InfinityConfig, repeats: int) -> list[tuple[str, str, float, float]]:
    """(part, path, GFLOP, best s) of each scale's transformer step and of the rest of a B=1 sampler call."""
    fast, plain = _models(config)
    schedule = get_schedule(1.0, PN)
    text = TextCondition(torch.randn(20, config.text_channels), torch.tensor([20]))
    parts = [f"scale {k} ({h}x{w})" for k, (h, w) in enumerate(schedule.scales)]
    parts += ["rest of the sampler", "whole call"]
    best: dict[tuple[str, str], float] = {}
    flops: dict[tuple[str, str], float] = {}

    def measure(model: Infinity, name: str, count: bool) -> None:
        """One sampler call with this instance's ``forward_scale`` timed (or its FLOPs counted) per scale."""
        step = type(model).forward_scale.__get__(model)
        spent = [0.0] * len(parts)

        def timed_step(cond, x, k: int, *args, **kwargs) -> Tensor:
            start = time.perf_counter()
            out = step(cond, x, k, *args, **kwargs)
            spent[k] += time.perf_counter() - start
            return out

        def counted_step(cond, x, k: int, *args, **kwargs) -> Tensor:
            counter = FlopCounterMode(display=False)
            with counter:
                out = step(cond, x, k, *args, **kwargs)
            spent[k] = counter.get_total_flops() / 1e9
            return out

        model.forward_scale = counted_step if count else timed_step  # type: ignore[method-assign]
        try:
            call = lambda: sample(model, text, schedule, SamplerConfig(cfg=3.0), seed=0)  # noqa: E731
            spent[-1] = _gflop(call) if count else _timed(call)  # the whole call
        finally:
            del model.forward_scale  # back to the class's method
        spent[-2] = spent[-1] - sum(spent[:-2])  # outside the transformer steps
        for part, value in zip(parts, spent, strict=True):
            if count:
                flops[(part, name)] = value
            else:
                best[(part, name)] = min(best.get((part, name), float("inf")), value)

    with torch.no_grad():
        for name, model in ((PLAIN, plain), (FAST, fast)):
            measure(model, name, count=True)
        for _ in range(repeats):  # round-robin, best of all rounds per part
            for name, model in ((PLAIN, plain), (FAST, fast)):
                measure(model, name, count=False)
    return [(part, name, flops[(part, name)], best[(part, name)]) for part in parts for name in (PLAIN, FAST)]


def vae_workloads(kind: str) -> dict[str, Callable[[], Tensor]]:
    """d32 VAE at 256x256, batch 1: ``kind`` "decode" (codes -> image) or "encode" (image -> bits)."""
    torch.manual_seed(0)
    vae = BSQVAE(VAEConfig.preset("d32")).eval()
    vae_cl = copy.deepcopy(vae).to(memory_format=torch.channels_last)
    if kind == "decode":
        data = torch.randint(0, 2, (1, 32, 16, 16)).float() * 2 - 1  # 256x256 pixels at stride 16
    else:
        data = torch.rand(1, 3, 256, 256) * 2 - 1
    data_cl = data.contiguous(memory_format=torch.channels_last)
    setups = {  # path: (model, input, bf16)
        "today (fp32)": (vae, data, False),
        "fp32 channels_last": (vae_cl, data_cl, False),
        "bf16": (vae, data, True),
        "bf16 channels_last": (vae_cl, data_cl, True),
    }

    def run(model: BSQVAE, x: Tensor, bf16: bool) -> Callable[[], Tensor]:
        def go() -> Tensor:
            with torch.no_grad(), _autocast(bf16):
                if kind == "decode":
                    return model.decode(x).float()
                return model.encode(x).float()

        return go

    def bits(model: BSQVAE, x: Tensor, bf16: bool) -> Tensor:
        with torch.no_grad(), _autocast(bf16):
            return torch.cat([b.flatten() for b in model.encode_to_bits(x).bits])

    paths = {name: run(*setup) for name, setup in setups.items()}
    exact = paths["today (fp32)"]()
    assert torch.equal(exact, paths["today (fp32)"]()), f"fp32 {kind} is not deterministic"
    exact_bits = bits(*setups["today (fp32)"]) if kind == "encode" else None
    notes = []
    for name in list(paths)[1:]:
        err = float((exact - paths[name]()).abs().max())
        if exact_bits is None:
            notes.append(f"{name} max |difference| {err:.2e} ({err * 127.5:.2f} of 255)")
            assert err < 0.25, f"{name} decode differs from fp32 by {err}"
        else:
            agree = float((bits(*setups[name]) == exact_bits).float().mean())
            notes.append(f"{name} latent max |difference| {err:.2e}, equal bits (all scales) {agree:.4f}")
            assert agree > 0.9, f"{name} encode agrees with fp32 on only {agree:.3f} of the bits"
    print(f"  VAE d32 256x256 {kind}: " + "; ".join(notes))
    if exact_bits is not None:  # time the tokenizer's operation, image -> bits
        paths = {name: (lambda setup=setup: bits(*setup)) for name, setup in setups.items()}
    return paths


def allocator_probe(rounds: int) -> None:
    """In this (fresh) process: minor page faults and CPU time per tiny B=1 sampler call, before and after one
    d32 VAE decode, which frees blocks large enough to raise glibc's trim threshold. Prints one table."""
    import resource

    fast, _ = _models(TINY)
    schedule = get_schedule(1.0, PN)
    text = TextCondition(torch.randn(20, TINY.text_channels), torch.tensor([20]))

    def call() -> None:
        sample(fast, text, schedule, SamplerConfig(cfg=3.0), seed=0)

    def measure() -> tuple[float, float]:
        call()
        faults, cpu = [], []
        for _ in range(rounds):
            before, start = resource.getrusage(resource.RUSAGE_SELF).ru_minflt, time.process_time()
            call()
            cpu.append(time.process_time() - start)
            faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
        return sum(faults) / rounds, min(cpu)

    with torch.no_grad():
        cold = measure()
        vae = BSQVAE(VAEConfig.preset("d32")).eval()
        vae.decode(torch.randint(0, 2, (1, 32, 16, 16)).float() * 2 - 1)
        del vae
        warm = measure()
    print(
        "\n| tiny sampler B=1, fast step | minor page faults per call | best CPU s | CPU vs before |\n"
        "|---|---:|---:|---:|\n"
        f"| fresh process (only sampled so far) | {cold[0]:.0f} | {cold[1]:.4f} | 1.00x |\n"
        f"| after one d32 VAE decode | {warm[0]:.0f} | {warm[1]:.4f} | {warm[1] / cold[1]:.2f}x |"
    )


def compile_probe(rounds: int) -> None:
    """One block of the tiny model at its last scale (16x16, cfg batch 2): the fast step eager vs
    ``torch.compile`` (Inductor), CPU time and max |difference|. Prints one table."""
    fast, _ = _models(TINY)
    block = fast.block_list[0]
    g = torch.Generator().manual_seed(0)
    ada = torch.randn(2, 1, 6, TINY.embed_dim, generator=g) * 0.1
    x = torch.randn(2, 256, TINY.embed_dim, generator=g)
    memory = TextMemory(
        rows=torch.randn(40, TINY.embed_dim, generator=g),
        lengths=torch.tensor([20, 20]),
        cu_seqlens=torch.tensor([0, 20, 40], dtype=torch.int32),
        max_len=20,
    )
    cos, sin = rope_cos_sin([(16, 16)], (16, 16), TINY.head_dim)

    def run(step: Callable[..., Tensor]) -> Tensor:
        layer = LayerKV()
        layer.constants = block.step_constants(ada)
        return step(x, memory, cos, sin, layer)

    with torch.no_grad():
        eager = run(block.step)
        start = time.perf_counter()
        compiled = torch.compile(block.step, dynamic=False)
        out = run(compiled)
        compile_s = time.perf_counter() - start
        best = {}
        for name, step in (("eager", block.step), ("torch.compile", compiled)):
            run(step)
            cpu = []
            for _ in range(rounds):
                begin = time.process_time()
                run(step)
                cpu.append(time.process_time() - begin)
            best[name] = min(cpu)
    err = float((eager - out).abs().max())
    print(
        "\n| tiny model, one block at 16x16, B=2 | best CPU ms | speed-up | max abs difference | same bits |\n"
        "|---|---:|---:|---:|---|\n"
        f"| fast step, eager | {best['eager'] * 1e3:.2f} | 1.00x | 0 | yes |\n"
        f"| fast step, torch.compile (compiled in {compile_s:.0f} s) | {best['torch.compile'] * 1e3:.2f} | "
        f"{best['eager'] / best['torch.compile']:.2f}x | {err:.1e} | {'yes' if err == 0 else 'no'} |"
    )


def _print_table(
    results: dict[str, tuple[dict[str, float], dict[str, float]]], rate: dict[str, float], digits: int = 2
) -> None:
    print(
        "\n| workload | path | GFLOP | best s | GFLOP/s | of fp32 mm | of bf16 mm | speed-up |\n"
        "|---|---|---:|---:|---:|---:|---:|---:|"
    )
    for workload, (flops, best_times) in results.items():
        base = next(iter(best_times.values()))
        for name in flops:
            best = best_times[name]
            speed = flops[name] / best
            print(
                f"| {workload} | {name} | {flops[name]:.{digits}f} | {best:.{digits + 1}f} | {speed:.1f} | "
                f"{speed / rate['fp32']:.0%} | {speed / rate['bf16']:.0%} | {base / best:.2f}x |"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--only",
        choices=("sampler", "vae", "allocator", "compile"),
        default=None,
        help="one family of workloads",
    )
    parser.add_argument(
        "--breakdown",
        choices=("tiny", "small", "both"),
        default="tiny",
        help="which sampler config gets the per-scale table (B=1)",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.only == "allocator":
        allocator_probe(max(4 * args.repeats, 10))
        return
    if args.only == "compile":
        compile_probe(max(4 * args.repeats, 10))
        return
    print(f"CPU threads {torch.get_num_threads()}; checks:")
    workloads: dict[str, dict[str, Callable[[], object]]] = {}
    if args.only in (None, "sampler"):
        workloads["sampler tiny B=1"] = dict(sampler_workloads(TINY, 1, variants=False))
        workloads["sampler small B=1"] = dict(sampler_workloads(SMALL, 1, variants=True))
        workloads["sampler small B=4"] = dict(sampler_workloads(SMALL, 4, variants=True))
    if args.only in (None, "vae"):
        workloads["VAE d32 decode 256² B=1"] = dict(vae_workloads("decode"))
        workloads["VAE d32 encode 256² B=1"] = dict(vae_workloads("encode"))
    # the per-scale tables first, while nothing else has run (the tiny model's 0.05 s calls: many rounds)
    configs = {"tiny": TINY, "small": SMALL}
    chosen = list(configs) if args.breakdown == "both" else [args.breakdown]
    breakdowns = {
        name: per_scale_breakdown(
            configs[name], max(4 * args.repeats, 10) if name == "tiny" else args.repeats
        )
        for name in (chosen if args.only in (None, "sampler") else [])
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
    _print_table(results, rate)
    for config_name, breakdown in breakdowns.items():
        print(f"\nsampler {config_name} B=1, where the time goes (best of the rounds, per part):")
        parts: dict[str, tuple[dict[str, float], dict[str, float]]] = {}
        for part, name, gflop, best in breakdown:
            entry = parts.setdefault(f"{config_name} B=1 {part}", ({}, {}))
            entry[0][name], entry[1][name] = gflop, best
        _print_table(parts, rate, digits=3)


if __name__ == "__main__":
    main()
