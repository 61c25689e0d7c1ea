"""A synthetic "shapes" world: coloured circles, squares and triangles on plain backgrounds.

Every sample carries a GenEval-style specification (``tag``, ``include``, ``exclude``, ``prompt``) that is
true of its image by construction, so a model trained on this world can be scored with the GenEval rules
and an exact detector. The world is small on purpose: it lets this project train a tiny Infinity end to
end on a CPU and check that text really steers the image.
"""

from __future__ import annotations

import json
import math
import random
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw

SHAPES: tuple[str, ...] = ("circle", "square", "triangle")
# Twin: infinity_eval.geneval.shapes.SHAPES_PALETTE (infinity-eval installs alone); pinned equal by a test there.
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (215, 38, 38),
    "green": (34, 160, 64),
    "blue": (36, 84, 224),
    "yellow": (240, 200, 30),
    "purple": (128, 52, 172),
}
BACKGROUNDS: tuple[tuple[int, int, int], ...] = ((255, 255, 255), (236, 236, 236), (245, 240, 225))
RELATIONS: tuple[str, ...] = ("left of", "right of", "above", "below")
TAGS: tuple[str, ...] = ("single_object", "two_object", "counting", "colors", "color_attr", "position")
COUNT_WORDS: dict[int, str] = {2: "two", 3: "three", 4: "four"}
POSITION_COLOR_PROB = 0.5
# Height/width ratios the world is rendered in (each maps onto one of the schedule templates).
RATIOS: tuple[float, ...] = (1.0, 0.75, 1.333, 0.5, 2.0)
# Objects sit on a grid of 1/GRID_DIVISIONS of the short side and are OBJECT_CELLS cells wide. At 128x128 the
# grid step is 8 px, half of the tokenizer's 16-px patch: every edge falls on a patch or half-patch boundary,
# so the world has few distinct patch contents and a tiny model can learn to draw them crisply.
GRID_DIVISIONS = 16
OBJECT_CELLS = 5


@dataclass(frozen=True)
class ShapeObject:
    """One drawn object: its class, colour name and bounding box ``(x1, y1, x2, y2)`` in pixels."""

    shape: str
    color: str
    box: tuple[int, int, int, int]


@dataclass(frozen=True)
class ShapesSample:
    """An image with its caption, its GenEval-style specification and the objects drawn in it."""

    image: Image.Image
    prompt: str
    spec: dict
    objects: tuple[ShapeObject, ...]


def _noun(shape: str, count: int) -> str:
    return shape if count == 1 else shape + "s"


def _phrase(shape: str, color: str | None, count: int = 1) -> str:
    words = [COUNT_WORDS[count]] if count > 1 else ["a"]
    if color is not None:
        words.append(color)
    words.append(_noun(shape, count))
    return " ".join(words)


def random_spec(rng: random.Random, tag: str | None = None) -> dict:
    """Draw a GenEval-style specification for the shapes world (``tag`` random when None)."""
    tag = tag or rng.choice(TAGS)
    shape_a, shape_b = rng.sample(SHAPES, 2)
    color_a, color_b = rng.choice(list(COLORS)), rng.choice(list(COLORS))
    if tag == "single_object":
        include = [{"class": shape_a, "count": 1}]
        prompt = f"a photo of {_phrase(shape_a, None)}"
    elif tag == "two_object":
        include = [{"class": shape_a, "count": 1}, {"class": shape_b, "count": 1}]
        prompt = f"a photo of {_phrase(shape_a, None)} and {_phrase(shape_b, None)}"
    elif tag == "counting":
        count = rng.choice((2, 3))
        spec = {
            "tag": tag,
            "include": [{"class": shape_a, "count": count}],
            "exclude": [{"class": shape_a, "count": count + 1}],
            "prompt": f"a photo of {_phrase(shape_a, None, count)}",
        }
        return spec
    elif tag == "colors":
        include = [{"class": shape_a, "count": 1, "color": color_a}]
        prompt = f"a photo of {_phrase(shape_a, color_a)}"
    elif tag == "color_attr":
        include = [
            {"class": shape_a, "count": 1, "color": color_a},
            {"class": shape_b, "count": 1, "color": color_b},
        ]
        prompt = f"a photo of {_phrase(shape_a, color_a)} and {_phrase(shape_b, color_b)}"
    elif tag == "position":
        relation = rng.choice(RELATIONS)
        # Half of the position prompts also name colours ("a red circle above a blue square"), which GenEval's
        # position prompts do not; the rules check both, and the model learns to compose the two.
        colored = rng.random() < POSITION_COLOR_PROB
        clause_a: dict = {"class": shape_a, "count": 1}
        clause_b: dict = {"class": shape_b, "count": 1, "position": [relation, 0]}
        if colored:
            clause_a["color"], clause_b["color"] = color_a, color_b
        include = [clause_a, clause_b]
        prompt = (
            f"a photo of {_phrase(shape_b, color_b if colored else None)} {relation} "
            f"{_phrase(shape_a, color_a if colored else None)}"
        )
    else:
        raise ValueError(f"unknown shapes tag {tag!r}; expected one of {TAGS}")
    return {"tag": tag, "include": include, "prompt": prompt}


