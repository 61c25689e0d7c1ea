"""ImageReward: tokenizer, preprocessing, architecture, official key layout, weights policy, aggregation."""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from infinity_eval.imagereward import (
    IMAGEREWARD_MEAN,
    IMAGEREWARD_STD,
    BertWordPieceTokenizer,
    ImageRewardConfig,
    ImageRewardModel,
    ImageRewardScorer,
    imagereward_benchmark_summary,
    imagereward_preprocess,
    load_official_imagereward_state_dict,
)
from infinity_eval.weights import WeightsNotFoundError
from PIL import Image

# Real-weight tests use the user's weights folder, read before the autouse fixture isolates each test from it.
USER_WEIGHTS_DIR = os.environ.get("INFINITY_EVAL_WEIGHTS_DIR")

VOCAB = [
    "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]",
    "a", "cat", "dog", "##s", "on", "the", "mat", ",", ".", "!", "cafe", "##t", "un", "##able", "中", "red",
]  # fmt: skip
PROMPTS = [
    "a red cat on the mat",
    "dogs!",
    "the cafe cat, un-able to sit on a very very long mat . . . . . .",
]
CLIP_MEAN = np.array([0.48145466, 0.4578275, 0.40821073], dtype=np.float32)
CLIP_STD = np.array([0.26862954, 0.26130258, 0.27577711], dtype=np.float32)


def small_config(tokenizer: BertWordPieceTokenizer) -> ImageRewardConfig:
    """Same architecture and code path as v1.0, tiny widths: 32x32 images, 2 ViT blocks, 2 MED layers."""
    return ImageRewardConfig(
        image_size=32,
        patch_size=16,
        vision_width=32,
        vision_depth=2,
        vision_heads=2,
        vocab_size=tokenizer.size,
        text_width=24,
        text_depth=2,
        text_heads=2,
        text_intermediate=48,
        max_positions=40,
    )


@pytest.fixture
def tokenizer() -> BertWordPieceTokenizer:
    return BertWordPieceTokenizer(VOCAB)


@pytest.fixture
def images() -> list[Image.Image]:
    rng = np.random.default_rng(0)
    sizes = [(48, 40), (40, 64), (32, 32)]
    return [Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for w, h in sizes]


@pytest.fixture(autouse=True)
def _no_weights_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Isolate every test from the user's weights folder and Hugging Face cache."""
    monkeypatch.delenv("INFINITY_EVAL_WEIGHTS_DIR", raising=False)
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))


# ------------------------------------------------------------------------------------------------ tokenizer


def test_tokenizer_appends_dec_and_enc_like_blip(tokenizer: BertWordPieceTokenizer) -> None:
    assert tokenizer.size == len(VOCAB) + 2
    assert tokenizer.vocab["[DEC]"] == len(VOCAB)
    assert tokenizer.vocab["[ENC]"] == len(VOCAB) + 1


def test_tokenizer_lowercases_strips_accents_splits_punctuation_and_wordpieces(
    tokenizer: BertWordPieceTokenizer,
) -> None:
    assert tokenizer.tokenize("A cats on the MAT, dogs! Café") == [
        "a", "cat", "##s", "on", "the", "mat", ",", "dog", "##s", "!", "cafe",
    ]  # fmt: skip
    assert tokenizer.tokenize("unable中文") == ["un", "##able", "中", "[UNK]"]
    assert tokenizer.tokenize("cats" * 30) == ["[UNK]"]  # over 100 characters
    assert tokenizer.tokenize("catx") == ["[UNK]"]  # no full WordPiece cover -> whole word unknown
    assert tokenizer.tokenize("weird\x00 ctrl\u200b\tx") == ["[UNK]", "[UNK]", "[UNK]"]


def test_tokenizer_keeps_special_tokens_case_sensitively(tokenizer: BertWordPieceTokenizer) -> None:
    assert tokenizer.tokenize("cat[SEP]dog [ENC]") == ["cat", "[SEP]", "dog", "[ENC]"]
    assert tokenizer.tokenize("[cls]") == ["[UNK]", "[UNK]", "[UNK]"]


