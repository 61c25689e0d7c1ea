"""The official checkpoints' key maps onto transformers' CLIP and BLIP, and the contract every scorer keeps.

Reference numbers (`fixtures/hand_port_reference.json`) were computed by the hand-written ports these models
replace, for the same seeded random weights (by `tests/fixtures/make_hand_port_reference.py`, removed with the ports; see git history):
the transformers models must reproduce them.
"""

from __future__ import annotations

import importlib.util
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest
import torch

pytest.importorskip("transformers", reason="the scorers need the 'hps' / 'imagereward' extras (transformers)")

from infinity_eval._checkpoints import load_state_dict_into_meta_model
from infinity_eval._clip import OpenCLIPConfig, OpenCLIPTokenizer, build_clip_model, open_clip_to_transformers
from infinity_eval.geneval import COLORS, clip_color_classifier, load_openai_clip_state_dict
from infinity_eval.hps import HPSv21Scorer
from infinity_eval.imagereward import (
    ImageRewardConfig,
    ImageRewardModel,
    ImageRewardScorer,
    imagereward_to_transformers,
    imagereward_tokenizer,
)
from infinity_eval.weights import WeightsNotFoundError

FIXTURES = Path(__file__).parent / "fixtures"
REFERENCE = json.loads((FIXTURES / "hand_port_reference.json").read_text(encoding="utf-8"))


