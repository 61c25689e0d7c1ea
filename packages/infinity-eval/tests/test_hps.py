"""HPSv2.1: BPE tokenizer, long-side resize + pad preprocessing, open_clip ViT-H-14 layout, weights policy, aggregation."""

from __future__ import annotations

import dataclasses
import gzip
import itertools
import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from infinity_eval.hps import (
    CLIPBPETokenizer,
    HPSv21Scorer,
    OpenCLIP,
    OpenCLIPConfig,
    hps_benchmark_summary,
    hps_preprocess,
    load_official_hps_state_dict,
)
from infinity_eval.weights import WeightsNotFoundError
from PIL import Image

# Real-weight tests use the user's weights folder, read before the autouse fixture isolates each test from it.
USER_WEIGHTS_DIR = os.environ.get("INFINITY_EVAL_WEIGHTS_DIR")

pytest.importorskip("regex", reason="the HPS tokenizer needs the 'hps' extra (regex)")

# A tiny merge list in the format of bpe_simple_vocab_16e6.txt.gz: header line, then "left right" merges.
MERGES = [
    ("c", "a"),
    ("ca", "t</w>"),
    ("d", "o"),
    ("do", "g</w>"),
    ("r", "e"),
    ("re", "d</w>"),
    ("o", "n</w>"),
]
PROMPTS = ["a red cat", "Dogs on   the mat &amp; a cat!", "red " * 100]
CLIP_MEAN = torch.tensor([0.48145466, 0.4578275, 0.40821073]).view(3, 1, 1)
CLIP_STD = torch.tensor([0.26862954, 0.26130258, 0.27577711]).view(3, 1, 1)


def write_bpe(path: Path) -> Path:
    text = "bpe_simple_vocab_16e6.txt header\n" + "\n".join(f"{a} {b}" for a, b in MERGES) + "\n"
    path.write_bytes(gzip.compress(text.encode("utf-8")))
    return path


@pytest.fixture
def tokenizer() -> CLIPBPETokenizer:
    return CLIPBPETokenizer(MERGES, fix_text=False)


def small_config(tokenizer: CLIPBPETokenizer) -> OpenCLIPConfig:
    """Same architecture and code path as ViT-H-14, tiny widths: 28x28 images, 2 + 2 layers."""
    return OpenCLIPConfig(
        embed_dim=16,
        image_size=28,
        patch_size=14,
        vision_width=32,
        vision_layers=2,
        vision_head_width=16,
        vocab_size=tokenizer.vocab_size,
        text_width=24,
        text_heads=2,
        text_layers=2,
    )


@pytest.fixture
def images() -> list[Image.Image]:
    rng = np.random.default_rng(0)
    return [
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
        for w, h in [(40, 30), (20, 50), (28, 28)]
    ]


@pytest.fixture(autouse=True)
def _no_weights_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("INFINITY_EVAL_WEIGHTS_DIR", raising=False)
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))


# ------------------------------------------------------------------------------------------------ tokenizer


def test_bpe_vocabulary_layout_is_bytes_then_word_ends_then_merges_then_markers(
    tokenizer: CLIPBPETokenizer,
) -> None:
    assert tokenizer.vocab_size == 256 + 256 + len(MERGES) + 2
    assert tokenizer.encoder["!"] == 0 and tokenizer.encoder["!</w>"] == 256
    assert tokenizer.encoder["ca"] == 512 and tokenizer.encoder["cat</w>"] == 513
    assert (tokenizer.start_id, tokenizer.end_id) == (512 + len(MERGES), 513 + len(MERGES))


