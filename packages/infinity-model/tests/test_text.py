"""T5 text path: local loading, tokenization lengths (with </s>), packing and the no-download policy."""

from __future__ import annotations

import pytest
import torch
from infinity_model.condition import TextCondition
from infinity_model.text import TextEncoder
from infinity_model.tiny import write_tiny_t5


@pytest.fixture(scope="module")
def t5_folder(tmp_path_factory):
    return write_tiny_t5(tmp_path_factory.mktemp("t5"), d_model=32)


@pytest.fixture(scope="module")
def encoder(t5_folder):
    return TextEncoder.from_pretrained(t5_folder, max_length=16)


def test_tokenizer_pads_to_max_length_and_counts_eos(encoder):
    ids, mask = encoder.tokenize(["a red cat", "two dogs on the sea"])
    assert ids.shape == mask.shape == (2, 16)
    tokens = encoder.tokenizer.convert_ids_to_tokens(ids[0][mask[0].bool()].tolist())
    assert tokens == ["\u2581a", "\u2581red", "\u2581cat", "</s>"]
    assert mask.sum(1).tolist()[0] == 4
    assert ids[0, 4:].eq(encoder.tokenizer.pad_token_id).all()


def test_encode_packs_the_non_pad_rows_of_each_prompt(encoder):
    prompts = ["a red cat", "the big blue house in the city at night"]
    cond = encoder.encode(prompts)
    padded, mask = encoder.encode_padded(prompts)
    assert isinstance(cond, TextCondition)
    assert cond.features.dtype == torch.float32
    assert cond.lengths.tolist() == mask.sum(1).tolist()
    assert cond.cu_seqlens.tolist() == [0, int(mask[0].sum()), int(mask.sum())]
    first = cond.features[: cond.lengths[0]]
    torch.testing.assert_close(first, padded[0, : cond.lengths[0]], rtol=0, atol=0)
    assert cond.features.shape == (int(mask.sum()), encoder.hidden_size)


def test_features_do_not_depend_on_the_other_prompts_in_the_batch(encoder):
    alone = encoder.encode(["a green tree"])
    batched = encoder.encode(["a green tree", "three small birds with a car on a mountain"])
    n = int(alone.lengths[0])
    torch.testing.assert_close(batched.features[:n], alone.features, rtol=1e-6, atol=1e-6)


def test_long_prompts_are_truncated_to_max_length_keeping_eos(encoder):
    cond = encoder.encode(["a " * 40])
    assert cond.lengths.tolist() == [16]
    ids, _ = encoder.tokenize(["a " * 40])
    assert ids[0, -1].item() == encoder.tokenizer.eos_token_id


def test_missing_folder_is_reported_without_downloading(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty-hf-cache"))  # nothing cached, and no network is tried
    with pytest.raises(FileNotFoundError, match="allow_download"):
        TextEncoder.from_pretrained(tmp_path / "no-such-t5")
    with pytest.raises(FileNotFoundError, match="neither a local folder nor in the local Hugging Face cache"):
        TextEncoder.from_pretrained("google/flan-t5-xl")


def test_incomplete_folder_names_the_missing_files(tmp_path, t5_folder):
    (tmp_path / "config.json").write_text((t5_folder / "config.json").read_text())
    with pytest.raises(FileNotFoundError, match=r"model weights.*tokenizer"):
        TextEncoder.from_pretrained(tmp_path)


def test_a_single_string_is_rejected(encoder):
    with pytest.raises(TypeError, match="wrap it in a list"):
        encoder.encode("a cat")


def test_requested_dtype_reaches_the_loaded_t5_weights(t5_folder):
    """``dtype`` must reach ``from_pretrained`` under a keyword the installed transformers honours."""
    half = TextEncoder.from_pretrained(t5_folder, dtype=torch.bfloat16, max_length=16)
    query = half.model.encoder.block[0].layer[0].SelfAttention.q.weight  # T5 may keep its `wo` in fp32
    assert query.dtype == torch.bfloat16 and half.model.shared.weight.dtype == torch.bfloat16
    assert half.encode(["a red cat"]).features.dtype == torch.float32
