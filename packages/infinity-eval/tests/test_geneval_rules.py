"""GenEval rules on synthetic detections at every threshold edge (official GenEval `evaluation/evaluate_images.py` and `summary_scores.py`)."""

from collections import Counter

import numpy as np
import pytest
from infinity_eval.geneval import (
    Detection,
    GenEvalOptions,
    aggregate,
    color_crops,
    evaluate_detections,
    filter_detections,
    format_summary,
    iou,
    relative_position,
)
from infinity_eval.prompts import (
    GENEVAL_TAG_COUNTS,
    geneval_metadata,
    geneval_object_names,
    validate_geneval_metadata,
)
from PIL import Image


def det(x1, y1, x2, y2, score, mask=None):
    return Detection((x1, y1, x2, y2), score, mask)


def single(cls="cat", tag="single_object", count=1, **extra):
    return {"tag": tag, "include": [{"class": cls, "count": count, **extra}], "prompt": f"a photo of a {cls}"}


# ---- filtering -------------------------------------------------------------------------------------------


def test_threshold_is_strict_and_compared_in_float32():
    f32_03 = float(np.float32(0.3))  # 0.30000001192..., exceeds 0.3 in float64 but equals it in float32
    assert not evaluate_detections({"cat": [det(0, 0, 10, 10, f32_03)]}, single()).correct
    assert not evaluate_detections({"cat": [det(0, 0, 10, 10, 0.3)]}, single()).correct
    above = float(np.nextafter(np.float32(0.3), np.float32(1)))
    assert evaluate_detections({"cat": [det(0, 0, 10, 10, above)]}, single()).correct


def test_counting_prompts_use_the_0_9_threshold():
    meta = {
        "tag": "counting",
        "include": [{"class": "cat", "count": 2}],
        "exclude": [{"class": "cat", "count": 3}],
        "prompt": "a photo of two cats",
    }
    two_sure = [det(0, 0, 10, 10, 0.95), det(20, 0, 30, 10, 0.91)]
    assert evaluate_detections({"cat": two_sure}, meta).correct
    # 0.9 itself is not > 0.9
    assert not evaluate_detections({"cat": [det(0, 0, 10, 10, 0.95), det(20, 0, 30, 10, 0.9)]}, meta).correct
    # a third confident cat breaks "exactly two"; a third weak one (0.5 < 0.9) does not
    assert not evaluate_detections({"cat": [*two_sure, det(40, 0, 50, 10, 0.92)]}, meta).correct
    assert evaluate_detections({"cat": [*two_sure, det(40, 0, 50, 10, 0.5)]}, meta).correct
    # the same 0.5 detection counts for a non-counting prompt
    assert evaluate_detections({"cat": [det(40, 0, 50, 10, 0.5)]}, single()).correct


def test_exclude_counts_every_kept_detection_exactly_at_count():
    meta = {
        "tag": "counting",
        "include": [{"class": "dog", "count": 3}],
        "exclude": [{"class": "dog", "count": 4}],
        "prompt": "p",
    }
    three = [det(i * 20, 0, i * 20 + 10, 10, 0.95) for i in range(3)]
    assert evaluate_detections({"dog": three}, meta).correct
    v = evaluate_detections({"dog": [*three, det(90, 0, 99, 10, 0.95)]}, meta)
    assert not v.correct and "expected dog<4, found 4" in v.reason
    v = evaluate_detections({"dog": three[:2]}, meta)
    assert not v.correct and "expected dog>=3, found 2" in v.reason


def test_sixteen_object_cap_applies_after_the_threshold():
    many = [det(0, 0, 10, 10, 0.5)] * 20 + [det(0, 0, 10, 10, 0.1)] * 5
    kept = filter_detections(many, 0.3, 16, 1.0)
    assert len(kept) == 16  # identical duplicates each count with NMS off
    meta = {
        "tag": "counting",
        "include": [{"class": "cat", "count": 2}],
        "exclude": [{"class": "cat", "count": 17}],
        "prompt": "p",
    }
    sure = [det(0, 0, 10, 10, 0.95)] * 20
    assert evaluate_detections({"cat": sure}, meta).correct  # at most 16 survive, so "< 17" holds