def test_bpe_encodes_with_merges_lowercase_html_unescape_and_whitespace_cleanup(
    tokenizer: CLIPBPETokenizer,
) -> None:
    enc = tokenizer.encoder
    assert tokenizer.encode("a red cat") == [enc["a</w>"], enc["red</w>"], enc["cat</w>"]]
    assert tokenizer.encode("  A   RED\tCat ") == tokenizer.encode("a red cat")
    assert tokenizer.encode("dogs") == [enc["do"], enc["g"], enc["s</w>"]]  # 'dog</w>' needs the word end
    assert tokenizer.encode("&amp;amp;!") == [
        enc["&"],
        enc["!</w>"],
    ]  # unescaped twice; punctuation run kept whole
    # contractions and single digits are their own pieces
    assert tokenizer.encode("cat's 42") == [
        enc["cat</w>"],
        enc["'"],
        enc["s</w>"],
        enc["4</w>"],
        enc["2</w>"],
    ]
    assert tokenizer.encode("é") == [enc["Ã"], enc["©</w>"]]  # UTF-8 bytes through the byte -> unicode table


def test_bpe_call_wraps_truncates_and_pads(tokenizer: CLIPBPETokenizer) -> None:
    tokens = tokenizer(PROMPTS)
    assert tokens.shape == (3, 77) and tokens.dtype == torch.long
    first = [tokenizer.start_id, *tokenizer.encode(PROMPTS[0]), tokenizer.end_id]
    assert tokens[0, : len(first)].tolist() == first and tokens[0, len(first) :].eq(0).all()
    assert tokens[2, 0] == tokenizer.start_id and tokens[2, -1] == tokenizer.end_id
    assert tokens[2, 1:-1].eq(tokenizer.encoder["red</w>"]).all()


def test_bpe_reads_the_gzip_vocab_file(tmp_path: Path, tokenizer: CLIPBPETokenizer) -> None:
    loaded = CLIPBPETokenizer.from_file(write_bpe(tmp_path / "bpe_simple_vocab_16e6.txt.gz"), fix_text=False)
    assert loaded.encoder == tokenizer.encoder and loaded(PROMPTS).equal(tokenizer(PROMPTS))


def test_bpe_applies_ftfy_by_default() -> None:
    pytest.importorskip("ftfy")
    fixed = CLIPBPETokenizer(MERGES)
    assert fixed.encode("cafÃ©") == fixed.encode("café")  # mojibake repaired as open_clip does


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


# ------------------------------------------------------------------------------------------------ architecture


def test_small_clip_gives_unit_features_and_cosines(
    tokenizer: CLIPBPETokenizer, images: list[Image.Image]
) -> None:
    scorer = HPSv21Scorer.from_config(small_config(tokenizer), tokenizer)
    pixels = torch.stack([hps_preprocess(im, 28) for im in images])
    tokens = tokenizer(PROMPTS)
    with torch.no_grad():
        img, txt = scorer.model.encode_image(pixels), scorer.model.encode_text(tokens)
    assert img.shape == txt.shape == (3, 16)
    assert torch.allclose(img.norm(dim=-1), torch.ones(3)) and torch.allclose(txt.norm(dim=-1), torch.ones(3))
    scores = scorer.score(PROMPTS, images)
    assert np.allclose(scores, (img * txt).sum(-1).numpy(), atol=1e-6)
    assert all(-1 <= s <= 1 for s in scores)


def test_batched_scores_equal_unbatched(tokenizer: CLIPBPETokenizer, images: list[Image.Image]) -> None:
    scorer = HPSv21Scorer.from_config(small_config(tokenizer), tokenizer, batch_size=3)
    batched = scorer.score(PROMPTS, images)
    single = [scorer.score([p], [im])[0] for p, im in zip(PROMPTS, images, strict=True)]
    np.testing.assert_allclose(batched, single, rtol=0, atol=1e-6)


def test_text_feature_is_causal_and_pooled_at_end_of_text(tokenizer: CLIPBPETokenizer) -> None:
    model = HPSv21Scorer.from_config(small_config(tokenizer), tokenizer).model
    tokens = tokenizer(["a red cat"])
    after_end = tokens.clone()
    after_end[0, 6:] = tokenizer.encoder["dog</w>"]  # positions after <end_of_text> (index 4) cannot be seen
    before_end = tokens.clone()
    before_end[0, 2] = tokenizer.encoder["dog</w>"]
    with torch.no_grad():
        ref = model.encode_text(tokens)
        assert torch.allclose(ref, model.encode_text(after_end), atol=1e-6)
        assert not torch.allclose(ref, model.encode_text(before_end), atol=1e-4)


