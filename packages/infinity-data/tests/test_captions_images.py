"""Caption choice per the training spec, and decoding of odd image modes into upright RGB."""

from __future__ import annotations

import io

import numpy as np
import pytest
from infinity_data.captions import choose_caption
from infinity_data.images import ImageDecodeError, decode_rgb
from PIL import Image

LONG = "A red cube on a table. The light comes from the left. Shadows are soft. The floor is wood."


def _rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def test_user_prompts_are_never_shortened() -> None:
    for seed in range(20):
        assert (
            choose_caption(LONG, None, "user_prompt", _rng(seed), short_prob=0.5, dynamic_length=True) == LONG
        )


def test_dynamic_length_uses_a_prefix_of_at_least_n_short_plus_one_sentences_or_the_short_caption() -> None:
    # first sentence has 5 words (< 15) -> n_short = 2; the prefix has 3 or 4 of the 4 sentences
    seen = set()
    for seed in range(200):
        text = choose_caption(LONG, None, "vlm", _rng(seed), short_prob=0.3, dynamic_length=True)
        seen.add(text.count("."))
        assert LONG.startswith(text[:-1])
    assert seen == {2, 3, 4}  # short (2 sentences), or a 3- or 4-sentence prefix
    texts = {
        choose_caption(LONG, "tiny", "vlm", _rng(s), short_prob=1.0, dynamic_length=True) for s in range(5)
    }
    assert texts == {"tiny"}


def test_a_long_first_sentence_makes_the_short_form_one_sentence() -> None:
    first = " ".join(["word"] * 15)
    caption = f"{first}. Second. Third."
    short = choose_caption(caption, None, "vlm", _rng(), short_prob=1.0, dynamic_length=True)
    assert short == first + "."


def test_without_dynamic_length_the_short_caption_is_used_with_its_probability() -> None:
    picks = [choose_caption(LONG, "short", "vlm", _rng(s), short_prob=0.25) for s in range(2000)]
    assert abs(picks.count("short") / 2000 - 0.25) < 0.04
    assert {choose_caption(LONG, None, "vlm", _rng(s), short_prob=0.9) for s in range(20)} == {LONG}


def test_text_after_a_double_dash_is_cut_when_something_remains() -> None:
    assert choose_caption("A cat -- photo by someone", None, "user_prompt", _rng()) == "A cat"
    assert choose_caption("-- only a credit", None, "user_prompt", _rng()) == "-- only a credit"


def _encode(img: Image.Image, fmt: str, **kwargs) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kwargs)
    return buf.getvalue()


def test_odd_modes_decode_to_rgb() -> None:
    base = Image.fromarray(np.random.default_rng(0).integers(0, 256, (20, 30, 3), dtype=np.uint8))
    cmyk = decode_rgb(_encode(base.convert("CMYK"), "JPEG"))
    assert cmyk.mode == "RGB" and cmyk.size == (30, 20)
    sixteen = Image.fromarray(np.full((8, 8), 0x8000, dtype=np.uint16))
    assert np.asarray(decode_rgb(_encode(sixteen, "PNG"))).max() == 0x80  # the top 8 bits
    rgba = base.convert("RGBA")
    rgba.putalpha(0)
    assert np.asarray(decode_rgb(_encode(rgba, "PNG"))).min() == 255  # transparent -> white
    assert decode_rgb(_encode(base.convert("P"), "GIF")).mode == "RGB"
    assert decode_rgb(_encode(base.convert("1"), "PNG")).mode == "RGB"


@pytest.mark.parametrize(
    ("data", "code"),
    [(b"", "empty_file"), (b"hello, not an image", "not_an_image")],
)
def test_bad_bytes_raise_with_a_reason_code(data: bytes, code: str) -> None:
    with pytest.raises(ImageDecodeError) as info:
        decode_rgb(data)
    assert info.value.code == code


def test_truncated_image_is_reported_as_corrupt() -> None:
    data = _encode(Image.new("RGB", (64, 64), (10, 200, 30)), "PNG")
    with pytest.raises(ImageDecodeError) as info:
        decode_rgb(data[: len(data) - 30])
    assert info.value.code == "corrupt_image"


def test_decompression_bombs_are_reported_as_too_large(monkeypatch: pytest.MonkeyPatch) -> None:
    data = _encode(Image.new("RGB", (64, 64)), "PNG")
    monkeypatch.setattr(
        Image, "MAX_IMAGE_PIXELS", 3000
    )  # 4096 pixels: over the limit, under twice it (a warning)
    with pytest.raises(ImageDecodeError) as info:
        decode_rgb(data)
    assert info.value.code == "too_large"
