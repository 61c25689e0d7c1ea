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
        f"CPU threads {torch.get_num_threads()}; median of {repeats}; sampler only (no VAE decode)"
    )
    sample(model, text, schedule, SamplerConfig(cfg=3.0))  # warm-up
    results = []
    for name, config in rows:
        times = []
        for i in range(repeats):
            start = time.perf_counter()
            sample(model, text, schedule, config, seed=i)
            times.append(time.perf_counter() - start)
        results.append((name, statistics.median(times)))
    base = results[0][1]
    print("\n| setting | s / image | ratio vs release |\n|---|---:|---:|")
    for name, seconds in results:
        print(f"| {name} | {seconds:.3f} | {seconds / base:.2f}x |")


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
params = sum(p.numel() for p in model.parameters())
peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"seconds": seconds, "params": params, "peak_rss_bytes": peak_kib * 1024,
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
        print(
            "\n| load dtype | load s | peak RSS GiB | peak RSS - import GiB | (peak - import) / bf16 file |"
        )
        print("|---|---:|---:|---:|---:|")
        for dtype in dtypes:
            run = subprocess.run([sys.executable, "-c", _LOAD, str(path), dtype], check=True, capture_output=True,
                                 text=True)  # fmt: skip
            r = json.loads(run.stdout.strip().splitlines()[-1])
            extra = r["peak_rss_bytes"] - base
            print(f"| {r['dtype']} | {r['seconds']:.1f} | {r['peak_rss_bytes'] / 2**30:.2f} | {extra / 2**30:.2f} | "
                  f"{extra / size:.2f} |")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=3)
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