def test_ties_keep_numpy_1_23_descending_order_later_row_first():
    a, b, c = det(0, 0, 1, 1, 0.5), det(5, 5, 6, 6, 0.5), det(9, 9, 10, 10, 0.7)
    assert filter_detections([a, b, c], 0.3, 16, 1.0) == [c, b, a]


def test_iou_uses_plus_one_areas_and_nms_drops_overlaps_at_or_above_max_overlap():
    assert iou((0, 0, 9, 9), (0, 0, 9, 9)) == 1.0
    assert iou((0, 0, 9, 9), (5, 0, 14, 9)) == pytest.approx(50 / 150)
    assert iou((0, 0, -2, -2), (0, 0, -2, -2)) == 0.0  # empty union
    best, overlapping, far = det(0, 0, 9, 9, 0.9), det(5, 0, 14, 9, 0.8), det(50, 50, 60, 60, 0.7)
    assert filter_detections([best, overlapping, far], 0.3, 16, 50 / 150) == [best, far]
    assert filter_detections([best, overlapping, far], 0.3, 16, 0.34) == [best, overlapping, far]


# ---- position -------------------------------------------------------------------------------------------


def position_meta(rel):
    return {
        "tag": "position",
        "include": [{"class": "dog", "count": 1}, {"class": "cat", "count": 1, "position": [rel, 0]}],
        "prompt": f"a photo of a cat {rel} a dog",
    }


def test_relations_follow_image_axes():
    cat_left = det(0, 40, 20, 60, 0.9)
    dog = det(80, 40, 100, 60, 0.9)
    assert relative_position(cat_left, dog) == {"left of"}
    assert relative_position(dog, cat_left) == {"right of"}
    assert relative_position(det(80, 0, 100, 20, 0.9), det(80, 80, 100, 100, 0.9)) == {"above"}
    assert relative_position(det(80, 80, 100, 100, 0.9), det(80, 0, 100, 20, 0.9)) == {"below"}
    # diagonal: both relations hold
    assert relative_position(det(0, 0, 10, 10, 0.9), det(90, 90, 100, 100, 0.9)) == {"left of", "above"}


def test_position_dead_zone_is_ten_percent_of_the_summed_sizes():
    # boxes of width 10: dead zone 0.1 * (10 + 10) = 2 px per axis
    b = det(0, 0, 10, 10, 0.9)
    assert relative_position(det(2, 0, 12, 10, 0.9), b) == set()  # |dx| = 2 -> revised 0
    assert relative_position(det(2.0009, 0, 12.0009, 10, 0.9), b) == set()  # revised 0.0009 < 1e-3 px
    # past the cutoff the direction ratio revised/|offset| must still exceed 0.5: 0.002 / 2.002 does not
    assert relative_position(det(2.002, 0, 12.002, 10, 0.9), b) == set()
    assert relative_position(det(4.1, 0, 14.1, 10, 0.9), b) == {"right of"}  # 2.1 / 4.1 > 0.5
    # overlapping boxes whose centres coincide -> no relation -> position wrong
    v = evaluate_detections(
        {"dog": [det(0, 0, 50, 50, 0.9)], "cat": [det(5, 5, 45, 45, 0.9)]}, position_meta("left of")
    )
    assert not v.correct


def test_relation_ratio_of_exactly_one_half_is_not_a_relation():
    # offset (3, 4) with zero-size boxes: dx = 0.6 -> right of; dy = 0.8 -> below
    assert relative_position(det(3, 4, 3, 4, 0.9), det(0, 0, 0, 0, 0.9)) == {"right of", "below"}
    # offset 4 px, boxes 10 px wide: revised 4 - 2 = 2, ratio 2 / 4 = 0.5 exactly -> no relation
    assert relative_position(det(4, 0, 14, 10, 0.9), det(0, 0, 10, 10, 0.9)) == set()


