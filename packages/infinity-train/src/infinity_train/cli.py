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

from .config import ConfigError, load_run_config, read_config_file

__all__ = ["main"]

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


def _raw_keys(path: str) -> set[str]:
    """Top-level keys written in the config file (to tell an explicit ``task`` from the default)."""
    return set(read_config_file(path))


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
        config = load_run_config(args.config, overrides)
        if args.command == "show-config":
            from .config import config_to_dict

            print(json.dumps(config_to_dict(config), indent=2))
            return 0
        if config.task != args.command:
            if "task" in _raw_keys(args.config) or "task" in overrides:
                raise ConfigError(
                    f"{args.config}: task = {config.task!r} but the command is '{args.command}'"
                )
            config = config.replace(task=args.command)
        # data, weights and overrides are checked here, in seconds, before a process group or DeepSpeed exists
        from .preflight import check_run_config

        check_run_config(config, args.config)
        from .runner import train

        train(config)
        return 0
    except (ConfigError, FileNotFoundError, ValueError, KeyError) as exc:
        print(f"infinity-train: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
