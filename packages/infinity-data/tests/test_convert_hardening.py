"""Converter edge cases: one image under two spellings, byte-order marks, invalid UTF-8, rejects that name
their image, a refused resume that names the option, and a second conversion into a busy folder."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from infinity_data import ConvertConfig, ShardIndex, convert_folder, convert_jsonl, read_shard, verify
from infinity_data.convert import ConvertLockedError


def _metas(root: Path) -> dict[str, dict]:
    """source -> sample metadata over every shard."""
    out = {}
    for shard in ShardIndex.load(root).shards:
        for _key, files in read_shard(root / shard.path, exts=("json",)):
            meta = json.loads(files["json"])
            out[meta["source"]] = meta
    return out


def _rejects(root: Path) -> dict[str, tuple[str, str]]:
    report = json.loads((root / "report.json").read_text(encoding="utf-8"))
    return {r["source"]: (r["code"], r["reason"]) for r in report["rejected"]}


def test_one_image_spelled_two_ways_in_a_jsonl_is_stored_once(tmp_path: Path, image_bytes) -> None:
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "a.jpg").write_bytes(image_bytes(40, 40, seed=0))
    lines = [
        {"image_path": "images/../images/a.jpg", "long_caption": "first spelling"},
        {"image_path": "images/a.jpg", "long_caption": "second spelling"},
        {"image_path": "./images/./a.jpg", "long_caption": "third spelling"},
    ]
    (tmp_path / "list.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n", encoding="utf-8")
    result = convert_jsonl(tmp_path / "list.jsonl", tmp_path / "out")
    assert result.num_accepted == 1 and result.rejected_by_reason == {"duplicate_key": 2}
    assert set(_metas(tmp_path / "out")) == {"list.jsonl:1"}


def test_byte_order_marks_are_not_part_of_captions(tmp_path: Path, image_bytes) -> None:
    src = tmp_path / "src"
    src.mkdir()
    for name in ("txt", "json"):
        (src / f"{name}.jpg").write_bytes(image_bytes(40, 40, seed=len(name)))
    (src / "txt.txt").write_bytes(b"\xef\xbb\xbfa caption saved by Notepad")
    (src / "json.json").write_bytes(b"\xef\xbb\xbf" + json.dumps({"caption": "from json"}).encode())
    convert_folder(src, tmp_path / "out")
    metas = _metas(tmp_path / "out")
    assert metas["txt.jpg"]["caption"] == "a caption saved by Notepad"
    assert metas["json.jpg"]["caption"] == "from json"
    # a JSONL written with a BOM: its first line is a good record, not malformed JSON
    (tmp_path / "list.jsonl").write_bytes(
        b"\xef\xbb\xbf"
        + json.dumps({"image_path": "src/txt.jpg", "long_caption": "\ufeffbom inside"}).encode()
    )
    convert_jsonl(tmp_path / "list.jsonl", tmp_path / "out2")
    assert _metas(tmp_path / "out2")["list.jsonl:1"]["caption"] == "bom inside"


def test_invalid_utf8_captions_are_rejected_in_folder_and_jsonl_mode_with_the_reason(
    tmp_path: Path, image_bytes
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "good.jpg").write_bytes(image_bytes(40, 40, seed=1))
    (src / "good.txt").write_text("fine", encoding="utf-8")
    (src / "bad.jpg").write_bytes(image_bytes(40, 40, seed=2))
    (src / "bad.txt").write_bytes(b"caf\xe9 latin-1")
    convert_folder(src, tmp_path / "folder_out")
    code, reason = _rejects(tmp_path / "folder_out")["bad.jpg"]
    assert code == "invalid_utf8" and "bad.txt" in reason and "0xe9" in reason
    assert set(_metas(tmp_path / "folder_out")) == {"good.jpg"}

    good = json.dumps({"image_path": "src/good.jpg", "long_caption": "fine"}).encode()
    bad = b'{"image_path": "src/bad.jpg", "long_caption": "caf\xe9 latin-1"}'
    (tmp_path / "list.jsonl").write_bytes(good + b"\n" + bad + b"\n")
    result = convert_jsonl(tmp_path / "list.jsonl", tmp_path / "jsonl_out")
    assert result.rejected_by_reason == {"invalid_utf8": 1}
    code, reason = _rejects(tmp_path / "jsonl_out")["list.jsonl:2"]
    assert code == "invalid_utf8" and "0xe9" in reason and str(src / "bad.jpg") in reason
    assert set(_metas(tmp_path / "jsonl_out")) == {"list.jsonl:1"}


def test_every_jsonl_reject_names_its_image_path(tmp_path: Path, image_bytes) -> None:
    images = tmp_path / "images"
    images.mkdir()
    (images / "ok.jpg").write_bytes(image_bytes(40, 40, seed=0))
    (images / "broken.jpg").write_bytes(b"\xff\xd8\xff not really")
    (images / "tiny.jpg").write_bytes(image_bytes(4, 4, seed=1))
    lines = [
        {"image_path": "images/ok.jpg", "long_caption": "ok"},
        {"image_path": "images/broken.jpg", "long_caption": "broken"},
        {"image_path": "images/tiny.jpg", "long_caption": "tiny"},
        {"image_path": "images/ok.jpg", "long_caption": "again"},
        {"image_path": "images/ok.jpg", "long_caption": "  "},
        {"image_path": "images/missing.jpg", "long_caption": "missing"},
        {"image_path": "images/nocaption.jpg"},
    ]
    (tmp_path / "list.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n", encoding="utf-8")
    convert_jsonl(tmp_path / "list.jsonl", tmp_path / "out")
    rejects = _rejects(tmp_path / "out")
    assert {source: code for source, (code, _) in rejects.items()} == {
        "list.jsonl:2": "not_an_image",
        "list.jsonl:3": "too_small",
        "list.jsonl:4": "duplicate_key",
        "list.jsonl:5": "empty_caption",
        "list.jsonl:6": "unreadable_file",
        "list.jsonl:7": "missing_caption",
    }
    for source, (_, reason) in rejects.items():
        line = lines[int(source.rpartition(":")[2]) - 1]
        assert str(tmp_path / line["image_path"]) in reason, (source, reason)


def test_a_refused_resume_names_the_option_that_differs_and_only_that(tmp_path: Path, make_folder) -> None:
    src = make_folder(tmp_path / "src", 6)
    out = tmp_path / "out"
    convert_folder(src, out, ConvertConfig(max_samples_per_shard=2))
    with pytest.raises(ValueError, match=r"max_samples_per_shard \(--shard-size\): 2 before, 3 now") as info:
        convert_folder(src, out, ConvertConfig(max_samples_per_shard=3))
    message = str(info.value)
    assert "pn" not in message and "max_aspect" not in message and "jpeg_quality" not in message
    with pytest.raises(
        ValueError,
        match=r"min_side \(--min-side\): 8 before, 4 now; pn \(--pn\): None before, '0\.06M' now; resume",
    ):
        convert_folder(src, out, ConvertConfig(max_samples_per_shard=2, pn="0.06M", min_side=4))
    other = make_folder(tmp_path / "other", 2)
    with pytest.raises(ValueError, match=r"input \(the input path\): .*src' before, .*other' now"):
        convert_folder(other, out, ConvertConfig(max_samples_per_shard=2))


def test_a_second_conversion_into_a_busy_folder_is_refused_and_the_first_finishes_intact(
    tmp_path: Path, make_folder
) -> None:
    src = make_folder(tmp_path / "src", 20)
    out = tmp_path / "out"
    config = ConvertConfig(max_samples_per_shard=3)
    refused: list[str] = []

    def progress(n: int) -> None:
        if not refused and list(out.glob("*/*.tar.part")):  # the first run has open shards now
            with pytest.raises(ConvertLockedError, match="being written by another conversion") as info:
                convert_folder(src, out, config)
            refused.append(str(info.value))

    first = convert_folder(src, out, config, progress=progress)
    assert refused and str(out) in refused[0] and f"pid {os.getpid()}" in refused[0]
    reference = convert_folder(src, tmp_path / "ref", config)
    assert first.num_accepted == reference.num_accepted == 20
    assert _metas(out) == _metas(tmp_path / "ref")
    assert verify(out).ok
    assert convert_folder(src, out, config).num_resumed == 20  # the lock is released after a run