def test_direction_ratio_at_the_half_edge_follows_the_originals_float32_arithmetic():
    # The original works on the detector's float32 boxes, so centres, sizes, the offset norm and the ratio
    # revised/|offset| are float32. These boxes sit within 2e-8 of the 0.5 edge, where float64 flips the verdict.
    dog = det(600, 600, 733, 675, 0.9)
    # float64 ratio -0.4999999872 (not "left of"); float32 rounds it to -0.50000006: "left of" holds
    cat = det(479.0, 455.0708923339844, 612.0, 530.0709228515625, 0.9)
    assert relative_position(cat, dog) == {"left of", "above"}
    assert evaluate_detections({"dog": [dog], "cat": [cat]}, position_meta("left of")).correct
    # float64 ratio -0.5000000149 ("left of"); float32 gives exactly -0.5, which is not a relation
    small_dog = det(600, 600, 624, 613, 0.9)
    small_cat = det(497.0, 432.7757263183594, 521.0, 445.7757263183594, 0.9)
    assert relative_position(small_cat, small_dog) == {"above"}
    v = evaluate_detections({"dog": [small_dog], "cat": [small_cat]}, position_meta("left of"))
    assert not v.correct and "expected cat left of target, found above target" in v.reason


def _official_relations(box_a, box_b):
    """The original's `relative_position` statement by statement, on float32 rows as its detector yields them."""
    boxes = np.array([np.asarray(box_a, np.float32), np.asarray(box_b, np.float32)])[:, :4].reshape(2, 2, 2)
    center_a, center_b = boxes.mean(axis=-2)
    dim_a, dim_b = np.abs(np.diff(boxes, axis=-2))[..., 0, :]
    offset = center_a - center_b
    revised_offset = np.maximum(np.abs(offset) - 0.1 * (dim_a + dim_b), 0) * np.sign(offset)
    if np.all(np.abs(revised_offset) < 1e-3):
        return set()
    dx, dy = revised_offset / np.linalg.norm(offset)
    rels = {"left of": dx < -0.5, "right of": dx > 0.5, "above": dy < -0.5, "below": dy > 0.5}
    return {name for name, holds in rels.items() if holds}


def test_relations_equal_the_originals_on_boxes_near_the_half_edge():
    rng = np.random.default_rng(0)
    flips = 0
    for _ in range(3000):
        w, h, ox = (float(v) for v in rng.integers((10, 10, 40), (200, 200, 400)))
        revised = ox - 0.2 * w
        oy = np.sqrt(max(4 * revised * revised - ox * ox, 0.0))  # ratio revised/|offset| = 0.5 exactly
        oy = float(np.float32(oy) + np.float32(rng.integers(-2, 3)) * np.spacing(np.float32(oy)))
        b = (600.0, 600.0, 600.0 + w, 600.0 + h)
        a = tuple(float(np.float32(v)) for v in (600 - ox, 600 - oy, 600 - ox + w, 600 - oy + h))
        expected = _official_relations(a, b)
        assert relative_position(det(*a, 0.9), det(*b, 0.9)) == expected, (a, b)
        ratio64 = (np.abs(ox) - 0.2 * w) / np.hypot(a[0] - b[0], a[1] - b[1])
        flips += ("left of" in expected) != (ratio64 > 0.5)
    assert flips > 0  # the sample does reach cases where float64 would decide otherwise


def test_iou_is_a_float32_ratio_compared_with_max_overlap_in_float64():
    # 50 / 150 in float32 is 0.3333333433 > 0.33333334, so NMS at 0.33333334 drops the overlapping box
    # (a float64 IoU of 0.3333333333 would keep it)
    assert iou((0, 0, 9, 9), (5, 0, 14, 9)) == float(np.float32(50) / np.float32(150))
    best, overlapping = det(0, 0, 9, 9, 0.9), det(5, 0, 14, 9, 0.8)
    assert filter_detections([best, overlapping], 0.3, 16, 0.33333334) == [best]
    assert filter_detections([best, overlapping], 0.3, 16, 0.3333334) == [best, overlapping]


def test_position_clause_pass_fail_and_missing_target():
    dog, cat_left = det(80, 40, 100, 60, 0.9), det(0, 40, 20, 60, 0.9)
    assert evaluate_detections({"dog": [dog], "cat": [cat_left]}, position_meta("left of")).correct
    v = evaluate_detections({"dog": [dog], "cat": [cat_left]}, position_meta("right of"))
    assert not v.correct and "expected cat right of target, found left of target" in v.reason
    v = evaluate_detections({"cat": [cat_left]}, position_meta("left of"))
    assert not v.correct and "no target for cat to be left of" in v.reason


