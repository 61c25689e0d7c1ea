"""ImageReward: BLIP tokenization, preprocessing, the model's head and mask, weights policy, aggregation.
The key map and the contract shared with HPS are in test_scorer_keymaps.py."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import math
import os
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("transformers", reason="ImageReward needs the 'imagereward' extra (transformers)")

from infinity_eval.imagereward import (
    IMAGEREWARD_MEAN,
    IMAGEREWARD_STD,
    ImageRewardConfig,
    ImageRewardScorer,
    imagereward_benchmark_summary,
    imagereward_preprocess,
    imagereward_tokenizer,
)
from infinity_eval.io import CLIP_MEAN as MEAN
from infinity_eval.io import CLIP_STD as STD
from infinity_eval.weights import WeightsNotFoundError

# Real-weight tests use the user's weights folder, read before the autouse fixture isolates each test from it.
USER_WEIGHTS_DIR = os.environ.get("INFINITY_EVAL_WEIGHTS_DIR")
CLIP_MEAN = np.array(MEAN, dtype=np.float32)
CLIP_STD = np.array(STD, dtype=np.float32)


def _load_layouts() -> ModuleType:
    path = Path(__file__).parent / "fixtures" / "official_layouts.py"
    spec = importlib.util.spec_from_file_location("official_layouts", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


L = _load_layouts()
PROMPTS = L.BERT_PROMPTS
TINY = ImageRewardConfig(**L.IMAGEREWARD_TINY)


@pytest.fixture
def vocab_file(tmp_path: Path) -> Path:
    path = tmp_path / "vocab" / "vocab.txt"
    path.parent.mkdir()
    path.write_text("\n".join(L.BERT_VOCAB) + "\n", encoding="utf-8")
    return path


def official_state(seed: int = 5) -> dict[str, torch.Tensor]:
    return L.random_state_dict(L.imagereward_layout(**L.IMAGEREWARD_TINY), seed)


def small_scorer(vocab_file: Path, seed: int = 5, **options: object) -> ImageRewardScorer:
    """Same architecture as v1.0, tiny widths (32x32 images, 2 ViT blocks, 2 MED layers), seeded weights."""
    return ImageRewardScorer.from_state_dict(
        official_state(seed), imagereward_tokenizer(vocab_file), TINY, **options
    )  # type: ignore[arg-type]


@pytest.fixture
def images() -> list[Image.Image]:
    return L.random_images([(48, 40), (40, 64), (32, 32)], seed=1)


@pytest.fixture(autouse=True)
def _no_weights_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Isolate every test from the user's weights folder and Hugging Face cache."""
    monkeypatch.delenv("INFINITY_EVAL_WEIGHTS_DIR", raising=False)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "hf_home" / "hub"))


# ------------------------------------------------------------------------------------------------ tokenizer


def test_tokenizer_pads_and_truncates_to_max_length_with_cls_and_sep(vocab_file: Path) -> None:
    scorer = small_scorer(vocab_file)
    ids, mask = scorer.tokenize(["a cat", "cat " * 50])
    assert ids.shape == mask.shape == (2, 35)
    assert ids[0, :4].tolist() == [2, 5, 6, 3] and ids[0, 4:].eq(0).all()
    assert mask[0].sum() == 4
    assert ids[1, 0] == 2 and ids[1, 34] == 3 and ids[1, 1:34].eq(6).all() and mask[1].all()


def test_tokenizer_lowercases_strips_accents_and_keeps_blip_special_tokens(vocab_file: Path) -> None:
    tokenizer = imagereward_tokenizer(vocab_file)
    assert tokenizer.tokenize("A cats on the MAT, Café") == [
        "a",
        "cat",
        "##s",
        "on",
        "the",
        "mat",
        ",",
        "cafe",
    ]
    assert tokenizer.tokenize("cat[ENC]dog") == ["cat", "[ENC]", "dog"]
    with pytest.raises(FileNotFoundError, match=r"vocab\.txt"):
        imagereward_tokenizer(vocab_file.parent / "missing.txt")


def test_tokenizer_size_must_match_the_model(vocab_file: Path) -> None:
    scorer = small_scorer(vocab_file)
    scorer.model.config = dataclasses.replace(TINY, vocab_size=TINY.vocab_size + 1)
    with pytest.raises(ValueError, match="vocab_size"):
        ImageRewardScorer(scorer.model, scorer.tokenizer)


# ------------------------------------------------------------------------------------------------ preprocessing


def _normalised(rgb: np.ndarray) -> np.ndarray:
    return ((rgb.astype(np.float32) / 255 - CLIP_MEAN) / CLIP_STD).transpose(2, 0, 1)


