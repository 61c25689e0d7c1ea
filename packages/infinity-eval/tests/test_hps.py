"""HPSv2.1: open_clip tokenization, long-side resize + pad preprocessing, the scorer's features, weights policy,
aggregation. The key map and the contract shared with ImageReward are in test_scorer_keymaps.py."""

from __future__ import annotations

import dataclasses
import gzip
import importlib.util
import math
import os
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

pytest.importorskip("transformers", reason="HPS needs the 'hps' extra (transformers)")

from infinity_eval._clip import encode_text
from infinity_eval.hps import (
    HPSv21Scorer,
    OpenCLIPConfig,
    OpenCLIPTokenizer,
    hps_benchmark_summary,
    hps_preprocess,
)
from infinity_eval.io import CLIP_MEAN as MEAN
from infinity_eval.io import CLIP_STD as STD
from infinity_eval.weights import WeightsNotFoundError

# Real-weight tests use the user's weights folder, read before the autouse fixture isolates each test from it.
USER_WEIGHTS_DIR = os.environ.get("INFINITY_EVAL_WEIGHTS_DIR")
CLIP_MEAN = torch.tensor(MEAN).view(3, 1, 1)
CLIP_STD = torch.tensor(STD).view(3, 1, 1)


def _load_layouts() -> ModuleType:
    path = Path(__file__).parent / "fixtures" / "official_layouts.py"
    spec = importlib.util.spec_from_file_location("official_layouts", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


L = _load_layouts()
PROMPTS = L.CLIP_PROMPTS


def write_bpe(path: Path) -> Path:
    text = "bpe_simple_vocab_16e6.txt header\n" + "".join(f"{a} {b}\n" for a, b in L.CLIP_MERGES)
    path.write_bytes(gzip.compress(text.encode("utf-8")))
    return path


@pytest.fixture
def tokenizer() -> OpenCLIPTokenizer:
    return OpenCLIPTokenizer(L.CLIP_MERGES, fix_text=False)


def small_scorer(tokenizer: OpenCLIPTokenizer, seed: int = 7, **options: object) -> HPSv21Scorer:
    """Same architecture as ViT-H-14, tiny widths (28x28 images, 2 + 2 layers), seeded official-layout weights."""
    state = L.random_state_dict(L.open_clip_layout(**L.HPS_TINY), seed)
    return HPSv21Scorer.from_state_dict(state, tokenizer, OpenCLIPConfig(**L.HPS_TINY), **options)  # type: ignore[arg-type]


@pytest.fixture
def images() -> list[Image.Image]:
    return L.random_images([(40, 30), (20, 50), (28, 28)])


@pytest.fixture(autouse=True)
def _no_weights_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("INFINITY_EVAL_WEIGHTS_DIR", raising=False)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "hf-cache"))


# ------------------------------------------------------------------------------------------------ tokenizer


def test_bpe_vocabulary_is_bytes_then_word_ends_then_merges_then_markers(
    tokenizer: OpenCLIPTokenizer,
) -> None:
    ids = tokenizer.fast.convert_tokens_to_ids
    assert tokenizer.vocab_size == 256 + 256 + len(L.CLIP_MERGES) + 2
    assert (ids("!"), ids("!</w>"), ids("ca"), ids("cat</w>")) == (0, 256, 512, 513)
    assert (tokenizer.start_id, tokenizer.end_id) == (512 + len(L.CLIP_MERGES), 513 + len(L.CLIP_MERGES))
    row = tokenizer(["  A   RED\tCat &amp;amp;"])[0]
    expected = [
        tokenizer.start_id,
        ids("a</w>"),
        ids("red</w>"),
        ids("cat</w>"),
        ids("&</w>"),
        tokenizer.end_id,
    ]
    assert row[:6].tolist() == expected and row[6:].eq(0).all()  # cleaned, lower-cased, unescaped twice


def test_bpe_call_wraps_truncates_and_pads(tokenizer: OpenCLIPTokenizer) -> None:
    tokens = tokenizer(PROMPTS)
    assert tokens.shape == (3, 77) and tokens.dtype == torch.long
    assert tokens[2, 0] == tokenizer.start_id and tokens[2, -1] == tokenizer.end_id
    assert tokens[2, 1:-1].eq(tokenizer.fast.convert_tokens_to_ids("red</w>")).all()


def test_bpe_file_reader_keeps_open_clips_merge_count(tmp_path: Path) -> None:
    lines = "header\n" + "".join(f"a{i} b{i}\n" for i in range(48_900))
    (tmp_path / "big.txt").write_text(lines, encoding="utf-8")
    from infinity_eval._clip import read_bpe_merges

    assert len(read_bpe_merges(tmp_path / "big.txt")) == 49152 - 256 - 2
    (tmp_path / "bad.txt").write_text("header\na b c\n", encoding="utf-8")
    with pytest.raises(ValueError, match="line 2"):
        read_bpe_merges(tmp_path / "bad.txt")


