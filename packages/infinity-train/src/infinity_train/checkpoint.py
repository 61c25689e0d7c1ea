"""Run-directory checkpoints in DeepSpeed's layout, published atomically.

Layout (``run_dir/checkpoints``)::

    latest                      # tag of the newest COMPLETE checkpoint (written last, via os.replace)
    step00000100/               # DeepSpeed's files (model/optimizer shards of every rank)
        run_config.json         # the typed run config of the run that wrote it
        trainer_state_rank{r}.pt  # step counters, RNG states, loader position of rank r
        ema.safetensors         # EMA weights (when enabled)
        extra/                  # extra engines (the tokenizer's discriminator), DeepSpeed layout
        COMPLETE                # marker written after every rank finished
A crash during a write leaves ``latest`` pointing at the previous complete checkpoint.
"""

from __future__ import annotations

import logging
import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .config import RunConfig, save_run_config

__all__ = [
    "capture_rng",
    "checkpoint_root",
    "find_resume_tag",
    "load_strict",
    "load_trainer_state",
    "publish_checkpoint",
    "read_torch_file",
    "restore_rng",
    "save_trainer_state",
    "step_tag",
]

log = logging.getLogger(__name__)

COMPLETE = "COMPLETE"


def read_torch_file(path: Path) -> Any:
    """The package's one ``torch.load``: the run's own ``.pt`` files, weights only, memory-mapped.

    Official checkpoints are not read here: they go through ``infinity_model.load_official_infinity`` and
    ``bsq_tokenizer.load_official_vae``, which check them with their ``check_state_dict`` first.
    """
    return torch.load(path, map_location="cpu", weights_only=True, mmap=True)


def load_strict(model: torch.nn.Module, state: dict[str, torch.Tensor], *, assign: bool = False) -> None:
    """The package's one strict state-dict load: every key and shape must match (torch's strict comparison)."""
    model.load_state_dict(state, strict=True, assign=assign)


def checkpoint_root(run_dir: str | Path) -> Path:
    """The folder of a run's checkpoints (``run_dir/checkpoints``, laid out as the module docstring says)."""
    return Path(run_dir) / "checkpoints"


def step_tag(step: int) -> str:
    return f"step{step:08d}"


def capture_rng(generator: torch.Generator | None = None) -> dict[str, Any]:
    """Every RNG that can influence training (global torch/CUDA, numpy, python, and the trainer's own)."""
    np_state = np.random.get_state()  # the legacy 5-tuple: the global RandomState is always MT19937
    if not isinstance(np_state, tuple):
        raise TypeError(
            f"np.random.get_state() returned {type(np_state).__name__}, expected the legacy tuple"
        )
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "kind": np_state[0],
            "keys": torch.from_numpy(np_state[1].astype(np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "gauss": float(np_state[4]),
        },
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    if generator is not None:
        state["trainer"] = generator.get_state()
    return state


def restore_rng(state: dict[str, Any], generator: torch.Generator | None = None) -> None:
    torch.set_rng_state(state["torch"])
    np_state = state["numpy"]
    np.random.set_state(
        (
            np_state["kind"],
            np_state["keys"].numpy().astype(np.uint32),
            np_state["pos"],
            np_state["has_gauss"],
            np_state["gauss"],
        )
    )
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    if generator is not None:
        generator.set_state(state["trainer"])


def save_trainer_state(ckpt_dir: Path, rank: int, state: dict[str, Any]) -> None:
    """Per-rank counters/RNG/loader state (rank-specific, so not in DeepSpeed's rank-0 client state)."""
    tmp = ckpt_dir / f".trainer_state_rank{rank}.pt.tmp"
    torch.save(state, tmp)
    os.replace(tmp, ckpt_dir / f"trainer_state_rank{rank}.pt")


def load_trainer_state(ckpt_dir: Path, rank: int, world_size: int) -> dict[str, Any]:
    path = ckpt_dir / f"trainer_state_rank{rank}.pt"
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} is missing: the checkpoint {ckpt_dir} was written by a run with a different number of "
            f"processes (this run has {world_size}); resume with the same world size"
        )
    return read_torch_file(path)


def publish_checkpoint(root: Path, tag: str, config: RunConfig, *, is_main: bool, keep_last: int) -> None:
    """After every rank has written ``root/tag``: mark it complete, point ``latest`` at it, prune old ones.

    Must be called on every rank (it holds two barriers)."""
    torch.distributed.barrier()
    if is_main:
        ckpt_dir = root / tag
        save_run_config(config, ckpt_dir / "run_config.json")
        (ckpt_dir / COMPLETE).write_text(tag + "\n")
        tmp = root / ".latest.tmp"
        tmp.write_text(tag)
        os.replace(tmp, root / "latest")
        if keep_last > 0:
            done = sorted(p for p in root.iterdir() if p.is_dir() and (p / COMPLETE).is_file())
            for old in done[:-keep_last]:
                if old.name != tag:
                    shutil.rmtree(old, ignore_errors=True)
        log.info("checkpoint %s published", ckpt_dir)
    torch.distributed.barrier()


def find_resume_tag(root: Path) -> str | None:
    """The tag named by ``latest`` if it is complete (None when the run directory has no checkpoint)."""
    latest = root / "latest"
    if not latest.is_file():
        return None
    tag = latest.read_text().strip()
    if not (root / tag / COMPLETE).is_file():
        raise FileNotFoundError(
            f"{latest} names '{tag}' but {root / tag / COMPLETE} is missing; the checkpoint is incomplete — "
            "point 'latest' at a complete step directory or remove it to start fresh"
        )
    return tag
