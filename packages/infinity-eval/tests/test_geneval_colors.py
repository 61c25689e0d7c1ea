"""GenEval colour classifier: templates and averaging, CLIP preprocessing, plug-ins with detection context.

The transformers CLIP behind the official classifier is checked in test_scorer_keymaps.py."""

from pathlib import Path

import pytest
import torch
from infinity_eval.geneval import (
    COLORS,
    ColorContext,
    Detection,
    GenEvalOptions,
    ZeroShotColorClassifier,
    classify_object_colors,
    clip_preprocess,
    evaluate_detections,
    run_geneval,
)
from infinity_eval.io import ImageRecord
from PIL import Image


def test_zero_shot_classifier_averages_normalised_templates_and_takes_the_argmax():
    seen_texts = []

    def encode_text(texts):
        seen_texts.extend(texts)
        out = torch.zeros(len(texts), len(COLORS))
        for i, t in enumerate(texts):
            c = next(c for c in COLORS if f" {c} " in f" {t} " or f" {c}-colored " in f" {t} ")
            # unnormalised, template-dependent scale: only directions may matter
            out[i, COLORS.index(c)] = 1.0 + i % 3
            out[i, -1] += 0.1
        return out

    def encode_image(pixels):
        # dominant channel of the (normalised) crop -> red / green / blue direction
        idx = pixels.mean(dim=(2, 3)).argmax(dim=1)
        out = torch.zeros(len(pixels), len(COLORS))
        out[
            torch.arange(len(pixels)), torch.tensor([COLORS.index(c) for c in ("red", "green", "blue")])[idx]
        ] = 5.0
        return out

    clf = ZeroShotColorClassifier(encode_image, encode_text, batch_size=2)
    crops = [Image.new("RGB", (30, 20), c) for c in ((250, 10, 10), (10, 250, 10), (10, 10, 250))]
    assert clf(crops, "car") == ["red", "green", "blue"]
    assert seen_texts[:3] == [
        "a photo of a red car",
        "a photo of a red-colored car",
        "a photo of a red object",
    ]
    assert len(seen_texts) == 3 * len(COLORS)
    vectors = clf.class_vectors("car")
    torch.testing.assert_close(vectors.norm(dim=-1), torch.ones(len(COLORS)))


def test_clip_preprocess_resizes_the_short_side_and_centre_crops():
    img = Image.new("RGB", (448, 300), (255, 255, 255))
    img.paste((0, 0, 0), (0, 0, 60, 300))  # a black band on the left edge is cropped away
    x = clip_preprocess(img)
    assert x.shape == (3, 224, 224)
    white = (1 - torch.tensor([0.48145466, 0.4578275, 0.40821073])) / torch.tensor(
        [0.26862954, 0.26130258, 0.27577711]
    )
    torch.testing.assert_close(x[:, 112, 0], white, atol=1e-5, rtol=0)


def test_clip_mean_and_std_are_defined_once_in_io() -> None:
    """HPS, ImageReward and the colour classifier normalise with the one definition in `infinity_eval.io`."""
    import infinity_eval
    from infinity_eval import io

    assert io.CLIP_MEAN == (0.48145466, 0.4578275, 0.40821073)
    root = Path(infinity_eval.__file__).parent
    defining = [p.name for p in root.rglob("*.py") if "CLIP_MEAN = (" in p.read_text(encoding="utf-8")]
    assert defining == ["io.py"]


# ------------------------------------------------------------------------------------------------ plug-ins and context


def _found(box: tuple[float, float, float, float]) -> Detection:
    return Detection(box, 0.95)


CAR_LEFT_RED = {
    "tag": "color_attr",
    "include": [{"class": "car", "count": 1, "color": "red"}],
    "prompt": "a red car",
}


class BoxSideClassifier:
    """A plug-in that needs context: "red" for objects in the left half of the image, "blue" otherwise."""

    def __init__(self) -> None:
        self.contexts: list[ColorContext] = []

    def __call__(self, crops, object_name, *, context=None):
        assert context is not None
        self.contexts.append(context)
        half = context.image.width / 2
        return ["red" if det.box[0] < half else "blue" for det in context.detections]


def test_colour_plugin_receives_the_detections_image_and_record() -> None:
    image = Image.new("RGB", (100, 60), (128, 128, 128))
    record = ImageRecord(Path("img.png"), prompt="a red car", prompt_id="7", meta=CAR_LEFT_RED)
    plugin = BoxSideClassifier()
    left = evaluate_detections(
        {"car": [_found((5, 5, 40, 50))]}, CAR_LEFT_RED, image=image, classify_colors=plugin, record=record
    )
    right = evaluate_detections(
        {"car": [_found((60, 5, 95, 50))]}, CAR_LEFT_RED, image=image, classify_colors=plugin
    )
    assert left.correct and not right.correct and "found 0 red" in right.reason
    first = plugin.contexts[0]
    assert (
        first.record is record
        and first.detections[0].box == (5, 5, 40, 50)
        and first.detections[0].score == 0.95
    )
    assert first.image.size == (100, 60) and first.options == GenEvalOptions()
    assert plugin.contexts[1].record is None


def test_two_argument_colour_plugins_still_work_with_a_deprecation_warning() -> None:
    image = Image.new("RGB", (100, 60), (200, 10, 10))
    calls = []

    def old_style(crops, object_name):
        calls.append((len(crops), object_name))
        return ["red"] * len(crops)

    with pytest.warns(DeprecationWarning, match="context"):
        verdict = evaluate_detections(
            {"car": [_found((5, 5, 40, 50))]}, CAR_LEFT_RED, image=image, classify_colors=old_style
        )
    assert verdict.correct and calls == [(1, "car")]


def test_a_colour_plugin_must_return_one_colour_per_crop() -> None:
    image = Image.new("RGB", (100, 60))
    with pytest.raises(ValueError, match="returned 0 colours for 1 car crops"):
        classify_object_colors(
            lambda crops, name, context: [], image, [_found((1, 1, 9, 9))], "car", GenEvalOptions()
        )


def test_run_geneval_passes_each_record_to_the_colour_plugin(tmp_path: Path) -> None:
    image_path = tmp_path / "0.png"
    Image.new("RGB", (100, 60), (90, 90, 90)).save(image_path)
    record = ImageRecord(
        image_path, prompt="a red car", prompt_id="0", meta={**CAR_LEFT_RED, "tag": "color_attr"}
    )

    class Boxes:
        def detect(self, image, rec):
            return {"car": [_found((5, 5, 40, 50))]}

    plugin = BoxSideClassifier()
    summary = run_geneval([record], Boxes(), tmp_path / "out", color_classifier=plugin)
    assert summary["overall"] == 1.0 and plugin.contexts[0].record == record
