"""The default-model folder (package data) and its deterministic neighbour-T5 text encoder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from infinity_model import GenerationConfig, TextEncoder
from infinity_model.default_model import (
    DEFAULT_MODEL_FILE,
    DefaultModelNotFoundError,
    default_model_dir,
    load_default_model,
    write_default_model,
)
from infinity_model.local_t5 import write_neighbour_t5
from infinity_model.model_folder import MODEL_INDEX_FILE

WORDS = ("a", "photo", "of", "and", "circle", "square", "red", "blue", "above", "below")


@pytest.fixture(scope="module")
def neighbour_t5(tmp_path_factory) -> Path:
    return write_neighbour_t5(tmp_path_factory.mktemp("t5"), WORDS, d_model=32)


def test_neighbour_t5_is_deterministic(neighbour_t5: Path, tmp_path: Path) -> None:
    again = write_neighbour_t5(tmp_path / "again", WORDS, d_model=32)
    assert (again / "model.safetensors").read_bytes() == (neighbour_t5 / "model.safetensors").read_bytes()


def test_neighbour_t5_features_keep_word_order_and_binding(neighbour_t5: Path) -> None:
    encoder = TextEncoder.from_pretrained(neighbour_t5, max_length=16)
    prompts = [
        "a photo of a red circle above a blue square",
        "a photo of a blue circle above a red square",  # colours swapped: same bag of words
        "a photo of a blue square above a red circle",  # order swapped: same bag of words
    ]
    assert encoder.tokenizer.tokenize(prompts[0])[:6] == ["▁a", "▁photo", "▁of", "▁a", "▁red", "▁circle"]
    feats, mask = encoder.encode_padded(prompts)
    n = int(mask[0].sum())
    assert int(mask[1].sum()) == int(mask[2].sum()) == n
    for other in (1, 2):
        cos = torch.nn.functional.cosine_similarity(feats[0, :n], feats[other, :n], dim=-1)
        # the rows of the shape words differ clearly although every prompt holds the same words
        assert cos.min() < 0.8, cos
    # unknown words still encode (spelled letter by letter)
    assert encoder.encode(["a photo of a zebra"]).lengths.item() > 5


def test_missing_default_model_names_the_fix(tmp_path: Path) -> None:
    with pytest.raises(DefaultModelNotFoundError, match=r"--model, --vae and --text-encoder"):
        default_model_dir(tmp_path)


def test_write_and_load_default_model(neighbour_t5: Path, tmp_path: Path) -> None:
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    vae = tmp_path / "vae"  # a save_vae folder
    vae.mkdir()
    (vae / "config.json").write_text("{}")
    (vae / "model.safetensors").write_bytes(b"x")
    root = write_default_model(
        tmp_path / "dm", model, vae, neighbour_t5, {"pn": "0.016M", "cfg": 3.0}, {"score": 1}
    )
    dm = load_default_model(root)
    assert dm.model == root / "transformer" and dm.vae == root / "vae"
    assert (dm.text_encoder / "config.json").is_file() and (root / "vae" / "model.safetensors").is_file()
    assert json.loads((root / MODEL_INDEX_FILE).read_text())["vae"] == "vae"
    # the settings not given take GenerationConfig's defaults
    assert dm.generation == GenerationConfig(pn="0.016M", cfg=3.0) and dm.provenance == {"score": 1}
    assert GenerationConfig.from_json(root / "generation_config.json") == dm.generation
    settings = json.loads((root / "generation_config.json").read_text())
    settings["steps"] = 3
    (root / "generation_config.json").write_text(json.dumps(settings))
    with pytest.raises(ValueError, match=r"generation_config\.json: unknown generation key 'steps'"):
        load_default_model(root)


def test_folder_in_the_older_layout_still_loads(neighbour_t5: Path, tmp_path: Path) -> None:
    """A folder with one default_model.json (generation settings inline) is read as before."""
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    vae = tmp_path / "vae.safetensors"
    vae.write_bytes(b"x")
    root = write_default_model(tmp_path / "dm", model, vae, neighbour_t5, {}, {"score": 2})
    (root / MODEL_INDEX_FILE).unlink()
    (root / "generation_config.json").unlink()
    older = {"model": "transformer", "vae": "vae.safetensors", "text_encoder": "text_encoder",
             "generation": {"pn": "0.016M", "cfg": 2.0, "candidates": 8}, "provenance": {"score": 2}}  # fmt: skip
    (root / DEFAULT_MODEL_FILE).write_text(json.dumps(older))
    dm = load_default_model(root)
    assert dm.generation == GenerationConfig(pn="0.016M", cfg=2.0, candidates=8)
    assert dm.provenance == {"score": 2} and dm.vae == root / "vae.safetensors"
    older["generation"]["cfg"] = "high"
    (root / DEFAULT_MODEL_FILE).write_text(json.dumps(older))
    with pytest.raises(ValueError, match=r"default_model\.json: GenerationConfig\.cfg must be a number"):
        load_default_model(root)


def test_generation_config_round_trips_through_json(tmp_path: Path) -> None:
    config = GenerationConfig(
        pn="0.25M", ratio=0.5, cfg=(1.0, 2.0, 3.0), tau=1, top_k=0, top_p=0.0, candidates=4
    )
    assert config.tau == 1.0 and isinstance(config.tau, float)
    assert GenerationConfig.from_json(config.to_json(tmp_path / "g.json")) == config
    assert GenerationConfig.from_dict(config.to_dict()) == config
    assert config.sampler_options() == {
        "cfg": (1.0, 2.0, 3.0),
        "tau": 1.0,
        "top_k": 0,
        "top_p": 0.0,
        "candidates": 4,
    }
    with pytest.raises(ValueError, match="ratio"):
        GenerationConfig(ratio=0)


def test_provenance_records_commands_relative_to_the_repository(neighbour_t5: Path, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    (repo / ".git").mkdir(parents=True)
    model = repo / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    vae = repo / "vae.safetensors"
    vae.write_bytes(b"x")
    header = {
        "command_line": ["/opt/build/.venv/bin/infinity-eval", "geneval", f"{repo}/eval/images", "/data/x"]
    }
    root = write_default_model(repo / "dm", model, vae, neighbour_t5, {}, {"geneval": {"header": header}})
    text = (root / MODEL_INDEX_FILE).read_text()
    assert str(tmp_path) not in text and "/opt/build" not in text
    command = json.loads(text)["provenance"]["geneval"]["header"]["command_line"]
    assert command == ["infinity-eval", "geneval", "eval/images", "/data/x"]


def test_committed_default_model_records_no_build_machine_path() -> None:
    spec = Path(__file__).parents[1] / "src" / "infinity_model" / "default_model" / DEFAULT_MODEL_FILE
    if not spec.is_file():
        pytest.skip("no default model is shipped in this checkout")

    def strings(value: object) -> list[str]:
        if isinstance(value, dict):
            return [s for v in value.values() for s in strings(v)]
        if isinstance(value, list):
            return [s for v in value for s in strings(v)]
        return [value] if isinstance(value, str) else []

    absolute = [s for s in strings(json.loads(spec.read_text())) if s.startswith("/")]
    assert absolute == []


def test_packaged_default_model_is_complete_when_shipped() -> None:
    try:
        dm = load_default_model()
    except DefaultModelNotFoundError:
        pytest.skip("this checkout ships no default model yet (recipes/shapes/reproduce.sh writes it)")
    assert dm.generation.pn == "0.016M" and dm.generation != GenerationConfig()  # the folder's own settings
    assert (dm.model / "model.safetensors").is_file() and (dm.text_encoder / "tokenizer.json").is_file()


@pytest.mark.slow
def test_cli_generate_without_model_uses_the_default_model(
    neighbour_t5: Path, tmp_path: Path, monkeypatch
) -> None:
    from bsq_tokenizer import BSQVAE, VAEConfig, save_vae
    from infinity_model import Infinity, InfinityConfig, InfinityPipeline, save_infinity
    from infinity_model import default_model as dm_module
    from infinity_model.cli import main
    from PIL import Image

    config = InfinityConfig(
        depth=2, embed_dim=64, num_heads=4, d_vae=8, text_channels=32, text_maxlen=64, pool_heads=2
    )
    torch.manual_seed(0)
    model = Infinity(config)
    model.init_weights(init_std=0.1, aln=0.5, aln_gamma=0.5, head_scale=1.0)
    save_infinity(model, tmp_path / "transformer")
    vae = BSQVAE(VAEConfig(codebook_dim=8, ch=32, ch_mult=(1, 1, 1, 1, 1))).eval()
    save_vae(vae, tmp_path / "vae")
    generation = {"pn": "0.016M", "cfg": 2.0, "tau": 1.0, "top_k": 0, "top_p": 0.0, "candidates": 3}
    root = write_default_model(
        tmp_path / "dm", tmp_path / "transformer", tmp_path / "vae", neighbour_t5, generation
    )
    monkeypatch.setattr(dm_module, "_PACKAGED", root)
    prompt = "a photo of a red circle above a blue square"
    out = tmp_path / "out.png"
    assert main(["generate", prompt, "-o", str(out)]) == 0
    assert Image.open(out).size == (128, 128)  # the default model's pixel budget, not 1M
    # the default model's sampling settings, candidates included, are the CLI's defaults
    dm = dm_module.load_default_model()
    pipe = InfinityPipeline.from_pretrained(dm.model, dm.vae, dm.text_encoder, device="cpu")
    # the folder opened as one: its parts and its generation settings
    assert InfinityPipeline.from_pretrained(root, device="cpu").generation == GenerationConfig(**generation)
    settings = {k: v for k, v in generation.items() if k != "pn"}
    best = pipe([prompt], pn="0.016M", seed=0, **settings)[0]
    assert Image.open(out).tobytes() == best.tobytes()
    single = tmp_path / "single.png"
    assert main(["generate", prompt, "--candidates", "1", "-o", str(single)]) == 0
    plain = pipe([prompt], pn="0.016M", seed=0, **{**settings, "candidates": 1})[0]
    assert Image.open(single).tobytes() == plain.tobytes() != best.tobytes()
    wide = tmp_path / "wide.png"
    assert main(["generate", "a photo of a red circle", "--ratio", "0.5", "-o", str(wide)]) == 0
    assert Image.open(wide).size == (160, 80)


def test_cli_without_shipped_default_model_names_the_options(tmp_path: Path, monkeypatch, capsys) -> None:
    from infinity_model import default_model as dm_module
    from infinity_model.cli import main

    monkeypatch.setattr(dm_module, "_PACKAGED", tmp_path / "absent")
    assert main(["generate", "a cat", "-o", str(tmp_path / "x.png")]) == 2
    assert "--model, --vae and --text-encoder" in capsys.readouterr().err
