"""The repository's examples/generate.py and examples/load_released_2b.py run end to end as scripts."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from bsq_tokenizer import BSQVAE, VAEConfig
from infinity_model import Infinity, InfinityConfig
from infinity_model.tiny import write_tiny_t5
from PIL import Image

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"


def run_example(script: str, *args: str, timeout: float = 300) -> str:
    """Run ``examples/<script>`` in its own process group (killed afterwards); returns stdout."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, str(EXAMPLES / script), *args]
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, start_new_session=True
    )
    try:
        out, err = proc.communicate(timeout=timeout)
        assert proc.returncode == 0, f"{script} failed:\n{err}"
        return out
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.mark.slow
def test_generate_example_writes_a_png_from_the_default_model_and_the_seed_fixes_it(tmp_path: Path) -> None:
    first, again = tmp_path / "a.png", tmp_path / "b.png"
    out = run_example("generate.py", "a photo of a red circle", "-o", str(first), "--seed", "3")
    run_example("generate.py", "a photo of a red circle", "--output", str(again), "--seed", "3")
    assert str(first) in out
    image = Image.open(first)
    assert image.mode == "RGB" and image.size == (128, 128)  # the default model's 0.016M budget
    assert image.tobytes() == Image.open(again).tobytes()


@pytest.mark.slow
def test_load_released_2b_example_runs_on_tiny_official_layout_files(tmp_path: Path) -> None:
    # Same file layouts as the release: a flat transformer state dict, {"vae": state dict}, a T5 folder.
    torch.manual_seed(0)
    config = InfinityConfig(
        depth=2, embed_dim=64, num_heads=4, d_vae=32, block_chunks=2, text_channels=32, text_maxlen=16, pool_heads=2
    )  # fmt: skip
    model = Infinity(config)
    model.init_weights(init_std=0.1, aln=0.5, aln_gamma=0.5, head_scale=1.0)
    torch.save(model.state_dict(), tmp_path / "infinity_2b_reg.pth")
    vae = BSQVAE(VAEConfig(codebook_dim=32, ch=32, ch_mult=(1, 1, 1, 1, 1), patch_size=16))
    torch.save({"vae": vae.state_dict()}, tmp_path / "infinity_vae_d32reg.pth")
    t5 = write_tiny_t5(tmp_path / "flan-t5-xl", d_model=32)
    output = tmp_path / "fox.png"
    out = run_example(
        "load_released_2b.py", "a red cat", "--model", str(tmp_path / "infinity_2b_reg.pth"),
        "--vae", str(tmp_path / "infinity_vae_d32reg.pth"), "--text-encoder", str(t5),
        "-o", str(output), "--pn", "0.016M", "--seed", "1", "--device", "cpu",
    )  # fmt: skip
    assert "format: official .pth" in out and "depth: 2" in out and "embed_dim: 64" in out
    assert "32-bit VAE" in out
    image = Image.open(output)
    assert image.mode == "RGB" and image.size == (128, 128)
