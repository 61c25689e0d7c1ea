"""Pipeline and CLI end to end from tiny checkpoints written in the test (official layouts and ours)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from bsq_tokenizer import BSQVAE, VAEConfig, save_vae
from bsq_tokenizer.schedules import custom_schedule
from infinity_model import GenerationConfig
from infinity_model.checkpoint import CheckpointError, infer_infinity_config, match_preset, save_infinity
from infinity_model.cli import main
from infinity_model.config import InfinityConfig
from infinity_model.model_folder import ModelFolderNotFoundError, write_model_folder
from infinity_model.pipeline import InfinityPipeline, describe_checkpoint, inspect_checkpoint
from infinity_model.tiny import write_tiny_t5
from infinity_model.transformer import Infinity
from PIL import Image
from safetensors.torch import save_file

SCHEDULE = custom_schedule([(1, 1), (2, 2), (3, 3), (4, 4)])
MANIFESTS = Path(__file__).parent / "fixtures" / "manifests"


def tiny_transformer(d_vae: int = 8, patchify: bool = False, block_chunks: int = 2) -> Infinity:
    config = InfinityConfig(
        depth=2, embed_dim=64, num_heads=4, d_vae=d_vae, patchify=patchify, text_channels=32,
        text_maxlen=16, pool_heads=2, block_chunks=block_chunks,
    )  # fmt: skip
    torch.manual_seed(0)
    model = Infinity(config)
    model.init_weights(init_std=0.1, aln=0.5, aln_gamma=0.5, head_scale=1.0)
    return model


def tiny_vae(bits: int = 8, patchify: bool = False) -> BSQVAE:
    if patchify:
        config = VAEConfig(codebook_dim=bits, ch=32, ch_mult=(1, 1, 1, 1), patch_size=8, patchify=True)
    else:
        config = VAEConfig(codebook_dim=bits, ch=32, ch_mult=(1, 1, 1, 1, 1), patch_size=16)
    torch.manual_seed(1)
    return BSQVAE(config).eval()


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("ckpt")
    model = tiny_transformer()
    out = {"t5": write_tiny_t5(root / "t5", d_model=32), "pth": root / "infinity_tiny.pth"}
    torch.save(model.state_dict(), out["pth"])  # the official flat layout
    save_infinity(model, root / "ours")
    out["ours"] = root / "ours"
    sharded = root / "sharded"
    sharded.mkdir()
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    keys = list(state)
    halves = {"model-00001-of-00002.safetensors": keys[: len(keys) // 2], "model-00002-of-00002.safetensors": keys[len(keys) // 2 :]}  # fmt: skip
    for name, part in halves.items():
        save_file({k: state[k] for k in part}, sharded / name)
    index = {"metadata": {}, "weight_map": {k: name for name, part in halves.items() for k in part}}
    (sharded / "model.safetensors.index.json").write_text(json.dumps(index))
    out["sharded"] = sharded
    vae = tiny_vae()
    out["vae_pth"] = root / "vae_tiny.pth"
    torch.save({"vae": vae.state_dict()}, out["vae_pth"])
    out["vae_st"] = save_vae(vae, root / "vae_tiny")  # a folder: config.json + model.safetensors
    patch_vae = tiny_vae(14, patchify=True)
    out["vae14"] = root / "vae_d14_tiny.pth"
    torch.save({"vae": patch_vae.state_dict()}, out["vae14"])
    out["pth8b"] = root / "infinity_8b_tiny.pth"
    torch.save(tiny_transformer(d_vae=56, patchify=True).state_dict(), out["pth8b"])
    return out


def test_pipeline_from_official_pth_returns_rgb_pil_images(files):
    pipe = InfinityPipeline.from_pretrained(
        model=files["pth"], vae=files["vae_pth"], text_encoder=files["t5"]
    )
    images = pipe(["a red cat", "two blue birds"], schedule=SCHEDULE, seed=0)
    assert [im.size for im in images] == [(64, 64), (64, 64)]
    assert all(im.mode == "RGB" for im in images)
    again = pipe(["a red cat"], schedule=SCHEDULE, seed=0)
    assert again[0].tobytes() == images[0].tobytes()  # batching does not change an image
    second = pipe("two blue birds", schedule=SCHEDULE, seed=1)  # image i of a batch uses seed + i
    assert second[0].tobytes() == images[1].tobytes()
    negative = pipe(["a red cat"], negative_prompt="a green tree", schedule=SCHEDULE, seed=0)
    assert negative[0].tobytes() != images[0].tobytes()
    with pytest.raises(ValueError, match="2 negative prompts for 1 prompts"):
        pipe(["a red cat"], negative_prompt=["a", "b"], schedule=SCHEDULE)


@pytest.mark.parametrize("kind", ["ours", "sharded"])
def test_our_safetensors_and_sharded_folders_give_the_same_images(files, kind):
    official = InfinityPipeline.from_pretrained(
        model=files["pth"], vae=files["vae_pth"], text_encoder=files["t5"]
    )
    other = InfinityPipeline.from_pretrained(model=files[kind], vae=files["vae_st"], text_encoder=files["t5"])
    a = official("a house in the city", schedule=SCHEDULE, seed=4, cfg=2.0, tau=1.0)
    b = other("a house in the city", schedule=SCHEDULE, seed=4, cfg=2.0, tau=1.0)
    assert a[0].tobytes() == b[0].tobytes()


def test_saved_vae_config_is_used_where_the_shapes_cannot_tell_it(files, tmp_path):
    """norm_groups leaves no trace in the weights: the pipeline must read save_vae's config, not guess."""
    config = VAEConfig(codebook_dim=8, ch=8, ch_mult=(1, 2, 2, 2, 2), num_res_blocks=1, norm_groups=4)
    torch.manual_seed(2)
    vae = BSQVAE(config).eval()
    pipe = InfinityPipeline.from_pretrained(
        model=files["ours"], vae=save_vae(vae, tmp_path / "narrow"), text_encoder=files["t5"]
    )
    assert pipe.vae.config == config
    norms = {m.num_groups for m in pipe.vae.modules() if isinstance(m, torch.nn.GroupNorm)}
    assert norms == {4}