def _draw(draw: ImageDraw.ImageDraw, shape: str, box: tuple[int, int, int, int], fill: tuple[int, int, int]):
    x1, y1, x2, y2 = box
    if shape == "circle":
        draw.ellipse((x1, y1, x2 - 1, y2 - 1), fill=fill)
    elif shape == "square":
        draw.rectangle((x1, y1, x2 - 1, y2 - 1), fill=fill)
    elif shape == "triangle":
        draw.polygon([((x1 + x2 - 1) / 2, y1), (x1, y2 - 1), (x2 - 1, y2 - 1)], fill=fill)
    else:
        raise ValueError(f"unknown shape {shape!r}; expected one of {SHAPES}")


def _overlaps(box: tuple[int, int, int, int], others: Sequence[tuple[int, int, int, int]], gap: int) -> bool:
    x1, y1, x2, y2 = box
    return any(x1 < b[2] + gap and b[0] < x2 + gap and y1 < b[3] + gap and b[1] < y2 + gap for b in others)


def _place(
    rng: random.Random,
    size: int,
    region: tuple[int, int, int, int],
    taken: Sequence[tuple[int, int, int, int]],
    gap: int,
    step: int,
) -> tuple[int, int, int, int] | None:
    """A free ``size`` box inside ``region`` whose corner lies on the grid of pitch ``step`` (None: none found)."""
    rx1, ry1, rx2, ry2 = region
    xs = range(-(-rx1 // step) * step, rx2 - size + 1, step)
    ys = range(-(-ry1 // step) * step, ry2 - size + 1, step)
    if not xs or not ys:
        return None
    for _ in range(200):
        x, y = rng.choice(xs), rng.choice(ys)
        box = (x, y, x + size, y + size)
        if not _overlaps(box, taken, gap):
            return box
    return None


def _object_list(spec: dict, rng: random.Random) -> list[tuple[str, str]]:
    """(shape, colour) of every object to draw: the included ones, colours drawn where unspecified."""
    objects: list[tuple[str, str]] = []
    for clause in spec["include"]:
        color = clause.get("color") or rng.choice(list(COLORS))
        objects.extend((clause["class"], color) for _ in range(clause["count"]))
    return objects


def render(
    spec: dict, height: int, width: int, rng: random.Random
) -> tuple[Image.Image, tuple[ShapeObject, ...]]:
    """Draw the objects of ``spec`` on a plain background so that the specification holds."""
    if height < 32 or width < 32:
        raise ValueError(f"shapes images must be at least 32x32 pixels, got {height}x{width}")
    background = rng.choice(BACKGROUNDS)
    image = Image.new("RGB", (width, height), background)
    draw = ImageDraw.Draw(image)
    objects = _object_list(spec, rng)
    # One grid cell of margin and of gap between objects; every object is OBJECT_CELLS cells square.
    step = min(height, width) // GRID_DIVISIONS
    size = OBJECT_CELLS * step
    full = (step, step, width - step, height - step)
    for _attempt in range(50):
        boxes: list[tuple[int, int, int, int]] = []
        position = spec["include"][1].get("position") if len(spec["include"]) > 1 else None
        if position is not None:
            boxes = _place_related(rng, position[0], size, full, step)
        else:
            for _ in objects:
                box = _place(rng, size, full, boxes, step, step)
                if box is None:
                    break
                boxes.append(box)
        if len(boxes) == len(objects):
            break
    else:
        raise RuntimeError(f"could not place {len(objects)} objects in a {height}x{width} image")
    if position is None and len(objects) == 2 and len(spec["include"]) == 2:
        boxes = list(_reading_order(boxes[0], boxes[1]))
    drawn = []
    for (shape, color), box in zip(objects, boxes, strict=True):
        _draw(draw, shape, box, COLORS[color])
        drawn.append(ShapeObject(shape=shape, color=color, box=box))
    return image, tuple(drawn)


def _reading_order(
    a: tuple[int, int, int, int], b: tuple[int, int, int, int]
) -> tuple[tuple[int, int, int, int], tuple[int, int, int, int]]:
    """Two boxes in reading order: the left one first, or the upper one when they are more stacked than side by
    side (centres compared, ties: ``a`` first).

    Captions that name two objects ("a red circle and a blue square") name them in this order, as people and
    captioning models mostly do. The caption then says which of the two blobs is which; without it the choice is
    a coin flip that each token of a parallel (next-scale) sampler would make on its own.
    """
    dx = (b[0] + b[2]) - (a[0] + a[2])
    dy = (b[1] + b[3]) - (a[1] + a[3])
    ahead = dx >= 0 if abs(dx) >= abs(dy) else dy >= 0
    return (a, b) if ahead else (b, a)


def _place_related(
    rng: random.Random, relation: str, size: int, full: tuple[int, int, int, int], step: int
) -> list[tuple[int, int, int, int]]:
    """Boxes (reference A, then B) with B clearly ``relation`` A: B's half of the frame, A's the other."""
    x1, y1, x2, y2 = full
    mx, my = (x1 + x2) // 2, (y1 + y2) // 2
    gap = step
    halves = {
        "left of": ((mx, y1, x2, y2), (x1, y1, mx, y2)),
        "right of": ((x1, y1, mx, y2), (mx, y1, x2, y2)),
        "above": ((x1, my, x2, y2), (x1, y1, x2, my)),
        "below": ((x1, y1, x2, my), (x1, my, x2, y2)),
    }
    region_a, region_b = halves[relation]
    box_a = _place(rng, size, region_a, [], gap, step)
    if box_a is None:
        return []
    box_b = _place(rng, size, region_b, [box_a], gap, step)
    if box_b is None:
        return []
    # Keep the pair roughly aligned on the other axis so the relation is unambiguous (GenEval dead zone).
    horizontal = relation in ("left of", "right of")
    offset_other = abs((box_a[1] - box_b[1]) if horizontal else (box_a[0] - box_b[0]))
    offset_main = abs((box_a[0] - box_b[0]) if horizontal else (box_a[1] - box_b[1]))
    if offset_other > 0.8 * offset_main:
        return []
    return [box_a, box_b]


def image_size(ratio: float, long_side: int) -> tuple[int, int]:
    """(height, width) with ``height / width`` close to ``ratio`` and the given long side."""
    if ratio >= 1:
        return long_side, max(32, round(long_side / ratio))
    return max(32, round(long_side * ratio)), long_side


def _ratios(ratios: Sequence[float], aspect_ratios: Sequence[float] | None, function: str) -> Sequence[float]:
    """``ratios``, or the deprecated ``aspect_ratios=`` keyword with a DeprecationWarning."""
    if aspect_ratios is None:
        return ratios
    warnings.warn(
        f"{function}(aspect_ratios=...) is deprecated and will be removed; use ratios=",
        DeprecationWarning,
        stacklevel=3,
    )
    return aspect_ratios


def generate(
    count: int,
    seed: int,
    long_side: int = 256,
    ratios: Sequence[float] = RATIOS,
    tags: Sequence[str] = TAGS,
    *,
    aspect_ratios: Sequence[float] | None = None,
) -> Iterator[ShapesSample]:
    """Yield ``count`` deterministic samples (same seed → same images and prompts) in the height / width
    ``ratios`` (``aspect_ratios=`` is the deprecated spelling)."""
    ratios = _ratios(ratios, aspect_ratios, "generate")
    rng = random.Random(seed)
    for _ in range(count):
        spec = random_spec(rng, rng.choice(list(tags)))
        height, width = image_size(rng.choice(list(ratios)), long_side)
        image, objects = render(spec, height, width, rng)
        yield ShapesSample(image=image, prompt=spec["prompt"], spec=spec, objects=objects)


def write_folder(
    out_dir: str | Path,
    count: int,
    seed: int,
    long_side: int = 256,
    ratios: Sequence[float] = RATIOS,
    *,
    aspect_ratios: Sequence[float] | None = None,
) -> Path:
    """Write ``count`` samples as ``<key>.png`` + ``<key>.txt`` (caption) + ``<key>.spec.json`` (GenEval spec).

    The folder is the input of ``infinity-data convert`` (folder kind); the specs let held-out images be scored.
    ``ratios``: the height / width values drawn from (``aspect_ratios=`` is the deprecated spelling).
    """
    ratios = _ratios(ratios, aspect_ratios, "write_folder")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    digits = max(6, len(str(count)))
    for i, sample in enumerate(generate(count, seed, long_side, ratios)):
        key = f"shapes-{seed}-{i:0{digits}d}"
        sample.image.save(out / f"{key}.png")
        (out / f"{key}.txt").write_text(sample.prompt + "\n", encoding="utf-8")
        objects = [{"shape": o.shape, "color": o.color, "box": list(o.box)} for o in sample.objects]
        record = {"spec": sample.spec, "objects": objects}
        (out / f"{key}.spec.json").write_text(json.dumps(record) + "\n", encoding="utf-8")
    return out


def __getattr__(name: str) -> Any:
    """``ASPECT_RATIOS``, the deprecated name of :data:`RATIOS`, still resolves (with a DeprecationWarning)."""
    if name == "ASPECT_RATIOS":
        warnings.warn(
            "ASPECT_RATIOS is deprecated and will be removed; use RATIOS", DeprecationWarning, stacklevel=2
        )
        return RATIOS
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def heldout_specs(count: int, seed: int) -> list[dict]:
    """Evaluation prompts, balanced over the tags, from a seed that training data does not use."""
    rng = random.Random(seed)
    per_tag = math.ceil(count / len(TAGS))
    specs = [random_spec(rng, tag) for tag in TAGS for _ in range(per_tag)]
    return specs[:count]
