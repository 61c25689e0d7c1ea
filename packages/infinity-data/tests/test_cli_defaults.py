"""The ``infinity-data`` flags take their defaults from the library dataclasses, so the two cannot drift: an
unflagged command builds the dataclass's defaults, except for the CLI's own choices, named once."""

from __future__ import annotations

from dataclasses import fields

from infinity_data import ConvertConfig, LoaderConfig
from infinity_data.cli import CONVERT_DEFAULTS, STREAM_DEFAULTS, build_parser, convert_config, loader_config


def _differences(config: object, defaults: object) -> set[str]:
    return {f.name for f in fields(config) if getattr(config, f.name) != getattr(defaults, f.name)}  # type: ignore[arg-type]


def test_convert_flags_default_to_convert_config_but_for_the_number_of_workers() -> None:
    args = build_parser().parse_args(["convert", "images", "-o", "shards"])
    assert convert_config(args) == CONVERT_DEFAULTS
    assert _differences(CONVERT_DEFAULTS, ConvertConfig()) <= {"workers"}


def test_stream_flags_default_to_loader_config_but_for_a_small_in_process_batch() -> None:
    args = build_parser().parse_args(["stream", "shards"])
    assert loader_config(args) == STREAM_DEFAULTS
    assert _differences(STREAM_DEFAULTS, LoaderConfig()) == {"batch_size", "num_workers"}
    assert STREAM_DEFAULTS.num_workers == 0


def test_given_flags_reach_the_dataclass() -> None:
    args = build_parser().parse_args(
        [
            "convert",
            "in",
            "-o",
            "out",
            "--pn",
            "0.25M",
            "--num-workers",
            "3",
            "--shard-size",
            "7",
            "--max-shard-mb",
            "2",
        ]
    )
    config = convert_config(args)
    assert (config.pn, config.workers, config.max_samples_per_shard) == ("0.25M", 3, 7)
    assert config.max_bytes_per_shard == 2 << 20
