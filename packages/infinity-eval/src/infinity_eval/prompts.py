"""Benchmark prompt sets shipped as package data, their validation, and prompt lists for any generator."""

from __future__ import annotations

import hashlib
import json
import os
import sys
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    if sys.version_info >= (3, 11):
        from importlib.resources.abc import Traversable
    else:
        from importlib.abc import Traversable

__all__ = [
    "BENCHMARKS",
    "GENEVAL_TAG_COUNTS",
    "PromptItem",
    "benchmark_prompts",
    "data_file_sha256",
    "geneval_metadata",
    "geneval_object_names",
    "hps_prompts",
    "imagereward_prompts",
    "validate_geneval_metadata",
    "write_prompts",
]

BENCHMARKS = ("geneval", "imagereward", "hps")
GENEVAL_TAG_COUNTS = {
    "position": 100,
    "color_attr": 100,
    "two_object": 99,
    "colors": 94,
    "single_object": 80,
    "counting": 80,
}
HPS_STYLES = ("anime", "concept-art", "paintings", "photo")
_COLORS = ("red", "orange", "yellow", "green", "blue", "purple", "pink", "brown", "black", "white")
_RELATIONS = ("left of", "right of", "above", "below")


@dataclass(frozen=True)
class PromptItem:
    """One prompt to generate for: id, text, how many images, and benchmark fields (GenEval metadata, style).

    ``seed``, when set, is this prompt's own base seed (image ``i`` gets ``seed + i``) instead of the run's:
    a prompt list that repeats a prompt (draws of a generator, not a benchmark's distinct prompts) needs it, or
    every repeat gets the same images and counts as one sample many times.
    """

    prompt_id: str
    prompt: str
    images: int
    tag: str | None = None
    meta: Mapping[str, Any] | None = None
    seed: int | None = None


def _data(*parts: str) -> Traversable:
    return resources.files("infinity_eval").joinpath("data", *parts)


def data_file_sha256(*parts: str) -> str:
    return hashlib.sha256(_data(*parts).read_bytes()).hexdigest()


def geneval_metadata() -> list[dict[str, Any]]:
    """The 553 GenEval prompt specs (djghosh13/geneval `evaluation_metadata.jsonl` @ af4902f)."""
    text = _data("geneval", "evaluation_metadata.jsonl").read_text(encoding="utf-8")
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def geneval_object_names() -> list[str]:
    """The 80 COCO class names in detector class-index order."""
    text = _data("geneval", "object_names.txt").read_text(encoding="utf-8")
    return [line.strip() for line in text.splitlines() if line.strip()]


def imagereward_prompts() -> list[dict[str, str]]:
    """The 100 ImageReward benchmark prompts `{id, prompt}`."""
    return json.loads(_data("imagereward", "benchmark-prompts.json").read_text(encoding="utf-8"))


def hps_prompts(folder: str | os.PathLike[str]) -> dict[str, list[str]]:
    """User-supplied HPS v2 benchmark prompts: `<folder>/<style>.json`, each a JSON list of strings.

    They are published only in the Hugging Face dataset zhwang/HPDv2 (`benchmark/*.json`), not shipped here.
    """
    base = Path(folder)
    out: dict[str, list[str]] = {}
    for style in HPS_STYLES:
        f = base / f"{style}.json"
        if not f.is_file():
            raise FileNotFoundError(
                f"HPS prompt file {f} is missing; get benchmark/{style}.json from the Hugging Face dataset zhwang/HPDv2"
            )
        data = json.loads(f.read_text(encoding="utf-8"))
        if not isinstance(data, list) or not all(isinstance(p, str) for p in data):
            raise ValueError(f"{f}: expected a JSON list of prompt strings")
        out[style] = data
    return out


