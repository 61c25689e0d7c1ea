"""The trainers' view of ``infinity_data``: a BucketLoader per rank, and batches resized to custom schedules."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch.nn.functional as F

from .config import RunConfig

__all__ = ["TrainBatches", "build_loader"]


def build_loader(
    config: RunConfig,
    root: str,
    rank: int,
    world_size: int,
    *,
    seed_offset: int = 0,
    validation: bool = False,
) -> TrainBatches:
    """A resumable loader of ``root`` for this rank; clear errors for a missing or empty dataset.

    ``validation``: epoch mode and the stored (long) caption of every sample, whatever the training caption
    policy, so that validation sees the same images with the same text every time (see ``TrainLoop``).
    """
    from infinity_data import BucketLoader, LoaderConfig
    from infinity_data.storage import is_url, redact

    path: Path | str = root  # a URL (s3://, gs://, https://) is checked by the loader: it reads index.json
    if not is_url(root):
        path = _check_local(root)
    dc = config.data
    loader_cfg = LoaderConfig(
        batch_size=dc.batch_size,
        pn=dc.pn,
        seed=config.seed + seed_offset,
        num_workers=dc.num_workers,
        mode="epoch" if validation else dc.mode,
        shuffle_window=dc.shuffle_window,
        load_t5=dc.use_precomputed_text,
        short_caption_prob=0.0 if validation else dc.short_caption_prob,
        dynamic_caption_length=False if validation else dc.dynamic_caption_length,
        buckets=("1.000",) if dc.scales else None,
    )
    try:
        loader = BucketLoader(path, loader_cfg, rank=rank, world_size=world_size)
    except ValueError as exc:
        raise ValueError(f"data path {redact(path) if isinstance(path, str) else path}: {exc}") from exc
    size = None
    if dc.scales:
        h, w = dc.scales[-1]
        size = (16 * h, 16 * w)
    return TrainBatches(loader, size)


def _check_local(root: str) -> Path:
    path = Path(root)
    if not root or not path.is_dir():
        raise FileNotFoundError(
            f"data path {root!r} is not a folder; set data.shards to the output folder of `infinity-data convert` "
            "(or its s3:// / gs:// / https:// URL)"
        )
    if not (path / "index.json").is_file() and not any(path.rglob("*.tar")):
        raise FileNotFoundError(
            f"data path {path} holds no shards (no index.json, no .tar files); convert images with "
            "`infinity-data convert <images> {path}` first"
        )
    return path


class TrainBatches:
    """Wraps a BucketLoader; with a custom schedule, images are area-resized to ``size`` (H, W)."""

    def __init__(self, loader: Any, size: tuple[int, int] | None) -> None:
        self.loader = loader
        self.size = size

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for batch in self.loader:
            images = batch["images"]
            if self.size is not None and tuple(images.shape[-2:]) != self.size:
                batch = {**batch, "images": F.interpolate(images, size=self.size, mode="area")}
            yield batch

    def set_epoch(self, epoch: int) -> None:
        """Start ``epoch`` from its first batch at the next iteration."""
        self.loader.set_epoch(epoch)

    def state_dict(self) -> dict[str, Any]:
        return self.loader.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.loader.load_state_dict(state)
