"""Validation loss of bitwise autoregressive models (official `evaluation/validation_loss/validation_loss.py`).

Model-agnostic reductions work on logits z (B, L, d, 2), labels y (B, L, d) and the scale grid list. The
Infinity adapter (extra `val-loss`, needs infinity-model + bsq-tokenizer, imported lazily) builds inputs and
labels with Bitwise Self-Correction (noise_apply_layers 20, strength 0.2, requant 1 by default; the seed is
part of the protocol) and runs the teacher-forced forward.
"""

from __future__ import annotations

import itertools
import logging
import os
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import Tensor

from .runs import protocol_id, run_header, write_csv, write_json

__all__ = [
    "BatchMetrics",
    "ValLossAccumulator",
    "ValLossOptions",
    "bitwise_metrics",
    "bsc_inputs_and_labels",
    "infinity_val_loss",
    "run_infinity_val_loss",
]

logger = logging.getLogger(__name__)

METRIC_VERSION = "val-loss-1"


@dataclass(frozen=True)
class ValLossOptions:
    """Protocol of a validation-loss run (all recorded)."""

    pn: str = "0.06M"
    noise_apply_layers: int = 20
    noise_apply_strength: float = 0.2
    noise_apply_requant: bool = True
    reweight_by_scale: bool = False  # eval.sh passes 0 (the reference reweight branch crashes)
    seed: int = 0
    batch_size: int = 2

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class BatchMetrics:
    loss_bit_mean: float
    loss_reweight_by_scale: float
    acc_bit_mean: float
    acc_token_mean: float
    loss_per_scale: list[float]
    acc_bit_per_scale: list[float]
    acc_token_per_scale: list[float]
    samples: int


@torch.no_grad()
def bitwise_metrics(
    logits: Tensor, labels: Tensor, scales: Sequence[tuple[int, int]], reweight: bool = False
) -> BatchMetrics:
    """Per-bit CE (mean over d per token, mean over the batch), bit and token accuracy, overall and per scale.

    logits (B, L, d, 2) with index 0 = bit 0; labels (B, L, d) in {0, 1}; argmax ties predict bit 0.
    """
    if logits.ndim != 4 or logits.shape[-1] != 2:
        raise ValueError(f"logits must be (B, L, d, 2), got {tuple(logits.shape)}")
    if labels.shape != logits.shape[:-1]:
        raise ValueError(f"labels {tuple(labels.shape)} do not match logits {tuple(logits.shape)}")
    L = sum(int(h) * int(w) for h, w in scales)
    if logits.shape[1] != L:
        raise ValueError(f"schedule {list(scales)} has {L} tokens, logits have {logits.shape[1]}")
    try:
        from bsq_tokenizer.schedules import scale_token_weights
    except ImportError as err:
        raise ImportError(
            "bitwise_metrics needs the per-scale token weights of bsq-tokenizer: "
            "`pip install 'infinity-eval[val-loss]'`"
        ) from err

    z = logits.double()
    y = labels.long()
    ce = -torch.log_softmax(z, dim=-1).gather(-1, y.unsqueeze(-1)).squeeze(-1)  # (B, L, d)
    token_loss = ce.mean(-1).mean(0)  # (L,)
    pred = (z[..., 1] > z[..., 0]).long()
    bit_ok = (pred == y).double()  # (B, L, d)
    tok_ok = bit_ok.min(dim=-1).values  # (B, L): 1 iff all d bits right
    weights = scale_token_weights(scales, reweight, dtype=torch.float64, device=token_loss.device)
    bounds = np.cumsum([0] + [int(h) * int(w) for h, w in scales])
    per = [slice(int(a), int(b)) for a, b in itertools.pairwise(bounds)]
    return BatchMetrics(
        loss_bit_mean=float(token_loss.mean()),
        loss_reweight_by_scale=float((weights * token_loss).sum()),
        acc_bit_mean=100.0 * float(bit_ok.mean()),
        acc_token_mean=100.0 * float(tok_ok.mean()),
        loss_per_scale=[float(token_loss[s].mean()) for s in per],
        acc_bit_per_scale=[100.0 * float(bit_ok[:, s].mean()) for s in per],
        acc_token_per_scale=[100.0 * float(tok_ok[:, s].mean()) for s in per],
        samples=int(logits.shape[0]),
    )