# ------------------------------------------------------------------------------------------------ official layout


def official_open_clip_layout(cfg: OpenCLIPConfig) -> dict[str, tuple[int, ...]]:
    """The `state_dict` keys/shapes of open_clip's `CLIP` for a ViT + text transformer (no layer scale, no attention
    pooling, `attn_mask` non-persistent), written out independently of our modules."""
    keys: dict[str, tuple[int, ...]] = {}

    def blocks(prefix: str, width: int, layers: int, mlp: int) -> None:
        for i in range(layers):
            p = f"{prefix}transformer.resblocks.{i}."
            keys.update({
                p + "ln_1.weight": (width,), p + "ln_1.bias": (width,),
                p + "attn.in_proj_weight": (3 * width, width), p + "attn.in_proj_bias": (3 * width,),
                p + "attn.out_proj.weight": (width, width), p + "attn.out_proj.bias": (width,),
                p + "ln_2.weight": (width,), p + "ln_2.bias": (width,),
                p + "mlp.c_fc.weight": (mlp, width), p + "mlp.c_fc.bias": (mlp,),
                p + "mlp.c_proj.weight": (width, mlp), p + "mlp.c_proj.bias": (width,),
            })  # fmt: skip

    v, t, grid = cfg.vision_width, cfg.text_width, cfg.image_size // cfg.patch_size
    keys.update({
        "visual.class_embedding": (v,), "visual.positional_embedding": (grid * grid + 1, v),
        "visual.proj": (v, cfg.embed_dim), "visual.conv1.weight": (v, 3, cfg.patch_size, cfg.patch_size),
        "visual.ln_pre.weight": (v,), "visual.ln_pre.bias": (v,),
        "visual.ln_post.weight": (v,), "visual.ln_post.bias": (v,),
        "positional_embedding": (cfg.context_length, t), "text_projection": (t, cfg.embed_dim), "logit_scale": (),
        "token_embedding.weight": (cfg.vocab_size, t), "ln_final.weight": (t,), "ln_final.bias": (t,),
    })  # fmt: skip
    blocks("visual.", v, cfg.vision_layers, int(v * cfg.vision_mlp_ratio))
    blocks("", t, cfg.text_layers, int(t * cfg.text_mlp_ratio))
    return keys


def test_full_size_vit_h_14_matches_open_clip_layout_and_parameter_count() -> None:
    cfg = OpenCLIPConfig.preset("ViT-H-14")
    assert (cfg.vision_layers, cfg.vision_width, cfg.vision_heads, cfg.patch_size) == (32, 1280, 16, 14)
    assert (cfg.text_layers, cfg.text_width, cfg.text_heads, cfg.context_length, cfg.vocab_size) == (
        24,
        1024,
        16,
        77,
        49408,
    )
    with torch.device("meta"):
        model = OpenCLIP(cfg)
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == official_open_clip_layout(cfg)
    # open_clip's model profile: ViT-H-14 986.11M parameters, 632.08M of them in the image tower
    assert sum(p.numel() for p in model.parameters()) == 986_109_441
    assert sum(p.numel() for p in model.visual.parameters()) == 632_076_800
    assert model.visual.ln_pre.eps == 1e-5


def test_openai_vit_l_14_preset_matches_open_clip_parameter_count() -> None:
    cfg = OpenCLIPConfig.preset("ViT-L-14-quickgelu")
    assert cfg.quick_gelu and (cfg.embed_dim, cfg.vision_width, cfg.vision_layers, cfg.vision_heads) == (
        768,
        1024,
        24,
        16,
    )
    with torch.device("meta"):
        model = OpenCLIP(cfg)
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == official_open_clip_layout(cfg)
    # open_clip's model profile: ViT-L-14 427.62M parameters, 303.97M of them in the image tower
    assert sum(p.numel() for p in model.parameters()) == 427_616_513
    assert sum(p.numel() for p in model.visual.parameters()) == 303_966_208