def validate_geneval_metadata(
    rows: Sequence[Mapping[str, Any]], object_names: Sequence[str] | None = None
) -> Counter:
    """Check the clause shapes of GenEval's `prompts/evaluation_metadata.jsonl` for every row; returns the tag counts. Raises on the first problem."""
    names = set(object_names or geneval_object_names())
    tags: Counter = Counter()
    for i, row in enumerate(rows):
        where = f"GenEval metadata line {i + 1}"
        tag, inc = row.get("tag"), row.get("include")
        if (
            tag not in GENEVAL_TAG_COUNTS
            or not isinstance(inc, list)
            or not isinstance(row.get("prompt"), str)
        ):
            raise ValueError(f"{where}: needs a known tag, an include list and a prompt, got {row!r}")
        for clause in [*inc, *row.get("exclude", [])]:
            if clause.get("class") not in names:
                raise ValueError(f"{where}: class {clause.get('class')!r} is not one of the 80 object names")
            if "color" in clause and clause["color"] not in _COLORS:
                raise ValueError(f"{where}: colour {clause['color']!r} is not one of {_COLORS}")
            if "position" in clause and clause["position"][0] not in _RELATIONS:
                raise ValueError(f"{where}: relation {clause['position'][0]!r} is not one of {_RELATIONS}")
        counts = [int(c["count"]) for c in inc]
        shape_ok = {
            "single_object": len(inc) == 1 and counts == [1],
            "two_object": len(inc) == 2 and counts == [1, 1] and inc[0]["class"] != inc[1]["class"],
            "colors": len(inc) == 1 and counts == [1] and "color" in inc[0],
            "color_attr": len(inc) == 2 and all("color" in c for c in inc),
            "position": len(inc) == 2
            and counts == [1, 1]
            and "position" in inc[1]
            and inc[1]["position"][1] == 0,
            "counting": len(inc) == 1
            and counts[0] in (2, 3, 4)
            and row.get("exclude") == [{"class": inc[0]["class"], "count": counts[0] + 1}],
        }[tag]
        if not shape_ok:
            raise ValueError(f"{where}: clauses do not have the {tag} shape: {row!r}")
        tags[tag] += 1
    return tags


def benchmark_prompts(
    benchmark: str, images_per_prompt: int | None = None, hps_folder: str | os.PathLike[str] | None = None
) -> list[PromptItem]:
    """Prompt list of a benchmark with its official images per prompt (GenEval 4, ImageReward 10, HPS 1)."""
    if benchmark == "geneval":
        n = images_per_prompt or 4
        return [PromptItem(f"{i:05d}", m["prompt"], n, m["tag"], m) for i, m in enumerate(geneval_metadata())]
    if benchmark == "imagereward":
        n = images_per_prompt or 10
        return [PromptItem(p["id"], p["prompt"], n) for p in imagereward_prompts()]
    if benchmark == "hps":
        if hps_folder is None:
            raise ValueError(
                "the HPS prompts are not shipped; pass the folder with anime.json etc. (zhwang/HPDv2)"
            )
        n = images_per_prompt or 1
        return [
            PromptItem(f"{style}/{i:05d}", p, n, style)
            for style, prompts in hps_prompts(hps_folder).items()
            for i, p in enumerate(prompts)
        ]
    raise ValueError(f"unknown benchmark {benchmark!r}; choose one of {BENCHMARKS}")


def write_prompts(items: Sequence[PromptItem], path: str | os.PathLike[str], fmt: str = "jsonl") -> None:
    """Write a prompt list: `jsonl` ({prompt_id, prompt, images, tag?, geneval?}) or `txt` (one prompt a line)."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", encoding="utf-8") as handle:
        for item in items:
            if fmt == "txt":
                handle.write(item.prompt.replace("\n", " ") + "\n")
            elif fmt == "jsonl":
                row: dict[str, Any] = {
                    "prompt_id": item.prompt_id,
                    "prompt": item.prompt,
                    "images": item.images,
                }
                if item.tag is not None:
                    row["tag"] = item.tag
                if item.meta is not None:
                    row["geneval"] = dict(item.meta)
                handle.write(json.dumps(row, ensure_ascii=False) + "\n")
            else:
                raise ValueError(f"unknown prompt format {fmt!r}; use 'jsonl' or 'txt'")
