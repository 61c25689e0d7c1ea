"""Train a tiny Infinity transformer for a few steps on CPU, on shards that infinity-data makes from images.

Everything is made on the spot: a few generated shapes images with captions, their shards, a random tiny T5
text encoder and a random tiny BSQ-VAE (a real run points at a trained VAE and flan-t5-xl instead).

    uv run python examples/train_tiny.py -o tiny_run --max-steps 4 --seed 0
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from bsq_tokenizer import BSQVAE, VAEConfig, save_vae
from infinity_data import ConvertConfig, convert_folder
from infinity_data.shapes import write_folder  # not re-exported by infinity_data: synthetic shapes images
from infinity_model.tiny import write_tiny_t5  # not re-exported by infinity_model: a random tiny T5 folder
from infinity_train import config_from_dict, train

# depth 2, width 64, fed by the 32-wide T5 below; every other setting comes from the preset
TINY_MODEL = {"depth": 2, "embed_dim": 64, "num_heads": 2, "block_chunks": 1, "text_channels": 32,
              "text_maxlen": 64, "pool_heads": 2}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", type=Path, default=Path("tiny_run"), help="work folder")
    parser.add_argument("--max-steps", type=int, default=4, help="optimizer steps to train")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    root: Path = args.output

    # 1. data: 16 captioned 64x64 images -> WebDataset-style shards (infinity-data)
    write_folder(root / "images", count=16, seed=args.seed, long_side=64, ratios=(1.0,))
    convert_folder(root / "images", root / "shards", ConvertConfig())
    # 2. frozen parts: a random 32-wide T5 and a random small 32-bit BSQ-VAE
    write_tiny_t5(root / "t5", d_model=32)
    torch.manual_seed(args.seed)
    vae = BSQVAE(VAEConfig.preset("d32").replace(ch=32, ch_mult=(1, 1, 1, 1, 1), num_res_blocks=1))
    save_vae(vae, root / "vae")

    # 3. the run: the same keys as an infinity-train TOML config (`infinity-train --config run.toml`)
    config = config_from_dict(
        {
            "task": "transformer",
            "run_dir": str(root / "run"),
            "seed": args.seed,
            "max_steps": args.max_steps,
            "data": {"shards": str(root / "shards"), "batch_size": 2, "scales": [[1, 1], [2, 2], [4, 4]]},
            "optim": {"lr": 3e-3, "max_iters": 100},
            "deepspeed": {"zero_stage": 2, "precision": "fp32"},
            "logging": {"log_every": 1, "tensorboard": False},
            "transformer_model": {
                "preset": "layer12",  # shrunk to depth 2, width 64 by the overrides
                "overrides": TINY_MODEL,
                "vae_path": str(root / "vae"),
                "text_encoder_path": str(root / "t5"),
            },
        }
    )
    last = train(config)  # the last logged record: step, loss, bit accuracy, lr, ...
    print(f"trained {last['step']} steps, loss {last['loss']:.4f}; checkpoints in {config.run_dir}")


if __name__ == "__main__":
    main()
