"""Image inputs: benchmark folder layouts and the generic JSONL manifest, all turned into `ImageRecord`s.

Layouts (official GenEval `generation/diffusers_generate.py`, ImageReward and HPSv2 benchmark layouts):
* generic manifest: one JSON object per line, `image` (path relative to the manifest), `prompt`, optional
  `prompt_id`/`id`, `sample_index`, `tag`, `style`, `geneval` (the metadata object);
* GenEval: `<root>/<index>/metadata.jsonl` (one JSON object) + `samples/<digits>.png|.jpg`;
* HPS: `<root>/<style>/<idx>.jpg|.png` (+ user-supplied `<style>.json` prompt lists);
* ImageReward: official `<dir>/<id>_<i>.png` or Infinity's `<dir>/<id>/<id>_<i>.jpg`;
* plain folder (FID): files with pytorch-fid's extensions, sorted, non-recursive.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image, ImageOps

__all__ = [
    "CLIP_MEAN",
    "CLIP_STD",
    "IMAGE_EXTENSIONS",
    "ImageRecord",
    "list_image_files",
    "load_image",
    "read_geneval_folder",
    "read_hps_folder",
    "read_image_inputs",
    "read_imagereward_folder",
    "read_manifest",
    "write_manifest",
]

# OpenAI CLIP's per-channel normalisation, shared by HPSv2, ImageReward (BLIP) and GenEval's colour classifier.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
IMAGE_EXTENSIONS = ("bmp", "jpg", "jpeg", "pgm", "png", "ppm", "tif", "tiff", "webp")
_DIGITS = re.compile(r"^\d+$")


@dataclass(frozen=True)
class ImageRecord:
    """One image to score: its file, prompt, prompt id, sample index and benchmark fields.

    `tag` is the GenEval tag or HPS style; `meta` holds the GenEval metadata object. `url` is set when `image`
    is the temporary local copy of an object in a store (`infinity_eval.remote`): results name it instead.
    """

    image: Path
    prompt: str = ""
    prompt_id: str = ""
    sample_index: int = 0
    tag: str | None = None
    meta: Mapping[str, Any] | None = field(default=None, compare=False, hash=False)
    url: str | None = None

    @property
    def location(self) -> str:
        """The image's name in results, resume keys and messages: its URL, else its local path."""
        return self.url if self.url is not None else str(self.image)

    def key_fields(self) -> tuple[str, str, int]:
        """What names one result (location, prompt id, sample index): the order shards split and resume in."""
        return (self.location, self.prompt_id, self.sample_index)


def load_image(path: str | os.PathLike[str], exif_transpose: bool = False) -> Image.Image:
    """Open an image as RGB (EXIF orientation applied only when asked: pytorch-fid does not)."""
    try:
        with Image.open(path) as img:
            img.load()
            if exif_transpose:
                img = ImageOps.exif_transpose(img)
            return img.convert("RGB")
    except (OSError, ValueError) as err:
        raise OSError(f"cannot read image {path}: {err}") from err


def list_image_files(folder: str | os.PathLike[str], recursive: bool = False) -> list[Path]:
    """Image files of a folder with pytorch-fid's (lower-case) extensions, sorted."""
    root = Path(folder)
    if not root.is_dir():
        raise NotADirectoryError(f"image folder {root} does not exist")
    pattern = "**/*" if recursive else "*"
    files = [p for p in root.glob(pattern) if p.is_file() and p.suffix[1:] in IMAGE_EXTENSIONS]
    return sorted(files)


def _json_lines(path: Path) -> Iterable[tuple[int, dict[str, Any]]]:
    with open(path, encoding="utf-8") as handle:
        for lineno, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}:{lineno}: not valid JSON ({err.msg})") from err
            if not isinstance(obj, dict):
                raise ValueError(f"{path}:{lineno}: expected a JSON object, got {type(obj).__name__}")
            yield lineno, obj


def read_manifest(path: str | os.PathLike[str], check_exists: bool = True) -> list[ImageRecord]:
    """Read a generic JSONL manifest (see module docstring). Image paths are relative to the manifest."""
    manifest = Path(path)
    records: list[ImageRecord] = []
    counters: dict[str, int] = {}
    for lineno, obj in _json_lines(manifest):
        if "image" not in obj:
            raise KeyError(f"{manifest}:{lineno}: missing key 'image' (the image path)")
        image = Path(obj["image"])
        if not image.is_absolute():
            image = manifest.parent / image
        if check_exists and not image.is_file():
            raise FileNotFoundError(f"{manifest}:{lineno}: image {image} does not exist")
        prompt = str(obj.get("prompt", ""))
        prompt_id = str(obj.get("prompt_id", obj.get("id", prompt)))
        sample_index = int(obj["sample_index"]) if "sample_index" in obj else counters.get(prompt_id, 0)
        counters[prompt_id] = max(counters.get(prompt_id, 0), sample_index + 1)
        meta = obj.get("geneval")
        if meta is not None and not isinstance(meta, dict):
            raise ValueError(f"{manifest}:{lineno}: 'geneval' must be the metadata object")
        tag = obj.get("tag", obj.get("style", meta.get("tag") if meta else None))
        records.append(ImageRecord(image, prompt, prompt_id, sample_index, tag, meta))
    if not records:
        raise ValueError(f"manifest {manifest} holds no images")
    return records


