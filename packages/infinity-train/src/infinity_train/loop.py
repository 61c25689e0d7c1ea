"""The training loop shared by the transformer and tokenizer trainers.

A subclass owns its DeepSpeed engines (the first one is the "main" engine, saved in DeepSpeed's standard
layout under ``run_dir/checkpoints``; others go to ``<tag>/extra/<name>``) and implements one micro step. The
loop handles accumulation boundaries, the LR/WD schedule, non-finite losses, logging, validation, checkpoints
and automatic resume (model, optimizer, EMA, step counters, every RNG and the loader position).
"""

from __future__ import annotations

import logging
import math
import time
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import torch

from .checkpoint import (
    capture_rng,
    checkpoint_root,
    find_resume_tag,
    load_trainer_state,
    publish_checkpoint,
    restore_rng,
    save_trainer_state,
    step_tag,
)
from .config import RunConfig, config_to_dict
from .distributed import DistInfo
from .metrics import MetricLogger

__all__ = ["NonFiniteGradientError", "NonFiniteLossError", "TrainLoop"]

log = logging.getLogger(__name__)


class NonFiniteLossError(RuntimeError):
    """Too many consecutive non-finite losses; the run stops instead of training on garbage."""


class NonFiniteGradientError(RuntimeError):
    """Gradients were non-finite although the loss was finite, and the update cannot be skipped safely."""