def test_preprocess_resizes_short_side_bicubic_then_centre_crops() -> None:
    rng = np.random.default_rng(1)
    image = Image.fromarray(rng.integers(0, 256, (200, 301, 3), dtype=np.uint8))  # w=301, h=200
    # short side 200 -> 224, long side int(224 * 301 / 200) = 337 (floored), crop left round(56.5) = 56
    expected = image.resize((337, 224), Image.Resampling.BICUBIC).crop((56, 0, 280, 224))
    out = imagereward_preprocess(image)
    assert out.shape == (3, 224, 224) and out.dtype == torch.float32
    np.testing.assert_allclose(out.numpy(), _normalised(np.asarray(expected)), rtol=0, atol=1e-6)


@pytest.mark.parametrize(("width", "left"), [(225, 0), (227, 2), (226, 1)])
def test_preprocess_centre_crop_offset_rounds_half_to_even(width: int, left: int) -> None:
    rgb = np.random.default_rng(width).integers(0, 256, (224, width, 3), dtype=np.uint8)
    out = imagereward_preprocess(Image.fromarray(rgb))  # short side already 224: no resize
    np.testing.assert_allclose(out.numpy(), _normalised(rgb[:, left : left + 224]), rtol=0, atol=1e-6)


def test_preprocess_converts_to_rgb_after_the_crop() -> None:
    gray = Image.fromarray(np.full((224, 224), 77, dtype=np.uint8), mode="L")
    out = imagereward_preprocess(gray)
    np.testing.assert_allclose(out.numpy(), _normalised(np.full((224, 224, 3), 77, np.uint8)), atol=1e-6)


# ------------------------------------------------------------------------------------------------ model


def test_padding_tokens_are_masked_out(vocab_file: Path, images: list[Image.Image]) -> None:
    scorer = small_scorer(vocab_file)
    pixels = imagereward_preprocess(images[0], 32)[None]
    ids, mask = scorer.tokenize(["a cat"])
    garbage = ids.clone()
    garbage[0, 4:] = 7  # rewrite the [PAD] positions; the mask still excludes them
    with torch.no_grad():
        model = scorer.model
        assert torch.allclose(model(pixels, ids, mask), model(pixels, garbage, mask), rtol=0, atol=1e-6)
        assert not torch.allclose(
            model(pixels, ids, mask), model(pixels, garbage, torch.ones_like(mask)), atol=1e-4
        )


def test_reward_is_normalised_with_the_v1_constants(vocab_file: Path, images: list[Image.Image]) -> None:
    assert (IMAGEREWARD_MEAN, IMAGEREWARD_STD) == (0.16717362830052426, 1.0333394966054072)
    scorer = small_scorer(vocab_file)
    raw = torch.tensor(scorer.raw_scores(PROMPTS, images), dtype=torch.float32)
    expected = (
        (raw - 0.16717362830052426) / 1.0333394966054072
    ).tolist()  # float32, as the reference computes it
    assert scorer.score(PROMPTS, images) == expected
    assert scorer.options()["max_length"] == 35 and scorer.options()["reward_std"] == IMAGEREWARD_STD


def test_head_is_linear_without_activations(vocab_file: Path) -> None:
    head = small_scorer(vocab_file).model.mlp.layers.eval()
    assert [type(m).__name__ for m in head] == ["Linear", "Dropout"] * 3 + ["Linear", "Linear"]
    x, y = torch.randn(4, 24), torch.randn(4, 24)
    with torch.no_grad():  # affine map: f(x) + f(y) - f(0) = f(x + y)
        assert torch.allclose(head(x) + head(y) - head(torch.zeros(1, 24)), head(x + y), atol=1e-5)


# ------------------------------------------------------------------------------------------------ weights policy