def test_tokenizer_pads_and_truncates_to_max_length_with_cls_and_sep(
    tokenizer: BertWordPieceTokenizer,
) -> None:
    ids, mask = tokenizer(["a cat", "cat " * 50], max_length=35)
    assert ids.shape == mask.shape == (2, 35)
    assert ids[0, :4].tolist() == [2, 5, 6, 3] and ids[0, 4:].eq(0).all()
    assert mask[0].sum() == 4
    assert ids[1, 0] == 2 and ids[1, 34] == 3 and ids[1, 1:34].eq(6).all() and mask[1].all()


def test_tokenizer_reads_vocab_file(tmp_path: Path) -> None:
    path = tmp_path / "vocab.txt"
    path.write_text("\n".join(VOCAB) + "\n", encoding="utf-8")
    assert BertWordPieceTokenizer.from_file(path).vocab == BertWordPieceTokenizer(VOCAB).vocab


def test_tokenizer_matches_transformers_bert_tokenizer(tokenizer: BertWordPieceTokenizer) -> None:
    transformers = pytest.importorskip("transformers")
    reference = transformers.BertTokenizer(vocab={w: i for i, w in enumerate(VOCAB)})
    reference.add_special_tokens({"bos_token": "[DEC]"})
    reference.add_special_tokens({"additional_special_tokens": ["[ENC]"]})
    texts = [
        *PROMPTS,
        "A cats on the MAT, dogs! Café [MASK]",
        "unable中文 cat[SEP]dog",
        "  \t weird\x00 ctrl\u200b  x",
    ]
    for text in texts:
        expected = reference(text, padding="max_length", truncation=True, max_length=35, return_tensors="pt")
        ids, mask = tokenizer([text], max_length=35)
        assert ids.tolist() == expected["input_ids"].tolist(), text
        assert mask.tolist() == expected["attention_mask"].tolist(), text


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


# ------------------------------------------------------------------------------------------------ architecture


def test_small_model_gives_one_score_per_pair(
    tokenizer: BertWordPieceTokenizer, images: list[Image.Image]
) -> None:
    scorer = ImageRewardScorer.from_config(small_config(tokenizer), tokenizer)
    pixels = torch.stack([imagereward_preprocess(im, 32) for im in images])
    ids, mask = tokenizer(PROMPTS, 35)
    model = scorer.model
    assert model.blip.visual_encoder(pixels).shape == (3, 1 + 2 * 2, 32)
    assert model.blip.text_encoder(ids, mask, model.blip.visual_encoder(pixels)).shape == (3, 35, 24)
    raw = model(pixels, ids, mask)
    assert raw.shape == (3,) and raw.dtype == torch.float32 and torch.isfinite(raw).all()


def test_batched_scores_equal_unbatched(tokenizer: BertWordPieceTokenizer, images: list[Image.Image]) -> None:
    scorer = ImageRewardScorer.from_config(small_config(tokenizer), tokenizer, batch_size=3)
    batched = scorer.score(PROMPTS, images)
    single = [scorer.score([p], [im])[0] for p, im in zip(PROMPTS, images, strict=True)]
    np.testing.assert_allclose(batched, single, rtol=0, atol=1e-6)
    assert len(set(np.round(batched, 6))) == 3  # different pairs, different rewards


def test_padding_tokens_are_masked_out(tokenizer: BertWordPieceTokenizer, images: list[Image.Image]) -> None:
    model = ImageRewardScorer.from_config(small_config(tokenizer), tokenizer).model
    pixels = imagereward_preprocess(images[0], 32)[None]
    ids, mask = tokenizer(["a cat"], 35)
    garbage = ids.clone()
    garbage[0, 4:] = 7  # rewrite the [PAD] positions; the mask still excludes them
    with torch.no_grad():
        assert torch.allclose(model(pixels, ids, mask), model(pixels, garbage, mask), rtol=0, atol=1e-6)
        assert not torch.allclose(
            model(pixels, ids, mask), model(pixels, garbage, torch.ones_like(mask)), atol=1e-4
        )


