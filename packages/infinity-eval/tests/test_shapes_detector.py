"""The exact shapes-world detector: with the GenEval rules, images drawn from a spec score as correct."""

from __future__ import annotations

import random

import numpy as np
import pytest
from infinity_eval.geneval.rules import evaluate_detections
from infinity_eval.geneval.shapes import SHAPES_PALETTE, PaletteColorClassifier, ShapesDetector, classify_fill
from PIL import Image, ImageDraw


def _canvas(draw_fn, size=(128, 96)) -> Image.Image:
    image = Image.new("RGB", size, (255, 255, 255))
    draw_fn(ImageDraw.Draw(image))
    return image


def test_detector_finds_class_colour_box_and_mask_of_each_blob():
    image = _canvas(
        lambda d: (
            d.rectangle((10, 10, 39, 39), fill=SHAPES_PALETTE["red"]),
            d.ellipse((60, 20, 99, 59), fill=SHAPES_PALETTE["blue"]),
            d.polygon([(30, 50), (10, 89), (50, 89)], fill=SHAPES_PALETTE["yellow"]),
        )
    )
    found = ShapesDetector().detect(image)
    assert sorted(found) == ["circle", "square", "triangle"]
    (square,) = found["square"]
    assert square.box == (10, 10, 40, 40) and square.score == 1.0
    assert square.mask.sum() == 30 * 30
    crops = [image.crop(d.box) for d in (square, found["circle"][0], found["triangle"][0])]
    assert PaletteColorClassifier()(crops, "shape") == ["red", "blue", "yellow"]


def test_fill_ratio_rule_separates_the_three_shapes_and_rejects_slivers():
    assert classify_fill(1.0, 1.0) == "square"
    assert classify_fill(np.pi / 4, 1.0) == "circle"
    assert classify_fill(0.5, 1.0) == "triangle"
    assert classify_fill(0.2, 1.0) is None
    assert classify_fill(1.0, 5.0) is None


def test_small_noise_blobs_are_ignored_and_grey_crops_match_no_palette_colour():
    image = _canvas(lambda d: d.rectangle((5, 5, 6, 6), fill=SHAPES_PALETTE["green"]))
    assert ShapesDetector().detect(image) == {}
    grey = Image.new("RGB", (10, 10), (153, 153, 153))
    assert PaletteColorClassifier()([grey], "circle") == ["black"]


def test_rendered_shapes_world_scores_perfectly_and_wrong_specs_fail():
    shapes = pytest.importorskip("infinity_data.shapes")
    assert dict(shapes.COLORS) == dict(SHAPES_PALETTE), "the detector's palette is the world's palette"
    rng = random.Random(5)
    detector, colors = ShapesDetector(), PaletteColorClassifier()
    for tag in shapes.TAGS:
        for _ in range(8):
            spec = shapes.random_spec(rng, tag)
            image, _ = shapes.render(spec, 96, 128, rng)
            verdict = evaluate_detections(detector.detect(image), spec, image=image, classify_colors=colors)
            assert verdict.correct, (spec, verdict.reason)
    spec = {
        "tag": "colors",
        "include": [{"class": "circle", "count": 1, "color": "red"}],
        "prompt": "a red circle",
    }
    image = _canvas(lambda d: d.ellipse((20, 20, 60, 60), fill=SHAPES_PALETTE["blue"]))
    verdict = evaluate_detections(detector.detect(image), spec, image=image, classify_colors=colors)
    assert not verdict.correct


def test_shapes_palette_is_the_shapes_worlds_colours():
    # infinity-eval installs alone, so its palette is a deliberate copy of infinity_data.shapes.COLORS
    shapes = pytest.importorskip("infinity_data.shapes", reason="infinity-data is not installed")
    from infinity_eval.geneval.shapes import SHAPES_PALETTE

    assert dict(SHAPES_PALETTE) == shapes.COLORS
