"""FID input protocols and batched pool3 feature extraction (pytorch-fid `fid_score.py`, clean-fid `resize.py`).

* `pytorch-fid` (default): PIL -> RGB -> float [0, 1]; bilinear resize to 299² inside the net (align_corners
  False, no antialias); network input 2p − 1.
* `clean` (clean-fid): PIL -> RGB uint8; per channel PIL bicubic resize on float32 ("F" mode), clipped to
  [0, 255] as clean-fid's resizer does (clean-fid clips — see the README), no
  re-quantisation; network input (v − 128)/128.
Each image is preprocessed on its own, so folders of mixed sizes work and batching never changes a feature.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from ..io import load_image
from .inception import FEATURE_DIM

__all__ = ["FID_PROTOCOLS", "FID_SIZE", "extract_features", "preprocess_image"]

logger = logging.getLogger(__name__)

FID_PROTOCOLS = ("pytorch-fid", "clean")
FID_SIZE = 299


def preprocess_image(img: Image.Image, protocol: str = "pytorch-fid") -> Tensor:
    """One RGB PIL image -> (3, 299, 299) float32 tensor in the network's input range."""
    if protocol not in FID_PROTOCOLS:
        raise ValueError(f"unknown FID protocol {protocol!r}; choose one of {FID_PROTOCOLS}")
    arr = np.asarray(img.convert("RGB"), dtype=np.uint8)
    if protocol == "pytorch-fid":
        x = torch.from_numpy(arr.copy()).permute(2, 0, 1).float().div(255.0)
        if tuple(x.shape[-2:]) != (FID_SIZE, FID_SIZE):
            x = F.interpolate(x[None], size=(FID_SIZE, FID_SIZE), mode="bilinear", align_corners=False)[0]
        return 2.0 * x - 1.0
    channels = []
    for c in range(3):
        plane = Image.fromarray(arr[:, :, c].astype(np.float32))
        if plane.size != (FID_SIZE, FID_SIZE):
            plane = plane.resize((FID_SIZE, FID_SIZE), resample=Image.Resampling.BICUBIC)
        channels.append(np.asarray(plane, dtype=np.float32).clip(0, 255))
    v = torch.from_numpy(np.stack(channels, axis=0))
    return (v - 128.0) / 128.0


class _ImageDataset(Dataset):
    def __init__(self, paths: Sequence[Path], protocol: str) -> None:
        self.paths = list(paths)
        self.protocol = protocol

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> Tensor:
        return preprocess_image(load_image(self.paths[i]), self.protocol)


@torch.no_grad()
def extract_features(
    paths: Sequence[str | Path],
    model: torch.nn.Module,
    protocol: str = "pytorch-fid",
    batch_size: int = 32,
    device: str | torch.device = "cpu",
    num_workers: int = 0,
    progress: bool = False,
) -> np.ndarray:
    """pool3 features (N, 2048) float32 of the images at `paths`, in order."""
    if protocol not in FID_PROTOCOLS:
        raise ValueError(f"unknown FID protocol {protocol!r}; choose one of {FID_PROTOCOLS}")
    loader = DataLoader(
        _ImageDataset([Path(p) for p in paths], protocol),
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
    )
    batches = loader
    if progress:
        from tqdm import tqdm

        batches = tqdm(loader, desc="fid features", unit="batch")
    out = np.empty((len(paths), FEATURE_DIM), dtype=np.float32)
    start = 0
    for batch in batches:
        feats = model(batch.to(device)).float().cpu().numpy()
        out[start : start + feats.shape[0]] = feats
        start += feats.shape[0]
    return out
