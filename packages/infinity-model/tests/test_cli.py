"""The ``infinity`` CLI's skeleton: one table of commands, errors reported as ``infinity CMD: error: ...`` with exit
code 2, and flags whose defaults are the library dataclasses' (so the two cannot drift)."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
from bsq_tokenizer import BSQTokenizerError
from infinity_model import CheckpointError, GenerationConfig, InfinityModelError, SamplerConfig
from infinity_model import cli as cli_module
from infinity_model.cli import COMMANDS, build_parser, generation_config, main, sampler_config
from infinity_model.model_folder import ModelFolderNotFoundError
from infinity_model.serve.cli import serve_limits
from infinity_model.serve.schema import RequestError, ServeLimits
from infinity_model.serve.worker import QueueFullError
from PIL import Image


def _subcommands(parser: argparse.ArgumentParser) -> set[str]:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return set(action.choices)


def test_every_subcommand_has_one_function_in_the_commands_table() -> None:
    assert set(COMMANDS) == _subcommands(build_parser()) == {"generate", "edit", "serve", "info"}


def test_package_errors_share_one_base_and_checkpoint_errors_are_the_tokenizers() -> None:
    assert issubclass(CheckpointError, BSQTokenizerError) and issubclass(CheckpointError, ValueError)
    assert issubclass(ModelFolderNotFoundError, InfinityModelError)
    assert issubclass(ModelFolderNotFoundError, FileNotFoundError)
    assert issubclass(RequestError, InfinityModelError) and issubclass(RequestError, ValueError)
    assert issubclass(QueueFullError, InfinityModelError) and issubclass(QueueFullError, RuntimeError)


@pytest.mark.parametrize("command", ["generate", "edit"])
def test_sampling_flag_defaults_are_the_dataclass_defaults(command: str) -> None:
    argv = [command, "a cat"] if command == "generate" else [command, "src.png", "a cat"]
    args = build_parser().parse_args(argv)
    assert generation_config(args) == GenerationConfig()
    assert sampler_config(args, GenerationConfig()) == SamplerConfig()


def test_given_flags_replace_the_model_folders_settings_and_the_rest_is_kept() -> None:
    folder = GenerationConfig(pn="0.06M", cfg=2.0, tau=1.0, top_k=0, candidates=3)
    args = build_parser().parse_args(
        ["generate", "a cat", "--cfg", "4,4,5", "--ratio", "3:4", "--cfg-off-last", "2"]
    )
    generation = generation_config(args, folder)
    assert generation == GenerationConfig(
        pn="0.06M", ratio=0.75, cfg=(4.0, 4.0, 5.0), tau=1.0, top_k=0, candidates=3
    )
    sampler = sampler_config(args, generation)
    assert sampler.cfg == (4.0, 4.0, 5.0) and sampler.candidates == 3 and sampler.cfg_off_last == 2


def test_serve_flag_defaults_are_the_serve_limits_defaults() -> None:
    assert serve_limits(build_parser().parse_args(["serve"])) == ServeLimits()


@pytest.mark.parametrize(("text", "ratio"), [("0.75", 0.75), ("3:4", 0.75), ("2:1", 2.0), ("1", 1.0)])
def test_ratio_is_height_over_width_as_a_number_or_height_colon_width(text: str, ratio: float) -> None:
    assert build_parser().parse_args(["generate", "x", "--ratio", text]).ratio == pytest.approx(ratio)


@pytest.mark.parametrize("text", ["0", "-1", "3:0", "wide", "3:4:5"])
def test_a_bad_ratio_is_a_usage_error_with_exit_code_2(text: str, capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["generate", "x", "--ratio", text])
    assert exc.value.code == 2
    assert "infinity generate: error: argument --ratio" in capsys.readouterr().err


def test_a_missing_checkpoint_is_reported_in_one_line_with_exit_code_2(tmp_path: Path, capsys) -> None:
    missing = tmp_path / "missing.pth"
    assert main(["info", str(missing)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("infinity info: error: ") and str(missing) in err and len(err.splitlines()) == 1


def test_a_bad_sampler_flag_fails_before_the_model_is_loaded(tmp_path: Path, monkeypatch, capsys) -> None:
    def no_loading(*args: object, **kwargs: object) -> None:
        raise AssertionError("the pipeline was loaded before the flags were checked")

    monkeypatch.setattr(cli_module, "load_pipeline", no_loading)
    parts = [
        "--model",
        "absent.pth",
        "--vae",
        "absent_vae.pth",
        "--text-encoder",
        "absent_t5",
    ]  # never opened
    assert main(["generate", "a cat", "--top-p", "2", *parts]) == 2
    assert "infinity generate: error: SamplerConfig.top_p must be in [0, 1]" in capsys.readouterr().err
    source = tmp_path / "source.png"
    Image.new("RGB", (32, 24)).save(source)
    assert main(["edit", str(source), "a cat", "--keep-scales", "1", "--tau", "0", *parts]) == 2
    assert "infinity edit: error: SamplerConfig.tau must be > 0" in capsys.readouterr().err
    assert main(["generate", "a cat", "--batch-size", "0", *parts]) == 2
    assert "infinity generate: error: --batch-size must be >= 1, got 0" in capsys.readouterr().err


def test_package_errors_from_a_command_give_exit_code_2(monkeypatch, capsys) -> None:
    for error in (InfinityModelError("package"), BSQTokenizerError("tokenizer"), FileNotFoundError("file")):

        def fail(args: argparse.Namespace, error: Exception = error) -> int:
            raise error

        monkeypatch.setitem(COMMANDS, "info", fail)
        assert main(["info", "x.pth"]) == 2
        assert capsys.readouterr().err == f"infinity info: error: {error}\n"


def test_an_unexpected_error_is_not_swallowed(monkeypatch) -> None:
    def fail(args: argparse.Namespace) -> int:
        raise RuntimeError("a bug")

    monkeypatch.setitem(COMMANDS, "info", fail)
    with pytest.raises(RuntimeError, match="a bug"):
        main(["info", "x.pth"])


def test_verbose_sets_info_logging_and_the_default_is_warnings(monkeypatch) -> None:
    import logging

    seen: dict[str, object] = {}
    monkeypatch.setattr(logging, "basicConfig", lambda **kwargs: seen.update(kwargs))
    monkeypatch.setitem(COMMANDS, "info", lambda args: 0)
    assert main(["-v", "info", "x.pth"]) == 0 and seen["level"] == logging.INFO
    assert main(["info", "x.pth"]) == 0 and seen["level"] == logging.WARNING
