"""Validation sees a fixed subset with a fixed caption choice: the same at every evaluation and after a resume."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch


@pytest.fixture(scope="module")
def val_shards(tmp_path_factory) -> str:
    """12 shapes images with multi-sentence captions and short captions (the caption policy has choices)."""
    from infinity_data import ConvertConfig, convert_jsonl
    from infinity_data.shapes import write_folder

    root = tmp_path_factory.mktemp("val")
    images = write_folder(root / "images", count=12, seed=3, long_side=64, ratios=(1.0,))
    lines = []
    for i, png in enumerate(sorted(Path(images).glob("*.png"))):
        long = f"Image {i} of shapes. It has a white background. The shapes are flat. Nothing else is there."
        record = {"image_path": str(png), "long_caption": long, "long_caption_type": "InternVL 2.0"}
        lines.append(json.dumps({**record, "text": f"shapes {i}"}))
    (root / "list.jsonl").write_text("\n".join(lines) + "\n")
    convert_jsonl(root / "list.jsonl", root / "shards", ConvertConfig())
    return str(root / "shards")


class _Recorder:
    """A TrainLoop with no model: its validation metric records which samples and captions it saw."""

    @staticmethod
    def make(tmp_path: Path, shards: str):
        from infinity_train.config import config_from_dict
        from infinity_train.data import build_loader
        from infinity_train.distributed import DistInfo
        from infinity_train.loop import TrainLoop

        class Recorder(TrainLoop):
            seen: list[list[tuple[str, str]]]

            def micro_step(self, batch: dict[str, Any], it: int) -> dict[str, Any] | None:
                raise NotImplementedError

            def validation_metrics(self, batches):
                self.seen.append(
                    [(k, c) for b in batches for k, c in zip(b["keys"], b["captions"], strict=True)]
                )
                return {"n": float(len(self.seen[-1]))}

        cfg = config_from_dict(
            {
                "run_dir": str(tmp_path),
                "data": {
                    "shards": shards,
                    "val_shards": shards,
                    "batch_size": 2,
                    "short_caption_prob": 0.5,  # the training caption policy draws captions
                    "dynamic_caption_length": True,
                    "scales": [[1, 1], [2, 2], [4, 4]],
                },
                "logging": {"val_batches": 2, "tensorboard": False},
            }
        )
        dist = DistInfo(0, 1, 0, torch.device("cpu"))
        train = build_loader(cfg, shards, 0, 1)
        val = build_loader(cfg, shards, 0, 1, seed_offset=1, validation=True)
        loop = Recorder(cfg, dist, train, val)
        loop.engines = {}
        loop.seen = []
        return loop


def test_validation_uses_the_same_batches_and_captions_every_time_and_after_a_resume(tmp_path, val_shards):
    loop = _Recorder.make(tmp_path / "a", val_shards)
    for _ in range(4):  # 6 validation batches exist; an advancing loader would show new ones each time
        loop.run_validation()
    first = loop.seen[0]
    assert len(first) == 4 and all(seen == first for seen in loop.seen), loop.seen
    # the stored long caption, not a drawn prefix or the short caption
    assert all(
        caption.startswith("Image ") and caption.endswith("Nothing else is there.") for _, caption in first
    )
    # a resumed run is a new process with a new loader: the same subset again
    resumed = _Recorder.make(tmp_path / "b", val_shards)
    resumed.run_validation()
    assert resumed.seen[0] == first
    # training batches still follow the training caption policy (some captions are shortened)
    captions = [c for batch in loop.loader for c in batch["captions"]]
    assert any(not c.endswith("Nothing else is there.") for c in captions)