def _load_layouts() -> ModuleType:
    spec = importlib.util.spec_from_file_location("official_layouts", FIXTURES / "official_layouts.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


L = _load_layouts()


@pytest.fixture(autouse=True)
def _offline_and_isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No user weights folder, an empty Hugging Face cache."""
    monkeypatch.delenv("INFINITY_EVAL_WEIGHTS_DIR", raising=False)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "hf-cache"))


def write_bpe(path: Path) -> Path:
    import gzip

    text = "bpe_simple_vocab_16e6.txt header\n" + "".join(f"{a} {b}\n" for a, b in L.CLIP_MERGES)
    path.write_bytes(gzip.compress(text.encode("utf-8")))
    return path


def write_bert_vocab(path: Path) -> Path:
    path.write_text("\n".join(L.BERT_VOCAB) + "\n", encoding="utf-8")
    return path


@dataclass(frozen=True)
class ScorerCase:
    """One scorer's official layout, tiny configuration, files and reference numbers."""

    name: str
    layout: dict[str, Any]
    seed: int
    weights_name: str
    vocab_name: str
    prompts: list[str]
    image_sizes: list[tuple[int, int]]
    image_seed: int
    reference: str
    renamed_key: str
    dropped_key: str  # an official key, and its transformers name that the error must give
    dropped_as: str
    write_vocab: Callable[[Path], Path]
    from_state_dict: Callable[[dict[str, torch.Tensor], Path], Any]
    from_pretrained: Callable[[Path, Path], Any]

    def state(self) -> dict[str, torch.Tensor]:
        layout = (
            L.open_clip_layout(**self.layout) if self.name == "hps" else L.imagereward_layout(**self.layout)
        )
        return L.random_state_dict(layout, self.seed)

    def images(self) -> list[Any]:
        return L.random_images(self.image_sizes, self.image_seed)


CASES = [
    ScorerCase(
        name="hps",
        layout=L.HPS_TINY,
        seed=7,
        weights_name="HPS_v2.1_compressed.pt",
        vocab_name="bpe_simple_vocab_16e6.txt.gz",
        prompts=L.CLIP_PROMPTS,
        image_sizes=[(40, 30), (20, 50), (28, 28)],
        image_seed=0,
        reference="hps_scores",
        renamed_key="visual.transformer.resblocks.1.attn.in_proj_weight",
        dropped_key="ln_final.bias",
        dropped_as="text_model.final_layer_norm.bias",
        write_vocab=write_bpe,
        from_state_dict=lambda state, vocab: HPSv21Scorer.from_state_dict(
            state,
            OpenCLIPTokenizer.from_file(vocab, fix_text=False),
            OpenCLIPConfig(**L.HPS_TINY),
            batch_size=2,
        ),
        from_pretrained=lambda weights, vocab: HPSv21Scorer.from_pretrained(
            weights, vocab=vocab, config=OpenCLIPConfig(**L.HPS_TINY), fix_text=False, batch_size=2
        ),
    ),
    ScorerCase(
        name="imagereward",
        layout=L.IMAGEREWARD_TINY,
        seed=5,
        weights_name="ImageReward.pt",
        vocab_name="vocab.txt",
        prompts=L.BERT_PROMPTS,
        image_sizes=[(48, 40), (40, 64), (32, 32)],
        image_seed=1,
        reference="imagereward_scores",
        renamed_key="blip.visual_encoder.blocks.1.attn.qkv.weight",
        dropped_key="blip.visual_encoder.norm.bias",
        dropped_as="vision.post_layernorm.bias",
        write_vocab=write_bert_vocab,
        from_state_dict=lambda state, vocab: ImageRewardScorer.from_state_dict(
            state, imagereward_tokenizer(vocab), ImageRewardConfig(**L.IMAGEREWARD_TINY), batch_size=2
        ),
        from_pretrained=lambda weights, vocab: ImageRewardScorer.from_pretrained(
            weights, vocab=vocab, config=ImageRewardConfig(**L.IMAGEREWARD_TINY), batch_size=2
        ),
    ),
]


@pytest.fixture(params=CASES, ids=lambda case: case.name)
def case(request: pytest.FixtureRequest) -> ScorerCase:
    return request.param


# ------------------------------------------------------------------------------------------------ shared contract


def test_scores_equal_the_hand_port_for_the_same_weights(case: ScorerCase, tmp_path: Path) -> None:
    scorer = case.from_state_dict(case.state(), case.write_vocab(tmp_path / case.vocab_name))
    np.testing.assert_allclose(
        scorer.score(case.prompts, case.images()), REFERENCE[case.reference], rtol=0, atol=2e-6
    )


def test_official_file_loads_strictly_and_scores_like_the_state_dict(
    case: ScorerCase, tmp_path: Path
) -> None:
    vocab = case.write_vocab(tmp_path / case.vocab_name)
    state = case.state()
    torch.save(
        {"state_dict": state}, tmp_path / case.weights_name
    )  # both files wrap the state dict like this
    loaded = case.from_pretrained(tmp_path, vocab)
    assert loaded.weights_file == tmp_path / case.weights_name and loaded.vocab_file == vocab
    assert loaded.score(case.prompts, case.images()) == case.from_state_dict(state, vocab).score(
        case.prompts, case.images()
    )


def test_half_precision_file_is_loaded_in_float32(case: ScorerCase, tmp_path: Path) -> None:
    vocab = case.write_vocab(tmp_path / case.vocab_name)
    half = {k: v.half() if v.is_floating_point() else v for k, v in case.state().items()}
    torch.save(half, tmp_path / case.weights_name)  # HPS "compressed" files are fp16
    loaded = case.from_pretrained(tmp_path / case.weights_name, vocab)
    assert {p.dtype for p in loaded.model.parameters()} == {torch.float32}
    expected = case.from_state_dict(
        {k: v.float() if v.is_floating_point() else v for k, v in half.items()}, vocab
    )
    assert loaded.score(case.prompts, case.images()) == expected.score(case.prompts, case.images())


def test_batched_scores_equal_unbatched(case: ScorerCase, tmp_path: Path) -> None:
    scorer = case.from_state_dict(case.state(), case.write_vocab(tmp_path / case.vocab_name))
    images = case.images()
    batched = scorer.score(case.prompts, images)
    single = [scorer.score([p], [im])[0] for p, im in zip(case.prompts, images, strict=True)]
    np.testing.assert_allclose(batched, single, rtol=0, atol=1e-6)
    assert len(set(np.round(batched, 6))) == len(batched)  # different pairs, different scores


def test_renamed_key_fails_naming_it(case: ScorerCase, tmp_path: Path) -> None:
    state = case.state()
    state[case.renamed_key.replace("weight", "renamed")] = state.pop(case.renamed_key)
    with pytest.raises(KeyError, match=case.renamed_key.replace("weight", "renamed").replace(".", r"\.")):
        case.from_state_dict(state, case.write_vocab(tmp_path / case.vocab_name))


def test_missing_key_and_wrong_shape_fail_naming_the_key(case: ScorerCase, tmp_path: Path) -> None:
    vocab = case.write_vocab(tmp_path / case.vocab_name)
    state = case.state()
    del state[case.dropped_key]
    with pytest.raises(KeyError, match=r"missing keys \['" + case.dropped_as.replace(".", r"\.")):
        case.from_state_dict(state, vocab)
    state = case.state()
    key = "mlp.layers.7.weight" if case.name == "imagereward" else "visual.proj"
    state[key] = torch.zeros(1, 3)
    with pytest.raises(ValueError, match="shapes differ"):
        case.from_state_dict(state, vocab)


def test_missing_files_error_names_the_file_and_its_source(case: ScorerCase, tmp_path: Path) -> None:
    source = "xswu/HPSv2" if case.name == "hps" else "THUDM/ImageReward"
    with pytest.raises(WeightsNotFoundError) as err:
        case.from_pretrained(None, case.write_vocab(tmp_path / case.vocab_name))  # type: ignore[arg-type]
    assert case.weights_name in str(err.value) and source in str(err.value)
    torch.save(case.state(), tmp_path / case.weights_name)
    with pytest.raises(WeightsNotFoundError, match=case.vocab_name.replace(".", r"\.")):
        case.from_pretrained(tmp_path / case.weights_name, None)  # type: ignore[arg-type]


def test_mismatched_prompt_and_image_counts_fail(case: ScorerCase, tmp_path: Path) -> None:
    scorer = case.from_state_dict(case.state(), case.write_vocab(tmp_path / case.vocab_name))
    with pytest.raises(ValueError, match="2 prompts but 3 images"):
        scorer.score(case.prompts[:2], case.images())


# ------------------------------------------------------------------------------------------------ full-size key maps


def _mapped_shapes(state: dict[str, torch.Tensor]) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in state.items()}


