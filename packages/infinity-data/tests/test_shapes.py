"""The synthetic shapes world: deterministic, and every image satisfies its own GenEval-style spec."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
from infinity_data.shapes import (
    COLORS,
    GRID_DIVISIONS,
    OBJECT_CELLS,
    RATIOS,
    RELATIONS,
    SHAPES,
    TAGS,
    generate,
    heldout_specs,
    image_size,
    random_spec,
    render,
    write_folder,
)


def _relations(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> set[str]:
    """GenEval's relation rule (dead zone 0.1 of the summed sizes) for A relative to B."""
    ca = np.array([(a[0] + a[2]) / 2, (a[1] + a[3]) / 2])
    cb = np.array([(b[0] + b[2]) / 2, (b[1] + b[3]) / 2])
    sa = np.array([a[2] - a[0], a[3] - a[1]])
    sb = np.array([b[2] - b[0], b[3] - b[1]])
    o = ca - cb
    r = np.sign(o) * np.maximum(np.abs(o) - 0.1 * (sa + sb), 0)
    if np.all(np.abs(r) < 1e-3):
        return set()
    dx, dy = r / np.linalg.norm(o)
    rel = set()
    rel |= {"left of"} if dx < -0.5 else set()
    rel |= {"right of"} if dx > 0.5 else set()
    rel |= {"above"} if dy < -0.5 else set()
    rel |= {"below"} if dy > 0.5 else set()
    return rel


def test_same_seed_gives_identical_samples_and_other_seed_differs():
    a = list(generate(6, seed=3, long_side=96))
    b = list(generate(6, seed=3, long_side=96))
    c = list(generate(6, seed=4, long_side=96))
    assert [s.prompt for s in a] == [s.prompt for s in b]
    assert all(np.array_equal(np.asarray(x.image), np.asarray(y.image)) for x, y in zip(a, b, strict=True))
    assert [s.prompt for s in a] != [s.prompt for s in c]


