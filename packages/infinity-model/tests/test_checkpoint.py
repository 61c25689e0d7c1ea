"""Checkpoint I/O: official flat .pth and sharded folders load strictly (meta + mmap + assign), errors name keys."""

from __future__ import annotations

import json
import logging
import pickle
from pathlib import Path

import pytest
import torch
from bsq_tokenizer.schedules import custom_schedule
from infinity_model.checkpoint import (
    CheckpointError,
    check_state_dict,
    infer_infinity_config,
    load_infinity,
    load_official_infinity,
    load_state_dict_into_meta_model,
    read_state_dict,
    save_infinity,
)
from infinity_model.condition import TextCondition
from infinity_model.config import InfinityConfig
from infinity_model.transformer import Infinity, default_cfg_uncond
from safetensors.torch import save_file

SCHEDULE = custom_schedule([(1, 1), (2, 2), (3, 3)])
CONFIG = InfinityConfig(
    depth=4,
    embed_dim=64,
    num_heads=4,
    d_vae=8,
    block_chunks=2,
    text_channels=32,
    text_maxlen=16,
    pool_heads=4,
)


def random_model(config: InfinityConfig = CONFIG, seed: int = 0) -> Infinity:
    torch.manual_seed(seed)
    model = Infinity(config)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.2)
    return model.eval()


@torch.no_grad()
def logits_of(model: Infinity) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    text = TextCondition(torch.randn(7, 32, generator=g), torch.tensor([3, 4]))
    bits = [torch.randint(0, 2, (2, h, w, 8), generator=g) for h, w in SCHEDULE.scales]
    inputs = model.scale_inputs_from_bits(bits, SCHEDULE)
    return model(text, inputs.to(model.dtype), SCHEDULE).float()


def write_sharded(state: dict[str, torch.Tensor], folder: Path, fmt: str, shards: int = 3) -> None:
    """HF-style sharded layout: an index json with a weight_map plus numbered shard files."""
    folder.mkdir()
    keys = list(state)
    suffix = "safetensors" if fmt == "safetensors" else "bin"
    weight_map = {}
    for i in range(shards):
        name = f"model-{i + 1:05d}-of-{shards:05d}.{suffix}"
        part = {k: state[k].contiguous() for k in keys[i::shards]}
        if fmt == "safetensors":
            save_file(part, str(folder / name))
        else:
            torch.save(part, folder / name)
        weight_map.update(dict.fromkeys(part, name))
    index = "model.safetensors.index.json" if fmt == "safetensors" else "pytorch_model.bin.index.json"
    (folder / index).write_text(json.dumps({"metadata": {"total_size": 0}, "weight_map": weight_map}))


@pytest.fixture(scope="module")
def model() -> Infinity:
    return random_model()


def test_flat_pth_round_trip_is_strict_and_gives_the_same_logits(model: Infinity, tmp_path: Path) -> None:
    path = tmp_path / "infinity_tiny.pth"
    torch.save(model.state_dict(), path)
    loaded = load_official_infinity(path, CONFIG)
    assert not loaded.training
    torch.testing.assert_close(logits_of(loaded), logits_of(model), atol=0, rtol=0)
    inferred = load_official_infinity(path)  # config inferred from the shapes
    assert inferred.config == CONFIG
    torch.testing.assert_close(logits_of(inferred), logits_of(model), atol=0, rtol=0)


@pytest.mark.parametrize("fmt", ["bin", "safetensors"])
def test_sharded_folder_round_trip(model: Infinity, tmp_path: Path, fmt: str) -> None:
    write_sharded(model.state_dict(), tmp_path / "infinity_weights", fmt)
    loaded = load_official_infinity(tmp_path / "infinity_weights", CONFIG)
    torch.testing.assert_close(logits_of(loaded), logits_of(model), atol=0, rtol=0)


def test_loading_adopts_the_mmapped_tensors_without_a_second_copy(model: Infinity, tmp_path: Path) -> None:
    path = tmp_path / "w.pth"
    torch.save(model.state_dict(), path)
    state = read_state_dict(path)
    pointers = {k: v.data_ptr() for k, v in state.items()}
    loaded = load_state_dict_into_meta_model(CONFIG, state, dtype=torch.float32)
    for key, value in loaded.state_dict().items():
        assert value.data_ptr() == pointers[key], key
    assert all(p.requires_grad for p in loaded.parameters())


