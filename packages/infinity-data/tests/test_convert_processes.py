"""Converter and verifier worker processes: started without forking the process that uses them, and gone
when it is killed with SIGKILL; the conversion then resumes to exactly the samples of an uninterrupted run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from contextlib import suppress
from pathlib import Path

import pytest
from infinity_data import ConvertConfig, ShardIndex, convert_folder, read_shard, verify

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc (Linux)")


def _stat(pid: int) -> tuple[str, int] | None:
    """(state, parent pid) of a process from /proc, or None when it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    fields = text.rpartition(")")[2].split()
    return fields[0], int(fields[1])


def _descendants(root: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (stat := _stat(int(entry.name))) is not None:
            children.setdefault(stat[1], []).append(int(entry.name))
    found, todo = set(), [root]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def _running(pid: int) -> bool:
    stat = _stat(pid)
    return stat is not None and stat[0] != "Z"  # a zombie has exited; only its parent has not reaped it


def _samples(root: Path) -> dict[str, bytes]:
    out = {}
    for shard in ShardIndex.load(root).shards:
        for key, files in read_shard(root / shard.path):
            assert key not in out, f"{key} written twice"
            out[key] = files["json"] + files["jpg"]
    return out


_BLOCKING_CONVERT = textwrap.dedent(
    """
    import sys, threading
    from pathlib import Path
    from infinity_data import ConvertConfig, convert_folder

    src, out, ready = sys.argv[1:4]
    seen = 0

    def progress(n):
        global seen
        seen += n
        if seen == 30:  # both workers are busy or idle now: tell the test, then hang until killed
            Path(ready).write_text("ready")
            threading.Event().wait()

    convert_folder(src, out, ConvertConfig(workers=2, max_samples_per_shard=2), progress=progress)
    """
)


_BLOCKING_VERIFY = textwrap.dedent(
    """
    import sys, threading
    from pathlib import Path
    from infinity_data import verify

    root, ready = sys.argv[1:3]

    def progress(n):
        Path(ready).write_text("ready")
        threading.Event().wait()

    verify(root, workers=2, progress=progress)
    """
)


def _kill_and_wait_for_the_pool(code: str, args: list[str], ready: Path) -> None:
    """Run ``code`` in its own session until it writes ``ready``, SIGKILL it, then wait until every process
    it started has exited (failing if one is still running after a generous bound)."""
    proc = subprocess.Popen(
        [sys.executable, "-c", code, *args, str(ready)],
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        for _ in range(1200):  # the child imports torch first; stop early if it fails
            if ready.exists() or proc.poll() is not None:
                break
            time.sleep(0.25)
        assert ready.exists(), f"the child never got going: {proc.stderr.read() if proc.stderr else ''}"
        pool = _descendants(proc.pid)
        assert len(pool) >= 2, f"expected worker processes under {proc.pid}, found {pool}"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        alive = set(pool)
        for _ in range(600):  # each worker exits within about a second; poll until all are gone
            alive = {pid for pid in alive if _running(pid)}
            if not alive:
                break
            time.sleep(0.1)
        assert not alive, f"worker processes {sorted(alive)} outlived the killed process"
    finally:
        with suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()


@pytest.mark.slow
def test_sigkill_of_the_converter_takes_its_workers_down_and_the_run_resumes_exactly(
    tmp_path: Path, make_folder
) -> None:
    src = make_folder(tmp_path / "src", 40)
    out = tmp_path / "out"
    _kill_and_wait_for_the_pool(_BLOCKING_CONVERT, [str(src), str(out)], tmp_path / "ready")
    config = ConvertConfig(workers=2, max_samples_per_shard=2)
    resumed = convert_folder(src, out, config)  # the dead run's lock went with it
    reference = convert_folder(src, tmp_path / "ref", config)
    assert resumed.num_resumed > 0 and resumed.num_accepted == reference.num_accepted == 40
    assert _samples(out) == _samples(tmp_path / "ref")
    assert verify(out).ok


@pytest.mark.slow
def test_sigkill_of_verify_takes_its_workers_down(tmp_path: Path, make_folder) -> None:
    src = make_folder(tmp_path / "src", 20)
    convert_folder(src, tmp_path / "out", ConvertConfig(max_samples_per_shard=2))
    _kill_and_wait_for_the_pool(_BLOCKING_VERIFY, [str(tmp_path / "out")], tmp_path / "ready")


def test_workers_do_not_inherit_the_converting_process_memory(
    tmp_path: Path, make_folder, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A forked worker would copy the parent's memory, including any lock that the progress bar's thread
    held at that instant; a fork-server worker starts from a fresh import."""
    import infinity_data.convert as convert_module

    monkeypatch.syspath_prepend(str(Path(__file__).parent))
    import _worker_probes

    monkeypatch.setattr(_worker_probes, "MARKER", "changed in the converting process")
    monkeypatch.setattr(convert_module, "_process_chunk", _worker_probes.report_marker)
    src = make_folder(tmp_path / "src", 24)
    result = convert_folder(src, tmp_path / "out", ConvertConfig(workers=2))
    assert result.num_accepted == 24
    reports = [json.loads(p.read_text(encoding="utf-8")) for p in (tmp_path / "probes").glob("*.json")]
    assert reports and all(r == {"marker": "fresh import"} for r in reports)
