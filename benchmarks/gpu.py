"""GPU timings of the 2B transformer at 1024² in bf16: eager vs torch.compile vs CUDA graphs, SDPA vs flash-attn.

    uv run --no-sync python benchmarks/gpu.py [--repeats 5] [--batch-size 1] [--kinds eager,compile,graphs]
    uv run --no-sync python benchmarks/gpu.py --device cpu --tiny     # smoke run of the code paths, no GPU

The workload is the sampler of the released 2B architecture (``InfinityConfig.preset("2b")``, random weights,
which cost the FLOPs of trained ones) on the 1:1 template at pn 1M (13 scales, 10521 tokens, 1024x1024 pixels),
cfg 3 with the released sampling settings, one random 32-row prompt per image, the transformer under bf16
autocast as the pipeline runs it on CUDA (fp32 head, AdaLN and embeddings). The block Linears are cast to bf16
once beforehand: autocast would cast them to the same bf16 values at every call (the result is identical, which
``check`` verifies), and a CUDA graph cannot reuse autocast's weight cache. The VAE decode is not timed.

Paths (``--kinds``, each with SDPA cross-attention and, when ``flash_attn`` is installed, with flash-attn's
varlen kernel; self-attention is always ``F.scaled_dot_product_attention``):

* ``eager``: ``infinity_model.sample`` as the pipeline calls it.
* ``compile``: every block wrapped in ``torch.compile`` (one compiled block serves all 32; shapes change per
  scale, so it compiles a few times on the first call, reported as "first call s", never in "best s").
* ``graphs``: one ``torch.cuda.CUDAGraph`` per scale, captured on the first call (each scale has its own shapes)
  and replayed in capture order from then on; the sampling between scales stays eager. Why it is safe with the
  KV cache: the cache grows by ``torch.cat`` into new tensors, so each scale's graph reads the keys/values the
  previous scale's graph wrote, at addresses fixed in the shared graph memory pool; every call replays scales
  0, 1, ... in order (the pool's rule), the text conditioning is copied into the captured tensors before
  scale 0, and prompts must keep the captured lengths (checked). The per-scale RoPE tables are built once per
  model and device by ``Infinity.forward_scale`` and kept on the model; the warm-up run before each capture
  builds them, so no host-to-device copy is captured. ``cfg_off_last`` (the cache drops rows mid-call) and
  hidden-state guidance are refused by the graphed path.
* ``compile+graphs``: the compiled blocks captured into the per-scale graphs.

Before timing, ``check`` runs every path at the same seed: a path that runs exactly the kernels of another
(graphs of eager, compile+graphs of compile, eager run twice) must draw the same bits at every scale; every path
is then forced onto the reference's bits (``prefix_bits``) so that all compute logits from the same inputs, and
its guided logits must match the eager SDPA path's: exactly for the twins, within ``LOGIT_RTOL`` (mean |Δ| over
mean |logit|) for paths with other bf16 kernels (flash-attn, inductor's fused kernels), whose drawn images can
differ wherever a bit's two logits are nearly equal.

Columns as in ``floor.py``: GFLOP (``torch.utils.flop_counter.FlopCounterMode`` on the eager SDPA path; every
path does the same work), best time of ``--repeats`` round-robin rounds, GFLOP/s, and that rate as a fraction of
a bf16 ``MM x MM`` matmul (8192² on CUDA, CUDA events) measured in each round of the same process.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, cast

import torch
from bsq_tokenizer import ScaleSchedule, get_schedule
from infinity_model.condition import TextCondition
from infinity_model.config import InfinityConfig
from infinity_model.sampler import SamplerConfig, SampleResult, ScaleStep, sample
from infinity_model.transformer import AttnBackend, Conditioning, Infinity, KVCache
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode

KINDS = ("eager", "compile", "graphs", "compile+graphs")
TINY = InfinityConfig(depth=2, embed_dim=64, num_heads=2, text_channels=32, text_maxlen=32, pool_heads=2)
TINY_PN = "0.016M"  # 5 scales, 121 tokens
TEXT_ROWS = 32  # rows of the random prompt (a T5 prompt of about 30 tokens)
LOGIT_RTOL = 0.02  # other bf16 kernels: mean |Δ logit| <= 2% of mean |logit| on the same inputs
MM_CUDA, MM_CPU = 8192, 1024

Runner = Callable[[int, Sequence[Tensor] | None, Callable[[ScaleStep], None] | None], SampleResult]


@dataclass
class Workload:
    """The model, one batch of random prompts, the schedule and the sampling settings every path runs."""

    model: Infinity
    text: TextCondition
    schedule: ScaleSchedule
    sampler: SamplerConfig
    device: torch.device
    amp_dtype: torch.dtype = torch.bfloat16


@dataclass(frozen=True)
class PathSpec:
    """One timed path: how the per-scale steps run (``kind``) and the cross-attention kernel (``backend``)."""

    kind: str
    backend: str  # "sdpa" or "flash-attn"

    @property
    def name(self) -> str:
        return f"{self.kind} {self.backend}"

    @property
    def twin(self) -> str | None:
        """The path whose kernels this one replays exactly (its bits must be identical), if any."""
        if self.kind == "graphs":
            return f"eager {self.backend}"
        if self.kind == "compile+graphs":
            return f"compile {self.backend}"
        return None


@dataclass
class CheckRow:
    """What ``check`` measured for one path against the reference (eager SDPA) and its exact twin."""

    name: str
    twin: str | None
    bits_equal_ref: float  # share of all drawn bits equal to the reference's at the same seed
    twin_identical: bool | None  # bits and forced logits identical to the twin's (None: no twin)
    logit_max_abs: float  # forced onto the reference's bits: max |Δ logit| against the reference
    logit_rel: float  # mean |Δ logit| / mean |reference logit|
    first_call_s: float  # the first call (compilation, graph capture)
    problems: list[str] = field(default_factory=list)


# ------------------------------------------------------------------------------------------- workload
def build_workload(
    tiny: bool, device: torch.device, batch: int, pn: str, ratio: float, scales: int | None = None
) -> Workload:
    """Random-weight 2B (or the tiny config) on ``device`` with its block Linears cast to bf16 (see the module doc);
    ``scales`` keeps only the schedule's first scales (quick runs)."""
    config = TINY if tiny else InfinityConfig.preset("2b")
    torch.manual_seed(0)
    with torch.device(device):
        model = Infinity(config)
        model.init_weights()
    model.eval().requires_grad_(False)
    precast_block_linears(model, torch.bfloat16)
    text = TextCondition(
        torch.randn(TEXT_ROWS * batch, config.text_channels, device=device), torch.tensor([TEXT_ROWS] * batch)
    )
    schedule = get_schedule(ratio, TINY_PN if tiny else pn)
    if scales is not None:
        if not 1 <= scales <= schedule.num_scales:
            raise ValueError(
                f"--scales {scales}: the schedule {schedule.pn} has 1 to {schedule.num_scales} scales"
            )
        schedule = replace(schedule, scales=schedule.scales[:scales])
    return Workload(model, text, schedule, SamplerConfig(), device)