def write_manifest(records: Sequence[ImageRecord], path: str | os.PathLike[str]) -> None:
    """Write records as a JSONL manifest (image paths relative to the manifest when possible)."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", encoding="utf-8") as handle:
        for rec in records:
            try:
                image = os.path.relpath(rec.image, out.parent)
            except ValueError:
                image = str(rec.image)
            row: dict[str, Any] = {
                "image": image,
                "prompt": rec.prompt,
                "prompt_id": rec.prompt_id,
                "sample_index": rec.sample_index,
            }
            if rec.tag is not None:
                row["tag"] = rec.tag
            if rec.meta is not None:
                row["geneval"] = dict(rec.meta)
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")


def read_geneval_folder(root: str | os.PathLike[str]) -> list[ImageRecord]:
    """GenEval's layout: every all-digit sub-folder's `metadata.jsonl` (one object) and `samples/<digits>.png|jpg`."""
    base = Path(root)
    if not base.is_dir():
        raise NotADirectoryError(f"GenEval image folder {base} does not exist")
    records: list[ImageRecord] = []
    for sub in sorted(p for p in base.iterdir() if p.is_dir() and _DIGITS.match(p.name)):
        meta_file = sub / "metadata.jsonl"
        if not meta_file.is_file():
            raise FileNotFoundError(f"{meta_file} is missing (each GenEval prompt folder needs it)")
        text = meta_file.read_text(encoding="utf-8").strip()
        try:
            meta = json.loads(text)
        except json.JSONDecodeError as err:
            raise ValueError(f"{meta_file}: not one JSON object ({err.msg})") from err
        if not isinstance(meta, dict) or "include" not in meta or "tag" not in meta:
            raise ValueError(f"{meta_file}: expected a GenEval metadata object with 'tag' and 'include'")
        samples = sub / "samples"
        if not samples.is_dir():
            continue
        for img in sorted(samples.iterdir()):
            if img.suffix.lower() in (".png", ".jpg") and _DIGITS.match(img.stem):
                records.append(
                    ImageRecord(img, meta.get("prompt", ""), sub.name, int(img.stem), meta["tag"], meta)
                )
    if not records:
        raise ValueError(f"no GenEval samples found under {base} (expected <index>/samples/<digits>.png)")
    return records


def read_hps_folder(
    root: str | os.PathLike[str], prompts: Mapping[str, Sequence[str]] | None = None
) -> tuple[list[ImageRecord], list[str]]:
    """HPS layout `<root>/<style>/<idx>.jpg`; `prompts[style][idx]` gives the prompt.

    Returns the records and messages for missing images (which are skipped, as in the original).
    """
    base = Path(root)
    if not base.is_dir():
        raise NotADirectoryError(f"HPS image folder {base} does not exist")
    records: list[ImageRecord] = []
    missing: list[str] = []
    for style_dir in sorted(p for p in base.iterdir() if p.is_dir()):
        style = style_dir.name
        files = {
            int(p.stem): p
            for p in style_dir.iterdir()
            if p.suffix[1:].lower() in IMAGE_EXTENSIONS and _DIGITS.match(p.stem)
        }
        if prompts is not None:
            if style not in prompts:
                raise KeyError(
                    f"no prompt list for HPS style {style!r} (folder {style_dir}); add {style}.json"
                )
            for idx, prompt in enumerate(prompts[style]):
                if idx in files:
                    records.append(ImageRecord(files[idx], prompt, f"{style}/{idx:05d}", 0, style))
                else:
                    missing.append(f"{style}/{idx:05d}: image missing")
        else:
            for idx in sorted(files):
                records.append(ImageRecord(files[idx], "", f"{style}/{idx:05d}", 0, style))
    return records, missing


def read_imagereward_folder(
    root: str | os.PathLike[str], prompts: Sequence[Mapping[str, str]]
) -> tuple[list[ImageRecord], list[str]]:
    """ImageReward layouts: `<root>/<id>_<i>.(png|jpg)` (official) or `<root>/<id>/<id>_<i>.(png|jpg)` (Infinity)."""
    base = Path(root)
    if not base.is_dir():
        raise NotADirectoryError(f"ImageReward image folder {base} does not exist")
    records: list[ImageRecord] = []
    missing: list[str] = []
    for entry in prompts:
        pid, prompt = str(entry["id"]), str(entry["prompt"])
        pattern = re.compile(re.escape(pid) + r"_(\d+)\.(png|jpg|jpeg|webp)$", re.IGNORECASE)
        found: dict[int, Path] = {}
        for folder in (base, base / pid):
            if folder.is_dir():
                for p in folder.iterdir():
                    m = pattern.match(p.name)
                    if m and p.is_file():
                        found.setdefault(int(m.group(1)), p)
        if not found:
            missing.append(f"{pid}: no images")
        for i in sorted(found):
            records.append(ImageRecord(found[i], prompt, pid, i))
    return records, missing


def read_image_inputs(path: str | os.PathLike[str]) -> list[ImageRecord]:
    """A manifest (`.jsonl` file) or a plain image folder (FID-style, prompts empty)."""
    p = Path(path)
    if p.is_file() and p.suffix == ".jsonl":
        return read_manifest(p)
    files = list_image_files(p)
    if not files:
        raise ValueError(f"no images with extensions {IMAGE_EXTENSIONS} in {p}")
    return [ImageRecord(f, "", f.stem, 0) for f in files]
