"""``infinity-train``: train the transformer or the tokenizer with DeepSpeed, export weights.

Launch on N GPUs:  ``deepspeed --num_gpus N -m infinity_train.cli transformer --config run.toml``
or:                ``torchrun --nproc_per_node N -m infinity_train.cli transformer --config run.toml``
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from typing import Any

from .config import ConfigError, RunConfig, load_run_config

__all__ = ["main", "train"]

log = logging.getLogger("infinity_train")


def _parse_set(items: Sequence[str]) -> dict[str, Any]:
    """``key.sub=value`` pairs; the value is read as JSON when it parses (numbers, true, lists), else a string."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. --set optim.lr=1e-4")
        try:
            out[key] = json.loads(raw)
        except json.JSONDecodeError:
            out[key] = raw
    return out


def train(config: RunConfig) -> dict[str, Any]:
    """Run (or resume) the training described by ``config`` in this process; returns the last logged record."""
    from .data import build_loader
    from .distributed import init_distributed, shutdown_distributed

    dist = init_distributed()
    trainer = None
    try:
        loader = build_loader(config, config.data.shards, dist.rank, dist.world_size)
        val_loader = None
        if config.data.val_shards:
            val_loader = build_loader(
                config, config.data.val_shards, dist.rank, dist.world_size, seed_offset=1
            )
        if config.task == "transformer":
            from .transformer_trainer import TransformerTrainer

            trainer = TransformerTrainer(config, dist, loader, val_loader)
        else:
            from .tokenizer_trainer import TokenizerTrainer

            trainer = TokenizerTrainer(config, dist, loader, val_loader)
        start = trainer.step
        history = trainer.run()
        if trainer.step > start and (
            config.checkpoint.save_every <= 0 or trainer.step % config.checkpoint.save_every != 0
        ):
            trainer.save()
        return history[-1] if history else {}
    finally:
        if trainer is not None:
            trainer.close()
        shutdown_distributed()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="infinity-train", description=__doc__.splitlines()[0])
    parser.add_argument("--local_rank", "--local-rank", type=int, default=None, help=argparse.SUPPRESS)
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("transformer", "tokenizer"):
        p = sub.add_parser(name, help=f"train the {name} (resumes automatically from run_dir/checkpoints)")
        p.add_argument("--config", required=True, help="run config (.toml or .json)")
        p.add_argument(
            "--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key"
        )
        p.add_argument("--init-from", default=None, help="official .pth to fine-tune from (strict)")
        p.add_argument("--local_rank", "--local-rank", type=int, default=None, help=argparse.SUPPRESS)
    p = sub.add_parser("export", help="consolidate a checkpoint into safetensors + config JSON")
    p.add_argument("run_dir")
    p.add_argument("out")
    p.add_argument("--tag", default=None, help="checkpoint tag (default: latest)")
    p.add_argument("--ema", action="store_true", help="export the EMA weights")
    p = sub.add_parser("show-config", help="print the resolved run config as JSON")
    p.add_argument("--config", required=True)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        if args.command == "export":
            from .export import export_checkpoint

            out = export_checkpoint(args.run_dir, args.out, tag=args.tag, use_ema=args.ema)
            print(f"exported to {out}")
            return 0
        overrides = _parse_set(args.set)
        if getattr(args, "init_from", None):
            overrides["checkpoint.init_from"] = args.init_from
        if args.command in ("transformer", "tokenizer"):
            overrides.setdefault("task", args.command)
        config = load_run_config(args.config, overrides)
        if args.command == "show-config":
            from .config import config_to_dict

            print(json.dumps(config_to_dict(config), indent=2))
            return 0
        if config.task != args.command:
            raise ConfigError(f"{args.config}: task = {config.task!r} but the command is '{args.command}'")
        train(config)
        return 0
    except (ConfigError, FileNotFoundError, ValueError, KeyError) as exc:
        print(f"infinity-train: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