@pytest.mark.parametrize("tag", TAGS)
def test_every_rendered_image_satisfies_its_spec(tag):
    rng = random.Random(11)
    for _ in range(15):
        spec = random_spec(rng, tag)
        image, objects = render(spec, 96, 128, rng)
        assert image.size == (128, 96)
        pixels = np.asarray(image)
        counts = {}
        for obj in objects:
            counts[obj.shape] = counts.get(obj.shape, 0) + 1
            x1, y1, x2, y2 = obj.box
            assert 0 <= x1 < x2 <= 128 and 0 <= y1 < y2 <= 96
            centre = pixels[(y1 + y2) // 2 + (y2 - y1) // 6, (x1 + x2) // 2]
            assert tuple(centre) == COLORS[obj.color], "the object's colour is drawn at its centre"
        for clause in spec["include"]:
            assert counts.get(clause["class"], 0) == clause["count"]
            if "color" in clause:
                assert all(o.color == clause["color"] for o in objects if o.shape == clause["class"])
        for clause in spec.get("exclude", []):
            assert counts.get(clause["class"], 0) < clause["count"]
        if tag == "position":
            relation = spec["include"][1]["position"][0]
            assert relation in RELATIONS
            assert relation in _relations(objects[1].box, objects[0].box)
        for i, a in enumerate(objects):
            for b in objects[i + 1 :]:
                assert (
                    a.box[2] <= b.box[0]
                    or b.box[2] <= a.box[0]
                    or a.box[3] <= b.box[1]
                    or b.box[3] <= a.box[1]
                )


@pytest.mark.parametrize("tag", ["two_object", "color_attr"])
def test_two_object_captions_name_the_left_or_upper_object_first(tag):
    rng = random.Random(5)
    side_by_side = stacked = 0
    for _ in range(40):
        spec = random_spec(rng, tag)
        _image, objects = render(spec, 128, 128, rng)
        first, second = objects
        assert [first.shape, second.shape] == [c["class"] for c in spec["include"]]
        assert spec["prompt"].index(first.shape) < spec["prompt"].index(second.shape)
        dx = (second.box[0] + second.box[2]) - (first.box[0] + first.box[2])
        dy = (second.box[1] + second.box[3]) - (first.box[1] + first.box[3])
        if abs(dx) >= abs(dy):
            side_by_side += 1
            assert dx >= 0, (spec["prompt"], first.box, second.box)
        else:
            stacked += 1
            assert dy > 0, (spec["prompt"], first.box, second.box)
    assert side_by_side and stacked, "both layouts occur"


@pytest.mark.parametrize("ratio", RATIOS)
def test_objects_are_equal_squares_on_the_grid_inside_a_one_cell_margin(ratio):
    height, width = image_size(ratio, 256)
    step = min(height, width) // GRID_DIVISIONS
    rng = random.Random(2)
    for tag in TAGS:
        for _ in range(10):
            _image, objects = render(random_spec(rng, tag), height, width, rng)
            for obj in objects:
                x1, y1, x2, y2 = obj.box
                assert x1 % step == 0 and y1 % step == 0, obj.box
                assert x2 - x1 == y2 - y1 == OBJECT_CELLS * step
                assert x1 >= step and y1 >= step and x2 <= width - step and y2 <= height - step


def test_prompts_read_like_geneval_prompts():
    rng = random.Random(0)
    counting = random_spec(rng, "counting")
    assert counting["prompt"] in {f"a photo of {w} {s}s" for w in ("two", "three") for s in SHAPES}
    assert counting["exclude"][0]["count"] == counting["include"][0]["count"] + 1
    with pytest.raises(ValueError, match="unknown shapes tag"):
        random_spec(rng, "texture")


def test_position_prompts_come_with_and_without_colours():
    rng = random.Random(5)
    specs = [random_spec(rng, "position") for _ in range(40)]
    colored = [s for s in specs if "color" in s["include"][0]]
    assert 0 < len(colored) < len(specs)
    for spec in colored:
        a, b = spec["include"]
        relation = b["position"][0]
        assert (
            spec["prompt"] == f"a photo of a {b['color']} {b['class']} {relation} a {a['color']} {a['class']}"
        )


def test_write_folder_writes_image_caption_and_spec_per_sample(tmp_path):
    out = write_folder(tmp_path / "shapes", count=5, seed=1, long_side=64)
    keys = sorted(p.stem for p in out.glob("*.png"))
    assert len(keys) == 5
    for key in keys:
        caption = (out / f"{key}.txt").read_text(encoding="utf-8").strip()
        record = json.loads((out / f"{key}.spec.json").read_text(encoding="utf-8"))
        assert record["spec"]["prompt"] == caption
        assert len(record["objects"]) >= 1


def test_heldout_specs_are_balanced_over_tags():
    specs = heldout_specs(60, seed=999)
    assert len(specs) == 60
    assert {s["tag"] for s in specs} == set(TAGS)
    assert all(sum(s["tag"] == t for s in specs) == 10 for t in TAGS)


def test_the_old_aspect_ratio_names_still_work_and_warn(tmp_path):
    import infinity_data.shapes as shapes

    with pytest.warns(
        DeprecationWarning, match="ASPECT_RATIOS is deprecated and will be removed; use RATIOS"
    ):
        assert shapes.ASPECT_RATIOS == RATIOS
    new = [s.image.tobytes() for s in shapes.generate(2, seed=5, long_side=64, ratios=(0.5,))]
    with pytest.warns(
        DeprecationWarning, match=r"generate\(aspect_ratios=\.\.\.\) is deprecated.*use ratios="
    ):
        old = [s.image.tobytes() for s in shapes.generate(2, seed=5, long_side=64, aspect_ratios=(0.5,))]
    assert old == new
    with pytest.warns(DeprecationWarning, match=r"write_folder\(aspect_ratios=\.\.\.\)"):
        shapes.write_folder(tmp_path, 1, seed=5, long_side=64, aspect_ratios=(0.5,))
