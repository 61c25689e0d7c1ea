"""``infinity-train``: train the transformer or the tokenizer with DeepSpeed, export weights.

Launch on N GPUs:  ``deepspeed --num_gpus N -m infinity_train.cli transformer --config run.toml``
or:                ``torchrun --nproc_per_node N -m infinity_train.cli transformer --config run.toml``
"""

from __future__ import annotations

import argparse
import inspect
import json
import logging
import sys
from collections.abc import Callable, Sequence
from typing import Any

from .config import ConfigError, load_run_config, read_config_file
from .errors import InfinityTrainError

__all__ = ["COMMANDS", "build_parser", "main"]

_DESCRIPTION = "infinity-train: train the transformer or the tokenizer with DeepSpeed, export weights."

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


def _warn_deprecated(prog: str, old: str, new: str) -> None:
    print(f"{prog}: warning: {old} is deprecated and will be removed; use {new}", file=sys.stderr)


def _raw_keys(path: str) -> set[str]:
    """Top-level keys written in the config file (to tell an explicit ``task`` from the default)."""
    return set(read_config_file(path))


def _train(args: argparse.Namespace) -> int:
    """Resolve the run config for the ``transformer``/``tokenizer`` command, check it in seconds, then train."""
    overrides = _parse_set(args.set)
    if args.init_from:
        overrides["checkpoint.init_from"] = args.init_from
    config = load_run_config(args.config, overrides)
    if config.task != args.command:
        if "task" in _raw_keys(args.config) or "task" in overrides:
            raise ConfigError(f"{args.config}: task = {config.task!r} but the command is '{args.command}'")
        config = config.replace(task=args.command)
    # data, weights and overrides are checked here, in seconds, before a process group or DeepSpeed exists
    from .preflight import check_run_config

    check_run_config(config, args.config)
    from .runner import train

    train(config)
    return 0


def transformer_command(args: argparse.Namespace) -> int:
    """Train the Infinity transformer (resumes from run_dir/checkpoints)."""
    return _train(args)


def tokenizer_command(args: argparse.Namespace) -> int:
    """Train the BSQ-VAE tokenizer (resumes from run_dir/checkpoints)."""
    return _train(args)


def export_command(args: argparse.Namespace) -> int:
    """Consolidate a DeepSpeed checkpoint into the model's safetensors folder."""
    from .export import export_checkpoint

    output = args.output
    if args.legacy_output is not None:
        _warn_deprecated("infinity-train export", "the positional OUTPUT", "-o/--output OUTPUT")
        if output is not None and output != args.legacy_output:
            raise ConfigError(
                f"two outputs given ({args.legacy_output} and -o {output}); keep only -o/--output"
            )
        output = args.legacy_output
    if output is None:
        raise ConfigError("export needs -o/--output FOLDER")
    out = export_checkpoint(args.run_dir, output, tag=args.tag, use_ema=args.ema)
    print(f"exported to {out}")
    return 0


def show_config_command(args: argparse.Namespace) -> int:
    """Print the resolved run config (file + --set overrides) as JSON."""
    from .config import config_to_dict

    print(json.dumps(config_to_dict(load_run_config(args.config, _parse_set(args.set))), indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The training flags carry no defaults of their own: those live in the run config (``--config`` and
    ``--set``); export's flags take theirs from :func:`~infinity_train.export.export_checkpoint`."""
    from .export import export_checkpoint

    export = {n: p.default for n, p in inspect.signature(export_checkpoint).parameters.items()}
    parser = argparse.ArgumentParser(prog="infinity-train", description=_DESCRIPTION)
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
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
    p.add_argument("run_dir", help="the run folder (its checkpoints/ holds the DeepSpeed checkpoints)")
    p.add_argument("-o", "--output", default=None, help="folder to write the exported model to")
    p.add_argument("legacy_output", nargs="?", default=None, help=argparse.SUPPRESS)
    p.add_argument("--tag", default=export["tag"], help="checkpoint tag (default: latest)")
    p.add_argument("--ema", action="store_true", default=export["use_ema"], help="export the EMA weights")
    p = sub.add_parser("show-config", help="print the resolved run config as JSON")
    p.add_argument("--config", required=True, help="run config (.toml or .json)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key")
    return parser


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "transformer": transformer_command,
    "tokenizer": tokenizer_command,
    "export": export_command,
    "show-config": show_config_command,
}

# Errors that mean "bad input", reported in one line: the package's base error (ConfigError, ...), plus what
# reading a missing or malformed file or checkpoint raises.
_USER_ERRORS = (InfinityTrainError, FileNotFoundError, ValueError, KeyError)


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv``, run the subcommand, and return its exit code (2 after a reported error)."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    try:
        return COMMANDS[args.command](args)
    except _USER_ERRORS as exc:
        print(f"infinity-train {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
