"""Resumable per-image scoring with any `score(prompts, images) -> list[float]` scorer (ImageReward, HPS, ...)."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from .io import ImageRecord, load_image
from .runs import ResultStore, Shard, protocol_id, read_all_results, run_header, write_csv, write_json

__all__ = ["Scorer", "paired_batches", "run_image_scorer"]

logger = logging.getLogger(__name__)


class Scorer(Protocol):
    def score(self, prompts: Sequence[str], images: Sequence[Any]) -> list[float]: ...


def paired_batches(prompts: Sequence[str], images: Sequence[Any], batch_size: int):
    """Yield (prompts, images) slices of ``batch_size`` pairs; one prompt per image is required."""
    if len(prompts) != len(images):
        raise ValueError(f"got {len(prompts)} prompts but {len(images)} images; pass one prompt per image")
    for start in range(0, len(prompts), batch_size):
        yield list(prompts[start : start + batch_size]), images[start : start + batch_size]


def run_image_scorer(
    metric: str,
    records: Sequence[ImageRecord],
    scorer: Scorer,
    out_dir: str | os.PathLike[str],
    summarize: Callable[[Sequence[Mapping[str, Any]]], dict[str, Any]],
    options: Mapping[str, Any],
    weights: Sequence[Mapping[str, Any]] = (),
    shard: Shard | None = None,
    batch_size: int = 16,
    missing: Sequence[str] = (),
    progress: bool = False,
) -> dict[str, Any]:
    """Score records in batches, appending one row per image (`score`), then summarise all rows of `out_dir`.

    `summarize(rows)` returns the benchmark's official aggregation; per-prompt and per-tag CSVs are added.
    """
    shard = shard or Shard()
    weights_id = ",".join(str(w.get("sha256", ""))[:16] for w in weights) or "none"
    protocol = protocol_id(metric, options)
    out = Path(out_dir)
    store = ResultStore(out / f"results{shard.suffix}.jsonl")
    work = shard.select(records, key=ImageRecord.key_fields)
    todo = [
        r
        for r in work
        if (metric, protocol, weights_id, r.location, r.prompt_id, str(r.sample_index)) not in store
    ]
    logger.info("%s: %d images in this shard, %d already scored", metric, len(work), len(work) - len(todo))
    batches = [todo[i : i + batch_size] for i in range(0, len(todo), batch_size)]
    iterator: Any = batches
    if progress:
        from tqdm import tqdm

        iterator = tqdm(batches, desc=metric, unit="batch")
    for batch in iterator:
        images = [load_image(r.image) for r in batch]
        scores = scorer.score([r.prompt for r in batch], images)
        if len(scores) != len(batch):
            raise ValueError(f"{metric} scorer returned {len(scores)} scores for {len(batch)} images")
        store.append(
            {
                "metric": metric,
                "protocol": protocol,
                "weights": weights_id,
                "image": r.location,
                "prompt_id": r.prompt_id,
                "sample_index": str(r.sample_index),
                "prompt": r.prompt,
                "tag": r.tag,
                "score": float(s),
            }
            for r, s in zip(batch, scores, strict=True)
        )
    rows, other = read_all_results(out, metric, protocol)
    if not rows:
        raise ValueError(f"no {metric} rows to summarise in {out}")
    summary = summarize(rows)
    summary.update(
        {
            "header": run_header(metric, protocol, options, weights),
            "missing_images": list(missing),
            "rows_with_other_protocols": other,
            "shard": f"{shard.index}/{shard.count}",
        }
    )
    write_json(out / "summary.json", summary)
    per_prompt: dict[str, list[float]] = {}
    per_tag: dict[str, list[float]] = {}
    prompts: dict[str, str] = {}
    for row in rows:
        per_prompt.setdefault(row["prompt_id"], []).append(row["score"])
        prompts[row["prompt_id"]] = row["prompt"]
        if row.get("tag") is not None:
            per_tag.setdefault(row["tag"], []).append(row["score"])
    write_csv(
        out / "per_prompt.csv",
        [
            {"prompt_id": k, "prompt": prompts[k], "images": len(v), "mean_score": sum(v) / len(v)}
            for k, v in sorted(per_prompt.items())
        ],
        ["prompt_id", "prompt", "images", "mean_score"],
    )
    write_csv(
        out / "per_tag.csv",
        [{"tag": k, "images": len(v), "mean_score": sum(v) / len(v)} for k, v in sorted(per_tag.items())],
        ["tag", "images", "mean_score"],
    )
    return summary
