"""The ``infinity-eval`` flags take their defaults from the dataclasses and functions the commands fill (FIDOptions,
ValLossOptions, generate_benchmark, the scorers), so the two cannot drift."""

from __future__ import annotations

import inspect
from typing import Any

from infinity_eval.cli import build_parser, fid_options, val_loss_options
from infinity_eval.fid import FIDOptions, compute_fid
from infinity_eval.generate import generate_benchmark
from infinity_eval.hps import HPSv21Scorer
from infinity_eval.imagereward import ImageRewardScorer
from infinity_eval.val_loss import ValLossOptions


def _default(function: Any, name: str) -> Any:
    return inspect.signature(function).parameters[name].default


def test_fid_flags_default_to_fid_options_and_compute_fid() -> None:
    args = build_parser().parse_args(["fid", "a", "b"])
    assert fid_options(args) == FIDOptions()
    assert args.num_workers == _default(compute_fid, "num_workers")
    assert args.stats_protocol == _default(compute_fid, "unrecorded_protocol")


def test_val_loss_flags_default_to_val_loss_options() -> None:
    argv = [
        "val-loss",
        "--model",
        "m",
        "--vae",
        "v",
        "--text-encoder",
        "t",
        "--manifest",
        "x.jsonl",
        "-o",
        "out",
    ]
    assert val_loss_options(build_parser().parse_args(argv)) == ValLossOptions()
    flipped = val_loss_options(build_parser().parse_args([*argv, "--no-requant", "--reweight-by-scale"]))
    assert flipped.noise_apply_requant is False and flipped.reweight_by_scale is True


def test_generate_and_scorer_flags_default_to_the_library_functions() -> None:
    parse = build_parser().parse_args
    gen = parse(["generate", "geneval", "--generator", "m:f", "-o", "out"])
    assert (gen.batch_size, gen.seed, gen.image_format) == tuple(
        _default(generate_benchmark, name) for name in ("batch_size", "seed", "image_format")
    )
    assert parse(["imagereward", "x", "-o", "out"]).batch_size == _default(
        ImageRewardScorer.__init__, "batch_size"
    )
    hps = parse(["hps", "x", "-o", "out"])
    assert hps.batch_size == _default(HPSv21Scorer.__init__, "batch_size")
    assert (
        hps.version
        == _default(HPSv21Scorer.__init__, "version")
        == _default(HPSv21Scorer.from_pretrained, "version")
    )