def precast_block_linears(model: Infinity, dtype: torch.dtype) -> None:
    """Cast the weights and biases of every ``nn.Linear`` inside the blocks to ``dtype`` (in place).

    Under autocast to ``dtype`` these layers compute with exactly these values anyway (autocast rounds the fp32
    weights the same way at each call); the head, AdaLN and embeddings, which run with autocast disabled,
    keep fp32.
    """
    for block in model.block_list:
        for module in block.modules():
            if isinstance(module, nn.Linear):
                module.to(dtype)


def _block_slots(model: Infinity) -> list[tuple[nn.ModuleList, int]]:
    """(module list, index) of every block, in order, whatever the chunking."""
    if model.config.block_chunks > 1:
        holders = [cast(nn.ModuleList, chunk.module) for chunk in model.block_chunks]
    else:
        holders = [model.blocks]
    return [(holder, j) for holder in holders for j in range(len(holder))]


@contextlib.contextmanager
def swapped_blocks(model: Infinity, replacements: Sequence[nn.Module] | None) -> Iterator[None]:
    """Run with the blocks replaced by ``replacements`` (e.g. their ``torch.compile`` wrappers); restored on exit."""
    if replacements is None:
        yield
        return
    slots = _block_slots(model)
    originals = [holder[i] for holder, i in slots]
    for (holder, i), new in zip(slots, replacements, strict=True):
        holder[i] = new
    try:
        yield
    finally:
        for (holder, i), old in zip(slots, originals, strict=True):
            holder[i] = old