def test_patchified_8b_style_pipeline_decodes_through_the_stride8_vae(files):
    pipe = InfinityPipeline.from_pretrained(
        model=files["pth8b"], vae=files["vae14"], text_encoder=files["t5"]
    )
    result = pipe.generate(["a dog"], schedule=SCHEDULE, sampler=pipe_sampler(), seed=1)
    assert result.codes.shape == (1, 14, 8, 8)  # stride-8 VAE grid = 2x the 4x4 token grid
    assert result.images.shape == (1, 64, 64, 3)  # 16 px per token, as for the other models


def test_callback_previews_decode_the_coarse_scales(files):
    pipe = InfinityPipeline.from_pretrained(model=files["pth"], vae=files["vae_st"], text_encoder=files["t5"])
    previews = []
    result = pipe.generate(
        ["a cat"],
        schedule=SCHEDULE,
        sampler=pipe_sampler(),
        callback=lambda step: previews.append(step.preview()),
    )
    assert len(previews) == SCHEDULE.num_scales
    assert all(p.shape == (1, 64, 64, 3) and p.dtype == torch.uint8 for p in previews)
    assert torch.equal(previews[-1], result.images)
    assert not torch.equal(previews[0], result.images)


def test_from_pretrained_opens_a_model_folder_building_and_checking_the_model_once(
    files, tmp_path, monkeypatch
):
    import infinity_model.checkpoint as checkpoint
    import infinity_model.transformer as transformer

    generation = GenerationConfig(pn="0.06M", cfg=2.0, tau=1.0, top_k=0, top_p=0.0, candidates=2)
    root = write_model_folder(tmp_path / "folder", files["ours"], files["vae_st"], files["t5"], generation)
    checks, builds = [], []
    check_state_dict, init = checkpoint.check_state_dict, transformer.Infinity.__init__

    def counted_check(model, *args, **kwargs):
        if isinstance(model, transformer.Infinity):  # the T5 encoder's weights are checked on their own
            checks.append(1)
        return check_state_dict(model, *args, **kwargs)

    def counted_init(self, *args, **kwargs):
        builds.append(1)
        init(self, *args, **kwargs)

    monkeypatch.setattr(checkpoint, "check_state_dict", counted_check)
    monkeypatch.setattr(transformer.Infinity, "__init__", counted_init)
    pipe = InfinityPipeline.from_pretrained(root)
    assert (len(checks), len(builds)) == (1, 1)  # one transformer built, its keys and shapes checked once
    assert pipe.generation == generation
    # the three parts as keywords (and positionally, the older form) load the same weights, default settings
    for other in (
        InfinityPipeline.from_pretrained(model=files["ours"], vae=files["vae_st"], text_encoder=files["t5"]),
        InfinityPipeline.from_pretrained(files["ours"], files["vae_st"], files["t5"]),
    ):
        assert other.generation == GenerationConfig()
        assert all(
            torch.equal(a, b)
            for a, b in zip(pipe.model.state_dict().values(), other.model.state_dict().values(), strict=True)
        )
    with pytest.raises(ModelFolderNotFoundError, match=r"model_index\.json.*model=, vae=, text_encoder="):
        InfinityPipeline.from_pretrained(files["ours"])  # a transformer folder is not a model folder
    with pytest.raises(ValueError, match="text_encoder missing"):
        InfinityPipeline.from_pretrained(model=files["ours"], vae=files["vae_st"])