# ------------------------------------------------------------------------------------------------ preprocessing


def _to_tensor(image: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.asarray(image.convert("RGB"), dtype=np.float32) / 255).permute(2, 0, 1)


def test_preprocess_resizes_longer_side_and_pads_centred_with_zero_before_normalising() -> None:
    rgb = np.random.default_rng(2).integers(0, 256, (101, 300, 3), dtype=np.uint8)  # h=101, w=300
    out = hps_preprocess(Image.fromarray(rgb))
    assert out.shape == (3, 224, 224) and out.dtype == torch.float32
    # scale 224/300: new h = round(101 * 0.74666...) = 75, pad 149 -> 74 rows on top, 75 below
    pad = ((0 - CLIP_MEAN) / CLIP_STD).expand(3, 1, 224)
    assert torch.allclose(out[:, :74], pad.expand(3, 74, 224)) and torch.allclose(
        out[:, 149:], pad.expand(3, 75, 224)
    )
    resized = F.interpolate(
        _to_tensor(Image.fromarray(rgb))[None], size=(75, 224), mode="bicubic", antialias=True
    )[0]
    assert torch.allclose(out[:, 74:149], (resized - CLIP_MEAN) / CLIP_STD, atol=1e-6)
    assert not torch.allclose(
        out[:, 74:149], (resized.clamp(0.05, 0.95) - CLIP_MEAN) / CLIP_STD
    )  # no clamping


def test_preprocess_pads_width_for_portrait_images() -> None:
    out = hps_preprocess(
        Image.new("RGB", (50, 100), (255, 255, 255))
    )  # 112 x 224 content, 56 columns each side
    white = (1 - CLIP_MEAN) / CLIP_STD
    zero = (0 - CLIP_MEAN) / CLIP_STD
    assert torch.allclose(out[:, :, 56:168], white.expand(3, 224, 112), atol=1e-5)
    assert torch.allclose(out[:, :, :56], zero.expand(3, 224, 56)) and torch.allclose(
        out[:, :, 168:], zero.expand(3, 224, 56)
    )


def test_preprocess_keeps_224_square_images_unresized_and_squares_larger_ones() -> None:
    rgb = np.random.default_rng(3).integers(0, 256, (224, 224, 3), dtype=np.uint8)
    assert torch.allclose(
        hps_preprocess(Image.fromarray(rgb)), (_to_tensor(Image.fromarray(rgb)) - CLIP_MEAN) / CLIP_STD
    )
    big = Image.fromarray(np.random.default_rng(4).integers(0, 256, (512, 512, 3), dtype=np.uint8))
    expected = F.interpolate(_to_tensor(big)[None], size=(224, 224), mode="bicubic", antialias=False)[0]
    assert torch.allclose(hps_preprocess(big, antialias=False), (expected - CLIP_MEAN) / CLIP_STD, atol=1e-6)
    assert not torch.allclose(
        hps_preprocess(big, antialias=True), hps_preprocess(big, antialias=False), atol=1e-3
    )


def test_preprocess_converts_rgba_to_rgb() -> None:
    rgba = Image.new("RGBA", (224, 224), (10, 20, 30, 0))
    assert torch.allclose(hps_preprocess(rgba), hps_preprocess(Image.new("RGB", (224, 224), (10, 20, 30))))


# ------------------------------------------------------------------------------------------------ scorer


def test_features_are_unit_vectors_and_scores_their_cosines(
    tokenizer: OpenCLIPTokenizer, images: list[Image.Image]
) -> None:
    scorer = small_scorer(tokenizer)
    pixels = torch.stack([hps_preprocess(im, 28) for im in images])
    img, txt = scorer.features(pixels, tokenizer(PROMPTS))
    assert img.shape == txt.shape == (3, 16)
    assert torch.allclose(img.norm(dim=-1), torch.ones(3)) and torch.allclose(txt.norm(dim=-1), torch.ones(3))
    scores = scorer.score(PROMPTS, images)
    assert np.allclose(scores, (img * txt).sum(-1).numpy(), atol=1e-6)
    assert all(-1 <= s <= 1 for s in scores)


