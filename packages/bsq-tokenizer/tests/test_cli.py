"""The bsq-tokenizer CLI reconstructs, encodes, decodes and inspects with official-layout and safetensors files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from bsq_tokenizer import BSQVAE, VAEConfig, load_official_vae, save_vae
from bsq_tokenizer.cli import main, parse_scales, read_bits
from PIL import Image

TINY = VAEConfig(codebook_dim=8, ch=32, ch_mult=(1, 1, 2), patch_size=4)


@pytest.fixture
def checkpoint(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    path = tmp_path / "tiny_vae.pth"
    torch.save({"vae": BSQVAE(TINY).state_dict()}, path)
    return path


def _write_image(path: Path, size: tuple[int, int], mode: str = "RGB") -> Path:
    arr = np.random.default_rng(0).integers(0, 256, size=(size[1], size[0], 4), dtype=np.uint8)
    Image.fromarray(arr, "RGBA").convert(mode).save(path)
    return path


def test_parse_scales():
    assert parse_scales("auto") is None
    assert parse_scales("1,2,4") == [(1, 1), (2, 2), (4, 4)]
    assert parse_scales("1x1, 2x3") == [(1, 1), (2, 3)]
    with pytest.raises(ValueError, match="bad scale 'a'"):
        parse_scales("1,a")


def test_reconstruct_prints_psnr_and_writes_the_image(checkpoint, tmp_path, capsys):
    img = _write_image(tmp_path / "in.png", (32, 16), mode="RGBA")
    out = tmp_path / "out.png"
    assert (
        main(["reconstruct", str(img), "-c", str(checkpoint), "--scales", "1,2,2x4,4x8", "-o", str(out)]) == 0
    )
    text = capsys.readouterr().out
    assert "PSNR:" in text and "dB" in text
    assert Image.open(out).size == (32, 16)


def test_encode_decode_round_trip_through_both_bit_formats(checkpoint, tmp_path, capsys):
    img = _write_image(tmp_path / "in.png", (16, 16))
    for suffix in (".safetensors", ".npz"):
        bits_path = tmp_path / f"bits{suffix}"
        assert (
            main(["encode", str(img), "-c", str(checkpoint), "--scales", "1,2,4", "-o", str(bits_path)]) == 0
        )
        bits, meta = read_bits(bits_path)
        assert [tuple(b.shape) for b in bits] == [(1, 1, 1, 8), (1, 2, 2, 8), (1, 4, 4, 8)]
        assert "scales" in meta
        out = tmp_path / f"dec{suffix}.png"
        assert main(["decode", str(bits_path), "-c", str(checkpoint), "-o", str(out)]) == 0
        vae = load_official_vae(checkpoint)
        expected = vae.decode_from_bits(bits)
        got = torch.from_numpy(np.array(Image.open(out))).permute(2, 0, 1).float()
        want = ((expected[0] + 1) / 2 * 255).to(torch.uint8).float()
        assert torch.equal(got, want)
    capsys.readouterr()


def test_info_reports_the_preset_and_config(checkpoint, tmp_path, capsys):
    assert main(["info", str(checkpoint)]) == 0
    text = capsys.readouterr().out
    assert "entries:" in text and "(none matches exactly)" in text and "codebook_dim=8" in text
    ours = save_vae(load_official_vae(checkpoint), tmp_path / "ours")
    assert main(["info", str(ours)]) == 0
    assert "(from metadata)" in capsys.readouterr().out


def test_cli_accepts_a_save_vae_folder(checkpoint, tmp_path, capsys):
    ours = save_vae(load_official_vae(checkpoint), tmp_path / "ours")
    img = _write_image(tmp_path / "in.png", (16, 16))
    assert (
        main(["reconstruct", str(img), "-c", str(ours), "--scales", "1,4", "-o", str(tmp_path / "o.png")])
        == 0
    )
    assert "PSNR" in capsys.readouterr().out


def test_bad_sizes_fail_clearly_unless_cropping(checkpoint, tmp_path, capsys):
    img = _write_image(tmp_path / "odd.png", (18, 17))
    out = tmp_path / "o.png"
    assert main(["reconstruct", str(img), "-c", str(checkpoint), "--scales", "1,4", "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert (
        "17x18 (HxW) is not a multiple of the tokenizer stride 4" in err
        and "nearest valid size is 16x16" in err
    )
    assert (
        main(["reconstruct", str(img), "-c", str(checkpoint), "--scales", "1,4", "--crop", "-o", str(out)])
        == 0
    )
    assert Image.open(out).size == (16, 16)


def test_errors_for_wrong_preset_pn_and_bits_suffix(checkpoint, tmp_path, capsys):
    img = _write_image(tmp_path / "in.png", (16, 16))
    assert (
        main(
            ["reconstruct", str(img), "-c", str(checkpoint), "--preset", "d32", "-o", str(tmp_path / "o.png")]
        )
        == 2
    )
    assert "missing keys" in capsys.readouterr().err
    assert (
        main(["reconstruct", str(img), "-c", str(checkpoint), "--pn", "0.06M", "-o", str(tmp_path / "o.png")])
        == 2
    )
    assert "--scales" in capsys.readouterr().err
    assert main(["encode", str(img), "-c", str(checkpoint), "-o", str(tmp_path / "bits.txt")]) == 2
    assert ".safetensors or .npz" in capsys.readouterr().err
    assert main(["info", str(tmp_path / "missing.pth")]) == 2
    with pytest.raises(SystemExit):
        main(["reconstruct", str(img), "-c", str(checkpoint), "--preset", "d99", "-o", "x.png"])


def test_pixel_budget_resizes_to_the_template(tmp_path, capsys):
    cfg = VAEConfig(codebook_dim=8, ch=32, ch_mult=(1, 1, 1, 1, 1), patch_size=16)
    torch.manual_seed(0)
    ckpt = save_vae(BSQVAE(cfg), tmp_path / "stride16")
    img = _write_image(tmp_path / "wide.png", (120, 61))
    out = tmp_path / "o.png"
    assert main(["reconstruct", str(img), "-c", str(ckpt), "--pn", "0.06M", "-o", str(out)]) == 0
    text = capsys.readouterr().out
    assert "1x1 2x2 2x4 3x6 5x10 8x16 11x22" in text  # template 0.5
    assert Image.open(out).size == (352, 176)


def test_every_subcommand_has_a_function_in_the_commands_table():
    import argparse

    from bsq_tokenizer.cli import COMMANDS, build_parser

    subparsers = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    assert set(subparsers.choices) == set(COMMANDS)


def test_checkpoint_errors_are_package_errors_and_still_value_errors(tmp_path, capsys):
    from bsq_tokenizer import BSQTokenizerError, CheckpointError

    assert issubclass(CheckpointError, BSQTokenizerError) and issubclass(CheckpointError, ValueError)
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a safetensors file")
    assert main(["info", str(bad)]) == 2
    assert capsys.readouterr().err.startswith("bsq-tokenizer info: error: ")


def test_flag_defaults_are_the_library_defaults() -> None:
    """--preset, --device and --ema take their defaults from load_official_vae / read_state_dict (one home)."""
    import inspect

    from bsq_tokenizer import read_state_dict
    from bsq_tokenizer.cli import build_parser

    def default(function: object, name: str) -> object:
        return inspect.signature(function).parameters[name].default  # type: ignore[arg-type]

    args = build_parser().parse_args(["reconstruct", "x.png", "-c", "v.pth", "-o", "y.png"])
    assert (args.preset, args.device) == (
        default(load_official_vae, "config"),
        default(load_official_vae, "device"),
    )
    assert build_parser().parse_args(["info", "v.pth"]).ema == default(read_state_dict, "use_ema")
