"""`python -m infinity_data.cli` exits 0 after a successful command and non-zero after a failed one."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest


def run_module(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run ``python -m <args>`` in its own process group and kill the group afterwards, pass or fail."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=300)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


@pytest.mark.slow  # starts Python twice (imports torch): several seconds
def test_python_m_cli_exits_0_on_success_and_2_on_error(converted: Path, tmp_path: Path) -> None:
    done = run_module("infinity_data.cli", "verify", str(converted), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    failed = run_module("infinity_data.cli", "verify", str(tmp_path / "nowhere"), cwd=tmp_path)
    assert failed.returncode == 1  # verify's "dataset has errors" status
    assert "nowhere" in failed.stdout