def test_fp32_and_bf16_loading_dtype(model: Infinity, tmp_path: Path) -> None:
    path = tmp_path / "w.pth"
    torch.save(model.state_dict(), path)
    low = load_official_infinity(path, CONFIG, dtype=torch.bfloat16)
    assert {v.dtype for v in low.state_dict().values()} == {torch.bfloat16}
    full = load_official_infinity(path, CONFIG, dtype=torch.float32)
    assert {v.dtype for v in full.state_dict().values()} == {torch.float32}
    ref = logits_of(full)
    out = logits_of(low)
    assert out.dtype == torch.float32 and torch.isfinite(out).all()
    assert (out - ref).abs().max() < 0.1 * ref.abs().max()
    torch.save({k: v.to(torch.bfloat16) for k, v in model.state_dict().items()}, tmp_path / "bf16.pth")
    kept = load_official_infinity(tmp_path / "bf16.pth", CONFIG, dtype=None)
    assert kept.dtype == torch.bfloat16
    assert load_official_infinity(tmp_path / "bf16.pth", CONFIG, dtype=torch.float16).dtype == torch.float16


def test_our_safetensors_format_round_trip(model: Infinity, tmp_path: Path) -> None:
    save_infinity(model, tmp_path / "saved")
    assert InfinityConfig.from_json(tmp_path / "saved" / "config.json") == CONFIG
    loaded = load_infinity(tmp_path / "saved")
    for (k, a), (k2, b) in zip(model.state_dict().items(), loaded.state_dict().items(), strict=True):
        assert k == k2 and torch.equal(a, b)
    torch.testing.assert_close(logits_of(loaded), logits_of(model), atol=0, rtol=0)
    save_infinity(model, tmp_path / "half", dtype=torch.bfloat16)
    assert load_infinity(tmp_path / "half").dtype == torch.bfloat16
    assert load_infinity(tmp_path / "half", dtype=torch.float32).dtype == torch.float32
    with pytest.raises(CheckpointError, match=r"config\.json is missing"):
        load_infinity(tmp_path)


def test_strict_loading_errors_name_missing_unexpected_and_mismatched_keys(
    model: Infinity, tmp_path: Path
) -> None:
    state = dict(model.state_dict())
    del state["block_chunks.1.module.0.ffn.fc2.bias"]
    state["block_chunks.0.module.0.sa.lvl_1L"] = torch.zeros(3)
    state["head.bias"] = torch.zeros(15)
    torch.save(state, tmp_path / "bad.pth")
    with pytest.raises(CheckpointError) as info:
        load_official_infinity(tmp_path / "bad.pth", CONFIG)
    message = str(info.value)
    assert "bad.pth" in message
    assert "missing keys (block_chunks.1.module.0.ffn.fc2.bias)" in message
    assert "unexpected keys (block_chunks.0.module.0.sa.lvl_1L)" in message
    assert "head.bias: file [15] vs model [16]" in message


def test_error_says_which_preset_and_vae_the_file_belongs_to() -> None:
    """8B weights offered to a 2B (d = 32) model: the message names preset '8b' and the d14 patchified VAE."""
    with torch.device("meta"):
        model_2b = Infinity(InfinityConfig.preset("2b"))
        state_8b = Infinity(InfinityConfig.preset("8b")).state_dict()
    with pytest.raises(CheckpointError) as info:
        check_state_dict(model_2b, state_8b, "infinity_8b_weights")
    message = str(info.value)
    assert message.startswith("infinity_8b_weights does not fit the model")
    assert "pos_start: file [1, 1, 3584] vs model [1, 1, 2048]" in message
    assert "built as preset '2b'" in message
    assert "holds preset '8b' (depth 40, embed_dim 3584, 28 heads, d_vae 56 -> VAE d14_patchify" in message
    assert "InfinityConfig.preset('8b')" in message
    assert infer_infinity_config(state_8b) == InfinityConfig.preset("8b")


def test_wrong_vae_bits_for_a_layer_model_are_diagnosed(tmp_path: Path) -> None:
    small = random_model(InfinityConfig(**{**CONFIG.to_dict(), "d_vae": 16}))
    torch.save(small.state_dict(), tmp_path / "d16.pth")
    with pytest.raises(
        CheckpointError, match=r"word_embed.weight: file \[64, 16\] vs model \[64, 8\].*VAE d16"
    ):
        load_official_infinity(tmp_path / "d16.pth", CONFIG)