@pytest.mark.parametrize(
    ("preset", "params", "visual_params"),
    [("ViT-H-14", 986_109_441, 632_076_800), ("ViT-L-14-quickgelu", 427_616_513, 303_966_208)],
)
def test_full_size_open_clip_layout_maps_exactly_onto_transformers_clip(
    preset: str, params: int, visual_params: int
) -> None:
    """Every official key has a transformers key of the right shape and vice versa (open_clip's model profile
    gives the parameter counts: ViT-H-14 986.11M, 632.08M in the image tower; ViT-L-14 427.62M, 303.97M)."""
    from transformers import CLIPModel

    cfg = OpenCLIPConfig.preset(preset)
    layout = L.open_clip_layout(**cfg.to_dict())
    with torch.device("meta"):
        official = {k: torch.empty(shape) for k, shape in layout.items()}
        model = CLIPModel(cfg.to_transformers())
    assert _mapped_shapes(open_clip_to_transformers(official)) == _mapped_shapes(model.state_dict())
    assert sum(p.numel() for p in model.parameters()) == params
    assert sum(int(np.prod(s)) for k, s in layout.items() if k.startswith("visual.")) == visual_params
    text = model.config.text_config
    assert (text.eos_token_id, text.hidden_act) == (49407, "quick_gelu" if cfg.quick_gelu else "gelu")


def test_full_size_imagereward_layout_maps_exactly_onto_transformers_blip() -> None:
    cfg = ImageRewardConfig.preset("v1.0")
    layout = L.imagereward_layout(**cfg.to_dict())
    with torch.device("meta"):
        official = {k: torch.empty(shape) for k, shape in layout.items() if not k.endswith("position_ids")}
        model = ImageRewardModel(cfg)
    official["blip.text_encoder.embeddings.position_ids"] = torch.arange(512)[None]
    mapped, ignored = imagereward_to_transformers(official)
    assert _mapped_shapes(mapped) == _mapped_shapes(model.state_dict())
    assert ignored == sorted(
        [
            "blip.text_encoder.embeddings.position_ids",
            *(f"blip.{p}_proj.{w}" for p in ("text", "vision") for w in ("bias", "weight")),
        ]
    )
    assert model.vision.config.layer_norm_eps == 1e-6 and model.text.config.layer_norm_eps == 1e-12


def test_imagereward_ignores_unused_blip_modules_and_checks_position_ids(
    caplog: pytest.LogCaptureFixture,
) -> None:
    state = L.random_state_dict(L.imagereward_layout(**L.IMAGEREWARD_TINY), seed=5)
    state["blip.itm_head.weight"] = torch.zeros(2, 24)  # a BLIP module the score does not run
    with caplog.at_level(logging.WARNING, logger="infinity_eval.imagereward"):
        _, ignored = imagereward_to_transformers(state)
    assert "blip.itm_head.weight" in ignored and "blip.itm_head.weight" in caplog.text
    state["blip.text_encoder.embeddings.position_ids"] = state[
        "blip.text_encoder.embeddings.position_ids"
    ].flip(-1)
    with pytest.raises(ValueError, match="position_ids"):
        imagereward_to_transformers(state)
    state = L.random_state_dict(L.imagereward_layout(**L.IMAGEREWARD_TINY), seed=5)
    state["head.layers.0.weight"] = state.pop("mlp.layers.0.weight")
    with pytest.raises(KeyError, match=r"head\.layers\.0\.weight"):
        imagereward_to_transformers(state)


def test_in_proj_is_split_into_q_k_v_and_projections_are_transposed() -> None:
    state = L.random_state_dict(L.open_clip_layout(**L.HPS_TINY), seed=7)
    mapped = open_clip_to_transformers(state)
    fused = state["transformer.resblocks.0.attn.in_proj_weight"]
    width = L.HPS_TINY["text_width"]
    for i, letter in enumerate("qkv"):
        torch.testing.assert_close(
            mapped[f"text_model.encoder.layers.0.self_attn.{letter}_proj.weight"],
            fused[i * width : (i + 1) * width],
        )
    torch.testing.assert_close(mapped["visual_projection.weight"], state["visual.proj"].T)