def test_position_looks_only_at_top_instances():
    # a weaker second dog on the wrong side does not change the verdict (only count=1 instances are used)
    dets = {"dog": [det(80, 40, 100, 60, 0.9), det(-100, 40, -80, 60, 0.5)], "cat": [det(0, 40, 20, 60, 0.9)]}
    assert evaluate_detections(dets, position_meta("left of")).correct


# ---- colour ---------------------------------------------------------------------------------------------


class MeanColorStub:
    """Classifies a crop as red/blue/green by its dominant channel, recording what it saw."""

    def __init__(self):
        self.seen = []

    def __call__(self, crops, object_name, *, context=None):
        out = []
        for c in crops:
            self.seen.append((c.size, np.asarray(c).reshape(-1, 3).mean(0), object_name))
            out.append(("red", "green", "blue")[int(np.asarray(c).reshape(-1, 3).mean(0).argmax())])
        return out


def test_colour_crop_composites_over_grey_through_the_mask_and_crops_the_box():
    img = Image.new("RGB", (40, 30), (255, 0, 0))
    mask = np.zeros((30, 40), bool)
    mask[10:20, 5:15] = True
    crops = color_crops(img, [det(5, 10, 25, 20, 0.9, mask)], GenEvalOptions())
    assert crops[0].size == (20, 10)
    arr = np.asarray(crops[0])
    assert (arr[:, :10] == (255, 0, 0)).all()  # inside the mask
    assert (arr[:, 10:] == (153, 153, 153)).all()  # outside: #999 background


def test_a_two_argument_colour_classifier_still_works_with_a_deprecation_warning():
    img = Image.new("RGB", (20, 20), (255, 0, 0))
    meta = single("car", tag="colors", color="red")

    def old_style(crops, object_name):  # the form before ColorContext
        return ["red" for _ in crops]

    with pytest.warns(DeprecationWarning, match="accept a keyword argument `context`"):
        verdict = evaluate_detections(
            {"car": [det(0, 0, 20, 20, 0.9)]}, meta, image=img, classify_colors=old_style
        )
    assert verdict.correct


def test_colour_clauses_need_every_instance_in_the_required_colour():
    img = Image.new("RGB", (60, 20), (0, 0, 255))
    img.paste((255, 0, 0), (0, 0, 20, 20))
    red, blue = det(0, 0, 20, 20, 0.9), det(40, 0, 60, 20, 0.8)
    stub = MeanColorStub()
    meta = single("car", tag="colors", color="red")
    assert evaluate_detections({"car": [red]}, meta, image=img, classify_colors=stub).correct
    assert stub.seen[-1][2] == "car"
    v = evaluate_detections({"car": [blue]}, meta, image=img, classify_colors=stub)
    assert not v.correct and "expected red car>=1, found 0 red; and 1 blue" in v.reason
    two_red = {"tag": "color_attr", "include": [{"class": "car", "count": 2, "color": "red"}], "prompt": "p"}
    assert not evaluate_detections({"car": [red, blue]}, two_red, image=img, classify_colors=stub).correct
    # colour is checked only on the top `count` instances: a weaker blue third car is ignored
    assert evaluate_detections(
        {"car": [red, det(40, 0, 60, 20, 0.4)]}, meta, image=img, classify_colors=stub
    ).correct


def test_colour_clause_without_a_classifier_is_a_clear_error():
    with pytest.raises(ValueError, match="colour classifier"):
        evaluate_detections({"car": [det(0, 0, 5, 5, 0.9)]}, single("car", tag="colors", color="red"))


def test_failed_colour_clause_leaves_no_position_target():
    img = Image.new("RGB", (100, 20), (0, 0, 255))
    meta = {
        "tag": "color_attr",
        "include": [
            {"class": "dog", "count": 1, "color": "red"},
            {"class": "cat", "count": 1, "position": ["left of", 0]},
        ],
        "prompt": "p",
    }
    v = evaluate_detections(
        {"dog": [det(80, 0, 100, 20, 0.9)], "cat": [det(0, 0, 20, 20, 0.9)]},
        meta,
        image=img,
        classify_colors=MeanColorStub(),
    )
    assert not v.correct and "no target for cat" in v.reason


