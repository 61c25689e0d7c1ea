"""Processes started by the infinity-train tests: each in a session of its own, the whole tree killed at the end.

Imported by ``conftest.py`` and the tests as ``train_procs`` (this folder is on ``sys.path``).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

__all__ = ["child_env", "descendants", "kill_tree", "process_group", "run_group"]


def descendants(pid: int) -> list[int]:
    """Every live descendant of ``pid`` (Linux ``/proc``; empty elsewhere)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(stat.parent.name))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def kill_tree(proc: subprocess.Popen) -> None:
    """SIGKILL ``proc``, its process group and every descendant, then reap it.

    The group covers the ``deepspeed`` launcher's ranks and compilers; the descendants cover torchrun's workers,
    which torch starts in sessions of their own. Collected before the kill, while they are still children.
    """
    pids = descendants(proc.pid)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    proc.wait()


@contextlib.contextmanager
def process_group(cmd: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen]:
    """Start ``cmd`` in a session of its own, its stdout and stderr going to ``log`` (a file, so a full pipe can
    never block it); whatever happens in the ``with`` body, the whole tree is killed when it ends."""
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        yield proc
    finally:
        kill_tree(proc)


def run_group(cmd: list[str], env: dict[str, str], log: Path, hang_guard_s: float = 1800) -> tuple[int, str]:
    """Run ``cmd`` to its end (see :func:`process_group`); returns (exit code, output).

    The runs are bounded by their step counts; ``hang_guard_s`` only stops a hung run (a defect) from holding
    the test session forever, far above any normal duration, and is never used to time anything.
    """
    with process_group(cmd, env, log) as proc:
        try:
            code = proc.wait(timeout=hang_guard_s)
        except subprocess.TimeoutExpired:
            code = None
    output = log.read_text(errors="replace")
    if code is None:
        raise AssertionError(f"{cmd[:6]} hung (no exit in {hang_guard_s:.0f} s); output:\n{output[-6000:]}")
    return code, output


def child_env() -> dict[str, str]:
    """Environment of the training subprocesses: one thread per rank, reproducible MKL, cached bytecode."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", "DS_BUILD_OPS": "0"}
    # MKL's GEMM results can depend on memory alignment, which differs between processes; its conditional
    # numerical reproducibility mode makes a resumed process compute bit-identical losses.
    env["MKL_CBWR"] = "COMPATIBLE"
    # Each run is a fresh interpreter importing torch, DeepSpeed and transformers: cache their bytecode
    # outside the repository so only the first one pays for compiling thousands of modules.
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = str(Path(tempfile.gettempdir()) / "infinity-train-pycache")
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    return env