class _CompiledStep(nn.Module):
    """A block whose fast step runs through ``torch.compile`` (sharing its parameters; compiled on first use).

    ``Infinity.forward_scale`` calls ``block.step_constants`` and ``block.step``, not ``forward``, so compiling
    the module (which compiles ``forward`` only) would leave the sampler's step eager."""

    def __init__(self, block: nn.Module) -> None:
        super().__init__()
        self.block = block
        self.step = torch.compile(block.step)
        self.step_constants = block.step_constants

    def forward(self, *args: object, **kwargs: object) -> torch.Tensor:
        return self.block(*args, **kwargs)


def compiled_blocks(model: Infinity, num_scales: int) -> list[nn.Module]:
    """``torch.compile`` wrappers of the blocks' fast step (:class:`_CompiledStep`); compiled on first use."""
    limit = 4 * num_scales + 8  # each scale's shapes, cache state and backend may add a compiled entry
    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, limit)
    torch._dynamo.config.accumulated_recompile_limit = max(
        torch._dynamo.config.accumulated_recompile_limit, 64 * limit
    )
    return [_CompiledStep(block) for block in model.block_list]


# ---------------------------------------------------------------------------------------- CUDA graphs
class _CacheHandle:
    """What the sampler holds as its cache when the scales are graphed: the real cache lives in GraphedScales."""

    def narrow(self, rows: int) -> Conditioning:
        raise NotImplementedError(
            "the CUDA-graph path captured every scale with both guidance halves; run it with cfg_off_last=0"
        )


class GraphedScales:
    """The model for ``sample``, with ``forward_scale`` replayed from one CUDA graph per scale (see the module doc).

    Attribute access falls through to the wrapped model. Captures on the first sampler call, in scale order,
    into one memory pool; later calls copy the new text conditioning and scale inputs into the captured
    tensors and replay.
    """

    def __init__(self, model: Infinity, schedule: ScaleSchedule, amp_dtype: torch.dtype) -> None:
        if model.device.type != "cuda":
            raise RuntimeError(f"CUDA graphs need a CUDA model, this one is on {model.device}")
        self._model = model
        self._schedule = schedule
        self._amp_dtype = amp_dtype
        self._pool = torch.cuda.graph_pool_handle()
        self._graphs: list[torch.cuda.CUDAGraph] = []
        self._inputs: list[Tensor | None] = []
        self._outputs: list[Tensor] = []
        self._cond: Conditioning | None = None
        self._cache: KVCache | None = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._model, name)

    def prepare(self, text: TextCondition) -> Conditioning:
        fresh = self._model.prepare(text)
        if self._cond is None:
            self._cond = fresh
            return fresh
        if not torch.equal(fresh.memory.lengths, self._cond.memory.lengths):
            raise ValueError(
                f"the graphs were captured for prompt lengths {self._cond.memory.lengths.tolist()}, got "
                f"{fresh.memory.lengths.tolist()}; build a new GraphedScales for other lengths"
            )
        self._cond.cond_BD.copy_(fresh.cond_BD)
        self._cond.ada.copy_(fresh.ada)
        self._cond.memory.rows.copy_(fresh.memory.rows)
        return self._cond

    def new_cache(self) -> _CacheHandle:
        return _CacheHandle()

    def forward_scale(
        self,
        cond: Conditioning,
        x: Tensor | None,
        k: int,
        schedule: ScaleSchedule,
        cache: Any,
        after_block: Callable[[int, Tensor], Tensor] | None = None,
    ) -> Tensor:
        if after_block is not None:
            raise ValueError(
                "the CUDA-graph path does not support hidden-state guidance (cfg_insertion_layer < 0)"
            )
        if cond is not self._cond or schedule != self._schedule:
            raise ValueError(
                "GraphedScales.forward_scale: use the conditioning of prepare() and the captured schedule"
            )
        if k == len(self._graphs):  # not captured yet: scales are captured in order on the first call
            self._capture(cond, x, k)
        else:
            static = self._inputs[k]
            if static is not None and x is not None:
                static.copy_(x)
            self._graphs[k].replay()
        return self._outputs[k].clone()

    def _capture(self, cond: Conditioning, x: Tensor | None, k: int) -> None:
        model = self._model
        if k == 0:
            self._cache = model.new_cache()
        assert self._cache is not None
        static = None if x is None else x.clone()

        def autocast() -> torch.autocast:  # no weight-cast cache: a graph must not keep tensors of one call
            return torch.autocast("cuda", dtype=self._amp_dtype, cache_enabled=False)

        # warm-up on a scratch copy of the cache (compiles, initialises kernels) on a side stream, then capture
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side), autocast():
            model.forward_scale(cond, static, k, self._schedule, _scratch_copy(self._cache))
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self._pool), autocast():
            out = model.forward_scale(cond, static, k, self._schedule, self._cache)
        graph.replay()  # capture records without running: this fills the outputs and the cache
        self._graphs.append(graph)
        self._inputs.append(static)
        self._outputs.append(out)


