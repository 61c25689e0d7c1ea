"""FID between two image sets (folders, manifests or `.npz` statistics), with reference-set caching."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..io import ImageRecord, read_image_inputs
from ..remote import is_url, local_images, redact
from ..runs import Shard, protocol_id, run_header, write_json
from ..weights import describe_weight_file
from .checkpoint import FIDBackbone, load_fid_inception
from .features import FID_PROTOCOLS, extract_features
from .frechet import FeatureStatistics, frechet_distance
from .inception import FEATURE_DIM

__all__ = ["FIDOptions", "FIDResult", "compute_fid", "compute_statistics", "default_cache_dir"]

logger = logging.getLogger(__name__)

METRIC_VERSION = "fid-1"


@dataclass(frozen=True)
class FIDOptions:
    """Everything that changes an FID number (recorded in the results)."""

    protocol: str = "pytorch-fid"
    batch_size: int = 32
    dims: int = FEATURE_DIM

    def __post_init__(self) -> None:
        if self.protocol not in FID_PROTOCOLS:
            raise ValueError(f"unknown FID protocol {self.protocol!r}; choose one of {FID_PROTOCOLS}")
        if self.dims != FEATURE_DIM:
            raise ValueError(f"only pool3 ({FEATURE_DIM}-d) features are FID; got dims={self.dims}")


@dataclass(frozen=True)
class FIDResult:
    fid: float
    n_a: int | None
    n_b: int | None
    summary: dict[str, Any]


def default_cache_dir() -> Path:
    env = os.environ.get("INFINITY_EVAL_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "infinity-eval"


def _set_fingerprint(records: list[ImageRecord], options: FIDOptions, weights_sha: str) -> str:
    """A local file by path, size and mtime; a copy of an object in a store by URL, size and content."""
    h = hashlib.sha256()
    h.update(json.dumps({"protocol": options.protocol, "weights": weights_sha, "v": METRIC_VERSION}).encode())
    for r in records:
        st = r.image.stat()
        if r.url is None:
            h.update(f"{r.image.resolve()}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        else:
            content = hashlib.sha256(r.image.read_bytes()).hexdigest()
            h.update(f"{r.url}\0{st.st_size}\0{content}\n".encode())
    return h.hexdigest()[:24]


def _is_statistics_file(source: str | os.PathLike[str]) -> bool:
    """An `.npz` file, local or at a URL (whose existence is checked when it is read)."""
    if is_url(source):
        return str(source).rstrip("/").endswith(".npz")
    src = Path(source)
    return src.suffix == ".npz" and src.is_file()


def _checked_statistics(
    src: Path, protocol: str, unrecorded_protocol: str, name: str | None = None
) -> FeatureStatistics:
    """Load an `.npz` and refuse it unless its protocol (recorded, or `unrecorded_protocol`) is `protocol`.

    `name` is how messages call the file (its URL when `src` is a temporary copy)."""
    stats = FeatureStatistics.load(src)
    src_name = name or str(src)
    recorded = stats.meta.get("protocol")
    if recorded is None:
        if unrecorded_protocol != protocol:
            raise ValueError(
                f"{src_name} records no FID protocol (a plain mu/sigma file, as pytorch-fid and clean-fid write), so "
                f"it is taken to be {unrecorded_protocol!r} statistics, not {protocol!r}. Run with --protocol "
                f"{unrecorded_protocol}; or, if you know the file was computed under {protocol!r} (e.g. by "
                f"clean-fid), say so with --stats-protocol {protocol}; or recompute it from the images with "
                f"`infinity-eval fid IMAGES --protocol {protocol} --save-stats FILE`"
            )
        logger.info("%s records no protocol: taken as %r", src_name, unrecorded_protocol)
        stats.meta = {**stats.meta, "protocol_assumed": unrecorded_protocol}
    elif recorded != protocol:
        raise ValueError(
            f"{src_name} was computed with protocol {recorded!r}, not {protocol!r}: run with --protocol {recorded} "
            f"or recompute it with `infinity-eval fid IMAGES --protocol {protocol} --save-stats FILE`"
        )
    return stats


def compute_statistics(
    source: str | os.PathLike[str],
    backbone: FIDBackbone | None,
    options: FIDOptions | None = None,
    device: str | torch.device = "cpu",
    cache_dir: str | os.PathLike[str] | None = None,
    shard: Shard | None = None,
    num_workers: int = 0,
    progress: bool = False,
    unrecorded_protocol: str = "pytorch-fid",
) -> FeatureStatistics:
    """Statistics of a folder / manifest (cached by file list, sizes, mtimes, protocol, weights) or an `.npz`.

    An `.npz` needs no backbone. Its recorded protocol must equal `options.protocol`; a file that records
    none (pytorch-fid's own mu/sigma files) counts as `unrecorded_protocol` and is refused under any other.
    """
    options = options or FIDOptions()
    if unrecorded_protocol not in FID_PROTOCOLS:
        raise ValueError(f"unknown FID protocol {unrecorded_protocol!r}; choose one of {FID_PROTOCOLS}")
    with local_images(source, recursive=False) as local:
        src = local.path
        if _is_statistics_file(src):
            return _checked_statistics(src, options.protocol, unrecorded_protocol, local.display)
        if backbone is None:
            raise ValueError(
                f"{local.display} holds images: computing their statistics needs the FID Inception backbone"
            )
        shard = shard or Shard()
        records = shard.select(local.named(read_image_inputs(src)), key=lambda r: r.location)
        fingerprint = _set_fingerprint(records, options, backbone.sha256)
        cache_file = None
        if cache_dir is not None:
            cache_file = Path(cache_dir) / f"fid-stats-{fingerprint}.npz"
            if cache_file.is_file():
                logger.info("using cached FID statistics %s for %s", cache_file, local.display)
                return FeatureStatistics.load(cache_file)
        feats = extract_features(
            [r.image for r in records],
            backbone.model,
            options.protocol,
            options.batch_size,
            device,
            num_workers,
            progress,
        )
    stats = FeatureStatistics.from_features(feats)
    stats.meta = {
        "source": local.display,
        "protocol": options.protocol,
        "backbone": backbone.label,
        "weights_sha256": backbone.sha256,
        "n": len(records),
        "shard": f"{shard.index}/{shard.count}",
        "fingerprint": fingerprint,
    }
    if cache_file is not None:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        stats.save(cache_file)
    return stats


def compute_fid(
    a: str | os.PathLike[str],
    b: str | os.PathLike[str],
    weights: str | os.PathLike[str] | None = None,
    options: FIDOptions | None = None,
    device: str | torch.device = "cpu",
    cache_dir: str | os.PathLike[str] | None = None,
    out_dir: str | os.PathLike[str] | None = None,
    num_workers: int = 0,
    progress: bool = False,
    backbone: FIDBackbone | None = None,
    unrecorded_protocol: str = "pytorch-fid",
) -> FIDResult:
    """FID(a, b). `b` is typically the reference set (folder, manifest or `.npz`), cached in `cache_dir`.

    The Inception weights are loaded only when an input holds images: two `.npz` files need none.
    """
    options = options or FIDOptions()
    if backbone is None and not (_is_statistics_file(a) and _is_statistics_file(b)):
        backbone = load_fid_inception(weights, device=device)
    stats_a = compute_statistics(
        a, backbone, options, device, None, Shard(), num_workers, progress, unrecorded_protocol
    )
    stats_b = compute_statistics(
        b, backbone, options, device, cache_dir, Shard(), num_workers, progress, unrecorded_protocol
    )
    fid = frechet_distance(stats_a.mu, stats_a.sigma, stats_b.mu, stats_b.sigma)
    warnings: list[str] = []
    for name, st in (("a", stats_a), ("b", stats_b)):
        if st.n is not None and st.n < FEATURE_DIM:
            warnings.append(
                f"set {name} has N = {st.n} < {FEATURE_DIM}: its covariance is rank-deficient and FID is "
                "strongly biased; compare only equal N"
            )
    recorded_weights = {
        str(st.meta["weights_sha256"]) for st in (stats_a, stats_b) if "weights_sha256" in st.meta
    }
    if backbone is not None:
        recorded_weights.add(backbone.sha256)
    if len(recorded_weights) > 1:
        warnings.append(
            f"the two sets were computed with different Inception weights (SHA-256 {sorted(recorded_weights)}); "
            "their FID is not a comparable number"
        )
    for w in warnings:
        logger.warning(w)
    if backbone is not None:
        label, weights_id, weight_files = (
            backbone.label,
            backbone.sha256[:16],
            [describe_weight_file(backbone.path)],
        )
    else:
        labels = {str(st.meta.get("backbone", "unrecorded")) for st in (stats_a, stats_b)}
        label = " / ".join(sorted(labels)) + " (precomputed statistics)"
        weights_id = ",".join(sorted(w[:16] for w in recorded_weights)) or "unrecorded"
        weight_files = []
    opts = {"protocol": options.protocol, "dims": options.dims, "backbone": label}
    proto = protocol_id("fid", {**opts, "weights": weights_id})
    summary = {
        "header": run_header(
            "fid",
            proto,
            {**opts, "batch_size": options.batch_size, "metric_version": METRIC_VERSION},
            weight_files,
            device=str(device),
        ),
        "fid": fid,
        "n_a": stats_a.n,
        "n_b": stats_b.n,
        "a": redact(str(a)),
        "b": redact(str(b)),
        "protocol_assumed": {
            name: st.meta["protocol_assumed"]
            for name, st in (("a", stats_a), ("b", stats_b))
            if "protocol_assumed" in st.meta
        },
        "warnings": warnings,
    }
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        write_json(out / "summary.json", summary)
    return FIDResult(fid=fid, n_a=stats_a.n, n_b=stats_b.n, summary=summary)