class ValLossAccumulator:
    """Reference aggregation (unweighted mean over batches, lists element-wise) plus sample-weighted means."""

    SCALARS = ("loss_bit_mean", "loss_reweight_by_scale", "acc_bit_mean", "acc_token_mean")
    LISTS = ("loss_per_scale", "acc_bit_per_scale", "acc_token_per_scale")

    def __init__(self) -> None:
        self.batches: list[BatchMetrics] = []

    def add(self, metrics: BatchMetrics) -> None:
        if self.batches and len(metrics.loss_per_scale) != len(self.batches[0].loss_per_scale):
            raise ValueError("all batches of one run must use the same number of scales (same pn)")
        self.batches.append(metrics)

    def result(self) -> dict[str, Any]:
        if not self.batches:
            raise ValueError("no validation batches were evaluated")
        out: dict[str, Any] = {"batches": len(self.batches), "samples": sum(b.samples for b in self.batches)}
        weights = np.array([b.samples for b in self.batches], dtype=np.float64)
        for name in self.SCALARS:
            values = np.array([getattr(b, name) for b in self.batches])
            out[name] = float(values.mean())
            out[f"{name}_sample_weighted"] = float((values * weights).sum() / weights.sum())
        for name in self.LISTS:
            out[name] = np.mean([getattr(b, name) for b in self.batches], axis=0).tolist()
        return out


@torch.no_grad()
def bsc_inputs_and_labels(
    latent: Tensor,
    vae_scales: Sequence[tuple[int, int]],
    options: ValLossOptions,
    np_rng: np.random.RandomState,
    generator: torch.Generator,
    patchify: bool = False,
) -> tuple[Tensor, Tensor]:
    """Bitwise Self-Correction on a raw VAE latent (B, d, H, W) -> (inputs (B, L-1, D), labels (B, L, D)).

    Per scale k: residual F − S (area-resized except at the last scale) -> BSQ bits (clean labels); for
    k < noise_apply_layers flip each bit with probability p ~ U{0, 0.01, …, strength} (one numpy draw per
    scale from a legacy `RandomState`, flip mask from `torch.rand` on CPU) and, with requant, accumulate the
    codes of the flipped bits (bsq-tokenizer's `residual_quantize` with a `RandomBitFlips` source).
    The next scale's input is the trilinear resize of the full-grid accumulation. fp32 throughout.
    With `patchify` (8B) the VAE-side grids are doubled and tokens are 2x2 space-to-depth (D = 4d).
    """
    from bsq_tokenizer.quantizer import (
        BSQ,
        RandomBitFlips,
        residual_quantize,
        space_to_depth,
        space_to_depth_bits,
    )

    B, d = latent.shape[:2]
    full = tuple(latent.shape[-2:])
    if tuple(vae_scales[-1]) != full:
        raise ValueError(f"the last scale {vae_scales[-1]} must equal the latent grid {full}")
    flips = RandomBitFlips(
        options.noise_apply_layers, options.noise_apply_strength, generator, levels=np_rng.randint
    )
    out = residual_quantize(
        latent.float(),
        vae_scales,
        BSQ(d).to(latent.device),
        flip=flips,
        requant=options.noise_apply_requant,
        next_inputs=True,
        residual="recompute",  # as the reference's flip_requant: latent - accumulation at every scale
    )
    labels, inputs = out.bits, out.next_inputs

    def tokens_from_map(x: Tensor) -> Tensor:  # (B, d, h, w) -> (B, h*w, D)
        if patchify:
            x = space_to_depth(x)
        return x.flatten(2).transpose(1, 2)

    def tokens_from_bits(b: Tensor) -> Tensor:  # (B, h, w, d) -> (B, h*w, D)
        if patchify:
            b = space_to_depth_bits(b)
        return b.reshape(b.shape[0], -1, b.shape[-1])

    x = torch.cat([tokens_from_map(t) for t in inputs], dim=1) if inputs else latent.new_zeros(B, 0, d)
    y = torch.cat([tokens_from_bits(b) for b in labels], dim=1)
    return x, y


class ImageEncoder(Protocol):
    """What the metric needs of the VAE: `encode(images in [-1, 1]) -> continuous latent (B, d, h, w)`."""

    def encode(self, img: Tensor, /) -> Tensor: ...