def test_official_checkpoint_loads_strictly_and_scores_identically(
    tokenizer: CLIPBPETokenizer, images: list[Image.Image], tmp_path: Path
) -> None:
    cfg = small_config(tokenizer)
    source = HPSv21Scorer.from_config(cfg, tokenizer, seed=7)
    state = {k: v.clone() for k, v in source.model.state_dict().items()}
    assert {k: tuple(v.shape) for k, v in state.items()} == official_open_clip_layout(cfg)
    torch.save({"state_dict": state}, tmp_path / "HPS_v2.1_compressed.pt")
    vocab = write_bpe(tmp_path / "bpe_simple_vocab_16e6.txt.gz")
    loaded = HPSv21Scorer.from_pretrained(tmp_path, vocab=vocab, config=cfg, fix_text=False)
    assert loaded.weights_file == tmp_path / "HPS_v2.1_compressed.pt"
    assert loaded.score(PROMPTS, images) == source.score(PROMPTS, images)
    assert loaded.options()["hps_version"] == "v2.1" and loaded.options()["hps_antialias"] is True


def test_fp16_checkpoint_is_loaded_into_fp32(tokenizer: CLIPBPETokenizer, tmp_path: Path) -> None:
    cfg = small_config(tokenizer)
    source = HPSv21Scorer.from_config(cfg, tokenizer, seed=7)
    half = {
        k: v.half() for k, v in source.model.state_dict().items()
    }  # the "compressed" files are half precision
    torch.save({"state_dict": half}, tmp_path / "HPS_v2_compressed.pt")
    loaded = HPSv21Scorer.from_pretrained(
        tmp_path, vocab=write_bpe(tmp_path / "v.gz"), version="v2.0", config=cfg, fix_text=False
    )
    assert loaded.model.visual.proj.dtype == torch.float32
    assert torch.equal(loaded.model.visual.proj, half["visual.proj"].float())


def test_altered_keys_fail_naming_them(tokenizer: CLIPBPETokenizer) -> None:
    cfg = small_config(tokenizer)
    state = HPSv21Scorer.from_config(cfg, tokenizer).model.state_dict()
    state["module.logit_scale"] = state.pop("logit_scale")
    with pytest.raises(KeyError) as err:
        load_official_hps_state_dict(OpenCLIP(cfg), state)
    assert "'logit_scale'" in str(err.value) and "'module.logit_scale'" in str(err.value)
    state = HPSv21Scorer.from_config(cfg, tokenizer).model.state_dict()
    state["visual.proj"] = torch.zeros(32, 8)
    with pytest.raises(ValueError, match=r"visual\.proj"):
        load_official_hps_state_dict(OpenCLIP(cfg), state)


def test_missing_weights_error_names_the_file_and_its_source(tmp_path: Path) -> None:
    with pytest.raises(WeightsNotFoundError) as err:
        HPSv21Scorer.from_pretrained()
    assert "HPS_v2.1_compressed.pt" in str(err.value) and "xswu/HPSv2" in str(err.value)
    with pytest.raises(WeightsNotFoundError, match=r"HPS_v2_compressed\.pt"):
        HPSv21Scorer.from_pretrained(version="v2.0")


