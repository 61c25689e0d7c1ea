"""verify catches each kind of damage; stats counts buckets and captions and draws a histogram; the CLI
converts a few hundred generated images into shards that verify accepts and the loader streams."""

from __future__ import annotations

import argparse
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
from bsq_tokenizer.schedules import target_pixel_size
from infinity_data import BucketLoader, LoaderConfig, ShardIndex, read_shard, stats, verify
from infinity_data.cli import main
from PIL import Image


def test_verify_accepts_a_fresh_conversion(converted: Path) -> None:
    report = verify(converted)
    assert report.ok, report.errors
    assert (report.num_shards, report.num_samples) == (27, 45)  # 9 buckets x ceil(5 / 2) shards


def test_verify_reports_a_count_that_disagrees_with_the_index(converted: Path) -> None:
    index = json.loads((converted / "index.json").read_text())
    index["shards"][0]["num_samples"] += 1
    (converted / "index.json").write_text(json.dumps(index))
    errors = verify(converted).errors
    assert any(index["shards"][0]["path"] in e and "the index says 3" in e for e in errors)
    assert any("num_samples is 45, its shards hold 46" in e for e in errors)  # the summary is stale too
    assert any("bucket counts" in e for e in errors)
    assert len(errors) == 3


def test_verify_reports_an_undecodable_image_naming_shard_and_key(converted: Path) -> None:
    shard = ShardIndex.load(converted).shards[0]
    path = converted / shard.path
    with tarfile.open(path) as tar:
        member = next(m for m in tar.getmembers() if m.name.endswith(".jpg"))
    with open(path, "r+b") as fh:  # wipe the JPEG headers after the start marker, in place
        fh.seek(member.offset_data + 2)
        fh.write(b"\x00" * (member.size // 2))
    key = member.name.split(".")[0]
    errors = verify(converted).errors
    assert len(errors) == 1 and shard.path in errors[0] and key in errors[0] and "decode" in errors[0]
    assert verify(converted, decode=False).ok  # structure and counts are still fine


def test_verify_reports_truncated_missing_and_stray_shards(converted: Path) -> None:
    shards = ShardIndex.load(converted).shards
    truncated = converted / shards[0].path
    truncated.write_bytes(truncated.read_bytes()[:700])
    (converted / shards[1].path).unlink()
    stray = converted / shards[2].bucket / "shard-000777.tar"
    stray.write_bytes((converted / shards[2].path).read_bytes())
    errors = verify(converted).errors
    assert any(shards[0].path in e for e in errors)
    assert any(shards[1].path in e and "missing" in e for e in errors)
    assert any("shard-000777.tar" in e and "not in index.json" in e for e in errors)


def test_verify_without_an_index_says_how_to_make_one(tmp_path: Path) -> None:
    [error] = verify(tmp_path).errors
    assert "index.json" in error and "infinity-data" in error


def test_stats_counts_buckets_caption_lengths_and_draws_the_histogram(
    converted: Path, tmp_path: Path
) -> None:
    png = tmp_path / "hist.png"
    result = stats(converted, histogram_path=png)
    assert result.num_samples == 45
    assert result.bucket_sizes == {
        name: 5 for name in ("0.333", "0.750", "0.800", "1.000", "1.250", "1.333", "0.500", "2.000", "3.000")
    }
    # captions are "a photo number {i}. It has noise." -> 7 words
    assert result.caption_words["min"] == result.caption_words["max"] == 7
    assert result.caption_chars["min"] == len("a photo number 0. It has noise.")
    with pytest.warns(DeprecationWarning, match="use DatasetStats.ratios"):
        np.testing.assert_array_equal(result.aspect_ratios, result.ratios)  # the old name still works
    assert sorted(set(np.round(result.ratios, 3))) == [
        0.333,
        0.5,
        0.75,
        0.8,
        1.0,
        1.25,
        1.333,
        2.0,
        3.0,
    ]
    img = Image.open(png)
    assert img.size == (900, 420)
    assert (
        len(np.unique(np.asarray(img.convert("RGB")).reshape(-1, 3), axis=0)) > 3
    )  # bars, axes, template lines, labels


def test_index_command_rebuilds_a_lost_index(converted: Path) -> None:
    before = ShardIndex.load(converted)
    (converted / "index.json").unlink()
    assert main(["index", str(converted)]) == 0
    after = ShardIndex.load(converted)
    assert after.shards == before.shards


@pytest.mark.slow
def test_cli_converts_a_few_hundred_images_that_verify_accepts_and_the_loader_streams(
    tmp_path: Path, make_folder, capsys
) -> None:
    src = make_folder(tmp_path / "src", 300)
    (src / "broken.jpg").write_bytes(b"")
    (src / "broken.txt").write_text("zero bytes")
    out = tmp_path / "shards"
    assert main(["convert", str(src), "-o", str(out), "--num-workers", "2", "--shard-size", "16"]) == 0
    printed = capsys.readouterr().out
    assert "300 samples" in printed and "1 rejected (empty_file: 1)" in printed
    assert main(["verify", str(out), "--num-workers", "2"]) == 0
    assert "OK" in capsys.readouterr().out
    assert main(["stats", str(out), "--histogram", str(tmp_path / "h.png")]) == 0
    assert (tmp_path / "h.png").is_file()
    assert main(["stream", str(out), "--batch-size", "4", "--batches", "5"]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("batch")]
    assert len(lines) == 5
    bucket_of = {
        key: shard.bucket
        for shard in ShardIndex.load(out).shards
        for key, _ in read_shard(out / shard.path, exts=())
    }
    assert len(bucket_of) == 300
    seen = []
    for batch in BucketLoader(out, LoaderConfig(batch_size=16, num_workers=2)):
        assert {bucket_of[k] for k in batch["keys"]} == {f"{batch['template']:.3f}"}  # bucket-pure
        assert batch["images"].shape[2:] == target_pixel_size(batch["template"], "0.06M")
        seen += batch["keys"]
    assert sorted(seen) == sorted(bucket_of)


def test_cli_reports_bad_arguments_as_errors_not_tracebacks(tmp_path: Path, capsys) -> None:
    assert main(["convert", str(tmp_path / "nope"), str(tmp_path / "out")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["verify", str(tmp_path)]) == 1


def test_old_flag_spellings_still_work_and_warn_that_they_are_deprecated(
    tmp_path: Path, make_folder, capsys
) -> None:
    src = make_folder(tmp_path / "src", 4)
    out = tmp_path / "shards"
    assert main(["convert", str(src), str(out), "--workers", "0"]) == 0  # positional output, --workers
    err = capsys.readouterr().err
    assert "--workers is deprecated" in err and "use --num-workers" in err
    assert "the positional OUTPUT is deprecated" in err and "use -o/--output" in err
    assert ShardIndex.load(out).num_samples == 4
    assert main(["verify", str(out), "--workers", "0"]) == 0
    assert "--workers is deprecated" in capsys.readouterr().err
    assert main(["stream", str(out), "--workers", "0", "--batch-size", "2", "--batches", "1"]) == 0
    assert "--workers is deprecated" in capsys.readouterr().err


def test_convert_needs_an_output_and_refuses_two_different_ones(tmp_path: Path, make_folder, capsys) -> None:
    src = make_folder(tmp_path / "src", 2)
    assert main(["convert", str(src)]) == 2
    assert "infinity-data convert: error: convert needs -o/--output" in capsys.readouterr().err
    assert main(["convert", str(src), str(tmp_path / "a"), "-o", str(tmp_path / "b")]) == 2
    assert "two outputs given" in capsys.readouterr().err


def test_every_subcommand_has_a_function_in_the_commands_table() -> None:
    from infinity_data.cli import COMMANDS, build_parser

    subparsers = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    assert set(subparsers.choices) == set(COMMANDS)