@torch.no_grad()
def infinity_val_loss(
    model: torch.nn.Module,
    vae: ImageEncoder,
    batches: Iterable[tuple[Any, Tensor]],
    options: ValLossOptions | None = None,
    schedule_for: Any = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Validation metrics of an `infinity_model.Infinity` over batches of (TextCondition, images in [-1, 1]).

    `schedule_for(ratio) -> ScaleSchedule` (ratio = the images' height / width) defaults to
    `bsq_tokenizer.get_schedule(ratio, options.pn)`.
    """
    from bsq_tokenizer import get_schedule

    options = options or ValLossOptions()
    # The reference draws p with numpy's legacy global RNG (MT19937) and the flip masks with torch's CPU
    # generator; seeded private generators of the same kinds keep the run reproducible without global state.
    np_rng = np.random.RandomState(options.seed)
    generator = torch.Generator().manual_seed(options.seed)
    patchify = bool(getattr(model.config, "patchify", False))
    acc = ValLossAccumulator()
    iterator: Any = batches
    if progress:
        from tqdm import tqdm

        iterator = tqdm(batches, desc="val-loss", unit="batch")
    schedules: set[tuple] = set()
    for text, images in iterator:
        h, w = images.shape[-2:]
        schedule = schedule_for(h / w) if schedule_for is not None else get_schedule(h / w, options.pn)
        schedules.add(tuple(schedule.scales))
        latent = vae.encode(images)
        x, y = bsc_inputs_and_labels(
            latent, schedule.vae_scales(patchify), options, np_rng, generator, patchify
        )
        logits = model(text, x.to(latent.device), schedule)
        acc.add(
            bitwise_metrics(logits.float(), y.to(logits.device), schedule.scales, options.reweight_by_scale)
        )
    out = acc.result()
    out["schedules"] = [list(map(list, s)) for s in sorted(schedules)]
    return out


def _manifest_batches(manifest: Path, text_encoder: Any, batch_size: int, pn: str, device: torch.device):
    """(TextCondition, images) batches from a JSONL manifest; images are cover-resized and centre-cropped to the
    nearest template at `pn` (bsq_tokenizer.resize_crop_for_template); one aspect template per batch."""
    from bsq_tokenizer import image_to_tensor, resize_crop_for_template
    from bsq_tokenizer.schedules import nearest_template

    from .io import load_image, read_manifest

    records = read_manifest(manifest)
    groups: dict[float, list] = {}
    for rec in records:
        img = load_image(rec.image)
        groups.setdefault(nearest_template(img.height / img.width), []).append((rec.prompt, img))
    for template in sorted(groups):
        items = groups[template]
        for start in range(0, len(items), batch_size):
            chunk = items[start : start + batch_size]
            imgs = torch.cat([image_to_tensor(resize_crop_for_template(im, template, pn)) for _, im in chunk])
            yield text_encoder.encode([p for p, _ in chunk]), imgs.to(device)


def run_infinity_val_loss(
    model_dir: str | os.PathLike[str],
    vae_path: str | os.PathLike[str],
    text_encoder: str | os.PathLike[str],
    manifest: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    options: ValLossOptions | None = None,
    device: str = "cpu",
    progress: bool = False,
) -> dict[str, Any]:
    """Load model, VAE and T5 from local files, evaluate a manifest, write `summary.json` and `per_scale.csv`."""
    try:
        from bsq_tokenizer import load_official_vae, load_vae
        from infinity_model import TextEncoder, load_infinity
    except ImportError as err:
        raise ImportError("val-loss needs `pip install 'infinity-eval[val-loss]'` (infinity-model)") from err
    options = options or ValLossOptions()
    dev = torch.device(device)
    model = load_infinity(model_dir).to(dev).eval()
    vae_p = Path(vae_path)
    vae = (load_vae(vae_p) if vae_p.suffix != ".pth" else load_official_vae(vae_p)).to(dev).eval()
    encoder = TextEncoder.from_pretrained(os.fspath(text_encoder), device=dev)
    batches = _manifest_batches(Path(manifest), encoder, options.batch_size, options.pn, dev)
    result = infinity_val_loss(model, vae, batches, options, progress=progress)
    opts = {**options.to_dict(), "metric_version": METRIC_VERSION}
    result["header"] = run_header("val-loss", protocol_id("val-loss", opts), opts, device=device)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "summary.json", result)
    write_csv(
        out / "per_scale.csv",
        [
            {"scale": k, "loss": a, "acc_bit": b, "acc_token": c}
            for k, (a, b, c) in enumerate(
                zip(
                    result["loss_per_scale"],
                    result["acc_bit_per_scale"],
                    result["acc_token_per_scale"],
                    strict=True,
                )
            )
        ],
        ["scale", "loss", "acc_bit", "acc_token"],
    )
    return result
