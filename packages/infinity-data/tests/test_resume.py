"""Resuming an interrupted conversion finishes the work with exactly the samples of an uninterrupted run."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from infinity_data import ConvertConfig, ShardIndex, convert_folder, read_shard, verify


class _Stop(KeyboardInterrupt):
    pass


def _interrupt_after(n: int):
    seen = 0

    def progress(step: int) -> None:
        nonlocal seen
        seen += step
        if seen >= n:
            raise _Stop

    return progress


def _contents(root: Path) -> tuple[dict[str, tuple[bytes, str]], dict[str, str]]:
    """(key -> (image bytes, json text)) over all shards, with a duplicate check; and source -> reject code."""
    samples: dict[str, tuple[bytes, str]] = {}
    for shard in ShardIndex.load(root).shards:
        for key, files in read_shard(root / shard.path):
            assert key not in samples, f"{key} written twice"
            samples[key] = (files.get("jpg", b""), files["json"].decode())
    report = json.loads((root / "report.json").read_text(encoding="utf-8"))
    rejects = {r["source"]: r["code"] for r in report["rejected"]}
    assert len(rejects) == report["num_rejected"]  # each reject listed once
    return samples, rejects


@pytest.fixture
def source(tmp_path: Path, make_folder) -> Path:
    src = make_folder(tmp_path / "src", 30)
    (src / "broken.jpg").write_bytes(b"\xff\xd8\xff garbage")
    (src / "broken.txt").write_text("broken")
    (src / "lonely.jpg").write_bytes((src / "img0000.jpg").read_bytes())  # no caption
    return src


@pytest.mark.parametrize("workers", [0, 2])
def test_resume_after_interrupts_gives_the_same_samples_as_one_run(
    tmp_path: Path, source: Path, workers: int
) -> None:
    config = ConvertConfig(max_samples_per_shard=3, workers=workers)
    reference = convert_folder(source, tmp_path / "ref", config)
    out = tmp_path / "out"
    for stop_at in (7, 19):
        with pytest.raises(_Stop):
            convert_folder(source, out, config, progress=_interrupt_after(stop_at))
    resumed = convert_folder(source, out, config)
    assert resumed.num_resumed > 0
    assert _contents(out) == _contents(tmp_path / "ref")
    assert resumed.num_accepted == reference.num_accepted == 30
    assert (
        resumed.rejected_by_reason
        == reference.rejected_by_reason
        == {"not_an_image": 1, "missing_caption": 1}
    )
    assert verify(out).ok
    again = convert_folder(source, out, config)  # a finished conversion re-run is a no-op
    assert again.num_resumed == 32 and _contents(out) == _contents(tmp_path / "ref")


def test_resume_refuses_different_options(tmp_path: Path, source: Path) -> None:
    out = tmp_path / "out"
    with pytest.raises(_Stop):
        convert_folder(source, out, ConvertConfig(), progress=_interrupt_after(3))
    with pytest.raises(ValueError, match="different inputs or options"):
        convert_folder(source, out, ConvertConfig(pn="0.06M"))


@pytest.mark.slow
def test_resume_after_a_hard_kill_drops_partial_tars_and_loses_nothing(tmp_path: Path, source: Path) -> None:
    """The process dies (os._exit) mid-shard: .part files and unjournaled tars are cleaned and redone."""
    out = tmp_path / "out"
    code = textwrap.dedent(
        f"""
        import os
        from infinity_data import ConvertConfig, convert_folder
        seen = 0
        def progress(n):
            global seen
            seen += n
            if seen == 17:
                os._exit(3)
        convert_folder({str(source)!r}, {str(out)!r}, ConvertConfig(max_samples_per_shard=4), progress=progress)
        """
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 3, proc.stderr
    assert list(out.glob("*/*.tar.part")), "the kill should have left partial shards behind"
    assert not (out / "index.json").exists()
    # a tar renamed just before the kill but never journaled must not survive either
    stray = out / "1.000" / "shard-000099.tar"
    stray.parent.mkdir(exist_ok=True)
    stray.write_bytes((next(out.glob("*/*.tar.part"))).read_bytes())
    convert_folder(source, out, ConvertConfig(max_samples_per_shard=4))
    convert_folder(source, tmp_path / "ref", ConvertConfig(max_samples_per_shard=4))
    assert not list(out.glob("*/*.tar.part")) and not stray.exists()
    assert _contents(out) == _contents(tmp_path / "ref")
    assert verify(out).ok


def test_converting_into_a_folder_with_foreign_shards_is_refused(tmp_path: Path, source: Path) -> None:
    foreign = tmp_path / "out" / "1.000"
    foreign.mkdir(parents=True)
    (foreign / "shard-000000.tar").write_bytes(b"")
    with pytest.raises(ValueError, match="convert into an empty"):
        convert_folder(source, tmp_path / "out")
    assert (foreign / "shard-000000.tar").exists()  # nothing of the user's was deleted