def test_meta_loading_refuses_unknown_transient_buffers() -> None:
    class WithBuffer(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.linear = torch.nn.Linear(2, 2)
            self.register_buffer("table", torch.zeros(3), persistent=False)

    with torch.device("meta"):
        model = WithBuffer()
    with pytest.raises(ValueError, match="table"):
        load_state_dict_into_meta_model(
            model, {"linear.weight": torch.zeros(2, 2), "linear.bias": torch.zeros(2)}, "x"
        )


# ------------------------------------------------------------------------------------------------ tokenizers


def test_clip_tokenizer_gives_the_hand_ports_ids(tmp_path: Path) -> None:
    tokenizer = OpenCLIPTokenizer.from_file(write_bpe(tmp_path / "bpe.txt.gz"), fix_text=False)
    rows = tokenizer(L.CLIP_TEXTS)
    assert rows.shape == (len(L.CLIP_TEXTS), 77) and rows.dtype == torch.long
    assert [row[: int((row != 0).sum())].tolist() for row in rows] == REFERENCE["clip_tokens"]
    assert rows[2, -1] == tokenizer.end_id  # cut to 77 with <end_of_text> kept last
    pytest.importorskip("ftfy")
    ftfy_rows = OpenCLIPTokenizer.from_file(tmp_path / "bpe.txt.gz")(["cafÃ© cat"])  # mojibake repaired
    assert [ftfy_rows[0][: int((ftfy_rows[0] != 0).sum())].tolist()] == REFERENCE["clip_tokens_ftfy"]


def test_bert_tokenizer_gives_the_hand_ports_ids(tmp_path: Path) -> None:
    tokenizer = imagereward_tokenizer(write_bert_vocab(tmp_path / "vocab.txt"))
    assert len(tokenizer) == len(L.BERT_VOCAB) + 2
    assert tokenizer.convert_tokens_to_ids(["[DEC]", "[ENC]"]) == [len(L.BERT_VOCAB), len(L.BERT_VOCAB) + 1]
    batch = tokenizer(L.BERT_TEXTS, padding="max_length", truncation=True, max_length=35)
    rows = [ids[: sum(mask)] for ids, mask in zip(batch["input_ids"], batch["attention_mask"], strict=True)]
    assert rows == REFERENCE["bert_tokens"]


# ------------------------------------------------------------------------------------------------ colour classifier


def _colour_clip() -> tuple[Any, OpenCLIPTokenizer]:
    state = L.random_state_dict(L.open_clip_layout(**L.COLOR_CLIP_TINY), seed=11)
    return build_clip_model(OpenCLIPConfig(**L.COLOR_CLIP_TINY), state, "test"), OpenCLIPTokenizer(
        L.CLIP_MERGES, fix_text=False
    )


def test_colour_classifier_gives_the_hand_ports_colours_and_logits() -> None:
    model, tokenizer = _colour_clip()
    classifier = clip_color_classifier(model, tokenizer, image_size=28)
    crops = L.colour_crops()
    for name, expected in REFERENCE["colour_predictions"].items():
        assert classifier(crops, name) == expected
        with torch.no_grad():
            pixels = torch.stack([classifier._preprocess(c) for c in crops])
            feats = torch.nn.functional.normalize(classifier._encode_image(pixels), dim=-1)
            logits = feats @ classifier.class_vectors(name).T
        np.testing.assert_allclose(logits.numpy(), REFERENCE["colour_logits"][name], rtol=0, atol=2e-6)
    assert len(set(REFERENCE["colour_predictions"]["cat"]) & set(COLORS)) > 1  # the reference is not constant


def test_openai_checkpoint_loads_without_its_scalar_entries(tmp_path: Path) -> None:
    state = L.random_state_dict(L.open_clip_layout(**L.COLOR_CLIP_TINY), seed=11)
    half = {k: v.half() for k, v in state.items()}  # OpenAI ships fp16
    half.update(
        input_resolution=torch.tensor(28), context_length=torch.tensor(77), vocab_size=torch.tensor(9)
    )
    torch.save(half, tmp_path / "ViT-L-14.pt")
    loaded = load_openai_clip_state_dict(tmp_path / "ViT-L-14.pt")
    assert set(loaded) == set(state) and all(v.dtype == torch.float32 for v in loaded.values())
    model = build_clip_model(OpenCLIPConfig(**L.COLOR_CLIP_TINY), loaded, "ViT-L-14.pt")
    torch.testing.assert_close(model.visual_projection.weight, state["visual.proj"].half().float().T)
