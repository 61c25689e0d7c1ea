"""Drive any `prompts -> images` callable over a benchmark's prompts, writing the official layout + a manifest.

A generator is `callable(prompts: list[str], seeds: list[int]) -> list[PIL.Image]` (one image per prompt
entry); callables taking only `prompts` work too. Image `i` of a prompt gets seed `seed + i` (the official
GenEval script re-seeds per prompt and draws its samples from one stream; a per-image seed is the closest
generator-independent equivalent), or `item.seed + i` where the prompt item sets its own. Existing images
are kept, so an interrupted run resumes.
Layouts: GenEval `<index>/metadata.jsonl` + `samples/<i:04d>.png`; ImageReward `<id>/<id>_<i>.<ext>`
(Infinity's layout); HPS `<style>/<idx:05d>.jpg`. `manifest.jsonl` lists every image for the scorers.
"""

from __future__ import annotations

import inspect
import json
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from PIL import Image

from ._imports import import_object
from .io import ImageRecord, write_manifest
from .prompts import PromptItem
from .runs import Shard

__all__ = ["Generator", "generate_benchmark", "image_path", "infinity_generator", "load_generator"]

logger = logging.getLogger(__name__)

Generator = Callable[..., Sequence[Image.Image]]


def load_generator(spec: str, kwargs: Mapping[str, Any] | None = None) -> Generator:
    """`module:factory` -> factory(**kwargs), a generator callable."""
    factory = import_object(spec, "generator factory")
    gen = factory(**dict(kwargs or {}))
    if not callable(gen):
        raise TypeError(f"generator factory {spec!r} returned {type(gen).__name__}, not a callable")
    return gen


def _takes_seeds(gen: Generator) -> bool:
    try:
        params = list(inspect.signature(gen).parameters.values())
    except (TypeError, ValueError):
        return True
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return len(positional) >= 2 or any(p.kind == p.VAR_POSITIONAL for p in params)


def image_path(out: Path, benchmark: str, item: PromptItem, index: int, ext: str) -> Path:
    if benchmark == "geneval":
        return out / item.prompt_id / "samples" / f"{index:04d}.png"
    if benchmark == "imagereward":
        return out / item.prompt_id / f"{item.prompt_id}_{index}.{ext}"
    if benchmark == "hps":
        style, idx = item.prompt_id.split("/")
        return out / style / f"{idx}.{'jpg' if ext == 'jpg' else ext}"
    return out / "images" / f"{item.prompt_id}_{index}.{ext}"


def _save(img: Image.Image, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    img.convert("RGB").save(tmp, quality=95) if path.suffix == ".jpg" else img.convert("RGB").save(tmp)
    os.replace(tmp, path)


def generate_benchmark(
    generator: Generator,
    items: Sequence[PromptItem],
    out_dir: str | os.PathLike[str],
    benchmark: str = "custom",
    batch_size: int = 4,
    seed: int = 42,
    image_format: str = "png",
    shard: Shard | None = None,
    progress: bool = False,
) -> Path:
    """Generate every missing image of `items` (this shard's slice), write the layout and `manifest.jsonl`."""
    out = Path(out_dir)
    shard = shard or Shard()
    with_seeds = _takes_seeds(generator)
    jobs: list[tuple[PromptItem, int, Path]] = []
    for item in shard.select(items, key=lambda i: i.prompt_id):
        if benchmark == "geneval":
            meta_file = out / item.prompt_id / "metadata.jsonl"
            meta_file.parent.mkdir(parents=True, exist_ok=True)
            meta_file.write_text(json.dumps(dict(item.meta or {})) + "\n", encoding="utf-8")
        for i in range(item.images):
            jobs.append((item, i, image_path(out, benchmark, item, i, image_format)))
    todo = [j for j in jobs if not j[2].is_file()]
    logger.info("generate: %d images, %d already present", len(jobs), len(jobs) - len(todo))
    batches = [todo[i : i + batch_size] for i in range(0, len(todo), batch_size)]
    iterator: Any = batches
    if progress:
        from tqdm import tqdm

        iterator = tqdm(batches, desc=f"generate {benchmark}", unit="batch")
    for batch in iterator:
        prompts = [item.prompt for item, _, _ in batch]
        seeds = [(seed if item.seed is None else item.seed) + i for item, i, _ in batch]
        images = generator(prompts, seeds) if with_seeds else generator(prompts)
        if len(images) != len(batch):
            raise ValueError(f"generator returned {len(images)} images for {len(batch)} prompts")
        for (_, _, path), img in zip(batch, images, strict=True):
            _save(img, path)
    records = [
        ImageRecord(path, item.prompt, item.prompt_id, i, item.tag, item.meta) for item, i, path in jobs
    ]
    manifest = out / f"manifest{shard.suffix}.jsonl"
    write_manifest(records, manifest)
    return manifest


def infinity_generator(
    model: str,
    vae: str,
    text_encoder: str,
    device: str = "cuda",
    pn: str = "1M",
    ratio: float = 1.0,
    cfg: float = 4.0,
    tau: float = 1.0,
    cfg_insertion_layer: int = 0,
) -> Generator:
    """Our Infinity pipeline as a generator (extra `infinity`); defaults follow Infinity's `scripts/eval.sh`."""
    try:
        from infinity_model import InfinityPipeline
    except ImportError as err:
        raise ImportError("the Infinity generator needs `pip install 'infinity-eval[infinity]'`") from err
    pipe = InfinityPipeline.from_pretrained(model, vae, text_encoder, device=device)

    def generate(prompts: list[str], seeds: list[int]) -> list[Image.Image]:
        return pipe(
            prompts, ratio=ratio, pn=pn, cfg=cfg, tau=tau, seed=seeds, cfg_insertion_layer=cfg_insertion_layer
        )

    return generate
