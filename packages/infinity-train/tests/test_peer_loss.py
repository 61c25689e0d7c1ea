"""What a surviving rank reports when another rank is gone: which failures count as a lost peer, SIGTERM
turned into an exception inside the trainer, and the one message naming the step, the checkpoint and the
relaunch (the two-node rehearsal checks the same message end to end)."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
import torch
from infinity_train.distributed import (
    DistInfo,
    PeerLostError,
    StoppedByLauncherError,
    is_peer_loss,
    peer_lost_error,
    sigterm_raises,
)

DIST = DistInfo(rank=1, world_size=4, local_rank=0, device=torch.device("cpu"))


def test_collective_and_store_failures_are_peer_losses_and_other_errors_are_not() -> None:
    gloo = RuntimeError(
        "[../third_party/gloo/gloo/transport/tcp/pair.cc:545] Read error: Connection reset by peer"
    )
    assert is_peer_loss(gloo)
    assert is_peer_loss(torch.distributed.DistNetworkError("Broken pipe"))
    assert is_peer_loss(StoppedByLauncherError("SIGTERM"))
    assert not is_peer_loss(RuntimeError("DataLoader worker (pid 12) is killed by signal"))
    assert not is_peer_loss(ValueError("connection reset by peer"))  # not a collective's error type


def test_sigterm_inside_the_block_raises_and_the_old_handler_comes_back() -> None:
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(StoppedByLauncherError), sigterm_raises():
        os.kill(os.getpid(), signal.SIGTERM)  # the handler runs as soon as os.kill returns
    assert signal.getsignal(signal.SIGTERM) == before


def test_the_message_names_rank_step_last_checkpoint_and_relaunch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GROUP_RANK", "1")
    root = tmp_path / "checkpoints"
    error = peer_lost_error(RuntimeError("gloo/transport: Connection closed by peer"), DIST, 7, root)
    assert isinstance(error, PeerLostError)
    assert "rank 1 of 4 (node 1) lost contact with another rank during training step 8" in str(error)
    assert f"no complete checkpoint was written yet (in {root})" in str(error)
    (root / "step00000006").mkdir(parents=True)
    (root / "step00000006" / "COMPLETE").touch()
    (root / "latest").write_text("step00000006")
    stopped = str(peer_lost_error(StoppedByLauncherError("SIGTERM"), DIST, None, root))
    assert "was stopped by its launcher (SIGTERM) while setting up the trainer" in stopped
    assert f"the last complete checkpoint is {root / 'step00000006'}. Relaunch every node" in stopped
