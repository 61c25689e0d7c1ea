"""Every common PIL mode converts to RGB by a documented rule; bad sizes and modes fail with a clear message."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from bsq_tokenizer import image_to_tensor, load_image, tensor_to_images
from bsq_tokenizer.image import center_crop_to_multiple, check_multiple, psnr, to_rgb
from PIL import Image


def test_rgba_is_composited_on_white():
    arr = np.zeros((2, 2, 4), dtype=np.uint8)
    arr[0, 0] = (10, 20, 30, 255)  # opaque
    arr[0, 1] = (200, 0, 0, 0)  # fully transparent -> white
    arr[1, 0] = (0, 0, 0, 128)  # half transparent black -> grey
    out = np.asarray(to_rgb(Image.fromarray(arr, "RGBA")))
    assert tuple(out[0, 0]) == (10, 20, 30)
    assert tuple(out[0, 1]) == (255, 255, 255)
    assert all(120 <= v <= 135 for v in out[1, 0])


def test_greyscale_palette_cmyk_and_bilevel_become_rgb():
    grey = Image.fromarray(np.full((3, 3), 77, dtype=np.uint8), "L")
    assert np.asarray(to_rgb(grey)).tolist() == [[[77, 77, 77]] * 3] * 3
    pal = Image.fromarray(np.full((3, 3, 3), (5, 100, 200), dtype=np.uint8)).convert(
        "P", palette=Image.Palette.ADAPTIVE
    )
    assert tuple(np.asarray(to_rgb(pal))[0, 0]) == (5, 100, 200)
    cmyk = Image.new("CMYK", (2, 2), (0, 0, 0, 0))
    assert to_rgb(cmyk).mode == "RGB" and tuple(np.asarray(to_rgb(cmyk))[0, 0]) == (255, 255, 255)
    assert to_rgb(Image.new("1", (2, 2), 1)).getpixel((0, 0)) == (255, 255, 255)
    la = Image.new("LA", (1, 1), (0, 0))
    assert to_rgb(la).getpixel((0, 0)) == (255, 255, 255)


def test_palette_with_transparency_key_is_composited():
    img = Image.new("P", (2, 1))
    img.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    img.putpixel((0, 0), 0)
    img.putpixel((1, 0), 1)
    img.info["transparency"] = 0
    out = to_rgb(img)
    assert out.getpixel((0, 0)) == (255, 255, 255)
    assert out.getpixel((1, 0)) == (255, 0, 0)


def test_16_bit_greyscale_is_scaled_to_8_bits():
    arr = np.array([[0, 257 * 100, 65535]], dtype=np.uint16)
    img = Image.frombytes("I;16", (3, 1), arr.astype("<u2").tobytes())
    assert img.mode == "I;16"
    out = np.asarray(to_rgb(img))
    assert out[0, :, 0].tolist() == [0, 100, 255]


@pytest.mark.parametrize("mode", ["I", "F"])
def test_32_bit_modes_are_rejected(mode):
    with pytest.raises(ValueError, match=f"image mode '{mode}'"):
        to_rgb(Image.new(mode, (2, 2)))


def test_load_image_names_the_file(tmp_path):
    path = tmp_path / "broken.png"
    path.write_bytes(b"not an image")
    with pytest.raises(ValueError, match=r"broken\.png"):
        load_image(path)
    good = tmp_path / "rgba.png"
    Image.new("RGBA", (4, 4), (1, 2, 3, 0)).save(good)
    assert load_image(good).getpixel((0, 0)) == (255, 255, 255)


def test_sizes_must_be_multiples_of_the_stride():
    check_multiple(256, 128, 16)
    with pytest.raises(
        ValueError, match=r"image size 250x300 \(HxW\).*stride 16.*nearest valid size is 256x304"
    ):
        check_multiple(300, 250, 16)
    with pytest.raises(ValueError, match="nearest valid size is 16x16"):
        check_multiple(5, 5, 16)
    img = Image.new("RGB", (300, 250))
    assert center_crop_to_multiple(img, 16).size == (288, 240)
    with pytest.raises(ValueError, match="smaller than the stride"):
        center_crop_to_multiple(Image.new("RGB", (8, 40)), 16)


def test_tensor_round_trip_and_psnr():
    arr = np.random.default_rng(0).integers(0, 256, size=(8, 16, 3), dtype=np.uint8)
    x = image_to_tensor(Image.fromarray(arr))
    assert x.shape == (1, 3, 8, 16) and x.dtype == torch.float32
    assert x.min() >= -1 and x.max() <= 1
    back = np.asarray(tensor_to_images(x)[0]).astype(int)
    assert np.abs(back - arr).max() <= 1  # truncation as in the reference
    assert psnr(x, x) == float("inf")
    assert psnr(x, x + 0.02) == pytest.approx(10 * np.log10(4 / 0.0004), rel=1e-6)
    with pytest.raises(ValueError, match="RGB"):
        image_to_tensor(Image.new("L", (2, 2)))
