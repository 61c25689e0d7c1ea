"""Run (or resume) a whole training in this process, as the CLI does."""

from __future__ import annotations

import contextlib
import logging
from typing import TYPE_CHECKING, Any

from .config import RunConfig

if TYPE_CHECKING:
    from .loop import TrainLoop

__all__ = ["train"]

log = logging.getLogger(__name__)


def train(config: RunConfig) -> dict[str, Any]:
    """Run (or resume) the training described by ``config`` in this process; returns the last logged record."""
    from .checkpoint import checkpoint_root
    from .data import build_loader
    from .distributed import (
        init_distributed,
        is_peer_loss,
        peer_lost_error,
        shutdown_distributed,
        sigterm_raises,
    )
    from .preflight import check_run_config

    check_run_config(config, f"run config (run_dir {config.run_dir})")
    dist = init_distributed()
    trainer: TrainLoop | None = None
    failed = True
    # several processes: SIGTERM (torchrun's answer to a lost node) unwinds into the report below
    stop_on_sigterm: contextlib.AbstractContextManager[None] = (
        sigterm_raises() if dist.world_size > 1 else contextlib.nullcontext()
    )
    with stop_on_sigterm:
        try:
            loader = build_loader(config, config.data.shards, dist.rank, dist.world_size)
            val_loader = None
            if config.data.val_shards:
                val_loader = build_loader(
                    config, config.data.val_shards, dist.rank, dist.world_size, seed_offset=1, validation=True
                )
            if config.task == "transformer":
                from .transformer_trainer import TransformerTrainer

                trainer = TransformerTrainer(config, dist, loader, val_loader)
            else:
                from .tokenizer_trainer import TokenizerTrainer

                trainer = TokenizerTrainer(config, dist, loader, val_loader)
            start = trainer.step
            history = trainer.run()
            if trainer.step > start and (
                config.checkpoint.save_every <= 0 or trainer.step % config.checkpoint.save_every != 0
            ):
                trainer.save()
            failed = False
            return history[-1] if history else {}
        except BaseException as exc:
            if dist.world_size > 1 and is_peer_loss(exc):
                # a surviving rank: one message (printed by the CLI) naming what happened and how to resume,
                # instead of torch's raw collective / store error
                step = trainer.step if trainer is not None else None
                raise peer_lost_error(exc, dist, step, checkpoint_root(config.run_dir)) from exc
            # said at once, with the rank: the other ranks only see their collectives fail
            log.error("rank %d of %d failed: %s: %s", dist.rank, dist.world_size, type(exc).__name__, exc)
            raise
        finally:
            if trainer is not None:
                trainer.close()
            shutdown_distributed(failed=failed)
