"""Config presets follow the spec table, and every preset's state_dict equals the official manifest exactly."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from infinity_model.config import PRESETS, InfinityConfig
from infinity_model.transformer import Infinity

MANIFESTS = Path(__file__).parent / "fixtures" / "manifests"
RELEASED = ["layer12", "layer16", "layer24", "layer32", "layer40", "layer48", "2b", "8b"]
PARAMS = {
    "layer12": 125_185_696,
    "layer16": 361_633_792,
    "layer24": 940_944_832,
    "layer32": 2_256_694_912,
    "layer40": 4_716_421_888,
    "layer48": 8_767_198_528,
    "2b": 2_204_564_032,
    "8b": 8_375_791_824,
}


def read_manifest(name: str) -> list[tuple[str, str, str]]:
    lines = (MANIFESTS / f"infinity_{name}.tsv").read_text().splitlines()
    rows = [line.split("\t") for line in lines if not line.startswith("#")]
    assert rows[0] == ["key", "shape", "dtype"]
    return [(k, s, d) for k, s, d in rows[1:]]


@pytest.mark.parametrize("name", RELEASED)
def test_official_manifest_matches_our_state_dict(name: str) -> None:
    with torch.device("meta"):
        model = Infinity(InfinityConfig.preset(name))
    ours = [
        (k, str(list(v.shape)), str(v.dtype).removeprefix("torch.")) for k, v in model.state_dict().items()
    ]
    assert ours == read_manifest(name)  # same keys, same order, same shapes and dtypes
    assert sum(p.numel() for p in model.parameters()) == PARAMS[name]


def test_ffn_width_rounds_half_to_even() -> None:
    assert InfinityConfig.preset("layer32").ffn_dim == 8192  # 2080 * 4 / 256 = 32.5 -> 32
    assert InfinityConfig.preset("layer48").ffn_dim == 13312  # 52.5 -> 52
    assert InfinityConfig.preset("2b").ffn_dim == 8192
    assert InfinityConfig.preset("8b").ffn_dim == 14336


def test_8b_preset_is_patchified_56_bits() -> None:
    cfg = InfinityConfig.preset("8b")
    assert (cfg.d_vae, cfg.patchify, cfg.vae_channels, cfg.block_chunks) == (56, True, 14, 8)
    assert cfg.pool_num_heads == 16 and cfg.embed_dim // cfg.pool_num_heads == 224


def test_preset_names_accept_registry_and_training_spellings() -> None:
    assert InfinityConfig.preset("infinity_2b") == PRESETS["2b"]
    assert InfinityConfig.preset("2bc8") == PRESETS["2b"]
    assert InfinityConfig.preset("layer12c4") == PRESETS["layer12"]
    assert InfinityConfig.preset("layer24c2").block_chunks == 2
    assert InfinityConfig.preset("layer12", d_vae=16).d_vae == 16
    with pytest.raises(ValueError, match="unknown Infinity preset 'layer13'"):
        InfinityConfig.preset("layer13")


def test_config_json_round_trip(tmp_path: Path) -> None:
    for cfg in [*PRESETS.values(), InfinityConfig(depth=2, embed_dim=64, num_heads=4, pool_heads=2)]:
        assert InfinityConfig.from_dict(cfg.to_dict()) == cfg
        cfg.to_json(tmp_path / "config.json")
        assert InfinityConfig.from_json(tmp_path / "config.json") == cfg
    with pytest.raises(ValueError, match="unknown fields \\['widht'\\]"):
        InfinityConfig.from_dict({**PRESETS["2b"].to_dict(), "widht": 3})


def test_invalid_configs_name_the_bad_value() -> None:
    with pytest.raises(ValueError, match="block_chunks=5"):
        InfinityConfig(depth=12, embed_dim=768, num_heads=8, block_chunks=5)
    with pytest.raises(ValueError, match="num_heads=7"):
        InfinityConfig(depth=12, embed_dim=768, num_heads=7)
    with pytest.raises(ValueError, match="pool heads"):
        InfinityConfig(depth=2, embed_dim=64, num_heads=4, text_channels=32)