def test_cli_takes_a_model_folder_and_its_settings(files, tmp_path):
    generation = GenerationConfig(pn="0.06M", cfg=2.0, tau=1.0, top_k=0, top_p=0.0, candidates=2)
    root = write_model_folder(tmp_path / "folder", files["ours"], files["vae_st"], files["t5"], generation)
    out = tmp_path / "out.png"
    assert (
        main(["generate", "a cat", "--model", str(root), "--scales", "1x1,2x2,3x3,4x4", "-o", str(out)]) == 0
    )
    pipe = InfinityPipeline.from_pretrained(root)
    expected = pipe(["a cat"], schedule=SCHEDULE, seed=0, **generation.sampler_options())[0]
    plain = pipe(["a cat"], schedule=SCHEDULE, seed=0)[0]  # GenerationConfig's defaults
    assert Image.open(out).tobytes() == expected.tobytes() != plain.tobytes()


def pipe_sampler():
    from infinity_model.sampler import SamplerConfig

    return SamplerConfig(cfg=3.0, tau=1.0)


def test_8b_weights_with_a_32_bit_vae_fail_before_loading_weights(files, monkeypatch):
    import infinity_model.pipeline as pipeline

    def forbidden(*args, **kwargs):
        raise AssertionError("weights were loaded before the compatibility check")

    monkeypatch.setattr(pipeline, "_adopt_state_dict", forbidden)
    monkeypatch.setattr(pipeline, "load_official_vae", forbidden)
    with pytest.raises(
        ValueError, match=r"56 bits per token.*d14_patchify.*8 bits at stride 16; pass the matching VAE"
    ):
        InfinityPipeline.from_pretrained(model=files["pth8b"], vae=files["vae_pth"], text_encoder=files["t5"])
    with pytest.raises(ValueError, match="8 bits per token"):
        InfinityPipeline.from_pretrained(model=files["pth"], vae=files["vae14"], text_encoder=files["t5"])