def test_weights_found_in_env_folder_then_hf_cache(
    vocab_file: Path, images: list[Image.Image], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    expected = small_scorer(vocab_file, seed=9).score(PROMPTS, images)
    # 1) $INFINITY_EVAL_WEIGHTS_DIR/ImageReward.pt + $INFINITY_EVAL_WEIGHTS_DIR/bert-base-uncased/vocab.txt
    env_dir = tmp_path / "weights"
    (env_dir / "bert-base-uncased").mkdir(parents=True)
    torch.save(official_state(9), env_dir / "ImageReward.pt")
    (env_dir / "bert-base-uncased" / "vocab.txt").write_bytes(vocab_file.read_bytes())
    monkeypatch.setenv("INFINITY_EVAL_WEIGHTS_DIR", str(env_dir))
    from_env = ImageRewardScorer.from_pretrained(config=TINY)
    assert from_env.weights_file == env_dir / "ImageReward.pt"
    assert from_env.score(PROMPTS, images) == expected
    # 2) the local Hugging Face cache: models--THUDM--ImageReward/snapshots/<rev>/ImageReward.pt
    monkeypatch.delenv("INFINITY_EVAL_WEIGHTS_DIR")
    hub = tmp_path / "hf_home" / "hub"
    for repo, name, src in (
        ("models--THUDM--ImageReward", "ImageReward.pt", env_dir / "ImageReward.pt"),
        ("models--google-bert--bert-base-uncased", "vocab.txt", vocab_file),
    ):
        snap = hub / repo / "snapshots" / "0123abc"
        snap.mkdir(parents=True)
        (snap / name).write_bytes(src.read_bytes())
        (hub / repo / "refs").mkdir()
        (hub / repo / "refs" / "main").write_text("0123abc")
    from_cache = ImageRewardScorer.from_pretrained(config=TINY)
    assert (
        from_cache.weights_file
        == hub / "models--THUDM--ImageReward" / "snapshots" / "0123abc" / "ImageReward.pt"
    )
    assert from_cache.score(PROMPTS, images) == expected
    with pytest.raises(WeightsNotFoundError, match=r"ImageReward\.pt"):
        ImageRewardScorer.from_pretrained(tmp_path / "nowhere.pt")


# ------------------------------------------------------------------------------------------------ aggregation


def test_benchmark_score_is_the_mean_of_prompt_means() -> None:
    summary = imagereward_benchmark_summary({"p1": [1.0, 2.0, 3.0], "p2": [0.0], "p3": []})
    assert summary["imagereward"] == pytest.approx((2.0 + 0.0) / 2)
    assert summary["imagereward_image_mean"] == pytest.approx(6.0 / 4)
    assert (summary["prompts"], summary["images"], summary["empty_prompts"]) == (2, 4, 1)
    equal = imagereward_benchmark_summary({"a": [1.0, 3.0], "b": [0.5, 0.5]})
    assert math.isclose(equal["imagereward"], equal["imagereward_image_mean"])


def test_med_config_json_gives_the_v1_text_encoder(tmp_path: Path) -> None:
    med = {
        "architectures": ["BertModel"], "attention_probs_dropout_prob": 0.1, "hidden_act": "gelu",
        "hidden_dropout_prob": 0.1, "hidden_size": 768, "initializer_range": 0.02, "intermediate_size": 3072,
        "layer_norm_eps": 1e-12, "max_position_embeddings": 512, "model_type": "bert", "num_attention_heads": 12,
        "num_hidden_layers": 12, "pad_token_id": 0, "type_vocab_size": 2, "vocab_size": 30524,
        "encoder_width": 768, "add_cross_attention": True,
    }  # fmt: skip
    path = tmp_path / "med_config.json"
    path.write_text(json.dumps(med), encoding="utf-8")
    assert ImageRewardConfig.from_med_config(path) == ImageRewardConfig.preset("v1.0")
    cfg = ImageRewardConfig.preset("v1.0")
    assert ImageRewardConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    path.write_text(json.dumps({**med, "hidden_act": "relu"}), encoding="utf-8")
    with pytest.raises(ValueError, match="hidden_act"):
        ImageRewardConfig.from_med_config(path)
    with pytest.raises(ValueError, match="unknown ImageReward preset"):
        ImageRewardConfig.preset("v2")


# ------------------------------------------------------------------------------------------------ real weights


@pytest.mark.slow
@pytest.mark.skipif(USER_WEIGHTS_DIR is None, reason="real weights: set INFINITY_EVAL_WEIGHTS_DIR")
def test_real_imagereward_weights_load_and_tokenize_like_bert_base_uncased(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("INFINITY_EVAL_WEIGHTS_DIR", str(USER_WEIGHTS_DIR))
    try:
        scorer = ImageRewardScorer.from_pretrained()
    except WeightsNotFoundError as err:
        pytest.skip(f"ImageReward files not in the weights folder: {err}")
    assert len(scorer.tokenizer) == 30524 and scorer.tokenizer.convert_tokens_to_ids("[ENC]") == 30523
    ids, mask = scorer.tokenize(["a photo of a cat"])
    assert ids[0, :7].tolist() == [101, 1037, 6302, 1997, 1037, 4937, 102] and mask.sum() == 7
    gray = Image.new("RGB", (512, 512), (128, 128, 128))
    rewards = scorer.score(["a photo of a cat", "a gray square"], [gray, gray])
    assert all(math.isfinite(r) for r in rewards) and rewards[0] != rewards[1]
