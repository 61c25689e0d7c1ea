"""Bucket assignment follows the official `infinity/utils/dynamic_resolution.py` (nearest template, first wins ties) and the reference's resize-crop."""

from __future__ import annotations

import io
import itertools
import json
from pathlib import Path

import numpy as np
import pytest
from bsq_tokenizer import resize_crop_for_template
from bsq_tokenizer.schedules import H_DIV_W_TEMPLATES, target_pixel_size
from infinity_data import ConvertConfig, convert_folder, read_shard
from infinity_data.buckets import bucket_name, template_of_size
from infinity_data.images import decode_rgb
from PIL import Image


def _argmin_template(h_div_w: float) -> float:
    """The spec's rule written with numpy, independently of the implementation under test."""
    templates = np.array(H_DIV_W_TEMPLATES)
    return float(templates[np.argmin(np.abs(h_div_w - templates))])


def test_bucket_names_are_three_decimal_templates() -> None:
    names = [bucket_name(t) for t in H_DIV_W_TEMPLATES]
    assert names[:5] == ["1.000", "1.250", "0.800", "1.333", "0.750"]
    assert "0.666" in names and "0.571" in names and "0.333" in names
    assert len(set(names)) == 15


@pytest.mark.parametrize("template", H_DIV_W_TEMPLATES)
def test_image_exactly_on_a_template_gets_that_template(template: float) -> None:
    height, width = target_pixel_size(template, "1M")
    assert template_of_size(width, height) == _argmin_template(height / width) == template


def test_ratios_between_templates_follow_the_numpy_argmin_rule() -> None:
    ordered = sorted(H_DIV_W_TEMPLATES)
    probes = []
    for lo, hi in itertools.pairwise(ordered):
        mid = (lo + hi) / 2
        probes += [lo + 0.2 * (hi - lo), mid - 1e-6, mid + 1e-6, hi - 0.2 * (hi - lo)]
    probes += [0.1, 0.2, 5.0, 10.0]
    for ratio in probes:
        width = 1_000_000
        height = ratio * width
        assert template_of_size(width, round(height)) == _argmin_template(round(height) / width), ratio
    # an exact tie between 1.0 and 1.25 (1.125) goes to the template listed first (1.0)
    assert template_of_size(8, 9) == 1.0
    # 0.9 is exactly between 0.8 and 1.0: 1.0 comes first in dictionary order
    assert template_of_size(10, 9) == _argmin_template(0.9) == 1.0


def _convert_one(
    tmp_path: Path, data: bytes, name: str = "x.jpg", pn: str | None = None
) -> tuple[dict, bytes]:
    src = tmp_path / "src"
    src.mkdir(parents=True, exist_ok=True)
    (src / name).write_bytes(data)
    (src / Path(name).with_suffix(".txt")).write_text("caption", encoding="utf-8")
    out = tmp_path / "out"
    result = convert_folder(src, out, ConvertConfig(pn=pn))
    assert result.num_accepted == 1, result.rejected_by_reason
    [shard] = result.index.shards
    [(_key, files)] = list(read_shard(out / shard.path))
    meta = json.loads(files["json"])
    image_ext = next(e for e in ("jpg", "png", "webp") if e in files)
    assert shard.bucket == bucket_name(meta["template"])
    return meta, files[image_ext]


@pytest.mark.parametrize(("width", "height"), [(64, 48), (48, 64), (100, 57), (57, 100), (70, 70), (99, 40)])
def test_converter_puts_each_image_in_its_nearest_template_bucket(
    tmp_path: Path, image_bytes, width: int, height: int
) -> None:
    meta, _ = _convert_one(tmp_path, image_bytes(width, height, seed=1))
    assert meta["template"] == _argmin_template(height / width)
    assert (meta["width"], meta["height"]) == (width, height)


def test_exif_orientation_is_applied_before_choosing_the_bucket(tmp_path: Path, image_bytes) -> None:
    img = Image.open(io.BytesIO(image_bytes(80, 40, seed=2)))
    exif = Image.Exif()
    exif[0x0112] = 6  # stored landscape, displayed rotated 90 degrees: upright it is 40 wide, 80 high
    buf = io.BytesIO()
    img.save(buf, format="JPEG", exif=exif)
    meta, stored = _convert_one(tmp_path, buf.getvalue())
    assert (meta["width"], meta["height"]) == (40, 80)
    assert meta["template"] == 2.0
    assert decode_rgb(stored).size == (40, 80)


def test_pn_flag_downscales_large_images_with_the_spec_resize_and_keeps_small_ones_byte_identical(
    tmp_path: Path, image_bytes
) -> None:
    big = image_bytes(400, 300, seed=3, fmt="PNG")  # h/w 0.75 -> 240 x 320 at 0.06M
    meta, stored = _convert_one(tmp_path / "a", big, name="big.png", pn="0.06M")
    assert meta["resized"] and meta["template"] == 0.75
    expected = resize_crop_for_template(Image.open(io.BytesIO(big)).convert("RGB"), 0.75, "0.06M")
    got = decode_rgb(stored)
    assert got.size == (320, 240) == (expected.width, expected.height)
    assert np.array_equal(np.asarray(got), np.asarray(expected))  # PNG source -> lossless PNG re-encode

    small = image_bytes(64, 48, seed=4)
    meta, stored = _convert_one(tmp_path / "b", small, pn="0.06M")
    assert not meta["resized"] and stored == small
