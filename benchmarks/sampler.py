"""Sampler speed (KV cache vs prefix recompute, cfg=1 vs cfg=3) and peak memory of loading a 2B checkpoint.

    uv run --no-sync python benchmarks/sampler.py                 # sampler table (small random model, CPU)
    uv run --no-sync python benchmarks/sampler.py --load-2b       # + write a random 2B .pth (bf16, ~4.4 GB)
                                                                  #   and measure the peak RSS of loading it

Ratios are against the first row (the released setting: KV cache, cfg = 3), measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from bsq_tokenizer import get_schedule
from infinity_model.condition import TextCondition
from infinity_model.config import InfinityConfig
from infinity_model.sampler import SamplerConfig, sample
from infinity_model.transformer import Infinity

SMALL = InfinityConfig(depth=8, embed_dim=512, num_heads=8, text_channels=256, text_maxlen=64, pool_heads=4)


def bench_sampler(repeats: int, pn: str) -> None:
    torch.manual_seed(0)
    model = Infinity(SMALL)
    model.init_weights()
    model.eval()
    schedule = get_schedule(1.0, pn)
    text = TextCondition(torch.randn(20, SMALL.text_channels), torch.tensor([20]))
    rows = [
        ("KV cache, cfg=3 (release)", SamplerConfig(cfg=3.0)),
        ("KV cache, cfg=1 (no uncond branch)", SamplerConfig(cfg=1.0)),
        ("no cache (prefix recompute), cfg=3", SamplerConfig(cfg=3.0, use_cache=False)),
        ("no cache (prefix recompute), cfg=1", SamplerConfig(cfg=1.0, use_cache=False)),
    ]
    print(
        f"model: depth {SMALL.depth}, width {SMALL.embed_dim}, {sum(p.numel() for p in model.parameters()) / 1e6:.1f}M "
        f"params, random weights; schedule 1.0 @ {pn}: {schedule.num_scales} scales, {schedule.seq_len} tokens; "
        f"CPU threads {torch.get_num_threads()}; {repeats} round-robin repeats; sampler only (no VAE decode)"
    )
    sample(model, text, schedule, SamplerConfig(cfg=3.0))  # warm-up
    times: dict[str, list[float]] = {name: [] for name, _ in rows}
    for i in range(repeats):  # round-robin, so that a change in machine load hits every setting alike
        for name, config in rows:
            start = time.perf_counter()
            sample(model, text, schedule, config, seed=i)
            times[name].append(time.perf_counter() - start)
    base = min(times[rows[0][0]])
    print("\n| setting | min s / image | median s / image | ratio vs release (min) |\n|---|---:|---:|---:|")
    for name, _ in rows:
        best = min(times[name])
        print(f"| {name} | {best:.3f} | {statistics.median(times[name]):.3f} | {best / base:.2f}x |")


_WRITE = """
import sys, torch
from infinity_model.config import InfinityConfig
from infinity_model.transformer import Infinity
with torch.device("meta"):
    model = Infinity(InfinityConfig.preset("2b"))
state = {}
g = torch.Generator().manual_seed(0)
for k, v in model.state_dict().items():
    t = torch.empty(v.shape, dtype=torch.bfloat16)
    t.normal_(0, 0.02, generator=g) if not k.endswith("zero_k_bias") else t.zero_()
    state[k] = t
torch.save(state, sys.argv[1])
"""

_LOAD = """
import json, resource, sys, time, torch
from infinity_model.checkpoint import load_official_infinity
from infinity_model.config import InfinityConfig
dtype = getattr(torch, sys.argv[2])
start = time.perf_counter()
model = load_official_infinity(sys.argv[1], InfinityConfig.preset("2b"), dtype=dtype)
seconds = time.perf_counter() - start
peak_load = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
# memory-mapped weights are only read when used: touch every parameter once so they count as resident
params = 0
with torch.no_grad():
    for p in model.parameters():
        params += p.numel()
        p.float().sum()
peak_touched = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({"seconds": seconds, "params": params, "peak_load": peak_load, "peak_touched": peak_touched,
                  "dtype": str(next(model.parameters()).dtype)}))
"""

_BASELINE = """
import json, resource, torch, infinity_model.checkpoint
print(json.dumps({"peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}))
"""


def bench_load_2b(dtypes: list[str]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "infinity_2b_random_bf16.pth"
        print(f"\nwriting a random 2B checkpoint (official flat layout, bf16) to {path} ...", flush=True)
        subprocess.run([sys.executable, "-c", _WRITE, str(path)], check=True)
        size = path.stat().st_size
        base = json.loads(subprocess.run([sys.executable, "-c", _BASELINE], check=True, capture_output=True,
                                         text=True).stdout)["peak_rss_bytes"]  # fmt: skip
        print(
            f"checkpoint: {size / 2**30:.2f} GiB on disk; python + torch + infinity_model import: {base / 2**30:.2f} GiB"
        )
        print("\n| load dtype | load s | peak RSS after load GiB | peak RSS after touching every weight GiB "
              "| (peak - import) / bf16 file size |")  # fmt: skip
        print("|---|---:|---:|---:|---:|")
        for dtype in dtypes:
            run = subprocess.run([sys.executable, "-c", _LOAD, str(path), dtype], check=True, capture_output=True,
                                 text=True)  # fmt: skip
            r = json.loads(run.stdout.strip().splitlines()[-1])
            ratio = (r["peak_touched"] - base) / size
            print(f"| {r['dtype']} | {r['seconds']:.1f} | {r['peak_load'] / 2**30:.2f} | "
                  f"{r['peak_touched'] / 2**30:.2f} | {ratio:.2f} |")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--pn", default="0.06M")
    parser.add_argument(
        "--load-2b", action="store_true", help="also write and load a random 2B checkpoint (heavy)"
    )
    parser.add_argument("--load-dtypes", default="bfloat16,float32", help="dtypes to load the 2B into")
    args = parser.parse_args()
    bench_sampler(args.repeats, args.pn)
    if args.load_2b:
        bench_load_2b(args.load_dtypes.split(","))


if __name__ == "__main__":
    main()
