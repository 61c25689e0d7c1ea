"""Converters on each input kind, and bad input: every reject counted with its reason, no good sample lost."""

from __future__ import annotations

import io
import json
import tarfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from infinity_data import (
    ConvertConfig,
    ShardIndex,
    convert_folder,
    convert_img2dataset,
    convert_jsonl,
    read_shard,
    verify,
)
from infinity_data.convert import sample_key
from infinity_data.images import decode_rgb
from PIL import Image


def _samples(root: Path) -> dict[str, dict]:
    """key -> {"meta": ..., "image": bytes} over every shard of a converted dataset."""
    out = {}
    for shard in ShardIndex.load(root).shards:
        for key, files in read_shard(root / shard.path):
            assert key not in out, f"duplicate key {key}"
            image = next(files[e] for e in ("jpg", "png", "webp") if e in files)
            out[key] = {"meta": json.loads(files["json"]), "image": image}
    return out


def _write(path: Path, data: bytes | str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        path.write_text(data, encoding="utf-8")
    else:
        path.write_bytes(data)


def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def _bad_and_odd_folder(root: Path, image_bytes: Callable[..., bytes]) -> tuple[set[str], dict[str, str]]:
    """A folder mixing good, odd-but-good and bad files; returns (good sources, {bad source: reason code})."""
    good: set[str] = set()
    for i in range(4):
        _write(root / f"good{i}.jpg", image_bytes(64, 48, seed=i))
        _write(root / f"good{i}.txt", f"caption {i}\n")
        good.add(f"good{i}.jpg")
    _write(root / "café" / "图像 ü.jpg", image_bytes(48, 64, seed=10))  # unicode folder and file name
    _write(root / "café" / "图像 ü.txt", "unicode path")
    _write(root / "structured.png", image_bytes(50, 40, seed=11, fmt="PNG"))
    _write(
        root / "structured.json",
        json.dumps({"long_caption": "A long one. Two.", "text": "short", "long_caption_type": "InternVL"}),
    )
    _write(root / "cmyk.jpg", image_bytes(40, 40, seed=12, mode="CMYK"))
    _write(root / "cmyk.txt", "cmyk")
    sixteen = Image.fromarray((np.arange(48 * 40, dtype=np.uint16).reshape(40, 48) * 30).astype(np.uint16))
    _write(root / "deep.png", _png(sixteen))
    _write(root / "deep.txt", "16-bit grey")
    palette = Image.open(io.BytesIO(image_bytes(40, 40, seed=13, fmt="PNG"))).convert("P")
    palette.info["transparency"] = 0
    _write(root / "palette.png", _png(palette))
    _write(root / "palette.txt", "palette")
    rgba = Image.open(io.BytesIO(image_bytes(40, 60, seed=14, fmt="PNG"))).convert("RGBA")
    rgba.putalpha(128)
    _write(root / "alpha.png", _png(rgba))
    _write(root / "alpha.txt", "alpha")
    _write(root / "grey_alpha.png", _png(Image.new("LA", (30, 30), (90, 0))))
    _write(root / "grey_alpha.txt", "fully transparent grey: white after compositing")
    _write(root / "old.bmp", image_bytes(32, 32, seed=15, fmt="BMP"))
    _write(root / "old.txt", "a bmp file, re-encoded as png")
    good |= {
        "café/图像 ü.jpg",
        "structured.png",
        "cmyk.jpg",
        "deep.png",
        "palette.png",
        "alpha.png",
        "grey_alpha.png",
        "old.bmp",
    }

    bad: dict[str, str] = {}
    whole = image_bytes(64, 64, seed=20)
    _write(root / "truncated.jpg", whole[: len(whole) // 2])
    _write(root / "truncated.txt", "cut in half")
    bad["truncated.jpg"] = "corrupt_image"
    _write(root / "zero.jpg", b"")
    _write(root / "zero.txt", "empty file")
    bad["zero.jpg"] = "empty_file"
    _write(root / "notes.png", "this is a text file with an image extension")
    _write(root / "notes.txt", "not an image")
    bad["notes.png"] = "not_an_image"
    _write(root / "strip.jpg", image_bytes(20, 200, seed=21))  # 1:10
    _write(root / "strip.txt", "too thin")
    bad["strip.jpg"] = "extreme_aspect"
    _write(root / "nocaption.jpg", image_bytes(40, 40, seed=22))
    bad["nocaption.jpg"] = "missing_caption"
    _write(root / "blank.jpg", image_bytes(40, 40, seed=23))
    _write(root / "blank.txt", "  \n ")
    bad["blank.jpg"] = "empty_caption"
    _write(root / "badjson.jpg", image_bytes(40, 40, seed=24))
    _write(root / "badjson.json", "{oops")
    bad["badjson.jpg"] = "bad_caption_file"
    return good, bad


def test_folder_with_bad_inputs_keeps_every_good_sample_and_reports_each_reject(
    tmp_path: Path, image_bytes
) -> None:
    good, bad = _bad_and_odd_folder(tmp_path / "src", image_bytes)
    out = tmp_path / "out"
    result = convert_folder(tmp_path / "src", out, ConvertConfig(max_samples_per_shard=3))
    samples = _samples(out)
    assert {s["meta"]["source"] for s in samples.values()} == good
    assert set(samples) == {sample_key(g) for g in good}  # keys are derived from the relative path
    report = json.loads(result.report_path.read_text(encoding="utf-8"))
    assert {r["source"]: r["code"] for r in report["rejected"]} == bad
    assert report["num_rejected"] == len(bad) == result.num_rejected
    assert sum(report["rejected_by_reason"].values()) == len(bad)
    assert all(r["reason"] for r in report["rejected"])
    assert verify(out).ok

    by_source = {s["meta"]["source"]: s for s in samples.values()}
    for source, sample in by_source.items():
        rgb = decode_rgb(sample["image"])
        assert rgb.mode == "RGB"
        assert rgb.size == (sample["meta"]["width"], sample["meta"]["height"]), source
    meta = by_source["structured.png"]["meta"]
    assert (meta["caption"], meta["short_caption"], meta["caption_type"]) == (
        "A long one. Two.",
        "short",
        "InternVL",
    )
    assert by_source["good0.jpg"]["meta"]["caption"] == "caption 0"
    assert by_source["good0.jpg"]["meta"]["caption_type"] == "user_prompt"
    assert by_source["good0.jpg"]["image"] == (tmp_path / "src" / "good0.jpg").read_bytes()  # stored as is
    assert by_source["old.bmp"]["meta"]["format"] == "BMP"
    assert np.asarray(decode_rgb(by_source["grey_alpha.png"]["image"])).min() == 255  # alpha 0 on white
    deep = np.asarray(decode_rgb(by_source["deep.png"]["image"]))[..., 0]
    assert deep.max() > 100  # 16-bit data mapped into 8 bits, not clipped to white/black


def test_jsonl_reference_format_with_malformed_lines_and_duplicates(tmp_path: Path, image_bytes) -> None:
    images = tmp_path / "images"
    for i in range(5):
        _write(images / f"{i}.jpg", image_bytes(64, 48, seed=i))
    lines = [
        {
            "image_path": "images/0.jpg",
            "h_div_w": 0.75,
            "long_caption": "Zero. Long.",
            "long_caption_type": "caption-InternVL2.0",
            "text": "zero",
            "short_caption_type": "short",
        },
        {"image_path": str(images / "1.jpg"), "h_div_w": 0.75, "long_caption": "one"},
        "{this is not json",
        [1, 2, 3],
        {"h_div_w": 1.0, "long_caption": "no path"},
        {"image_path": "images/2.jpg", "h_div_w": 0.75},
        {"image_path": "images/0.jpg", "h_div_w": 0.75, "long_caption": "duplicate of line 1"},
        {"image_path": "images/missing.jpg", "h_div_w": 1.0, "long_caption": "file does not exist"},
        {"image_path": "images/3.jpg", "h_div_w": 0.75, "long_caption": "three"},
        {"image_path": "images/4.jpg", "h_div_w": 0.75, "long_caption": ""},
    ]
    text = "\n".join(line if isinstance(line, str) else json.dumps(line) for line in lines) + "\n\n"
    _write(tmp_path / "0.750_000000010.jsonl", text)
    out = tmp_path / "out"
    result = convert_jsonl(tmp_path / "0.750_000000010.jsonl", out)
    samples = {s["meta"]["source"]: s["meta"] for s in _samples(out).values()}
    name = "0.750_000000010.jsonl"
    assert set(samples) == {f"{name}:1", f"{name}:2", f"{name}:9"}
    first = samples[f"{name}:1"]
    assert (first["caption"], first["short_caption"], first["caption_type"], first["short_caption_type"]) == (
        "Zero. Long.",
        "zero",
        "caption-InternVL2.0",
        "short",
    )
    assert first["declared_h_div_w"] == 0.75 and first["template"] == 0.75
    assert samples[f"{name}:2"]["caption_type"] == "user_prompt"
    report = json.loads(result.report_path.read_text(encoding="utf-8"))
    assert {r["source"]: r["code"] for r in report["rejected"]} == {
        f"{name}:3": "malformed_json",
        f"{name}:4": "malformed_json",
        f"{name}:5": "missing_field",
        f"{name}:6": "missing_caption",
        f"{name}:7": "duplicate_key",
        f"{name}:8": "unreadable_file",
        f"{name}:10": "empty_caption",
    }
    assert verify(out).ok


def _img2dataset_tar(path: Path, keys: list[str], image_bytes) -> None:
    with tarfile.open(path, "w") as tar:
        for i, key in enumerate(keys):
            meta = {
                "key": key,
                "caption": f"meta caption {key}",
                "url": f"http://example.invalid/{key}.jpg",
                "status": "success",
            }
            for ext, payload in (
                ("jpg", image_bytes(48 + i, 48, seed=i)),
                ("txt", f"caption {key}".encode()),
                ("json", json.dumps(meta).encode()),
            ):
                info = tarfile.TarInfo(f"{key}.{ext}")
                info.size = len(payload)
                tar.addfile(info, io.BytesIO(payload))


def test_img2dataset_tar_and_parquet_output(tmp_path: Path, image_bytes) -> None:
    src = tmp_path / "i2d"
    src.mkdir()
    _img2dataset_tar(src / "00000.tar", ["000000000", "000000001", "000000002"], image_bytes)
    _img2dataset_tar(src / "00001.tar", ["000010000", "000000001"], image_bytes)  # a repeated key
    pq.write_table(pa.table({"key": ["000000000"], "status": ["success"]}), src / "00000.parquet")
    out = tmp_path / "out"
    result = convert_img2dataset(src, out)
    metas = {m["meta"]["source"]: m["meta"] for m in _samples(out).values()}
    assert set(metas) == {
        "00000.tar:000000000",
        "00000.tar:000000001",
        "00000.tar:000000002",
        "00001.tar:000010000",
    }
    assert (
        metas["00000.tar:000000002"]["caption"] == "caption 000000002"
    )  # the .txt wins over json["caption"]
    assert metas["00000.tar:000000002"]["url"].endswith("000000002.jpg")
    assert result.rejected_by_reason == {"duplicate_key": 1}
    assert verify(out).ok


@pytest.mark.parametrize("table_kind", ["parquet", "csv"])
def test_img2dataset_table_with_paths(tmp_path: Path, image_bytes, table_kind: str) -> None:
    for i in range(3):
        _write(tmp_path / "files" / f"{i}.jpg", image_bytes(40, 40 + 10 * i, seed=i))
    paths = ["files/0.jpg", "files/1.jpg", "files/2.jpg", ""]
    captions = ["zero", "one", "", "no path"]
    if table_kind == "parquet":
        table_path = tmp_path / "list.parquet"
        pq.write_table(pa.table({"filepath": paths, "caption": captions}), table_path)
    else:
        table_path = tmp_path / "list.csv"
        rows = "\n".join(f"{p},{c}" for p, c in zip(paths, captions, strict=True))
        _write(table_path, "filepath,caption\n" + rows + "\n")
    out = tmp_path / "out"
    result = convert_img2dataset(table_path, out)
    metas = {m["meta"]["source"]: m["meta"] for m in _samples(out).values()}
    assert {m["caption"] for m in metas.values()} == {"zero", "one"}
    assert result.rejected_by_reason == {"empty_caption": 1, "missing_field": 1}


def test_unknown_table_columns_raise_naming_the_file_and_columns(tmp_path: Path) -> None:
    table_path = tmp_path / "weird.csv"
    _write(table_path, "a,b\n1,2\n")
    with pytest.raises(ValueError, match=r"weird\.csv.*columns are \['a', 'b'\]"):
        convert_img2dataset(table_path, tmp_path / "out")


def test_parallel_workers_produce_the_same_samples_as_in_process(tmp_path: Path, make_folder) -> None:
    src = make_folder(tmp_path / "src", 24)
    serial = convert_folder(src, tmp_path / "serial", ConvertConfig(max_samples_per_shard=4))
    parallel = convert_folder(src, tmp_path / "parallel", ConvertConfig(max_samples_per_shard=4, workers=2))
    assert serial.num_accepted == parallel.num_accepted == 24
    a, b = _samples(tmp_path / "serial"), _samples(tmp_path / "parallel")
    assert a == b
    # input order is kept, so even the shard files are byte-identical
    for shard in serial.index.shards:
        assert (tmp_path / "serial" / shard.path).read_bytes() == (
            tmp_path / "parallel" / shard.path
        ).read_bytes()


def test_a_file_that_kills_its_worker_process_is_rejected_and_the_rest_converted(
    tmp_path: Path, make_folder, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Stands in for a decoder segfault: the workers' chunk function dies on one file."""
    import infinity_data.convert as convert_module

    monkeypatch.syspath_prepend(str(Path(__file__).parent))
    import _worker_probes

    src = make_folder(tmp_path / "src", 30)
    monkeypatch.setattr(convert_module, "_process_chunk", _worker_probes.crash_on_poison)
    result = convert_folder(src, tmp_path / "out", ConvertConfig(workers=2, max_samples_per_shard=4))
    assert result.num_accepted == 29
    assert result.rejected_by_reason == {"worker_crash": 1}
    report = json.loads(result.report_path.read_text(encoding="utf-8"))
    assert [r["source"] for r in report["rejected"]] == [_worker_probes.POISON]
    assert verify(tmp_path / "out").ok


def test_a_broken_pool_with_a_worker_its_break_did_not_stop_still_shuts_down(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """CPython < 3.14 can leave a worker that ``terminate_broken`` did not signal (spawned while the pool
    broke), then wait for it forever; stood in for by a busy worker whose terminate() does nothing."""
    import os
    import time
    from concurrent.futures.process import BrokenProcessPool

    from infinity_data.convert import _shutdown
    from infinity_data.processes import worker_pool

    monkeypatch.syspath_prepend(str(Path(__file__).parent))
    import _worker_probes

    pool = worker_pool(2)
    workers = dict(pool._processes)  # type: ignore[attr-defined]  # filled as workers start
    marker = tmp_path / "busy"
    try:
        pool.submit(_worker_probes.sleep_after_marker, str(marker), 600.0)
        for _ in range(12000):  # bounded by count; the worker creates the file as soon as it runs the task
            if marker.exists():
                break
            time.sleep(0.05)
        assert marker.exists(), "the busy worker never started"
        workers = dict(pool._processes)  # type: ignore[attr-defined]
        (stray,) = workers.values()
        stray.terminate = lambda: None  # type: ignore[method-assign]  # the break will not stop it
        dying = pool.submit(os._exit, 1)  # a second worker, which dies: the pool breaks
        for _ in range(12000):  # bounded by count
            workers = dict(pool._processes)  # type: ignore[attr-defined]
            if len(workers) == 2 and all(p.exitcode is not None for p in workers.values() if p is not stray):
                break
            time.sleep(0.05)
        # CPython's manager thread watches the workers it knew when it went to sleep: wake it to see the death
        pool.submit(os.getpid)
        with pytest.raises(BrokenProcessPool):
            dying.result()
        _shutdown(pool, cancel=True)  # without the kill this waits out the 600 s sleep
        assert stray.exitcode == -9  # killed, not left to finish its task
    finally:
        for process in workers.values():
            if process.exitcode is None:
                process.kill()
