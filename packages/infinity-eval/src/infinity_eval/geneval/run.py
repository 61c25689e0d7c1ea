"""Resumable GenEval runs over a folder or manifest: per-image rows, then the official aggregation."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..io import ImageRecord, load_image
from ..prompts import data_file_sha256, geneval_metadata
from ..runs import ResultStore, Shard, protocol_id, read_all_results, run_header, write_csv, write_json
from .colors import ColorClassifier
from .detectors import Detector
from .rules import GenEvalOptions, aggregate, evaluate_detections, format_summary

__all__ = ["METRIC_VERSION", "run_geneval"]

logger = logging.getLogger(__name__)

METRIC_VERSION = "geneval-1 (djghosh13/geneval @af4902f rules)"


def _metadata_mismatches(records: Sequence[ImageRecord]) -> list[str]:
    shipped = geneval_metadata()
    out: set[str] = set()
    for rec in records:
        if rec.prompt_id.isdigit() and rec.meta is not None:
            idx = int(rec.prompt_id)
            if idx >= len(shipped) or dict(rec.meta) != shipped[idx]:
                out.add(rec.prompt_id)
    return sorted(out)


def _images_per_prompt(rows: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for row in rows:
        counts[row["metadata"]] = counts.get(row["metadata"], 0) + 1
    return {"min": min(counts.values()), "max": max(counts.values())} if counts else {}


def run_geneval(
    records: Sequence[ImageRecord],
    detector: Detector,
    out_dir: str | os.PathLike[str],
    options: GenEvalOptions | None = None,
    color_classifier: ColorClassifier | None = None,
    shard: Shard | None = None,
    detector_name: str = "custom",
    weights: Sequence[Mapping[str, Any]] = (),
    progress: bool = False,
) -> dict[str, Any]:
    """Score every record (skipping ones already in the results), then summarise all rows of `out_dir`.

    Records need `meta` (the GenEval metadata object). Writes `results[.shard-i-of-n].jsonl`,
    `summary.json`, `per_tag.csv`, `per_prompt.csv`; returns the summary.
    """
    options = options or GenEvalOptions()
    shard = shard or Shard()
    for rec in records:
        if rec.meta is None:
            raise ValueError(
                f"image {rec.location} has no GenEval metadata (use the GenEval layout or a manifest 'geneval' field)"
            )
    needs_color = any("color" in c for r in records if r.meta is not None for c in r.meta.get("include", []))
    if needs_color and color_classifier is None:
        raise ValueError(
            "these prompts have colour clauses but no colour classifier was given: install "
            "infinity-eval[geneval-clip] and pass --clip-weights, or pass --color-classifier module:factory"
        )
    weights_id = ",".join(str(w.get("sha256", ""))[:16] for w in weights) or detector_name
    opts = {**options.to_dict(), "detector": detector_name, "metric_version": METRIC_VERSION}
    protocol = protocol_id("geneval", opts)
    out = Path(out_dir)
    store = ResultStore(out / f"results{shard.suffix}.jsonl")
    work = shard.select(records, key=ImageRecord.key_fields)
    todo = [
        r
        for r in work
        if ("geneval", protocol, weights_id, r.location, r.prompt_id, str(r.sample_index)) not in store
    ]
    logger.info("GenEval: %d images in this shard, %d already scored", len(work), len(work) - len(todo))
    iterator: Any = todo
    if progress:
        from tqdm import tqdm

        iterator = tqdm(todo, desc="geneval", unit="img")
    for rec in iterator:
        image = load_image(rec.image, exif_transpose=True)
        detections = detector.detect(image, rec)
        verdict = evaluate_detections(detections, rec.meta, options, image, color_classifier, record=rec)
        store.append(
            [
                {
                    "metric": "geneval",
                    "protocol": protocol,
                    "weights": weights_id,
                    "image": rec.location,
                    "prompt_id": rec.prompt_id,
                    "sample_index": str(rec.sample_index),
                    "filename": rec.location,
                    "tag": rec.meta["tag"],
                    "prompt": rec.meta.get("prompt", rec.prompt),
                    "correct": verdict.correct,
                    "reason": verdict.reason,
                    "metadata": json.dumps(dict(rec.meta)),
                    "details": json.dumps(verdict.details),
                }
            ]
        )
    rows, other = read_all_results(out, "geneval", protocol)
    summary = aggregate(rows)
    expected = {r.location for r in records}
    scored = {r["image"] for r in rows}
    summary.update(
        {
            "header": run_header(
                "geneval", protocol, opts, weights, extra_libraries=("mmdet", "mmcv-full", "open-clip-torch")
            ),
            "prompt_file_sha256": data_file_sha256("geneval", "evaluation_metadata.jsonl"),
            "missing_images": sorted(expected - scored),
            "rows_with_other_protocols": other,
            "metadata_differs_from_shipped": _metadata_mismatches(records),
            "images_per_prompt": _images_per_prompt(rows),
            "shard": f"{shard.index}/{shard.count}",
        }
    )
    write_json(out / "summary.json", summary)
    write_csv(
        out / "per_tag.csv",
        [
            {"tag": t, "score": s, "correct": summary["tag_correct"][t], "images": summary["tag_counts"][t]}
            for t, s in summary["tags"].items()
        ],
        ["tag", "score", "correct", "images"],
    )
    per_prompt: dict[str, dict[str, Any]] = {}
    for row in rows:
        entry = per_prompt.setdefault(
            row["prompt_id"],
            {
                "prompt_id": row["prompt_id"],
                "tag": row["tag"],
                "prompt": row["prompt"],
                "images": 0,
                "correct": 0,
            },
        )
        entry["images"] += 1
        entry["correct"] += int(bool(row["correct"]))
    for entry in per_prompt.values():
        entry["score"] = entry["correct"] / entry["images"]
    write_csv(
        out / "per_prompt.csv",
        [per_prompt[k] for k in sorted(per_prompt)],
        ["prompt_id", "tag", "prompt", "images", "correct", "score"],
    )
    logger.info("\n%s", format_summary(summary))
    return summary