def test_missing_files_and_wrong_text_encoder_are_named(files, tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nope\.pth"):
        InfinityPipeline.from_pretrained(
            model=tmp_path / "nope.pth", vae=files["vae_pth"], text_encoder=files["t5"]
        )
    with pytest.raises(FileNotFoundError, match=r"vae_missing\.pth"):
        InfinityPipeline.from_pretrained(
            model=files["pth"], vae=tmp_path / "vae_missing.pth", text_encoder=files["t5"]
        )
    wide = write_tiny_t5(tmp_path / "t5wide", d_model=48)
    with pytest.raises(ValueError, match="width 48"):
        InfinityPipeline.from_pretrained(model=files["pth"], vae=files["vae_pth"], text_encoder=wide)
    with pytest.raises(CheckpointError, match=r"does not fit the model.*layer12"):
        InfinityPipeline.from_pretrained(
            model=files["pth"], vae=files["vae_pth"], text_encoder=files["t5"], model_preset="layer12"
        )


@pytest.mark.parametrize("name", ["2b", "8b", "layer12", "layer24", "layer48"])
def test_preset_is_inferred_from_official_manifest_shapes(name):
    rows = [line.split("\t") for line in (MANIFESTS / f"infinity_{name}.tsv").read_text().splitlines()]
    shapes = {r[0]: tuple(json.loads(r[1])) for r in rows if not r[0].startswith("#") and r[0] != "key"}
    config = infer_infinity_config(shapes)
    assert match_preset(config) == name
    assert config == InfinityConfig.preset(name)
    assert describe_checkpoint_shapes_preset(shapes) == name


def describe_checkpoint_shapes_preset(shapes) -> str | None:
    return match_preset(infer_infinity_config(shapes))


def test_inspect_reports_format_preset_and_parameter_count(files):
    info = inspect_checkpoint(files["pth"])
    assert info.format == "official .pth" and info.preset is None
    model = tiny_transformer()
    assert info.num_params == sum(p.numel() for p in model.parameters())
    assert info.config == model.config
    assert inspect_checkpoint(files["sharded"]).format == "sharded folder"
    assert describe_checkpoint(files["ours"])["format"] == "safetensors folder"


def test_cli_generate_writes_pngs_in_process(files, tmp_path):
    out = tmp_path / "img.png"
    common = [
        "--model",
        str(files["pth"]),
        "--vae",
        str(files["vae_pth"]),
        "--text-encoder",
        str(files["t5"]),
    ]
    args = ["generate", "a red cat", *common, "--pn", "0.06M", "--ratio", "2", "--cfg", "3", "--seed", "0"]
    assert main([*args, "-o", str(out)]) == 0
    assert Image.open(out).size == (176, 352)  # (W, H) of template 2.0 at 0.06M
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a dog\n\nthe sea at night\n")
    many = tmp_path / "many.png"
    args = [
        "generate",
        "--prompts-file",
        str(prompts),
        *common,
        "--scales",
        "1x1,2x2,3x3,4x4",
        "--batch-size",
        "2",
    ]
    assert main([*args, "--cfg", "3,3,2,1", "--tau", "1", "-o", str(many)]) == 0
    names = sorted(p.name for p in tmp_path.glob("many_*.png"))
    assert names == ["many_000.png", "many_001.png"]
    assert Image.open(tmp_path / "many_000.png").size == (64, 64)
    # image i of the run equals a run of that prompt alone with seed + i
    alone = tmp_path / "alone.png"
    args = ["generate", "the sea at night", *common, "--scales", "1x1,2x2,3x3,4x4", "--seed", "1"]
    assert main([*args, "--cfg", "3,3,2,1", "--tau", "1", "-o", str(alone)]) == 0
    assert Image.open(alone).tobytes() == Image.open(tmp_path / "many_001.png").tobytes()


def test_cli_with_vae_but_without_model_asks_for_the_model(files, capsys):
    assert (
        main(["generate", "a cat", "--vae", str(files["vae_pth"]), "--text-encoder", str(files["t5"])]) == 2
    )
    assert "infinity generate: error: pass --model" in capsys.readouterr().err


def test_cli_info_names_the_preset_and_parameters(files, capsys):
    assert main(["info", str(files["pth"])]) == 0
    text = capsys.readouterr().out
    assert "format: official .pth" in text and "parameters:" in text and "depth: 2" in text
    assert main(["info", str(files["pth"].with_name("missing.pth"))]) == 2


@pytest.mark.slow
def test_cli_generate_in_a_subprocess(files, tmp_path):
    out = tmp_path / "sub.png"
    cmd = [sys.executable, "-m", "infinity_model.cli", "generate", "a small tree", "--model", str(files["ours"]),
           "--vae", str(files["vae_st"]), "--text-encoder", str(files["t5"]), "--scales", "1x1,2x2,4x4", "-o", str(out)]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    assert Image.open(out).size == (64, 64)
    assert str(out) in done.stdout


def test_bf16_autocast_pipeline_keeps_fp32_logits_close_to_the_fp32_run(files):
    from infinity_model.text import TextEncoder

    parts = (tiny_transformer().eval(), tiny_vae(), TextEncoder.from_pretrained(files["t5"]))
    low, full = [], []
    image = InfinityPipeline(*parts, dtype=torch.bfloat16)(["a cat"], schedule=SCHEDULE, callback=low.append)
    InfinityPipeline(*parts)(["a cat"], schedule=SCHEDULE, callback=full.append)
    assert image[0].size == (64, 64)
    assert low[0].logits.dtype == torch.float32
    torch.testing.assert_close(low[0].logits, full[0].logits, rtol=0, atol=0.1)
    assert not torch.equal(low[0].logits, full[0].logits)  # the blocks really ran in bf16