def test_reward_is_normalised_with_the_v1_constants(
    tokenizer: BertWordPieceTokenizer, images: list[Image.Image]
) -> None:
    assert (IMAGEREWARD_MEAN, IMAGEREWARD_STD) == (0.16717362830052426, 1.0333394966054072)
    scorer = ImageRewardScorer.from_config(small_config(tokenizer), tokenizer)
    raw = torch.tensor(scorer.raw_scores(PROMPTS, images), dtype=torch.float32)
    expected = (
        (raw - 0.16717362830052426) / 1.0333394966054072
    ).tolist()  # float32, as the reference computes it
    assert scorer.score(PROMPTS, images) == expected


def test_head_is_linear_without_activations(tokenizer: BertWordPieceTokenizer) -> None:
    head = ImageRewardModel(small_config(tokenizer)).mlp.layers.eval()
    assert [type(m).__name__ for m in head] == ["Linear", "Dropout"] * 3 + ["Linear", "Linear"]
    x, y = torch.randn(4, 24), torch.randn(4, 24)
    with torch.no_grad():  # affine map: f(x) + f(y) - f(0) = f(x + y)
        lhs = head(x) + head(y) - head(torch.zeros(1, 24))
        assert torch.allclose(lhs, head(x + y), atol=1e-5)


# ------------------------------------------------------------------------------------------------ official layout


