"""Metric sinks of the main rank: stdout, JSONL, and TensorBoard / Weights & Biases when installed."""

from __future__ import annotations

import importlib.util
import json
import logging
import math
import time
from pathlib import Path
from typing import IO, Any

from .config import LoggingConfig

__all__ = ["MetricLogger"]

log = logging.getLogger(__name__)


class MetricLogger:
    """Writes one JSON object per call to ``run_dir/metrics.jsonl`` (appending across resumes)."""

    def __init__(
        self, run_dir: Path, config: LoggingConfig, enabled: bool, run_config: dict[str, Any]
    ) -> None:
        self.enabled = enabled
        self._tb = None
        self._wandb = None
        self._file: IO[str] | None = None
        if not enabled:
            return
        run_dir.mkdir(parents=True, exist_ok=True)
        self._file = (run_dir / "metrics.jsonl").open("a", buffering=1)
        if config.tensorboard and importlib.util.find_spec("tensorboard") is not None:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(str(run_dir / "tensorboard"))
        if config.wandb_project and importlib.util.find_spec("wandb") is not None:
            import wandb

            self._wandb = wandb.init(
                project=config.wandb_project, dir=str(run_dir), config=run_config, resume="allow"
            )
        elif config.wandb_project:
            log.warning(
                "wandb_project=%r set but wandb is not installed; logging to JSONL only", config.wandb_project
            )

    def log(self, step: int, split: str, values: dict[str, Any]) -> None:
        if not self.enabled or self._file is None:
            return
        record = {"step": step, "split": split, "time": round(time.time(), 3), **values}
        self._file.write(json.dumps(record) + "\n")
        scalars = {k: v for k, v in values.items() if isinstance(v, (int, float)) and math.isfinite(v)}
        shown = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in scalars.items())
        print(f"[{split} step {step}] {shown}", flush=True)
        if self._tb is not None:
            for key, value in scalars.items():
                self._tb.add_scalar(f"{split}/{key}", value, step)
        if self._wandb is not None:
            self._wandb.log({f"{split}/{k}": v for k, v in scalars.items()}, step=step)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
        if self._tb is not None:
            self._tb.close()
        if self._wandb is not None:
            self._wandb.finish()
