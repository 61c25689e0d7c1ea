"""`python -m infinity_model.cli` exits 0 after a successful command and 2 after a failed one."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from infinity_model import Infinity, InfinityConfig


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
def test_python_m_cli_exits_0_on_success_and_2_on_error(tmp_path: Path) -> None:
    torch.manual_seed(0)
    checkpoint = tmp_path / "tiny.pth"
    config = InfinityConfig(
        depth=2, embed_dim=64, num_heads=4, d_vae=8, text_channels=32, text_maxlen=16, pool_heads=2
    )
    torch.save(Infinity(config).state_dict(), checkpoint)
    done = run_module("infinity_model.cli", "info", str(checkpoint), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "parameters:" in done.stdout
    failed = run_module("infinity_model.cli", "info", str(tmp_path / "missing.pth"), cwd=tmp_path)
    assert failed.returncode == 2
    assert "missing.pth" in failed.stderr
