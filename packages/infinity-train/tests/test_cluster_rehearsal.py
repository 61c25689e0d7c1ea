"""Multi-node training rehearsed on one machine: two torchrun "nodes" (one rank each) meet through a c10d
rendezvous on 127.0.0.1 and train the tiny transformer from shards served over HTTP on loopback; a
relaunch from the step-3 checkpoint reproduces the uninterrupted run's losses exactly; killing one node
makes the other stop with one clear error naming the step, the last checkpoint and how to resume."""

from __future__ import annotations

import http.server
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from train_procs import kill_tree

pytestmark = pytest.mark.slow


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def served_shards(assets: dict[str, str]) -> Iterator[str]:
    """The tiny shards over HTTP on a free loopback port (stopped after the test)."""
    shards = Path(assets["shards"])
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), partial(_Quiet, directory=str(shards.parent)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/{shards.name}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _node_command(node: int, port: int, rdzv_id: str, config: Path) -> list[str]:
    """One "node" of a two-node job: a torchrun launcher meeting the other over a c10d rendezvous on loopback."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc_per_node", "1"]
    cmd += ["--node_rank", str(node), "--rdzv_backend", "c10d", "--rdzv_id", rdzv_id]
    cmd += ["--rdzv_endpoint", f"127.0.0.1:{port}", "--master_addr", "127.0.0.1"]
    return [*cmd, "-m", "infinity_train.cli", "transformer", "--config", str(config)]


def _launch_two_nodes(config: Path, log_dir: Path) -> list[int]:
    """Two torchrun launchers (node ranks 0 and 1), each in its own process group; their return codes."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_CBWR": "COMPATIBLE", "PYTHONUNBUFFERED": "1"}
    env["PYTHONPYCACHEPREFIX"] = str(Path(tempfile.gettempdir()) / "infinity-train-pycache")
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    port = _free_port()
    procs = []
    try:
        for node in (0, 1):
            cmd = _node_command(node, port, "rehearsal", config)
            log = open(log_dir / f"node{node}.log", "w")  # noqa: SIM115 (closed with the process)
            procs.append(
                (subprocess.Popen(cmd, env=env, stdout=log, stderr=log, start_new_session=True), log)
            )
        return [proc.wait(timeout=900) for proc, _ in procs]
    finally:
        for proc, log in procs:
            kill_tree(proc)  # the launcher, its group and its workers (in sessions of their own)
            log.close()


def _losses(run_dir: Path) -> dict[int, float]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    records = [json.loads(x) for x in lines if '"split": "train"' in x]
    return {r["step"]: r["loss"] for r in records}


@pytest.mark.parametrize("mode", ["epoch", "resampled"])
def test_two_nodes_over_c10d_train_from_http_shards_and_resume_with_identical_losses(
    tmp_path: Path, assets: dict[str, str], served_shards: str, mode: str
) -> None:
    from train_scenarios import transformer_config

    run_dir = tmp_path / "run"
    cfg = transformer_config(run_dir, assets, max_steps=6, checkpoint={"save_every": 3, "keep_last": 3})
    cfg["data"] = {**cfg["data"], "shards": served_shards, "mode": mode}
    config = tmp_path / "run.json"
    config.write_text(json.dumps(cfg))
    codes = _launch_two_nodes(config, tmp_path)
    assert codes == [0, 0], (tmp_path / "node0.log").read_text()[-4000:]
    first = _losses(run_dir)
    assert sorted(first) == [1, 2, 3, 4, 5, 6]
    ckpt = run_dir / "checkpoints"
    for name in ("trainer_state_rank0.pt", "trainer_state_rank1.pt", "COMPLETE"):
        assert (ckpt / "step00000006" / name).is_file()

    # relaunch both nodes from the step-3 checkpoint: steps 4..6 come out identical
    shutil.rmtree(ckpt / "step00000006")
    (ckpt / "latest").write_text("step00000003")
    (run_dir / "metrics.jsonl").rename(tmp_path / "first-metrics.jsonl")
    codes = _launch_two_nodes(config, tmp_path)
    assert codes == [0, 0], (tmp_path / "node0.log").read_text()[-4000:]
    resumed = _losses(run_dir)
    assert sorted(resumed) == [4, 5, 6]
    for step, loss in resumed.items():
        assert loss == first[step], (step, loss, first[step])


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


@pytest.mark.parametrize("store_host", ["surviving node", "killed node"])
def test_killing_one_node_stops_the_other_with_one_clear_error_naming_the_checkpoint(
    tmp_path: Path, assets: dict[str, str], served_shards: str, store_host: str
) -> None:
    import re
    import time

    from train_scenarios import transformer_config

    run_dir = tmp_path / "run"
    cfg = transformer_config(
        run_dir, assets, max_steps=100_000, checkpoint={"save_every": 2, "keep_last": 2}
    )  # killed long before
    cfg["data"] = {**cfg["data"], "shards": served_shards}
    config = tmp_path / "run.json"
    config.write_text(json.dumps(cfg))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    port = _free_port()
    logs = []
    latest = run_dir / "checkpoints" / "latest"
    started: dict[int, subprocess.Popen[bytes]] = {}
    try:
        # the launcher started first hosts the c10d rendezvous store: on the surviving node, or on the killed one
        # (then the survivor's torchrun agent loses the store as well as the peer)
        order = (1, 0) if store_host == "killed node" else (0, 1)
        for node in order:
            cmd = _node_command(node, port, "kill", config)
            logs.append(open(tmp_path / f"node{node}.log", "w"))  # noqa: SIM115 (closed in finally)
            started[node] = subprocess.Popen(
                cmd, env=env, stdout=logs[-1], stderr=logs[-1], start_new_session=True
            )
            while len(started) == 1 and started[node].poll() is None and not _listening(port):
                time.sleep(0.1)  # the first launcher now hosts the store
        procs = [started[0], started[1]]
        while procs[0].poll() is None and not latest.is_file():  # a first checkpoint is published
            time.sleep(0.2)
        assert procs[0].poll() is None, (tmp_path / "node0.log").read_text()[-4000:]
        # node 1 disappears mid-run: its launcher and its worker (torchrun starts workers in sessions of their
        # own, so killing the launcher's group alone would leave the worker training on)
        kill_tree(procs[1])
        code = procs[0].wait(timeout=600)  # node 0 must stop by itself (a hang guard, not a timing)
    finally:
        for proc in started.values():
            kill_tree(proc)
        for log in logs:
            log.close()
    text = (tmp_path / "node0.log").read_text()
    assert code != 0
    # the surviving rank says, in one line, what was lost, at which step, where the checkpoint is, how to resume.
    # Its collective usually fails first; when the store was on the killed node, its torchrun agent may stop it
    # with SIGTERM first (a race). The rendezvous gives ranks in joining order, so the survivor may be rank 1.
    found = re.search(
        r"infinity-train transformer: error: rank [01] of 2 \(node [01]\) (lost contact with another rank|was "
        r"stopped by its launcher \(SIGTERM\)) during training step (\d+): [^\n]*?; the last complete checkpoint "
        r"is (\S+)\. Relaunch every node with the same command",
        text,
    )
    assert found is not None, text[-4000:]
    assert int(found.group(2)) >= 3, found.group(0)
    checkpoint = Path(found.group(3))
    assert checkpoint.parent == run_dir / "checkpoints" and (checkpoint / "COMPLETE").is_file()
    assert checkpoint.name == latest.read_text().strip()