def test_text_feature_is_causal_and_pooled_at_end_of_text(tokenizer: OpenCLIPTokenizer) -> None:
    model = small_scorer(tokenizer).model
    tokens = tokenizer(["a red cat"])
    dog = tokenizer.fast.convert_tokens_to_ids("dog</w>")
    after_end = tokens.clone()
    after_end[0, 6:] = dog  # positions after <end_of_text> (index 4) cannot be seen
    before_end = tokens.clone()
    before_end[0, 2] = dog
    with torch.no_grad():
        ref = encode_text(model, tokens)
        assert torch.allclose(ref, encode_text(model, after_end), atol=1e-6)
        assert not torch.allclose(ref, encode_text(model, before_end), atol=1e-4)


def test_tokenizer_must_match_the_model_vocabulary_and_context(tokenizer: OpenCLIPTokenizer) -> None:
    scorer = small_scorer(tokenizer)
    with pytest.raises(ValueError, match="vocab"):
        HPSv21Scorer(scorer.model, tokenizer, dataclasses.replace(scorer.config, vocab_size=49408))
    with pytest.raises(ValueError, match="context"):
        HPSv21Scorer(scorer.model, tokenizer, dataclasses.replace(scorer.config, context_length=64))


def test_options_record_the_protocol(tokenizer: OpenCLIPTokenizer) -> None:
    options = small_scorer(tokenizer, antialias=False).options()
    assert options["hps_version"] == "v2.1" and options["hps_antialias"] is False
    assert options["hps_ftfy"] is False and options["image_size"] == 28


def test_weights_and_vocab_found_in_env_folder(
    tokenizer: OpenCLIPTokenizer, images: list[Image.Image], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    state = L.random_state_dict(L.open_clip_layout(**L.HPS_TINY), 1)
    (tmp_path / "w" / "open_clip").mkdir(parents=True)
    torch.save({"state_dict": state}, tmp_path / "w" / "HPS_v2.1_compressed.pt")
    write_bpe(tmp_path / "w" / "open_clip" / "bpe_simple_vocab_16e6.txt.gz")
    monkeypatch.setenv("INFINITY_EVAL_WEIGHTS_DIR", str(tmp_path / "w"))
    loaded = HPSv21Scorer.from_pretrained(config=OpenCLIPConfig(**L.HPS_TINY), fix_text=False)
    assert loaded.vocab_file == tmp_path / "w" / "open_clip" / "bpe_simple_vocab_16e6.txt.gz"
    assert loaded.score(PROMPTS, images) == small_scorer(tokenizer, seed=1).score(PROMPTS, images)
    with pytest.raises(WeightsNotFoundError, match=r"HPS_v2_compressed\.pt"):
        HPSv21Scorer.from_pretrained(version="v2.0")


# ------------------------------------------------------------------------------------------------ aggregation


def test_benchmark_summary_is_mean_of_80_image_chunk_means_times_100() -> None:
    anime = [0.3] * 80 + [0.2] * 80 + [0.4] * 40  # chunks 0.3, 0.2, 0.4 -> 0.3 (image mean would be 0.28)
    photo = [0.25] * 10
    summary = hps_benchmark_summary({"anime": anime, "photo": photo, "empty": []})
    assert summary["styles"]["anime"]["hps"] == pytest.approx(30.0)
    assert summary["styles"]["anime"]["chunk_std"] == pytest.approx(np.std([0.3, 0.2, 0.4]))
    assert summary["styles"]["anime"]["chunks"] == 3 and summary["styles"]["photo"]["hps"] == pytest.approx(
        25.0
    )
    assert "empty" not in summary["styles"]
    assert summary["average"] == pytest.approx(100 * (sum(anime) + sum(photo)) / 210)
    assert summary["images"] == 210


# ------------------------------------------------------------------------------------------------ real weights


@pytest.mark.slow
@pytest.mark.skipif(USER_WEIGHTS_DIR is None, reason="real weights: set INFINITY_EVAL_WEIGHTS_DIR")
def test_real_hps_v21_weights_load_and_tokenize_like_open_clip(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INFINITY_EVAL_WEIGHTS_DIR", str(USER_WEIGHTS_DIR))
    try:
        scorer = HPSv21Scorer.from_pretrained()
    except WeightsNotFoundError as err:
        pytest.skip(f"HPS files not in the weights folder: {err}")
    tokens = scorer.tokenizer(["a photo of a cat"])
    assert tokens[0, :7].tolist() == [49406, 320, 1125, 539, 320, 2368, 49407] and tokens[0, 7:].eq(0).all()
    gray = Image.new("RGB", (512, 512), (128, 128, 128))
    cosines = scorer.score(["a photo of a cat", "a gray square"], [gray, gray])
    assert all(math.isfinite(c) and -1 <= c <= 1 for c in cosines) and cosines[0] != cosines[1]