def _scratch_copy(cache: KVCache) -> KVCache:
    """A cache holding the same tensors, every field included (appending and narrowing rebind them, never
    write in place, so the original is left as it is)."""
    scratch = copy.copy(cache)
    scratch.layers = [copy.copy(layer) for layer in cache.layers]
    return scratch


# --------------------------------------------------------------------------------------------- paths
def flash_attn_available() -> bool:
    try:
        import flash_attn  # noqa: F401
    except ImportError:
        return False
    return True


def path_specs(kinds: Sequence[str], device: torch.device) -> list[PathSpec]:
    """The paths to run: eager SDPA first (the reference), then the requested kinds per available backend."""
    backends = ["sdpa"] + (["flash-attn"] if device.type == "cuda" and flash_attn_available() else [])
    specs = [PathSpec(kind, backend) for backend in backends for kind in KINDS if kind in kinds]
    for spec in list(specs):  # a twin must run too
        if spec.twin is not None and spec.twin not in [s.name for s in specs]:
            kind, backend = spec.twin.split(" ")
            specs.append(PathSpec(kind, backend))
    if PathSpec("eager", "sdpa") not in specs:
        specs.append(PathSpec("eager", "sdpa"))
    order = {kind: i for i, kind in enumerate(KINDS)}
    return sorted(set(specs), key=lambda s: (s.backend != "sdpa", s.backend, order[s.kind]))


def make_runner(w: Workload, spec: PathSpec, compiled: list[nn.Module] | None) -> Runner:
    """A function (seed, prefix_bits, callback) -> SampleResult running ``spec`` on the workload."""
    if spec.kind not in KINDS:
        raise ValueError(f"unknown path kind {spec.kind!r}; choose from {KINDS}")
    backend: AttnBackend = "auto" if spec.backend == "flash-attn" else "sdpa"
    blocks = compiled if "compile" in spec.kind else None
    target: Any = GraphedScales(w.model, w.schedule, w.amp_dtype) if "graphs" in spec.kind else w.model

    def run(
        seed: int,
        prefix_bits: Sequence[Tensor] | None = None,
        callback: Callable[[ScaleStep], None] | None = None,
    ) -> SampleResult:
        w.model.attn_backend = backend
        with swapped_blocks(w.model, blocks), torch.autocast(w.device.type, dtype=w.amp_dtype):
            return sample(
                target, w.text, w.schedule, w.sampler, seed=seed, callback=callback, prefix_bits=prefix_bits
            )

    return run


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _forced_logits(run: Runner, bits: Sequence[Tensor], seed: int) -> list[Tensor]:
    out: list[Tensor] = []
    run(seed, bits, lambda step: out.append(step.logits.float().clone()))
    return out


