"""The schedule tables built from the construction rule equal the reference JSON, and the helpers follow the spec."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from bsq_tokenizer import ScaleSchedule, get_schedule, resize_crop_for_template
from bsq_tokenizer.schedules import (
    H_DIV_W_TEMPLATES,
    PIXEL_BUDGETS,
    VAE_STRIDE,
    custom_schedule,
    default_latent_schedule,
    nearest_template,
    target_pixel_size,
)
from PIL import Image

SPEC = json.loads((Path(__file__).parent / "fixtures" / "scale-schedules.json").read_text())


def test_templates_and_budgets_match_reference_order():
    assert list(H_DIV_W_TEMPLATES) == SPEC["h_div_w_templates_in_order"]
    assert list(PIXEL_BUDGETS) == SPEC["pn_keys"]
    assert SPEC["vae_stride"] == VAE_STRIDE


@pytest.mark.parametrize("template", H_DIV_W_TEMPLATES)
@pytest.mark.parametrize("pn", PIXEL_BUDGETS)
def test_every_template_and_budget_gives_reference_grids_pixels_and_seq_len(template, pn):
    ref = SPEC["schedules"][f"{template:.3f}"][pn]
    sched = get_schedule(template, pn)
    assert sched.template == template
    assert sched.pn == pn
    assert [[1, h, w] for h, w in sched.scales] == ref["scales_thw_image"]
    assert [[h, w] for _, h, w in ref["scales_thw_raw"]] == [list(s) for s in sched.scales]
    assert list(sched.pixel_hw) == ref["pixel_hw"]
    assert sched.seq_len == ref["seq_len_image"]
    assert sched.num_scales == SPEC["num_scales"][pn]
    assert target_pixel_size(template, pn) == tuple(ref["pixel_hw"])


@pytest.mark.parametrize("template", H_DIV_W_TEMPLATES)
def test_rope_grid_reproduces_reference_star_positions(template):
    ref = SPEC["rope_positions_star"][f"{template:.3f}"]
    sched = get_schedule(template, "1M")
    assert list(sched.rope_grid) == ref["final_grid_1M"]
    big_h, big_w = sched.rope_grid
    for (h, w), entry in zip(sched.scales, ref["scales"], strict=True):
        assert (h, w) == (entry["h"], entry["w"])
        rows = torch.round(
            torch.arange(h, dtype=torch.float32) * torch.tensor(big_h / h, dtype=torch.float32)
        )
        cols = torch.round(
            torch.arange(w, dtype=torch.float32) * torch.tensor(big_w / w, dtype=torch.float32)
        )
        assert rows.long().tolist() == entry["rows"]
        assert cols.long().tolist() == entry["cols"]
    for pn in PIXEL_BUDGETS:
        assert get_schedule(template, pn).rope_grid == sched.rope_grid


def test_smaller_budgets_are_prefixes_of_1m():
    for template in H_DIV_W_TEMPLATES:
        full = get_schedule(template, "1M").scales
        for pn in PIXEL_BUDGETS:
            part = get_schedule(template, pn).scales
            assert full[: len(part)] == part


@pytest.mark.parametrize("template", H_DIV_W_TEMPLATES)
def test_nearest_template_on_a_template_is_itself(template):
    assert nearest_template(template) == template


def test_nearest_template_exact_ties_pick_the_first_index():
    # 1.125 is exactly halfway between 1.0 (index 0) and 1.25 (index 1); 2.25 between 2.0 (9) and 2.5 (11).
    assert nearest_template(1.125) == 1.0
    assert nearest_template(2.25) == 2.0
    assert nearest_template(2.75) == 2.5


def test_nearest_template_matches_numpy_argmin_between_templates():
    templates = np.array(H_DIV_W_TEMPLATES)
    values = list(np.linspace(0.05, 5.0, 2001))
    ordered = sorted(H_DIV_W_TEMPLATES)
    values += [(a + b) / 2 for a, b in itertools.pairwise(ordered)]
    for value in values:
        expected = templates[int(np.argmin(np.abs(value - templates)))]
        assert nearest_template(float(value)) == expected, value


def test_get_schedule_applies_nearest_template():
    assert get_schedule(1024 / 1024, "1M").template == 1.0
    assert get_schedule(0.52, "0.25M").template == 0.5
    assert get_schedule(10.0, "0.06M").template == 3.0


@pytest.mark.parametrize("bad", ["2M", "1m", "0.6M", ""])
def test_get_schedule_rejects_unknown_pn_naming_it(bad):
    with pytest.raises(ValueError, match="unknown pixel budget") as info:
        get_schedule(1.0, bad)
    assert repr(bad) in str(info.value)
    assert "0.06M" in str(info.value)


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan"), float("inf")])
def test_nearest_template_rejects_non_positive_ratios(bad):
    with pytest.raises(ValueError, match="ratio must be a positive finite number"):
        nearest_template(bad)


@pytest.mark.parametrize(
    ("function", "pn"), [(nearest_template, None), (get_schedule, "0.25M"), (target_pixel_size, "0.25M")]
)
def test_the_old_h_div_w_keyword_still_works_and_warns(function, pn):
    extra = {} if pn is None else {"pn": pn}
    new = function(ratio=0.7, **extra)
    with pytest.warns(
        DeprecationWarning, match=r"\(h_div_w=\.\.\.\) is deprecated and will be removed; use ratio="
    ):
        assert function(h_div_w=0.7, **extra) == new
    with pytest.raises(TypeError, match="pass only ratio="):
        function(h_div_w=0.7, ratio=0.7, **extra)


def test_resize_crop_for_template_takes_ratio_and_still_the_old_keyword():
    img = Image.new("RGB", (300, 200), (10, 20, 30))
    new = resize_crop_for_template(img, ratio=0.7, pn="0.06M")
    with pytest.warns(DeprecationWarning, match="use ratio="):
        old = resize_crop_for_template(img, h_div_w_or_template=0.7, pn="0.06M")
    assert old.size == new.size == target_pixel_size(ratio=0.7, pn="0.06M")[::-1]


def test_schedule_dict_round_trip_and_vae_scales():
    sched = get_schedule(0.666, "0.25M")
    again = ScaleSchedule.from_dict(json.loads(json.dumps(sched.to_dict())))
    assert again == sched
    assert sched.vae_scales() == sched.scales
    assert sched.vae_scales(patchify=True) == tuple((2 * h, 2 * w) for h, w in sched.scales)
    assert get_schedule(1.0, "1M").vae_scales(patchify=True)[-1] == (128, 128)
    assert get_schedule(1.0, "1M").vae_scales(patchify=True)[0] == (2, 2)


def test_custom_schedule_for_a_small_model():
    sched = custom_schedule([(1, 1), (2, 2), (4, 4), (8, 8)], name="128px")
    assert sched.pixel_hw == (128, 128)
    assert sched.seq_len == 1 + 4 + 16 + 64
    assert sched.rope_grid == (64, 64)
    assert sched.pn == "128px"
    assert custom_schedule([(1, 1, 1), (1, 2, 2)]).scales == ((1, 1), (2, 2))
    with pytest.raises(ValueError, match="t = 1"):
        custom_schedule([(2, 2, 2)])
    with pytest.raises(ValueError, match="positive"):
        custom_schedule([(0, 1)])
    with pytest.raises(ValueError, match="at least one"):
        custom_schedule([])


def test_default_latent_schedules_of_the_tokenizer():
    assert default_latent_schedule((16, 16)) == ((1, 1), (2, 2), (4, 4), (6, 6), (8, 8), (12, 12), (16, 16))
    assert default_latent_schedule((32, 32)) == get_schedule(1.0, "0.25M").scales
    assert default_latent_schedule((64, 64)) == get_schedule(1.0, "1M").scales
    assert default_latent_schedule((36, 64))[-3:] == ((24, 32), (32, 48), (36, 64))
    for template in H_DIV_W_TEMPLATES:
        for pn in ("0.06M", "0.25M", "1M"):
            sched = get_schedule(template, pn)
            assert default_latent_schedule(sched.scales[-1]) == sched.scales
    with pytest.raises(ValueError, match="no default scale schedule for a 17x17 latent"):
        default_latent_schedule((17, 17))


def _reference_cover_crop(width: int, height: int, tgt_h: int, tgt_w: int) -> tuple[int, int, int, int]:
    if width / height <= tgt_w / tgt_h:
        rw, rh = tgt_w, int(tgt_w / (width / height))
    else:
        rh, rw = tgt_h, int((width / height) * tgt_h)
    return rw, rh, (rw - tgt_w) // 2, (rh - tgt_h) // 2


@pytest.mark.parametrize("size", [(300, 200), (200, 300), (256, 256), (1000, 333), (97, 611)])
def test_resize_crop_for_template_covers_and_centre_crops(size):
    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8))
    h_div_w = size[1] / size[0]
    tgt_h, tgt_w = target_pixel_size(h_div_w, "0.06M")
    out = resize_crop_for_template(img, h_div_w, "0.06M")
    assert out.size == (tgt_w, tgt_h)
    rw, rh, left, top = _reference_cover_crop(size[0], size[1], tgt_h, tgt_w)
    expected = img.resize((rw, rh), resample=Image.Resampling.LANCZOS)
    expected = np.asarray(expected)[top : top + tgt_h, left : left + tgt_w]
    np.testing.assert_array_equal(np.asarray(out), expected)


def test_extra_small_budget_is_the_five_scale_prefix_of_every_template():
    from bsq_tokenizer.schedules import EXTRA_PIXEL_BUDGETS

    assert EXTRA_PIXEL_BUDGETS == ("0.016M",)
    square = get_schedule(1.0, "0.016M")
    assert square.scales == ((1, 1), (2, 2), (4, 4), (6, 6), (8, 8))
    assert square.pixel_hw == (128, 128)
    assert square.rope_grid == (64, 64)
    for template in H_DIV_W_TEMPLATES:
        small, full = get_schedule(template, "0.016M"), get_schedule(template, "1M")
        assert small.scales == full.scales[:5] and small.rope_grid == full.rope_grid
