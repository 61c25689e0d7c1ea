"""The repository's examples/train_tiny.py trains end to end as a script and leaves a checkpoint."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest
from train_procs import child_env, run_group

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"


@pytest.mark.slow
def test_train_tiny_example_trains_the_asked_steps_and_saves_a_checkpoint(tmp_path: Path) -> None:
    work = tmp_path / "tiny"
    cmd = [
        sys.executable,
        str(EXAMPLES / "train_tiny.py"),
        "-o",
        str(work),
        "--max-steps",
        "3",
        "--seed",
        "0",
    ]
    # own session; the whole process tree is killed when it ends, pass or fail
    code, output = run_group(cmd, child_env(), tmp_path / "train_tiny.log")
    assert code == 0, output[-6000:]
    assert "trained 3 steps" in output and str(work / "run") in output
    records = [json.loads(line) for line in (work / "run" / "metrics.jsonl").read_text().splitlines()]
    train_records = [r for r in records if r["split"] == "train"]
    assert [r["step"] for r in train_records] == [1, 2, 3]
    assert all(math.isfinite(r["loss"]) for r in train_records)
    assert (work / "run" / "checkpoints" / "step00000003" / "COMPLETE").is_file()
    assert len(list((work / "shards").iterdir())) > 0  # infinity-data wrote the shards the run read
