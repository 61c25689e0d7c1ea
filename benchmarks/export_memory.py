"""Peak memory of ``infinity-train export`` against the size of the exported weights, before/after the fix.

    uv run --no-sync python benchmarks/export_memory.py [--depth 8] [--width 768]

A fake ZeRO-0 run directory (model states with an AdamW state beside the module, as DeepSpeed writes it) of a
randomly initialised transformer is exported twice, each in a fresh subprocess: "before" reproduces the old
export (``torch.load`` of the whole states file, a randomly initialised fp32 ``Infinity`` on the CPU, then
``load_state_dict`` copying into it); "after" is ``infinity_train.export.export_checkpoint`` (memory-mapped
states, a meta-device model adopting the tensors). Memory: growth of the process's peak RSS (VmHWM) over
its RSS after imports, divided by the bytes of the written model.safetensors.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _peak_bytes() -> int:
    """VmHWM: the peak RSS of this address space (unlike ru_maxrss, not inherited from the parent at fork)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def worker(variant: str, run_dir: str, out: str) -> None:
    import torch
    from infinity_model import Infinity, InfinityConfig, save_infinity
    from infinity_train.export import export_checkpoint

    base = _rss_bytes()
    if variant == "before":
        ckpt = Path(run_dir) / "checkpoints" / "step00000001"
        state = torch.load(ckpt / "mp_rank_00_model_states.pt", map_location="cpu", weights_only=True)
        state = {k: v.float() for k, v in state["module"].items()}
        model = Infinity(InfinityConfig.from_json(ckpt / "model_config.json"))
        model.load_state_dict(state, strict=True)
        save_infinity(model, out)
    else:
        export_checkpoint(run_dir, out)
    print(json.dumps({"base": base, "peak": _peak_bytes()}))


def make_run(root: Path, depth: int, width: int) -> int:
    """Write the fake run; returns the number of parameters."""
    import torch
    from infinity_model import Infinity, InfinityConfig
    from infinity_train.config import RunConfig, config_to_dict

    config = InfinityConfig.preset("layer12", depth=depth, embed_dim=width, num_heads=width // 64)
    torch.manual_seed(0)
    module = Infinity(config).state_dict()
    ckpt = root / "checkpoints" / "step00000001"
    ckpt.mkdir(parents=True)
    optimizer = {
        "state": {
            k: {"exp_avg": torch.zeros_like(v), "exp_avg_sq": torch.zeros_like(v)} for k, v in module.items()
        }
    }
    torch.save({"module": module, "optimizer": optimizer}, ckpt / "mp_rank_00_model_states.pt")
    cfg = config_to_dict(RunConfig())
    cfg["deepspeed"]["zero_stage"] = 0
    (ckpt / "run_config.json").write_text(json.dumps(cfg))
    (ckpt / "model_config.json").write_text(json.dumps(config.to_dict()))
    (ckpt / "COMPLETE").write_text("step00000001\n")
    (root / "checkpoints" / "latest").write_text("step00000001")
    return sum(v.numel() for v in module.values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--depth", type=int, default=8)
    parser.add_argument("--width", type=int, default=768)
    parser.add_argument("--worker", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(*args.worker)
        return
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        n = make_run(root / "run", args.depth, args.width)
        print(f"Infinity depth {args.depth}, width {args.width}: {n / 1e6:.1f}M parameters (fp32)")
        print(f"{'export':<8} {'weights MB':>11} {'peak growth MB':>15} {'x weights':>10}")
        for variant in ("before", "after"):
            out = root / f"out_{variant}"
            cmd = [sys.executable, __file__, "--worker", variant, str(root / "run"), str(out)]
            proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
            mem = json.loads(proc.stdout.strip().splitlines()[-1])
            weights = (out / "model.safetensors").stat().st_size
            growth = mem["peak"] - mem["base"]
            print(f"{variant:<8} {weights / 2**20:>11.1f} {growth / 2**20:>15.1f} {growth / weights:>10.2f}")


if __name__ == "__main__":
    main()
