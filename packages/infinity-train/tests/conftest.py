"""Tiny assets shared by the training tests: a generated shapes dataset, a random tiny T5, a random tiny VAE."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).parent
SCENARIOS = HERE / "train_scenarios.py"
# train_scenarios.py holds the tiny configs shared with the subprocess scenarios
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))


@pytest.fixture(scope="session")
def assets(tmp_path_factory) -> dict[str, str]:
    import torch
    from bsq_tokenizer import BSQVAE, save_vae
    from infinity_data import ConvertConfig, convert_folder
    from infinity_data.shapes import write_folder
    from infinity_model.tiny import write_tiny_t5

    root = tmp_path_factory.mktemp("assets")
    images = write_folder(root / "images", count=24, seed=0, long_side=64, ratios=(1.0,))
    convert_folder(images, root / "shards", ConvertConfig())
    val_images = write_folder(root / "val_images", count=8, seed=1, long_side=64, ratios=(1.0,))
    convert_folder(val_images, root / "val_shards", ConvertConfig())
    write_tiny_t5(root / "t5", d_model=32)
    torch.manual_seed(0)
    from train_scenarios import tiny_vae_config

    save_vae(BSQVAE(tiny_vae_config()), root / "vae")
    return {
        "shards": str(root / "shards"),
        "val_shards": str(root / "val_shards"),
        "t5": str(root / "t5"),
        "vae": str(root / "vae"),
    }


@pytest.fixture(scope="session")
def run_scenario():
    """``run_scenario(name, workdir, assets)`` runs ``train_scenarios.py`` in a fresh interpreter."""
    return _run_scenario


def _run_scenario(name: str, workdir: Path, assets: dict[str, str]) -> dict:
    """Run ``train_scenarios.py name`` in a fresh interpreter (DeepSpeed keeps process-global state)."""
    workdir.mkdir(parents=True, exist_ok=True)
    from train_procs import child_env, run_group

    cmd = [sys.executable, str(SCENARIOS), name, str(workdir), json.dumps(assets)]
    code, output = run_group(cmd, child_env(), workdir / f"{name}.log")
    if code != 0:
        raise AssertionError(f"scenario {name} failed ({code}):\n{output[-8000:]}")
    return json.loads((workdir / f"{name}.json").read_text())