def official_imagereward_layout(cfg: ImageRewardConfig) -> dict[str, tuple[int, ...]]:
    """ImageReward.pt's keys and shapes as the BLIP/timm ViT, BLIP's med.py BertModel (no pooler, no token types)
    and ImageReward's MLP name them, written out independently of our modules."""
    v, t, n = cfg.vision_width, cfg.text_width, (cfg.image_size // cfg.patch_size) ** 2
    hidden = int(v * cfg.vision_mlp_ratio)
    keys: dict[str, tuple[int, ...]] = {
        "blip.visual_encoder.cls_token": (1, 1, v),
        "blip.visual_encoder.pos_embed": (1, n + 1, v),
        "blip.visual_encoder.patch_embed.proj.weight": (v, 3, cfg.patch_size, cfg.patch_size),
        "blip.visual_encoder.patch_embed.proj.bias": (v,),
        "blip.visual_encoder.norm.weight": (v,),
        "blip.visual_encoder.norm.bias": (v,),
        "blip.text_encoder.embeddings.position_ids": (1, cfg.max_positions),
        "blip.text_encoder.embeddings.word_embeddings.weight": (cfg.vocab_size, t),
        "blip.text_encoder.embeddings.position_embeddings.weight": (cfg.max_positions, t),
        "blip.text_encoder.embeddings.LayerNorm.weight": (t,),
        "blip.text_encoder.embeddings.LayerNorm.bias": (t,),
        "blip.vision_proj.weight": (256, v),
        "blip.vision_proj.bias": (256,),
        "blip.text_proj.weight": (256, t),
        "blip.text_proj.bias": (256,),
    }
    for i in range(cfg.vision_depth):
        p = f"blip.visual_encoder.blocks.{i}."
        for name, shape in {
            "norm1.weight": (v,), "norm1.bias": (v,), "attn.qkv.weight": (3 * v, v), "attn.qkv.bias": (3 * v,),
            "attn.proj.weight": (v, v), "attn.proj.bias": (v,), "norm2.weight": (v,), "norm2.bias": (v,),
            "mlp.fc1.weight": (hidden, v), "mlp.fc1.bias": (hidden,), "mlp.fc2.weight": (v, hidden),
            "mlp.fc2.bias": (v,),
        }.items():  # fmt: skip
            keys[p + name] = shape
    for i in range(cfg.text_depth):
        p = f"blip.text_encoder.encoder.layer.{i}."
        for block, kv in (("attention", t), ("crossattention", v)):
            for name, shape in {
                "self.query.weight": (t, t), "self.query.bias": (t,), "self.key.weight": (t, kv),
                "self.key.bias": (t,), "self.value.weight": (t, kv), "self.value.bias": (t,),
                "output.dense.weight": (t, t), "output.dense.bias": (t,), "output.LayerNorm.weight": (t,),
                "output.LayerNorm.bias": (t,),
            }.items():  # fmt: skip
                keys[f"{p}{block}.{name}"] = shape
        keys[p + "intermediate.dense.weight"] = (cfg.text_intermediate, t)
        keys[p + "intermediate.dense.bias"] = (cfg.text_intermediate,)
        keys[p + "output.dense.weight"] = (t, cfg.text_intermediate)
        keys[p + "output.dense.bias"] = (t,)
        keys[p + "output.LayerNorm.weight"] = (t,)
        keys[p + "output.LayerNorm.bias"] = (t,)
    dims = (t, 1024, 128, 64, 16, 1)
    for index, (d_in, d_out) in zip((0, 2, 4, 6, 7), itertools.pairwise(dims), strict=True):
        keys[f"mlp.layers.{index}.weight"] = (d_out, d_in)
        keys[f"mlp.layers.{index}.bias"] = (d_out,)
    return keys


_UNUSED = {
    "blip.vision_proj.weight",
    "blip.vision_proj.bias",
    "blip.text_proj.weight",
    "blip.text_proj.bias",
    "blip.text_encoder.embeddings.position_ids",
}


def test_full_size_v1_state_dict_matches_the_official_layout() -> None:
    cfg = ImageRewardConfig.preset("v1.0")
    assert (cfg.vision_width, cfg.vision_depth, cfg.vision_heads, cfg.vision_eps) == (1024, 24, 16, 1e-6)
    assert (cfg.text_width, cfg.text_depth, cfg.text_heads, cfg.text_intermediate, cfg.text_eps) == (
        768,
        12,
        12,
        3072,
        1e-12,
    )
    assert (cfg.vocab_size, cfg.max_length, cfg.image_size, cfg.patch_size) == (30524, 35, 224, 16)
    with torch.device("meta"):
        model = ImageRewardModel(cfg)
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    official = official_imagereward_layout(cfg)
    assert ours == {k: s for k, s in official.items() if k not in _UNUSED}
    assert model.blip.visual_encoder.blocks[0].norm1.eps == 1e-6
    assert model.blip.text_encoder.encoder.layer[0].output.LayerNorm.eps == 1e-12


def _official_checkpoint(model: ImageRewardModel) -> dict[str, torch.Tensor]:
    """Our random weights re-packed exactly as ImageReward.pt stores them (with its unused extras)."""
    cfg = model.config
    state = {k: v.clone() for k, v in model.state_dict().items()}
    g = torch.Generator().manual_seed(3)
    state["blip.text_encoder.embeddings.position_ids"] = torch.arange(cfg.max_positions)[None]
    state["blip.vision_proj.weight"] = torch.randn(256, cfg.vision_width, generator=g)
    state["blip.vision_proj.bias"] = torch.zeros(256)
    state["blip.text_proj.weight"] = torch.randn(256, cfg.text_width, generator=g)
    state["blip.text_proj.bias"] = torch.zeros(256)
    assert {k: tuple(v.shape) for k, v in state.items()} == official_imagereward_layout(cfg)
    return state


def test_official_checkpoint_loads_strictly_and_scores_identically(
    tokenizer: BertWordPieceTokenizer, images: list[Image.Image], tmp_path: Path
) -> None:
    cfg = small_config(tokenizer)
    source = ImageRewardScorer.from_config(cfg, tokenizer, seed=5)
    torch.save(_official_checkpoint(source.model), tmp_path / "ImageReward.pt")
    (tmp_path / "vocab.txt").write_text("\n".join(VOCAB) + "\n", encoding="utf-8")
    loaded = ImageRewardScorer.from_pretrained(
        tmp_path / "ImageReward.pt", vocab=tmp_path / "vocab.txt", config=cfg
    )
    assert loaded.weights_file == tmp_path / "ImageReward.pt"
    assert loaded.options()["max_length"] == 35 and loaded.options()["reward_std"] == IMAGEREWARD_STD
    assert loaded.score(PROMPTS, images) == source.score(PROMPTS, images)


def test_altered_keys_fail_naming_them(tokenizer: BertWordPieceTokenizer) -> None:
    model = ImageRewardModel(small_config(tokenizer))
    state = _official_checkpoint(model)
    state["blip.visual_encoder.blocks.1.attn.qkv_renamed.weight"] = state.pop(
        "blip.visual_encoder.blocks.1.attn.qkv.weight"
    )
    with pytest.raises(KeyError) as err:
        load_official_imagereward_state_dict(ImageRewardModel(model.config), state)
    assert "blip.visual_encoder.blocks.1.attn.qkv.weight" in str(err.value)
    assert "blip.visual_encoder.blocks.1.attn.qkv_renamed.weight" in str(err.value)


def test_wrong_shapes_and_position_ids_fail_naming_them(tokenizer: BertWordPieceTokenizer) -> None:
    model = ImageRewardModel(small_config(tokenizer))
    state = _official_checkpoint(model)
    state["mlp.layers.7.weight"] = torch.zeros(1, 17)
    with pytest.raises(ValueError, match=r"mlp\.layers\.7\.weight"):
        load_official_imagereward_state_dict(ImageRewardModel(model.config), state)
    state = _official_checkpoint(model)
    state["blip.text_encoder.embeddings.position_ids"] = torch.arange(model.config.max_positions).flip(0)[
        None
    ]
    with pytest.raises(ValueError, match="position_ids"):
        load_official_imagereward_state_dict(ImageRewardModel(model.config), state)


def test_unused_official_keys_are_optional_and_reported(
    tokenizer: BertWordPieceTokenizer, caplog: pytest.LogCaptureFixture
) -> None:
    model = ImageRewardModel(small_config(tokenizer))
    assert load_official_imagereward_state_dict(ImageRewardModel(model.config), model.state_dict()) == []
    ignored = load_official_imagereward_state_dict(
        ImageRewardModel(model.config), _official_checkpoint(model)
    )
    assert set(ignored) == _UNUSED
    state = _official_checkpoint(model)
    state["blip.itm_head.weight"] = torch.zeros(
        2, 24
    )  # a module the scorer does not run: ignored, with a warning
    with caplog.at_level("WARNING", logger="infinity_eval.imagereward"):
        ignored = load_official_imagereward_state_dict(ImageRewardModel(model.config), state)
    assert "blip.itm_head.weight" in ignored and "blip.itm_head.weight" in caplog.text


def test_renamed_head_keys_fail_naming_both_names(tokenizer: BertWordPieceTokenizer) -> None:
    model = ImageRewardModel(small_config(tokenizer))
    state = _official_checkpoint(model)
    state["head.layers.0.weight"] = state.pop("mlp.layers.0.weight")
    with pytest.raises(KeyError) as err:
        load_official_imagereward_state_dict(ImageRewardModel(model.config), state)
    assert "'mlp.layers.0.weight'" in str(err.value) and "'head.layers.0.weight'" in str(err.value)


# ------------------------------------------------------------------------------------------------ weights policy


def test_missing_weights_error_names_the_file_and_its_source(tmp_path: Path) -> None:
    with pytest.raises(WeightsNotFoundError) as err:
        ImageRewardScorer.from_pretrained()
    assert "ImageReward.pt" in str(err.value) and "THUDM/ImageReward" in str(err.value)
    with pytest.raises(WeightsNotFoundError, match=r"ImageReward\.pt"):
        ImageRewardScorer.from_pretrained(tmp_path / "nowhere.pt")


def test_missing_vocab_error_names_bert_base_uncased(
    tokenizer: BertWordPieceTokenizer, tmp_path: Path
) -> None:
    torch.save(ImageRewardModel(small_config(tokenizer)).state_dict(), tmp_path / "ImageReward.pt")
    with pytest.raises(WeightsNotFoundError) as err:
        ImageRewardScorer.from_pretrained(tmp_path, config=small_config(tokenizer))
    assert "vocab.txt" in str(err.value) and "bert-base-uncased" in str(err.value)


def test_weights_found_in_env_folder_then_hf_cache(
    tokenizer: BertWordPieceTokenizer,
    images: list[Image.Image],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cfg = small_config(tokenizer)
    source = ImageRewardScorer.from_config(cfg, tokenizer, seed=9)
    # 1) $INFINITY_EVAL_WEIGHTS_DIR/ImageReward.pt + $INFINITY_EVAL_WEIGHTS_DIR/bert-base-uncased/vocab.txt
    env_dir = tmp_path / "weights"
    (env_dir / "bert-base-uncased").mkdir(parents=True)
    torch.save(_official_checkpoint(source.model), env_dir / "ImageReward.pt")
    (env_dir / "bert-base-uncased" / "vocab.txt").write_text("\n".join(VOCAB) + "\n", encoding="utf-8")
    monkeypatch.setenv("INFINITY_EVAL_WEIGHTS_DIR", str(env_dir))
    from_env = ImageRewardScorer.from_pretrained(config=cfg)
    assert from_env.weights_file == env_dir / "ImageReward.pt"
    assert from_env.score(PROMPTS, images) == source.score(PROMPTS, images)
    # 2) local Hugging Face cache layout: models--THUDM--ImageReward/snapshots/<rev>/ImageReward.pt
    monkeypatch.delenv("INFINITY_EVAL_WEIGHTS_DIR")
    hub = tmp_path / "hf_home" / "hub"
    for repo, name, src in (
        ("models--THUDM--ImageReward", "ImageReward.pt", env_dir / "ImageReward.pt"),
        ("models--google-bert--bert-base-uncased", "vocab.txt", env_dir / "bert-base-uncased" / "vocab.txt"),
    ):
        snap = hub / repo / "snapshots" / "0123abc"
        snap.mkdir(parents=True)
        (snap / name).write_bytes(src.read_bytes())
        (hub / repo / "refs").mkdir()
        (hub / repo / "refs" / "main").write_text("0123abc")
    from_cache = ImageRewardScorer.from_pretrained(config=cfg)
    assert (
        from_cache.weights_file
        == hub / "models--THUDM--ImageReward" / "snapshots" / "0123abc" / "ImageReward.pt"
    )
    assert from_cache.score(PROMPTS, images) == source.score(PROMPTS, images)


def test_tokenizer_size_must_match_the_model(tokenizer: BertWordPieceTokenizer) -> None:
    cfg = dataclasses.replace(small_config(tokenizer), vocab_size=tokenizer.size + 1)
    with pytest.raises(ValueError, match="vocab_size"):
        ImageRewardScorer.from_config(cfg, tokenizer)


def test_mismatched_prompt_and_image_counts_fail(
    tokenizer: BertWordPieceTokenizer, images: list[Image.Image]
) -> None:
    scorer = ImageRewardScorer.from_config(small_config(tokenizer), tokenizer)
    with pytest.raises(ValueError, match="2 prompts but 3 images"):
        scorer.score(PROMPTS[:2], images)


# ------------------------------------------------------------------------------------------------ aggregation


def test_benchmark_score_is_the_mean_of_prompt_means() -> None:
    summary = imagereward_benchmark_summary({"p1": [1.0, 2.0, 3.0], "p2": [0.0], "p3": []})
    assert summary["imagereward"] == pytest.approx((2.0 + 0.0) / 2)
    assert summary["imagereward_image_mean"] == pytest.approx(6.0 / 4)
    assert (summary["prompts"], summary["images"], summary["empty_prompts"]) == (2, 4, 1)
    equal = imagereward_benchmark_summary({"a": [1.0, 3.0], "b": [0.5, 0.5]})
    assert math.isclose(equal["imagereward"], equal["imagereward_image_mean"])


# ------------------------------------------------------------------------------------------------ independent implementation


def test_blip_towers_equal_transformers_blip_implementation(tokenizer: BertWordPieceTokenizer) -> None:
    """transformers' BLIP (vision model + MED text model) is an independent implementation of the same network."""
    pytest.importorskip("transformers")
    from transformers.models.blip.configuration_blip import BlipTextConfig, BlipVisionConfig
    from transformers.models.blip.modeling_blip import BlipVisionModel
    from transformers.models.blip.modeling_blip_text import BlipTextModel

    cfg = small_config(tokenizer)
    ours = ImageRewardModel(cfg).init_random_(torch.Generator().manual_seed(0)).eval()
    text_cfg = BlipTextConfig(
        vocab_size=cfg.vocab_size, hidden_size=cfg.text_width, encoder_hidden_size=cfg.vision_width,
        intermediate_size=cfg.text_intermediate, num_hidden_layers=cfg.text_depth, num_attention_heads=cfg.text_heads,
        max_position_embeddings=cfg.max_positions, layer_norm_eps=cfg.text_eps, hidden_act="gelu",
        bos_token_id=None, sep_token_id=None, pad_token_id=0,
    )  # fmt: skip
    vision_cfg = BlipVisionConfig(
        hidden_size=cfg.vision_width, intermediate_size=int(cfg.vision_width * cfg.vision_mlp_ratio),
        num_hidden_layers=cfg.vision_depth, num_attention_heads=cfg.vision_heads, image_size=cfg.image_size,
        patch_size=cfg.patch_size, layer_norm_eps=cfg.vision_eps, hidden_act="gelu",
    )  # fmt: skip
    hf_text = BlipTextModel(text_cfg, add_pooling_layer=False).eval()
    hf_vision = BlipVisionModel(vision_cfg).eval()
    state = ours.state_dict()
    hf_text.load_state_dict(
        {
            k.removeprefix("blip.text_encoder."): v
            for k, v in state.items()
            if k.startswith("blip.text_encoder.")
        },
        strict=True,
    )
    renames = {
        "cls_token": "embeddings.class_embedding",
        "pos_embed": "embeddings.position_embedding",
        "patch_embed.proj.weight": "embeddings.patch_embedding.weight",
        "patch_embed.proj.bias": "embeddings.patch_embedding.bias",
        "norm.weight": "post_layernorm.weight",
        "norm.bias": "post_layernorm.bias",
    }
    vision_state = {}
    for key, value in state.items():
        if key.startswith("blip.visual_encoder."):
            key = key.removeprefix("blip.visual_encoder.")
            for a, b in (("blocks.", "encoder.layers."), ("attn.qkv", "self_attn.qkv"), ("attn.proj", "self_attn.projection"),
                         ("norm1", "layer_norm1"), ("norm2", "layer_norm2")):  # fmt: skip
                key = key.replace(a, b)
            vision_state[renames.get(key, key)] = value
    hf_vision.load_state_dict(vision_state, strict=True)

    pixels = torch.randn(3, 3, cfg.image_size, cfg.image_size, generator=torch.Generator().manual_seed(1))
    ids, mask = tokenizer(PROMPTS, 35)
    with torch.no_grad():
        image = ours.blip.visual_encoder(pixels)
        torch.testing.assert_close(image, hf_vision(pixel_values=pixels).last_hidden_state, rtol=0, atol=1e-5)
        expected = hf_text(
            input_ids=ids,
            attention_mask=mask,
            encoder_hidden_states=image,
            encoder_attention_mask=torch.ones(image.shape[:2], dtype=torch.long),
        ).last_hidden_state
        torch.testing.assert_close(ours.blip.text_encoder(ids, mask, image), expected, rtol=0, atol=1e-5)


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
    assert scorer.tokenizer.size == 30524 and scorer.tokenizer.vocab["[ENC]"] == 30523
    ids, mask = scorer.tokenizer(["a photo of a cat"], 35)
    assert ids[0, :7].tolist() == [101, 1037, 6302, 1997, 1037, 4937, 102] and mask.sum() == 7
    gray = Image.new("RGB", (512, 512), (128, 128, 128))
    rewards = scorer.score(["a photo of a cat", "a gray square"], [gray, gray])
    assert all(math.isfinite(r) for r in rewards) and rewards[0] != rewards[1]


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
