"""Pieces of the trainer that need no process group: bad input, param groups, ds config, EMA, checkpoint index."""

from __future__ import annotations

import pytest
import torch
from infinity_train import EMA, RunConfig, config_from_dict
from infinity_train.checkpoint import capture_rng, find_resume_tag, restore_rng
from infinity_train.cli import main
from infinity_train.data import build_loader
from infinity_train.distributed import build_ds_config
from infinity_train.transformer_trainer import param_groups
from infinity_train.vae_losses import LaplacianPyramidLoss, PatchDiscriminator, bsq_entropy_and_commitment


def test_data_path_without_shards_is_a_clear_error(tmp_path):
    cfg = RunConfig()
    with pytest.raises(FileNotFoundError, match="not a folder"):
        build_loader(cfg, str(tmp_path / "missing"), 0, 1)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="holds no shards"):
        build_loader(cfg, str(tmp_path / "empty"), 0, 1)


def test_cli_reports_unknown_key_with_file_and_key(tmp_path, capsys):
    path = tmp_path / "run.toml"
    path.write_text("[optim]\nlearnin_rate = 1\n")
    assert main(["transformer", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert "optim.learnin_rate" in err and str(path) in err


def test_cli_refuses_a_task_that_contradicts_the_command(tmp_path, capsys):
    path = tmp_path / "run.toml"
    path.write_text('task = "tokenizer"\n')
    assert main(["transformer", "--config", str(path)]) == 2
    assert "task = 'tokenizer'" in capsys.readouterr().err


def test_no_weight_decay_group_follows_the_spec():
    from infinity_model import Infinity, InfinityConfig

    cfg = InfinityConfig(depth=2, embed_dim=64, num_heads=2, text_channels=32, text_maxlen=8, pool_heads=2)
    model = Infinity(cfg)
    decay, no_decay = param_groups(model)
    names = {id(p): n for n, p in model.named_parameters()}
    nd = {names[id(p)] for p in no_decay["params"]}
    d = {names[id(p)] for p in decay["params"]}
    for expected in ("cfg_uncond", "pos_start", "lvl_embed.weight", "text_norm.weight", "head.bias"):
        assert expected in nd
    assert any("ada_gss" in n for n in nd) and any("scale_mul" in n for n in nd)
    assert "text_proj_for_sos.ca.mat_q" in nd and "head.weight" in d and "word_embed.weight" in d
    assert decay["wd_scale"] == 1.0 and no_decay["wd_scale"] == 0.0
    assert len(nd) + len(d) == len(list(model.parameters()))


def test_ds_config_carries_stage_precision_clip_accumulation_and_extra():
    cfg = config_from_dict(
        {
            "data": {"batch_size": 3},
            "optim": {"grad_accum": 4, "grad_clip": 2.5},
            "deepspeed": {
                "zero_stage": 3,
                "precision": "fp16",
                "extra": {"zero_optimization": {"overlap_comm": True}},
            },
        }
    )
    ds = build_ds_config(cfg)
    assert ds["train_micro_batch_size_per_gpu"] == 3 and ds["gradient_accumulation_steps"] == 4
    assert ds["gradient_clipping"] == 2.5 and ds["zero_optimization"] == {"stage": 3, "overlap_comm": True}
    assert ds["fp16"]["enabled"] and not ds["bf16"]["enabled"]
    # bf16 is the reference's recipe: fp32 parameters + autocast, so DeepSpeed itself stays in fp32
    assert not build_ds_config(RunConfig())["bf16"]["enabled"]


def test_ema_is_decay_weighted_average():
    model = torch.nn.Linear(2, 2)
    ema = EMA(model, 0.9)
    start = model.weight.detach().clone()
    with torch.no_grad():
        model.weight.add_(1.0)
    ema.update(model)
    torch.testing.assert_close(ema.shadow["weight"], start + 0.1)
    with pytest.raises(KeyError):
        ema.load_state_dict({})


def test_interrupted_checkpoint_write_never_becomes_latest(tmp_path):
    root = tmp_path / "checkpoints"
    assert find_resume_tag(root) is None
    (root / "step00000001").mkdir(parents=True)
    (root / "step00000001" / "COMPLETE").write_text("step00000001")
    (root / "latest").write_text("step00000001")
    (root / "step00000002").mkdir()  # a write that died before being published
    assert find_resume_tag(root) == "step00000001"
    (root / "latest").write_text("step00000002")
    with pytest.raises(FileNotFoundError, match="incomplete"):
        find_resume_tag(root)


def test_rng_capture_restore_round_trip():
    import random

    import numpy as np

    gen = torch.Generator().manual_seed(3)
    state = capture_rng(gen)
    a = (torch.rand(3), np.random.rand(), random.random(), torch.rand(2, generator=gen))
    restore_rng(state, gen)
    b = (torch.rand(3), np.random.rand(), random.random(), torch.rand(2, generator=gen))
    assert torch.equal(a[0], b[0]) and a[1] == b[1] and a[2] == b[2] and torch.equal(a[3], b[3])


def test_vae_loss_terms_behave():
    disc = PatchDiscriminator(3, 16, 2)
    assert disc(torch.zeros(2, 3, 64, 64)).shape[0] == 2
    lap = LaplacianPyramidLoss()
    x = torch.rand(1, 3, 32, 32)
    assert lap(x, x).item() == 0.0 and lap(x, x.flip(-1)).item() > 0
    # confident, diverse codes: low per-sample entropy, high codebook entropy -> negative entropy term
    z = torch.randn(4, 8, 8, 8) * 10
    entropy, commitment = bsq_entropy_and_commitment(z)
    assert entropy.item() < 0 and commitment.item() >= 0
    collapsed = torch.ones(4, 8, 8, 8)
    assert bsq_entropy_and_commitment(collapsed)[0].item() > entropy.item()


def _tiny_infinity(width: int = 64):
    from infinity_model import Infinity, InfinityConfig

    cfg = InfinityConfig(depth=2, embed_dim=width, num_heads=2, text_channels=32, text_maxlen=8, pool_heads=2)
    return Infinity(cfg)


def test_init_from_official_pth_is_strict(tmp_path):
    from infinity_train.transformer_trainer import init_from_official

    torch.manual_seed(1)
    source = _tiny_infinity()
    path = tmp_path / "official.pth"
    torch.save(source.state_dict(), path)  # the released files are flat state dicts
    torch.manual_seed(2)
    target = _tiny_infinity()
    init_from_official(target, str(path))
    for (name, a), b in zip(source.state_dict().items(), target.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    with pytest.raises(Exception, match=r"(?i)shape|size|mismatch|missing|unexpected"):
        init_from_official(_tiny_infinity(width=128), str(path))  # a checkpoint of another model size


def test_precomputed_text_features_are_packed_per_sample():
    from infinity_train.transformer_trainer import text_condition_from_batch

    feats = [torch.randn(3, 8), torch.randn(5, 8)]
    text = text_condition_from_batch({"t5_features": feats}, True, None, torch.device("cpu"))
    assert text.lengths.tolist() == [3, 5]
    torch.testing.assert_close(text.features, torch.cat(feats))
    with pytest.raises(KeyError, match="t5_features"):
        text_condition_from_batch({"captions": ["a"]}, True, None, torch.device("cpu"))
