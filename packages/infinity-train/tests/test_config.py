"""Typed run config: strict parsing, round trip, clear errors."""

import json
import re

import pytest
from infinity_train.config import ConfigError, RunConfig, config_from_dict, config_to_dict, load_run_config


def test_toml_round_trips_through_json(tmp_path):
    toml = tmp_path / "run.toml"
    toml.write_text(
        'task = "transformer"\nrun_dir = "x"\nmax_steps = 5\n'
        "[optim]\nlr = 1e-3\nbetas = [0.9, 0.95]\n"
        '[deepspeed]\nzero_stage = 3\nprecision = "fp32"\n[deepspeed.extra]\nzero_optimization = {reduce_bucket_size = 1000}\n'
        "[transformer.bsc]\nnoise_apply_strength = 0.2\n"
    )
    cfg = load_run_config(toml)
    assert cfg.optim.betas == (0.9, 0.95) and cfg.deepspeed.zero_stage == 3
    assert cfg.transformer.bsc.noise_apply_strength == 0.2
    js = tmp_path / "run.json"
    js.write_text(json.dumps(config_to_dict(cfg)))
    assert load_run_config(js) == cfg


def test_unknown_key_error_names_the_dotted_key_and_file(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text("[optim]\nlearning_rate = 1.0\n")
    with pytest.raises(ConfigError, match=r"bad\.toml.*'optim\.learning_rate'"):
        load_run_config(path)


@pytest.mark.parametrize(
    ("data", "key"),
    [
        ({"max_steps": "10"}, "max_steps"),
        ({"max_steps": 1.5}, "max_steps"),
        ({"optim": {"lr": "fast"}}, "optim.lr"),
        ({"optim": {"betas": [0.9]}}, "optim.betas"),
        ({"deepspeed": {"zero_stage": 4}}, "deepspeed.zero_stage"),
        ({"deepspeed": {"precision": "fp8"}}, "deepspeed.precision"),
        ({"transformer": {"reweight_loss_by_scale": 1}}, "transformer.reweight_loss_by_scale"),
        ({"data": 3}, "data"),
    ],
)
def test_wrong_type_error_names_the_key(data, key):
    with pytest.raises(ConfigError, match=re.escape(f"'{key}'")):
        config_from_dict(data, "cfg.toml")


def test_defaults_are_the_reference_recipe():
    cfg = RunConfig()
    assert cfg.optim.betas == (0.9, 0.97) and cfg.optim.grad_clip == 5.0 and cfg.optim.weight_decay == 0.005
    assert cfg.transformer.cond_drop_rate == 0.1
    assert (cfg.transformer.bsc.noise_apply_layers, cfg.transformer.bsc.noise_apply_strength) == (13, 0.3)


def test_cli_style_overrides_are_type_checked(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text("max_steps = 3\n")
    assert load_run_config(path, {"optim.lr": 0.5}).optim.lr == 0.5
    with pytest.raises(ConfigError, match=r"'optim\.lr'"):
        load_run_config(path, {"optim.lr": "x"})
