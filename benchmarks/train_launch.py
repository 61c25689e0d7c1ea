"""Launch-to-first-step of a 2-process ``deepspeed`` launch of the tiny CPU config, before/after the fix.

    uv run --no-sync python benchmarks/train_launch.py [--launches 1]

Each launch is ``python -m deepspeed.launcher.runner --num_gpus 2`` of the tiny transformer config (generated
shapes data, random tiny T5 and VAE; 2 gloo ranks on CPU) for 2 steps, with an empty ``TORCH_EXTENSIONS_DIR``
(a machine that has never built a DeepSpeed op). "before" runs the CLI with the old behaviour restored
(DeepSpeed builds its ``deepspeed_shm_comm`` op when it sets up communication); "after" is the CLI as shipped.
Time: from starting the launcher to the first train record in metrics.jsonl. "ops built" lists what appeared
in the extensions folder. Then a breakdown of one process (world size 1) in the same two modes: imports,
process-group setup (rendezvous + op build), the T5 import and load, ``deepspeed.initialize``.

Bytecode: with ``PYTHONDONTWRITEBYTECODE`` set and no ``PYTHONPYCACHEPREFIX`` every interpreter (launcher,
per-node launcher, each rank) compiles torch, DeepSpeed and transformers from source again; the table says
which setting it ran with.
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

BEFORE = """import sys
import infinity_train.distributed as d
d.skip_shm_comm_op = lambda: None  # the behaviour before the fix: DeepSpeed builds its shm comm op
from infinity_train.cli import main
sys.exit(main())
"""

PHASES = """import json, sys, time
t0 = time.perf_counter(); marks = {}
def mark(name):
    global t0
    now = time.perf_counter(); marks[name] = round(now - t0, 2); t0 = now
import torch; mark("import torch")
import deepspeed; mark("import deepspeed")
import infinity_train.distributed as d
if sys.argv[1] == "before":
    d.skip_shm_comm_op = lambda: None
dist = d.init_distributed(); mark("process group (+ op build)")
from infinity_model import TextEncoder
TextEncoder.from_pretrained(sys.argv[2]); mark("T5: import transformers + load")
m = torch.nn.Linear(8, 8)
d.create_engine(m, torch.optim.AdamW(m.parameters()), {"train_micro_batch_size_per_gpu": 1,
    "zero_optimization": {"stage": 2}, "zero_allow_untested_optimizer": True}); mark("deepspeed.initialize")
print("PHASES " + json.dumps(marks))
d.shutdown_distributed()
"""


def make_assets(root: Path) -> dict[str, str]:
    import torch
    from bsq_tokenizer import BSQVAE, VAEConfig, save_vae
    from infinity_data import ConvertConfig, convert_folder
    from infinity_data.shapes import write_folder
    from infinity_model.tiny import write_tiny_t5

    write_folder(root / "images", count=16, seed=0, long_side=64, ratios=(1.0,))
    convert_folder(root / "images", root / "shards", ConvertConfig())
    write_tiny_t5(root / "t5", d_model=32)
    torch.manual_seed(0)
    vae = VAEConfig.preset("d32").replace(ch=32, ch_mult=(1, 1, 1, 1, 1), num_res_blocks=1)
    save_vae(BSQVAE(vae), root / "vae")
    return {"shards": str(root / "shards"), "t5": str(root / "t5"), "vae": str(root / "vae")}


def run_config(run_dir: Path, assets: dict[str, str]) -> dict:
    model = {"depth": 2, "embed_dim": 64, "num_heads": 2, "text_channels": 32, "text_maxlen": 64}
    model.update(pool_heads=2, block_chunks=1, d_vae=32)
    return {
        "task": "transformer",
        "run_dir": str(run_dir),
        "max_steps": 2,
        "data": {"shards": assets["shards"], "batch_size": 2, "scales": [[1, 1], [2, 2], [4, 4]]},
        "optim": {"lr": 3e-3, "max_iters": 100},
        "deepspeed": {"zero_stage": 2, "precision": "fp32"},
        "checkpoint": {"save_every": 0},
        "logging": {"log_every": 1, "tensorboard": False},
        "transformer_model": {
            "preset": "layer12",
            "overrides": model,
            "vae_path": assets["vae"],
            "text_encoder_path": assets["t5"],
        },
    }


def launch(root: Path, name: str, variant: str, assets: dict[str, str], port: int) -> tuple[float, list[str]]:
    """One launch; returns (seconds to the first train record, ops built)."""
    ext = root / f"ext_{name}"
    ext.mkdir()
    cfg = root / f"{name}.json"
    cfg.write_text(json.dumps(run_config(root / name, assets)))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TORCH_EXTENSIONS_DIR": str(ext)}
    cmd = [sys.executable, "-m", "deepspeed.launcher.runner", "--num_gpus", "2", "--master_port", str(port)]
    if variant == "before":
        script = root / "before_cli.py"
        script.write_text(BEFORE)
        cmd.append(str(script))
    else:
        cmd += ["--module", "infinity_train.cli"]
    cmd += ["transformer", "--config", str(cfg)]
    start = time.time()
    with open(root / f"{name}.log", "wb") as log:
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            code = proc.wait()
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, 9)
                proc.wait()
    metrics = root / name / "metrics.jsonl"
    if code != 0 or not metrics.is_file():
        raise SystemExit(f"{name} failed ({code}):\n{(root / f'{name}.log').read_text()[-4000:]}")
    first = next(json.loads(x) for x in metrics.read_text().splitlines() if '"split": "train"' in x)
    return first["time"] - start, sorted(p.name for p in ext.iterdir())


def phases(root: Path, variant: str, assets: dict[str, str]) -> dict[str, float]:
    ext = root / f"ext_phases_{variant}"
    ext.mkdir()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TORCH_EXTENSIONS_DIR": str(ext)}
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    cmd = [sys.executable, "-c", PHASES, variant, assets["t5"]]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout
    return json.loads(next(x for x in out.splitlines() if x.startswith("PHASES "))[7:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--launches", type=int, default=1, help="launches per variant")
    args = parser.parse_args()
    bytecode = "off (PYTHONDONTWRITEBYTECODE)" if sys.flags.dont_write_bytecode else "on"
    if os.environ.get("PYTHONPYCACHEPREFIX"):
        bytecode += f", prefix {os.environ['PYTHONPYCACHEPREFIX']}"
    print(f"bytecode cache: {bytecode}; {os.cpu_count()} CPU cores")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        assets = make_assets(root / "assets")
        print(f"{'launch':<8} {'run':>4} {'to first step s':>16}  ops built")
        port = 29400 + os.getpid() % 500
        for variant in ("before", "after"):
            for i in range(args.launches):
                seconds, ops = launch(root, f"{variant}{i}", variant, assets, port)
                port += 1
                print(f"{variant:<8} {i:>4} {seconds:>16.1f}  {', '.join(ops) or '-'}")
        print("\none process, seconds per phase")
        rows = {variant: phases(root, variant, assets) for variant in ("before", "after")}
        print(f"{'phase':<32} {'before':>8} {'after':>8}")
        for key in rows["before"]:
            print(f"{key:<32} {rows['before'][key]:>8.2f} {rows['after'][key]:>8.2f}")


if __name__ == "__main__":
    main()
