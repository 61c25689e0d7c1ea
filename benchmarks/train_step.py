"""Training-step throughput and peak memory of infinity-train: ZeRO-2 vs ZeRO-3, 1 vs 2 processes.

    uv run --no-sync python benchmarks/train_step.py [--steps 6] [--depth 4] [--width 128]

Each case runs in its own ``torchrun`` job (gloo on CPU, nccl on CUDA) on a small transformer with a random
tiny BSQ-VAE and synthetic images / precomputed text features, so only the training step is measured
(BSC + forward + backward + optimizer step through DeepSpeed). Prints tokens/s (all ranks) and peak memory
(CPU: growth of the peak RSS of the largest rank over its RSS after imports; CUDA: max allocated), with ratios against ZeRO-2 on 1 process.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SCALES = [[1, 1], [2, 2], [4, 4], [6, 6], [8, 8]]  # 128x128 images


class SyntheticLoader:
    """Fixed random batches (images in [-1, 1], packed T5 features) with the loader's state API."""

    def __init__(self, batch: int, text_channels: int, seed: int, n: int = 8) -> None:
        import torch

        g = torch.Generator().manual_seed(seed)
        self.batches = [
            {
                "images": torch.rand(batch, 3, 128, 128, generator=g) * 2 - 1,
                "captions": ["x"] * batch,
                "template": 1.0,
                "t5_features": [torch.randn(12, text_channels, generator=g) for _ in range(batch)],
            }
            for _ in range(n)
        ]
        self.pos = 0

    def __iter__(self):
        while True:
            self.pos = (self.pos + 1) % len(self.batches)
            yield self.batches[self.pos]

    def state_dict(self) -> dict:
        return {"pos": self.pos}

    def load_state_dict(self, state: dict) -> None:
        self.pos = state["pos"]


def worker(args: argparse.Namespace) -> None:
    import resource

    import torch
    from bsq_tokenizer import BSQVAE, VAEConfig
    from infinity_train import TransformerTrainer, config_from_dict
    from infinity_train.distributed import init_distributed, shutdown_distributed

    dist = init_distributed()
    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # after imports, before the model
    cfg = config_from_dict(
        {
            "run_dir": str(Path(args.out).parent / f"run_{args.stage}_{dist.world_size}"),
            "max_steps": args.steps + 2,
            "data": {"batch_size": args.batch, "scales": SCALES, "use_precomputed_text": True},
            "optim": {"lr": 1e-4},
            "deepspeed": {
                "zero_stage": args.stage,
                "precision": "fp32" if dist.device.type == "cpu" else "bf16",
            },
            "checkpoint": {"save_every": 0},
            "logging": {"log_every": 10**6, "tensorboard": False},
            "transformer_model": {
                "preset": "layer12",
                "overrides": {
                    "depth": args.depth,
                    "embed_dim": args.width,
                    "num_heads": args.width // 64,
                    "text_channels": 64,
                    "text_maxlen": 32,
                    "pool_heads": 2,
                    "block_chunks": 1,
                },
            },
        }
    )
    torch.manual_seed(0)
    vae = BSQVAE(VAEConfig.preset("d32").replace(ch=32, ch_mult=(1, 1, 1, 1, 1), num_res_blocks=1))
    vae = vae.to(dist.device).eval().requires_grad_(False)
    trainer = TransformerTrainer(cfg, dist, SyntheticLoader(args.batch, 64, dist.rank), vae=vae)
    trainer.run(max_steps=2)  # warm-up
    if dist.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    tokens_per_step = args.batch * sum(h * w for h, w in SCALES) * dist.world_size
    torch.distributed.barrier()
    t0 = time.perf_counter()
    trainer.run(max_steps=2 + args.steps)
    torch.distributed.barrier()
    elapsed = time.perf_counter() - t0
    if dist.device.type == "cuda":
        peak = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        peak -= base_rss  # what the model, optimizer, engine and step added on top of the libraries
    peak_t = torch.tensor([peak], dtype=torch.float64)
    torch.distributed.all_reduce(peak_t, op=torch.distributed.ReduceOp.MAX)
    if dist.is_main:
        Path(args.out).write_text(
            json.dumps({"tokens_per_s": tokens_per_step * args.steps / elapsed, "peak_mib": peak_t.item()})
        )
    trainer.close()
    shutdown_distributed()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=6, help="measured optimizer steps (after 2 warm-up)")
    parser.add_argument("--depth", type=int, default=4)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--batch", type=int, default=4, help="per process")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--stage", type=int, default=2, help=argparse.SUPPRESS)
    parser.add_argument("--out", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for nproc in (1, 2):
            for stage in (2, 3):
                out = Path(tmp) / f"r{stage}_{nproc}.json"
                cmd = [
                    sys.executable,
                    "-m",
                    "torch.distributed.run",
                    "--standalone",
                    "--nproc_per_node",
                    str(nproc),
                ]
                cmd += [__file__, "--worker", "--stage", str(stage), "--out", str(out)]
                cmd += ["--steps", str(args.steps), "--depth", str(args.depth), "--width", str(args.width)]
                cmd += ["--batch", str(args.batch)]
                proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
                if proc.returncode != 0:
                    sys.exit(f"case ZeRO-{stage} x{nproc} failed:\n{proc.stderr[-4000:]}")
                rows.append((stage, nproc, json.loads(out.read_text())))
    base = rows[0][2]
    print(
        f"train step: depth {args.depth}, width {args.width}, batch {args.batch}/process, 128x128 (5 scales)"
    )
    print(f"{'case':<16}{'tokens/s':>12}{'x base':>9}{'peak MiB':>11}{'x base':>9}")
    for stage, nproc, r in rows:
        print(
            f"{f'ZeRO-{stage} x{nproc} proc':<16}{r['tokens_per_s']:>12.0f}{r['tokens_per_s'] / base['tokens_per_s']:>9.2f}"
            f"{r['peak_mib']:>11.0f}{r['peak_mib'] / base['peak_mib']:>9.2f}"
        )


if __name__ == "__main__":
    main()
