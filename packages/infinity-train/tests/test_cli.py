"""The infinity-train CLI: one command table, -o/--output for export, the old positional output still accepted."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
from infinity_train import ConfigError, InfinityTrainError
from infinity_train.cli import COMMANDS, build_parser, main


def _record_exports(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    """Replace the exporter with one that records (run_dir, output): the CLI's part is choosing the output."""
    import infinity_train.export

    calls: list[tuple[str, str]] = []

    def fake_export(run_dir: str, out: str, tag: str | None = None, use_ema: bool = False) -> str:
        calls.append((run_dir, out))
        return out

    monkeypatch.setattr(infinity_train.export, "export_checkpoint", fake_export)
    return calls


def test_every_subcommand_has_a_function_in_the_commands_table() -> None:
    subparsers = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    assert set(subparsers.choices) == set(COMMANDS)


def test_config_error_is_the_package_error_and_still_a_value_error() -> None:
    assert issubclass(ConfigError, InfinityTrainError) and issubclass(ConfigError, ValueError)


def test_export_writes_to_the_output_flag(monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    calls = _record_exports(monkeypatch)
    assert main(["export", "runs/x", "-o", "exported"]) == 0
    assert calls == [("runs/x", "exported")]
    assert "deprecated" not in capsys.readouterr().err


def test_export_positional_output_still_works_and_warns(monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    calls = _record_exports(monkeypatch)
    assert main(["export", "runs/x", "exported"]) == 0
    assert calls == [("runs/x", "exported")]
    err = capsys.readouterr().err
    assert "the positional OUTPUT is deprecated" in err and "-o/--output" in err


def test_export_without_an_output_is_an_error(tmp_path: Path, capsys) -> None:
    assert main(["export", str(tmp_path)]) == 2
    assert "infinity-train export: error: export needs -o/--output" in capsys.readouterr().err


def test_flags_restate_no_library_default() -> None:
    """Training flags default to nothing (the run config holds every default); export's flags default to
    export_checkpoint's keywords."""
    import inspect

    from infinity_train.export import export_checkpoint

    parse = build_parser().parse_args
    train = parse(["transformer", "--config", "run.toml"])
    assert (train.set, train.init_from) == ([], None)
    export = parse(["export", "runs/a", "-o", "out"])
    keywords = inspect.signature(export_checkpoint).parameters
    assert (export.tag, export.ema) == (keywords["tag"].default, keywords["use_ema"].default)