class TrainLoop(ABC):
    """Subclasses set ``self.engines`` (name → DeepSpeed engine, main first) and implement the hooks."""

    engines: dict[str, Any]

    def __init__(self, config: RunConfig, dist: DistInfo, loader: Any, val_loader: Any | None = None) -> None:
        self.config = config
        self.dist = dist
        self.loader = loader
        self.val_loader = val_loader
        self.run_dir = Path(config.run_dir)
        self.ckpt_root = checkpoint_root(self.run_dir)
        self.step = 0  # optimizer steps done
        self.micro_count = 0  # micro batches consumed (including skipped ones)
        self.samples_seen = 0
        self.skipped_total = 0
        self.skipped_in_a_row = 0
        self.generator = torch.Generator().manual_seed(config.seed * 1_000_003 + dist.rank)
        self._iterator: Iterator | None = None
        self.metrics = MetricLogger(self.run_dir, config.logging, dist.is_main, config_to_dict(config))
        self.history: list[dict[str, Any]] = []  # logged train records (handy for tests and notebooks)

    # --------------------------------------------------------------------------------------- hooks
    @abstractmethod
    def micro_step(self, batch: dict[str, Any], it: int) -> dict[str, Any] | None:
        """Forward + backward + ``engine.step()`` of every engine for one micro batch at optimizer step ``it``.

        Return metrics (with a finite float "loss"), or None when the loss was non-finite on any rank (nothing
        was stepped). Must keep all ranks in lock step."""

    @abstractmethod
    def validation_metrics(self, batches: Iterable[dict[str, Any]]) -> dict[str, float]:
        """Mean validation metrics over ``batches`` (reduced over ranks)."""

    def extra_state(self) -> dict[str, Any]:
        """Rank-local extra state to checkpoint (e.g. EMA is saved separately by subclasses)."""
        return {}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        del state

    def save_extra_files(self, ckpt_dir: Path) -> None:
        """Rank 0 writes files beside the checkpoint (EMA weights, model config)."""
        del ckpt_dir

    def load_extra_files(self, ckpt_dir: Path) -> None:
        del ckpt_dir

    # ----------------------------------------------------------------------------------- helpers
    @property
    def main_engine(self) -> Any:
        return next(iter(self.engines.values()))

    def all_finite(self, loss: torch.Tensor) -> bool:
        """True iff the loss is finite on every rank (one tiny all-reduce)."""
        flag = torch.tensor(
            [0.0 if bool(torch.isfinite(loss.detach()).all()) else 1.0], device=self.dist.device
        )
        if self.dist.world_size > 1:
            torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
        return flag.item() == 0.0

    def optimizer_step(self, engine: Any, name: str = "model") -> None:
        """``engine.step()`` with a guard against non-finite gradients (the loss check cannot see them).

        ZeRO-0: checked before the update (all ranks agree); ZeRO-1/2: DeepSpeed itself skips an update whose
        gradient norm is not finite — logged and counted here; ZeRO-3: the update has happened, so the run
        stops (resume from the last checkpoint). Raises :class:`NonFiniteGradientError` where it cannot skip.
        """
        boundary = engine.is_gradient_accumulation_boundary()
        stage = engine.zero_optimization_stage()
        if boundary and stage == 0:
            bad = any(
                p.grad is not None and not bool(torch.isfinite(p.grad).all())
                for p in engine.module.parameters()
            )
            if not self.all_finite(torch.tensor(float("nan") if bad else 0.0)):
                raise NonFiniteGradientError(
                    f"non-finite gradients of '{name}' at step {self.step} with a finite loss (ZeRO-0); nothing was "
                    "updated — lower the LR or check the data, then resume from the last checkpoint"
                )
        engine.step()
        if not boundary or stage == 0:
            return
        norm = engine.get_global_grad_norm()
        if norm is None or math.isfinite(float(norm)):
            return
        if stage in (1, 2):
            self.skipped_total += 1
            self.metrics.log(
                self.step,
                "skip",
                {
                    "reason": f"non-finite gradient norm of '{name}'; DeepSpeed skipped the update",
                    "skipped_total": self.skipped_total,
                },
            )
            log.warning(
                "non-finite gradient norm of %s at step %d: update skipped by DeepSpeed", name, self.step
            )
            return
        raise NonFiniteGradientError(
            f"non-finite gradient norm of '{name}' at step {self.step} under ZeRO-{stage}: the update was applied; "
            "resume from the last checkpoint with a lower LR"
        )

    def mean_over_ranks(self, values: dict[str, float]) -> dict[str, float]:
        if self.dist.world_size == 1 or not values:
            return values
        keys = sorted(values)
        t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=self.dist.device)
        torch.distributed.all_reduce(t)
        t /= self.dist.world_size
        return dict(zip(keys, t.tolist(), strict=True))

    def _next_batch(self) -> dict[str, Any]:
        for _ in range(3):
            if self._iterator is None:
                # A torch DataLoader draws its base seed from the global RNG when an iterator starts; keep that
                # draw out of the training stream so a resumed run (new iterator mid-epoch) matches exactly.
                with torch.random.fork_rng(devices=[]):
                    self._iterator = iter(self.loader)
                    next_batch = next(self._iterator, None)
                if next_batch is None:
                    self._iterator = None
                    continue
                return next_batch
            try:
                return next(self._iterator)
            except StopIteration:
                self._iterator = None  # the loader starts its next epoch
        raise RuntimeError(f"the training loader yields no batches (data.shards={self.config.data.shards!r})")

    # ------------------------------------------------------------------------------- checkpoints
    def save(self) -> Path:
        tag = step_tag(self.step)
        main_name = next(iter(self.engines))
        for name, engine in self.engines.items():
            if name == main_name:
                engine.save_checkpoint(str(self.ckpt_root), tag, save_latest=False)
            else:
                engine.save_checkpoint(str(self.ckpt_root / tag / "extra"), name, save_latest=False)
        ckpt_dir = self.ckpt_root / tag
        state = {
            "step": self.step,
            "micro_count": self.micro_count,
            "samples_seen": self.samples_seen,
            "skipped_total": self.skipped_total,
            "skipped_in_a_row": self.skipped_in_a_row,
            "world_size": self.dist.world_size,
            "rng": capture_rng(self.generator),
            "loader": self.loader.state_dict(),
            "extra": self.extra_state(),
        }
        save_trainer_state(ckpt_dir, self.dist.rank, state)
        if self.dist.is_main:
            self.save_extra_files(ckpt_dir)
        publish_checkpoint(
            self.ckpt_root,
            tag,
            self.config,
            is_main=self.dist.is_main,
            keep_last=self.config.checkpoint.keep_last,
        )
        return ckpt_dir

    def try_resume(self) -> bool:
        """Resume from ``run_dir/checkpoints/latest`` when present; returns whether it did."""
        tag = find_resume_tag(self.ckpt_root)
        if tag is None:
            return False
        ckpt_dir = self.ckpt_root / tag
        state = load_trainer_state(ckpt_dir, self.dist.rank, self.dist.world_size)
        if state["world_size"] != self.dist.world_size:
            raise RuntimeError(
                f"{ckpt_dir} was written by {state['world_size']} processes, this run has {self.dist.world_size}; "
                "resume with the same number of processes"
            )
        self.load_extra_files(ckpt_dir)  # first: it also checks the checkpoint is of this model
        main_name = next(iter(self.engines))
        for name, engine in self.engines.items():
            if name == main_name:
                path, _ = engine.load_checkpoint(str(self.ckpt_root), tag)
            else:
                path, _ = engine.load_checkpoint(str(ckpt_dir / "extra"), name)
            if path is None:
                raise FileNotFoundError(
                    f"DeepSpeed found no '{name}' checkpoint for tag {tag} in {self.ckpt_root}"
                )
        self.step = state["step"]
        self.micro_count = state["micro_count"]
        self.samples_seen = state["samples_seen"]
        self.skipped_total = state["skipped_total"]
        self.skipped_in_a_row = state["skipped_in_a_row"]
        restore_rng(state["rng"], self.generator)
        self.loader.load_state_dict(state["loader"])
        self._iterator = None
        self.load_extra_state(state["extra"])
        log.info("resumed from %s at step %d", ckpt_dir, self.step)
        return True

    # -------------------------------------------------------------------------------------- loop
    def run(self, max_steps: int | None = None) -> list[dict[str, Any]]:
        """Train until ``max_steps`` optimizer steps (default: the config's); returns the logged records."""
        cfg = self.config
        target = cfg.max_steps if max_steps is None else max_steps
        log_every = max(cfg.logging.log_every, 1)
        acc: dict[str, float] = {}
        acc_n = 0
        t0 = time.perf_counter()
        tokens = 0
        while self.step < target:
            batch = self._next_batch()
            self.micro_count += 1
            boundary = self.main_engine.is_gradient_accumulation_boundary()
            out = self.micro_step_checked(batch)
            if out is None:
                continue
            tokens += int(out.pop("tokens", 0))
            self.samples_seen += int(out.pop("samples", 0))
            for key, value in out.items():
                if isinstance(value, (int, float)):
                    acc[key] = acc.get(key, 0.0) + float(value)
            acc_n += 1
            if not boundary:
                continue
            self.step += 1
            if self.step % log_every == 0 or self.step == target:
                elapsed = time.perf_counter() - t0
                values = self.mean_over_ranks({k: v / acc_n for k, v in acc.items()})
                values["tokens_per_s"] = tokens * self.dist.world_size / max(elapsed, 1e-9)
                values["skipped_total"] = float(self.skipped_total)
                grad_norm = self.main_engine.get_global_grad_norm()
                if grad_norm is not None:
                    values["grad_norm"] = float(grad_norm)
                self.metrics.log(self.step, "train", values)
                self.history.append({"step": self.step, **values})
                acc, acc_n, tokens, t0 = {}, 0, 0, time.perf_counter()
            if (
                self.val_loader is not None
                and cfg.logging.val_every > 0
                and self.step % cfg.logging.val_every == 0
            ):
                self.run_validation()
            if cfg.checkpoint.save_every > 0 and self.step % cfg.checkpoint.save_every == 0:
                self.save()
        return self.history

    def micro_step_checked(self, batch: dict[str, Any]) -> dict[str, Any] | None:
        out = self.micro_step(batch, self.step)
        if out is not None:
            self.skipped_in_a_row = 0
            return out
        self.skipped_total += 1
        self.skipped_in_a_row += 1
        limit = self.config.transformer.max_nonfinite_in_a_row
        self.metrics.log(
            self.step,
            "skip",
            {
                "reason": "non-finite loss",
                "skipped_total": self.skipped_total,
                "in_a_row": self.skipped_in_a_row,
            },
        )
        log.warning(
            "non-finite loss at step %d: micro batch skipped (%d in a row)", self.step, self.skipped_in_a_row
        )
        if self.skipped_in_a_row >= limit:
            raise NonFiniteLossError(
                f"{self.skipped_in_a_row} non-finite losses in a row at step {self.step} "
                f"(limit transformer.max_nonfinite_in_a_row={limit}); lower the LR or check the data"
            )
        return None

    def validation_batches(self) -> list[dict[str, Any]]:
        """The first ``logging.val_batches`` batches of the validation loader's epoch 0.

        The same images with the same captions (the validation loader uses the stored caption) at every
        evaluation and after a resume, so validation curves compare like with like. The loader is rewound
        each time rather than continued, and its position is not part of the checkpoint.
        """
        if self.val_loader is None:
            raise RuntimeError("no validation loader: set data.val_shards")
        self.val_loader.set_epoch(0)
        batches: list[dict[str, Any]] = []
        if self.config.logging.val_batches < 1:
            return batches
        for batch in self.val_loader:
            batches.append(batch)
            if len(batches) == self.config.logging.val_batches:
                break
        return batches

    def run_validation(self) -> dict[str, float]:
        values = self.validation_metrics(self.validation_batches())
        self.metrics.log(self.step, "val", values)
        return values

    def close(self) -> None:
        self.metrics.close()