def check(w: Workload, runners: dict[str, Runner], specs: Sequence[PathSpec], seed: int) -> list[CheckRow]:
    """Run every path once at ``seed`` and compare (see the module doc); problems are listed per row."""
    results: dict[str, SampleResult] = {}
    first: dict[str, float] = {}
    for spec in specs:
        _sync(w.device)
        start = time.perf_counter()
        results[spec.name] = runners[spec.name](seed, None, None)
        _sync(w.device)
        first[spec.name] = time.perf_counter() - start
    reference = results["eager sdpa"]
    again = runners["eager sdpa"](seed, None, None)
    forced = {spec.name: _forced_logits(runners[spec.name], reference.bits, seed) for spec in specs}
    ref_logits = torch.cat([t.flatten() for t in forced["eager sdpa"]])
    rows = []
    for spec in specs:
        result, problems = results[spec.name], []
        same_bits = [a == b for a, b in zip(result.bits, reference.bits, strict=True)]
        bits_equal = float(sum(int(s.sum()) for s in same_bits) / sum(s.numel() for s in same_bits))
        logits = torch.cat([t.flatten() for t in forced[spec.name]])
        diff = (logits - ref_logits).abs()
        rel = float(diff.mean() / ref_logits.abs().mean().clamp_min(1e-30))
        twin_identical = None
        if spec.name == "eager sdpa":
            twin_identical = _identical(again, reference)
            if not twin_identical:
                problems.append("the eager path is not deterministic (two runs at one seed differ)")
        elif spec.twin is not None:
            twin = results[spec.twin]
            twin_identical = _identical(result, twin) and all(
                torch.equal(a, b) for a, b in zip(forced[spec.name], forced[spec.twin], strict=True)
            )
            if not twin_identical:
                problems.append(f"differs from {spec.twin}, whose kernels it replays (bits or forced logits)")
        if rel > LOGIT_RTOL:
            problems.append(
                f"logits on the reference's inputs differ by {rel:.2%} of their mean magnitude (> {LOGIT_RTOL:.0%})"
            )
        rows.append(
            CheckRow(
                spec.name,
                spec.twin,
                bits_equal,
                twin_identical,
                float(diff.max()),
                rel,
                first[spec.name],
                problems,
            )
        )
    return rows


def _identical(a: SampleResult, b: SampleResult) -> bool:
    return torch.equal(a.codes, b.codes) and all(
        torch.equal(x, y) for x, y in zip(a.bits, b.bits, strict=True)
    )


def print_check(rows: Sequence[CheckRow]) -> None:
    print("\ncheck (same seed; logits with every path forced onto the eager SDPA bits):")
    print(
        "| path | exact twin | identical to twin | bits = eager sdpa | max \\|Δ logit\\| | mean \\|Δ\\| / mean \\|logit\\| "
        "| first call s |"
    )
    print("|---|---|---|---:|---:|---:|---:|")
    for r in rows:
        twin = "-" if r.twin is None else r.twin
        same = "-" if r.twin_identical is None else ("yes" if r.twin_identical else "NO")
        print(
            f"| {r.name} | {twin} | {same} | {r.bits_equal_ref:.4f} | {r.logit_max_abs:.2e} | {r.logit_rel:.2e} | "
            f"{r.first_call_s:.1f} |"
        )
        for problem in r.problems:
            print(f"  PROBLEM {r.name}: {problem}")


# -------------------------------------------------------------------------------------------- timing
def matmul_rate(device: torch.device, size: int, repeats: int = 3) -> float:
    """Best GFLOP/s of a bf16 ``size x size`` matmul (CUDA events on a GPU)."""
    a = torch.randn(size, size, device=device, dtype=torch.bfloat16)
    b = torch.randn(size, size, device=device, dtype=torch.bfloat16)
    a @ b  # warm-up (cuBLAS handle, kernel selection)
    best = float("inf")
    for _ in range(repeats):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            a @ b
            end.record()
            end.synchronize()
            best = min(best, start.elapsed_time(end) / 1e3)
        else:
            t0 = time.perf_counter()
            a @ b
            best = min(best, time.perf_counter() - t0)
    return 2 * size**3 / best / 1e9


def gflop(run: Runner, seed: int) -> float:
    counter = FlopCounterMode(display=False)
    with counter:
        run(seed, None, None)
    return counter.get_total_flops() / 1e9


def time_paths(
    w: Workload, runners: dict[str, Runner], repeats: int, seed: int, mm: int
) -> tuple[dict[str, float], float]:
    """Best seconds per path over ``repeats`` round-robin rounds, and the best bf16 matmul rate of the rounds."""
    times: dict[str, list[float]] = {name: [] for name in runners}
    rate = 0.0
    for _ in range(repeats):
        for name, run in runners.items():
            _sync(w.device)
            start = time.perf_counter()
            run(seed, None, None)
            _sync(w.device)
            times[name].append(time.perf_counter() - start)
        rate = max(rate, matmul_rate(w.device, mm))
    return {name: min(t) for name, t in times.items()}, rate


