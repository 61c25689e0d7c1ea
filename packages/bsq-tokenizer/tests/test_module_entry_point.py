"""`python -m bsq_tokenizer.cli` exits 0 after a successful command and 2 after a failed one."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from bsq_tokenizer import BSQVAE, VAEConfig, save_vae


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
    checkpoint = save_vae(
        BSQVAE(VAEConfig(codebook_dim=8, ch=32, ch_mult=(1, 1, 2), patch_size=4)), tmp_path / "tiny_vae"
    )
    done = run_module("bsq_tokenizer.cli", "info", str(checkpoint), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "codebook_dim" in done.stdout or "8" in done.stdout
    failed = run_module("bsq_tokenizer.cli", "info", str(tmp_path / "missing.safetensors"), cwd=tmp_path)
    assert failed.returncode == 2
    assert "missing.safetensors" in failed.stderr