def test_weights_and_vocab_found_in_env_folder(
    tokenizer: CLIPBPETokenizer, images: list[Image.Image], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = small_config(tokenizer)
    source = HPSv21Scorer.from_config(cfg, tokenizer, seed=1)
    (tmp_path / "w" / "open_clip").mkdir(parents=True)
    torch.save({"state_dict": source.model.state_dict()}, tmp_path / "w" / "HPS_v2.1_compressed.pt")
    write_bpe(tmp_path / "w" / "open_clip" / "bpe_simple_vocab_16e6.txt.gz")
    monkeypatch.setenv("INFINITY_EVAL_WEIGHTS_DIR", str(tmp_path / "w"))
    loaded = HPSv21Scorer.from_pretrained(config=cfg, fix_text=False)
    assert loaded.vocab_file == tmp_path / "w" / "open_clip" / "bpe_simple_vocab_16e6.txt.gz"
    assert loaded.score(PROMPTS, images) == source.score(PROMPTS, images)


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


# ------------------------------------------------------------------------------------------------ independent implementation


def _to_transformers_clip(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """open_clip names -> transformers CLIPModel names (fused in_proj split into q/k/v, projections transposed)."""
    fixed = {
        "visual.class_embedding": "vision_model.embeddings.class_embedding",
        "visual.conv1.weight": "vision_model.embeddings.patch_embedding.weight",
        "visual.positional_embedding": "vision_model.embeddings.position_embedding.weight",
        "visual.ln_pre.weight": "vision_model.pre_layrnorm.weight",
        "visual.ln_pre.bias": "vision_model.pre_layrnorm.bias",
        "visual.ln_post.weight": "vision_model.post_layernorm.weight",
        "visual.ln_post.bias": "vision_model.post_layernorm.bias",
        "token_embedding.weight": "text_model.embeddings.token_embedding.weight",
        "positional_embedding": "text_model.embeddings.position_embedding.weight",
        "ln_final.weight": "text_model.final_layer_norm.weight",
        "ln_final.bias": "text_model.final_layer_norm.bias",
        "logit_scale": "logit_scale",
    }
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key == "visual.proj":
            out["visual_projection.weight"] = value.T
        elif key == "text_projection":
            out["text_projection.weight"] = value.T
        elif key in fixed:
            out[fixed[key]] = value
        else:
            tower = "vision_model." if key.startswith("visual.") else "text_model."
            index, name = key.removeprefix("visual.").removeprefix("transformer.resblocks.").split(".", 1)
            prefix = f"{tower}encoder.layers.{index}."
            if name.startswith("attn.in_proj_"):
                kind = name.removeprefix("attn.in_proj_")
                for letter, chunk in zip("qkv", value.chunk(3), strict=True):
                    out[f"{prefix}self_attn.{letter}_proj.{kind}"] = chunk
            else:
                for a, b in (("attn.out_proj", "self_attn.out_proj"), ("ln_1", "layer_norm1"), ("ln_2", "layer_norm2"),
                             ("mlp.c_fc", "mlp.fc1"), ("mlp.c_proj", "mlp.fc2")):  # fmt: skip
                    name = name.replace(a, b)
                out[prefix + name] = value
    return out


@pytest.mark.parametrize("quick_gelu", [False, True])
def test_open_clip_towers_equal_transformers_clip_implementation(
    tokenizer: CLIPBPETokenizer, quick_gelu: bool
) -> None:
    """transformers' CLIPModel (pre-LN ViT, causal text, EOS pooling) is an independent implementation."""
    pytest.importorskip("transformers")
    from transformers.models.clip.configuration_clip import CLIPConfig
    from transformers.models.clip.modeling_clip import CLIPModel

    cfg = dataclasses.replace(small_config(tokenizer), quick_gelu=quick_gelu)
    act = "quick_gelu" if quick_gelu else "gelu"
    ours = OpenCLIP(cfg).init_random_(torch.Generator().manual_seed(0)).eval()
    hf_cfg = CLIPConfig(
        text_config={
            "vocab_size": cfg.vocab_size, "hidden_size": cfg.text_width, "num_hidden_layers": cfg.text_layers,
            "intermediate_size": int(cfg.text_width * cfg.text_mlp_ratio), "num_attention_heads": cfg.text_heads,
            "max_position_embeddings": cfg.context_length, "hidden_act": act, "layer_norm_eps": cfg.eps,
            "bos_token_id": tokenizer.start_id, "eos_token_id": tokenizer.end_id, "pad_token_id": 0,
        },
        vision_config={
            "hidden_size": cfg.vision_width, "intermediate_size": int(cfg.vision_width * cfg.vision_mlp_ratio),
            "num_hidden_layers": cfg.vision_layers, "num_attention_heads": cfg.vision_heads,
            "image_size": cfg.image_size, "patch_size": cfg.patch_size, "hidden_act": act, "layer_norm_eps": cfg.eps,
        },
        projection_dim=cfg.embed_dim,
    )  # fmt: skip
    hf = CLIPModel(hf_cfg).eval()
    hf.load_state_dict(_to_transformers_clip(ours.state_dict()), strict=True)
    pixels = torch.randn(3, 3, cfg.image_size, cfg.image_size, generator=torch.Generator().manual_seed(1))
    tokens = tokenizer(PROMPTS)
    with torch.no_grad():
        image, text = hf.get_image_features(pixel_values=pixels), hf.get_text_features(input_ids=tokens)
        image = image if torch.is_tensor(image) else image.pooler_output
        text = text if torch.is_tensor(text) else text.pooler_output
        torch.testing.assert_close(ours.encode_image(pixels, normalize=False), image, rtol=0, atol=1e-5)
        torch.testing.assert_close(ours.encode_text(tokens, normalize=False), text, rtol=0, atol=1e-5)


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


def test_tokenizer_must_match_the_model_vocabulary_and_context(tokenizer: CLIPBPETokenizer) -> None:
    cfg = small_config(tokenizer)
    with pytest.raises(ValueError, match="vocab"):
        HPSv21Scorer(OpenCLIP(dataclasses.replace(cfg, vocab_size=49408)), tokenizer)
    with pytest.raises(ValueError, match="context"):
        HPSv21Scorer(OpenCLIP(dataclasses.replace(cfg, context_length=64)), tokenizer)


def _train_merges(corpus: str, count: int) -> list[tuple[str, str]]:
    """A small byte-level BPE merge list learnt from `corpus` (most frequent pair first, ties by sort order)."""
    from infinity_eval._clip_tokenizer import _byte_to_unicode

    table = _byte_to_unicode()
    frequency: dict[str, int] = {}
    for word in corpus.split():
        frequency[word] = frequency.get(word, 0) + 1
    words = {w: (*(table[b] for b in w.encode()[:-1]), table[w.encode()[-1]] + "</w>") for w in frequency}
    merges: list[tuple[str, str]] = []
    for _ in range(count):
        pairs: dict[tuple[str, str], int] = {}
        for w, seq in words.items():
            for pair in itertools.pairwise(seq):
                pairs[pair] = pairs.get(pair, 0) + frequency[w]
        if not pairs:
            break
        best = max(sorted(pairs), key=lambda p: pairs[p])
        merges.append(best)
        for w, seq in words.items():
            merged: list[str] = []
            i = 0
            while i < len(seq):
                if i < len(seq) - 1 and (seq[i], seq[i + 1]) == best:
                    merged.append(seq[i] + seq[i + 1])
                    i += 2
                else:
                    merged.append(seq[i])
                    i += 1
            words[w] = tuple(merged)
    return merges


def test_bpe_matches_transformers_clip_tokenizer_on_a_learnt_merge_list() -> None:
    """transformers' CLIP tokenizer (Rust BPE, same split pattern) is an independent implementation of the merges."""
    pytest.importorskip("transformers")
    from transformers.models.clip.tokenization_clip import CLIPTokenizer

    corpus = (
        "a photo of a cat sitting on the mat . a painting of an ocean with clouds and birds , day time , low "
        "contrast . the dog's toy is red ; 42 cats and 7 dogs ! photography of a red car at night"
    )
    merges = _train_merges(corpus, 120)
    ours = CLIPBPETokenizer(merges, fix_text=False)
    names = {"<start_of_text>": "<|startoftext|>", "<end_of_text>": "<|endoftext|>"}
    reference = CLIPTokenizer(vocab={names.get(t, t): i for t, i in ours.encoder.items()}, merges=merges)
    texts = [
        "A photo of a cat",
        "the catty dogs' paintings, at night!!",
        "photographs of 1234 red oceans",
        "contrast   clouds\tbirds",
        "Ünïcödé words — dash",
        "a cat's toy; it's 3:45",
    ]
    for text in texts:
        expected = reference(text)["input_ids"]
        row = ours([text])[0]
        assert row[: len(expected)].tolist() == expected, text
        assert row[len(expected) :].eq(0).all()