def print_table(flops: float, best: dict[str, float], rate: float, mm: int) -> None:
    print(
        f"\nfloor: bf16 {mm}² matmul {rate:.1f} GFLOP/s (best of the run); GFLOP of the eager SDPA path for every row"
    )
    print("| path | GFLOP | best s | GFLOP/s | of bf16 mm | speed-up |")
    print("|---|---:|---:|---:|---:|---:|")
    base = best["eager sdpa"]
    for name, seconds in best.items():
        speed = flops / seconds
        print(
            f"| {name} | {flops:.1f} | {seconds:.3f} | {speed:.1f} | {speed / rate:.0%} | {base / seconds:.2f}x |"
        )


def run_benchmark(
    device: torch.device,
    tiny: bool,
    kinds: Sequence[str],
    repeats: int,
    batch: int,
    seed: int,
    pn: str,
    ratio: float,
    keep_going: bool,
    scales: int | None = None,
) -> tuple[list[CheckRow], dict[str, float]]:
    """Build, check, time and print; returns the check rows and best times (for the smoke test)."""
    if device.type != "cuda":
        kinds = [k for k in kinds if "graphs" not in k]  # CUDA graphs need CUDA
    w = build_workload(tiny, device, batch, pn, ratio, scales)
    specs = path_specs(kinds, device)
    compiled = (
        compiled_blocks(w.model, w.schedule.num_scales) if any("compile" in s.kind for s in specs) else None
    )
    runners = {spec.name: make_runner(w, spec, compiled) for spec in specs}
    n_params = sum(p.numel() for p in w.model.parameters()) / 1e6
    (h, w_), (ph, pw) = w.schedule.scales[-1], w.schedule.pixel_hw
    print(
        f"{'tiny config' if tiny else '2B'} ({n_params:.1f}M parameters), pn {w.schedule.pn}: {w.schedule.num_scales} "
        f"scales up to {h}x{w_} ({ph}x{pw} pixels), {w.schedule.seq_len} tokens; batch {batch} (x2 rows for cfg "
        f"{w.sampler.cfg}); bf16 autocast on {device}"
        + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else "")
        + f"; torch {torch.__version__}, flash-attn {'yes' if flash_attn_available() else 'not installed'}"
    )
    rows = check(w, runners, specs, seed)
    print_check(rows)
    if any(r.problems for r in rows) and not keep_going:
        raise SystemExit("check failed (see PROBLEM lines); --keep-going times the paths anyway")
    flops = gflop(runners["eager sdpa"], seed)
    mm = MM_CUDA if device.type == "cuda" else MM_CPU
    best, rate = time_paths(w, runners, repeats, seed, mm)
    print_table(flops, best, rate, mm)
    return rows, best


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", help="cuda (default) or cpu (only with --tiny)")
    parser.add_argument(
        "--tiny", action="store_true", help="tiny config at 0.016M: a smoke run of the code paths"
    )
    parser.add_argument(
        "--kinds", default=",".join(KINDS), help=f"comma-separated subset of {','.join(KINDS)}"
    )
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--batch-size", type=int, default=1, help="prompts per sampler call (x2 rows with cfg)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--pn", default="1M", help="pixel budget of the 2B run (the tiny run uses 0.016M)")
    parser.add_argument("--ratio", type=float, default=1.0, help="height / width of the template")
    parser.add_argument("--scales", type=int, default=None, help="run only the first N scales (quick runs)")
    parser.add_argument("--keep-going", action="store_true", help="time the paths even if the check fails")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(
            "benchmarks/gpu.py: no CUDA device here. It times the 2B architecture on a GPU; for a smoke run of its "
            "code paths on this machine use `--device cpu --tiny`."
        )
    if device.type != "cuda" and not args.tiny:
        raise SystemExit(f"benchmarks/gpu.py: the 2B at {args.pn} is a GPU workload; on {device} pass --tiny")
    kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]
    unknown = sorted(set(kinds) - set(KINDS))
    if unknown:
        raise SystemExit(f"benchmarks/gpu.py: unknown --kinds {unknown}; choose from {','.join(KINDS)}")
    run_benchmark(
        device,
        args.tiny,
        kinds,
        args.repeats,
        args.batch_size,
        args.seed,
        args.pn,
        args.ratio,
        args.keep_going,
        args.scales,
    )


if __name__ == "__main__":
    main(sys.argv[1:])
