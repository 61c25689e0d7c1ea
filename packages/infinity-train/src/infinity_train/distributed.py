"""Process-group setup and the DeepSpeed engine wrapper (one place for ranks, devices and the ds config)."""

from __future__ import annotations

import contextlib
import copy
import logging
import os
import signal
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .checkpoint import find_resume_tag
from .config import RunConfig
from .errors import InfinityTrainError

__all__ = [
    "DistInfo",
    "PeerLostError",
    "StoppedByLauncherError",
    "build_ds_config",
    "create_engine",
    "init_distributed",
    "is_peer_loss",
    "peer_lost_error",
    "shutdown_distributed",
    "sigterm_raises",
    "skip_shm_comm_op",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistInfo:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def init_distributed() -> DistInfo:
    """Join (or create) the default process group the way ``deepspeed``/``torchrun`` launched us.

    A plain ``python -m infinity_train.cli`` run gets a 1-rank group on a free local port. The backend is
    DeepSpeed's choice for the accelerator (nccl on CUDA, gloo on CPU).
    """
    import deepspeed
    from deepspeed.accelerator import get_accelerator

    if "RANK" not in os.environ:
        os.environ.update(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", MASTER_ADDR="127.0.0.1")
        os.environ.setdefault("MASTER_PORT", str(_free_port()))
    if not torch.distributed.is_initialized():
        accel = get_accelerator()
        cpu = accel.device_name() == "cpu"
        if cpu:
            skip_shm_comm_op()
        backend = "gloo" if cpu else accel.communication_backend_name()
        deepspeed.init_distributed(dist_backend=backend)
    rank = torch.distributed.get_rank()
    world = torch.distributed.get_world_size()
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    accel = get_accelerator()
    if accel.device_name() == "cpu":
        device = torch.device("cpu")
    else:
        accel.set_device(local_rank)
        device = torch.device(accel.device_name(), local_rank)
    return DistInfo(rank, world, local_rank, device)


SHM_COMM_OP = "deepspeed_shm_comm"


def skip_shm_comm_op() -> None:
    """Keep DeepSpeed from compiling its shared-memory all-reduce op when it sets up communication on CPU.

    DeepSpeed's torch backend loads ``deepspeed_shm_comm`` (C++ built at run time with ninja: 40 s and more on
    2 cores, in every rank, on a machine without the cached build) whenever it is created on a CPU
    accelerator. Only its inference all-reduce (``deepspeed.comm.inference_all_reduce``, tensor-parallel
    inference) uses that op; training all-reduces go through the gloo process group. Marking it unavailable in
    ``deepspeed.ops.__compatible_ops__`` (the table ``deepspeed.comm.torch.build_shm_op`` consults) makes that
    loader return None: nothing is compiled at launch. See ``benchmarks/train_launch.py``.
    """
    import deepspeed.ops

    compatible = getattr(deepspeed.ops, "__compatible_ops__", None)
    if isinstance(compatible, dict) and compatible.get(SHM_COMM_OP, False):
        compatible[SHM_COMM_OP] = False
        log.debug(
            "DeepSpeed's %s op (inference all-reduce) is not built: CPU training uses gloo", SHM_COMM_OP
        )


class PeerLostError(InfinityTrainError, RuntimeError):
    """A collective or the rendezvous store failed because another rank (its node) is gone."""


class StoppedByLauncherError(InfinityTrainError, RuntimeError):
    """SIGTERM arrived during a multi-process run: torchrun's agent sends it to its workers when it loses the
    rendezvous with another node (a scheduler's cancel or preemption sends it too)."""


@contextlib.contextmanager
def sigterm_raises() -> Iterator[None]:
    """Turn SIGTERM into :class:`StoppedByLauncherError` inside the block (main thread only), so that the
    trainer unwinds and reports where to resume instead of dying silently; the old handler is restored."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: object) -> None:
        raise StoppedByLauncherError("SIGTERM")

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


# What gloo / NCCL / the c10d store say when the other end of a connection has gone away (older torch raises
# them as plain RuntimeError; newer ones as torch.distributed.DistError subclasses).
_PEER_LOSS_MARKERS = (
    "connection closed by peer",
    "connection reset by peer",
    "nccl communicator was aborted",
    "gloo/transport",
)


def is_peer_loss(exc: BaseException) -> bool:
    """Whether ``exc`` is a collective / rendezvous failure (another rank stopped answering), as opposed to
    a failure of this rank's own work."""
    if isinstance(exc, StoppedByLauncherError):
        return True
    dist_error = getattr(torch.distributed, "DistError", None)
    if dist_error is not None and isinstance(exc, dist_error):
        return True
    if type(exc) is not RuntimeError:
        return False
    text = str(exc).lower()
    return any(marker in text for marker in _PEER_LOSS_MARKERS)


def peer_lost_error(exc: BaseException, dist: DistInfo, step: int | None, ckpt_root: Path) -> PeerLostError:
    """The one message a surviving rank reports: who it is, what was lost, at which step (``step`` optimizer
    steps were done; None: the trainer was still being set up), where the last checkpoint is and how to
    resume."""
    try:
        tag = find_resume_tag(ckpt_root)
    except (OSError, ValueError, RuntimeError):
        tag = None
    where = (
        f"the last complete checkpoint is {ckpt_root / tag}"
        if tag is not None
        else f"no complete checkpoint was written yet (in {ckpt_root}): a relaunch starts from step 0"
    )
    node = os.environ.get("GROUP_RANK")  # torchrun's node rank
    when = "while setting up the trainer" if step is None else f"during training step {step + 1}"
    who = f"rank {dist.rank} of {dist.world_size}" + (f" (node {node})" if node is not None else "")
    if isinstance(exc, StoppedByLauncherError):
        what = (
            f"was stopped by its launcher (SIGTERM) {when}: torchrun stops its workers when it loses the "
            "rendezvous with another node, so a peer node is most likely gone (a scheduler's cancel or "
            "preemption also sends SIGTERM)"
        )
    else:
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        what = (
            f"lost contact with another rank {when}: a peer process or node is gone "
            f"({type(exc).__name__}: {detail[:300]})"
        )
    return PeerLostError(
        f"{who} {what}; {where}. Relaunch every node with the same command (same run_dir and number of "
        "processes) to resume from it."
    )


def shutdown_distributed(*, failed: bool = False) -> None:
    """Destroy the process group (ZeRO-3 runs abort at exit without this).

    After a success the ranks meet at a barrier first. After a failure (``failed``) there is no barrier: the
    other ranks are inside some collective of the training step and would never arrive, so a barrier would
    hold the failing rank (and its error) until the collective timeout. A gloo group is then torn down at
    once, which closes its connections and makes the peers' pending collectives fail within moments; an
    NCCL group is left to the process exit, and the launcher stops the other ranks when this one exits.
    """
    if not torch.distributed.is_initialized():
        return
    if not failed:
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()
    elif torch.distributed.get_backend() == "gloo":
        try:
            torch.distributed.destroy_process_group()
        except Exception as exc:  # a peer already gone: the failure being reported matters, not this one
            log.debug("destroying the process group after a failure: %s: %s", type(exc).__name__, exc)


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def build_ds_config(config: RunConfig, *, grad_clip: float | None = None) -> dict[str, Any]:
    """DeepSpeed config of the run: micro batch, accumulation, clipping, ZeRO stage, precision (+ ``extra``).

    precision "fp16" uses DeepSpeed's fp16 mode (fp16 parameters, fp32 master weights, dynamic loss scale).
    """
    ds = config.deepspeed
    prec = ds.precision
    out: dict[str, Any] = {
        "train_micro_batch_size_per_gpu": config.data.batch_size,
        "gradient_accumulation_steps": config.optim.grad_accum,
        "gradient_clipping": config.optim.grad_clip if grad_clip is None else grad_clip,
        "zero_optimization": {"stage": ds.zero_stage},
        # "bf16" is the reference recipe: fp32 parameters and optimizer, bf16 autocast in the forward (the
        # trainers open the autocast region), so DeepSpeed's own bf16 mode (bf16 parameters) stays off.
        "bf16": {"enabled": False},
        # Reference fp16 scaler: init 2^11, growth interval 1000 (official `infinity/utils/amp_opt.py`).
        "fp16": {"enabled": prec == "fp16", "initial_scale_power": 11, "loss_scale_window": 1000},
        "zero_allow_untested_optimizer": True,
        "steps_per_print": 2**31 - 1,
        "wall_clock_breakdown": False,
    }
    return _merge(out, ds.extra)


def create_engine(
    model: nn.Module, optimizer: torch.optim.Optimizer, ds_config: dict[str, Any]
) -> Any:  # deepspeed.DeepSpeedEngine
    """``deepspeed.initialize`` with a client optimizer (plain AdamW; no DeepSpeed op is built)."""
    import deepspeed

    engine, _, _, _ = deepspeed.initialize(model=model, optimizer=optimizer, config=ds_config)
    return engine
