"""Launch cost: setting up communication on CPU compiles nothing (DeepSpeed's shm all-reduce op is not built)."""

from __future__ import annotations

import sys

import pytest

pytestmark = pytest.mark.slow


def test_cpu_process_group_setup_builds_no_deepspeed_op(tmp_path):
    from train_procs import child_env, run_group

    ext = tmp_path / "torch_extensions"
    ext.mkdir()
    env = {**child_env(), "TORCH_EXTENSIONS_DIR": str(ext)}  # a fresh machine: no cached op builds
    script = (
        "from infinity_train.distributed import init_distributed, shutdown_distributed\n"
        "import torch\n"
        "d = init_distributed()\n"
        "t = torch.ones(3)\n"
        "torch.distributed.all_reduce(t)\n"
        "print('world', d.world_size, 'sum', float(t.sum()))\n"
        "shutdown_distributed()\n"
    )
    code, output = run_group([sys.executable, "-c", script], env, tmp_path / "init.log")
    assert code == 0, output[-4000:]
    assert "world 1 sum 3.0" in output
    assert "built successfully" not in output and list(ext.iterdir()) == [], output[-2000:]