# ---- aggregation and shipped prompts ---------------------------------------------------------------------


def test_overall_is_the_unweighted_mean_of_tag_means():
    rows = (
        [{"tag": "counting", "correct": True, "metadata": "a"}] * 3
        + [{"tag": "counting", "correct": False, "metadata": "a"}]
        + [{"tag": "colors", "correct": False, "metadata": "b"}] * 2
        + [{"tag": "colors", "correct": True, "metadata": "c"}] * 0
    )
    s = aggregate(rows)
    assert s["tags"] == {"colors": 0.0, "counting": 0.75}
    assert s["overall"] == pytest.approx(0.375)  # not 3/6 = 0.5 over images
    assert s["images"] == 6 and s["prompts"] == 2
    assert s["correct_images_pct"] == pytest.approx(50.0)
    assert s["correct_prompts_pct"] == pytest.approx(50.0)


def test_summary_text_is_the_original_summary_scores_printout_in_the_official_tag_order():
    def rows(tag, prompts, per_prompt, n_correct):
        n = prompts * per_prompt
        return [
            {"tag": tag, "correct": i < n_correct, "metadata": f"{tag}-{i // per_prompt}"} for i in range(n)
        ]

    # scored out of order: the printout still follows the prompt file's tag order
    summary = aggregate(
        rows("position", 16, 4, 33)
        + rows("counting", 2, 4, 2)
        + rows("colors", 1, 3, 1)
        + rows("single_object", 1, 4, 4)
    )
    assert list(summary["tags"]) == ["single_object", "counting", "colors", "position"]
    assert summary["tag_correct"] == {"single_object": 4, "counting": 2, "colors": 1, "position": 33}
    assert format_summary(summary) == (
        "Summary\n"
        "=======\n"
        "Total images: 79\n"
        "Total prompts: 20\n"
        "% correct images: 50.63%\n"
        "% correct prompts: 60.00%\n"
        "\n"
        "Task breakdown\n"
        "==============\n"
        "single_object    = 100.00% (4 / 4)\n"
        "counting         = 25.00% (2 / 8)\n"
        "colors           = 33.33% (1 / 3)\n"
        "position         = 51.56% (33 / 64)\n"
        "\n"
        "Overall score (avg. over tasks): 0.52474"
    )


def test_shipped_geneval_prompts_validate_with_the_spec_tag_counts():
    rows = geneval_metadata()
    assert len(rows) == 553
    assert dict(validate_geneval_metadata(rows)) == GENEVAL_TAG_COUNTS
    names = geneval_object_names()
    assert len(names) == 80 and len(set(names)) == 80
    counting = Counter(r["include"][0]["count"] for r in rows if r["tag"] == "counting")
    assert counting == {2: 26, 3: 28, 4: 26}


def test_validation_rejects_a_malformed_counting_line():
    bad = {
        "tag": "counting",
        "include": [{"class": "cat", "count": 2}],
        "exclude": [{"class": "cat", "count": 2}],
        "prompt": "p",
    }
    with pytest.raises(ValueError, match="counting shape"):
        validate_geneval_metadata([bad])


def test_mmdet_results_convert_to_named_float32_detections_with_masks():
    from infinity_eval.geneval import detections_from_mmdet

    names = ["person", "bicycle", "car"]
    bboxes = [np.zeros((0, 5), np.float32), np.array([[1, 2, 11, 12, 0.75]], np.float32), np.zeros((0, 5))]
    mask = np.zeros((20, 20), bool)
    mask[2:12, 1:11] = True
    segms = [[], [mask], []]
    out = detections_from_mmdet((bboxes, segms), names)
    assert list(out) == ["bicycle"]
    (d,) = out["bicycle"]
    assert d.box == (1.0, 2.0, 11.0, 12.0) and d.score == float(np.float32(0.75)) and d.mask.sum() == 100
    with pytest.raises(ValueError, match="expected 3"):
        detections_from_mmdet((bboxes[:2], segms[:2]), names)