def test_truncated_word_embed_is_not_blamed_on_the_vae(model: Infinity, tmp_path: Path) -> None:
    """head.weight still says d_vae = 8: the file contradicts itself, whatever config the caller gives."""
    state = dict(model.state_dict())
    state["word_embed.weight"] = state["word_embed.weight"][:, :7].clone()
    torch.save(state, tmp_path / "cut.pth")
    for config in (CONFIG, None):  # given, or inferred from the shapes
        with pytest.raises(CheckpointError) as info:
            load_official_infinity(tmp_path / "cut.pth", config)
        message = str(info.value)
        assert "cut.pth" in message
        assert "word_embed.weight [64, 7] says d_vae = 7, but head.weight [16, 64]" in message
        assert "says d_vae = 8" in message and "truncated or edited" in message
        assert "-> VAE" not in message and "config=None" not in message
    with pytest.raises(CheckpointError, match=r"word_embed\.weight: file \[64, 7\] vs model \[64, 8\]"):
        load_official_infinity(tmp_path / "cut.pth", CONFIG)


def test_damage_under_an_inferred_config_does_not_suggest_inferring_it(
    model: Infinity, tmp_path: Path
) -> None:
    state = dict(model.state_dict())
    state["block_chunks.1.module.1.ffn.fc1.weight"] = state["block_chunks.1.module.1.ffn.fc1.weight"][
        :100
    ].clone()
    torch.save(state, tmp_path / "damaged.pth")
    with pytest.raises(CheckpointError) as info:
        load_official_infinity(tmp_path / "damaged.pth")  # config=None: inferred from block 0
    message = str(info.value)
    assert "block_chunks.1.module.1.ffn.fc1.weight: file [100, 64] vs model [256, 64]" in message
    assert "damaged, truncated or renamed" in message
    assert "config=None" not in message and "load it with" not in message


def test_cfg_uncond_length_tolerance_like_the_reference(model: Infinity, tmp_path: Path, caplog) -> None:
    state = dict(model.state_dict())
    state["cfg_uncond"] = model.cfg_uncond.detach()[:10].clone()
    torch.save(state, tmp_path / "short.pth")
    with caplog.at_level(logging.WARNING):
        loaded = load_official_infinity(tmp_path / "short.pth", CONFIG)
    assert "cfg_uncond has 10 rows" in caplog.text
    assert torch.equal(loaded.cfg_uncond[:10], model.cfg_uncond[:10])
    assert torch.equal(loaded.cfg_uncond[10:], default_cfg_uncond(16, 32)[10:])
    state["cfg_uncond"] = torch.randn(20, 32)
    torch.save(state, tmp_path / "long.pth")
    assert torch.equal(
        load_official_infinity(tmp_path / "long.pth", CONFIG).cfg_uncond, state["cfg_uncond"][:16]
    )


def test_constructor_cfg_uncond_is_the_seeded_reference_init() -> None:
    table = default_cfg_uncond(512, 2048)
    assert torch.equal(table, default_cfg_uncond(512, 2048))
    assert table.abs().max() <= 2.0 / 2048**0.5
    assert torch.equal(Infinity(CONFIG).cfg_uncond.detach(), default_cfg_uncond(16, 32))


def test_training_checkpoint_and_wrapper_prefixes_are_unwrapped(model: Infinity, tmp_path: Path) -> None:
    wrapped = {f"module._fsdp_wrapped_module.{k}": v for k, v in model.state_dict().items()}
    torch.save({"trainer": {"gpt_fsdp": wrapped}, "epoch": 3}, tmp_path / "ar-ckpt.pth")
    loaded = load_official_infinity(tmp_path / "ar-ckpt.pth", CONFIG)
    torch.testing.assert_close(logits_of(loaded), logits_of(model), atol=0, rtol=0)


class _NotAllowed:
    pass


def test_pickled_objects_are_refused_and_bad_paths_are_named(tmp_path: Path) -> None:
    torch.save({"args": _NotAllowed(), "w": torch.zeros(1)}, tmp_path / "pickled.pth")
    with pytest.raises(CheckpointError, match="weights_only=True"):
        read_state_dict(tmp_path / "pickled.pth")
    with pytest.raises(CheckpointError, match="does not exist"):
        read_state_dict(tmp_path / "nope.pth")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="cannot tell which files hold the weights"):
        read_state_dict(tmp_path / "empty")
    assert pickle.UnpicklingError  # the error class the refusal is built on


def test_legacy_non_zip_torch_files_load_without_mmap(model: Infinity, tmp_path: Path) -> None:
    torch.save(model.state_dict(), tmp_path / "legacy.bin", _use_new_zipfile_serialization=False)
    loaded = load_official_infinity(tmp_path / "legacy.bin", CONFIG)
    torch.testing.assert_close(logits_of(loaded), logits_of(model), atol=0, rtol=0)
